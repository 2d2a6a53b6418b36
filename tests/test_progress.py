"""Progress: a bar on a terminal, a few whole lines in a log."""

import io

from tqdm import tqdm

from cxr.progress import LogProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_whole_lines_not_one_per_update():
    log = io.StringIO()
    with progress(total=1000, desc="cache", unit="img", file=log) as bar:
        for _ in range(1000):
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 5  # start, 25 %, 50 %, 75 %, done
    assert lines[1].startswith("cache: 250/1000 img (25%)") and lines[-1].startswith(
        "cache: 1000/1000 img (100%)"
    )


def test_iterating_reports_the_length_and_closes():
    log = io.StringIO()
    assert list(progress(range(8), desc="tune", unit="batch", file=log)) == list(range(8))
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("tune: 8/8 batch (100%)") and lines[-1].endswith("done")
    assert len(lines) == 5


def test_a_terminal_gets_a_tqdm_bar_and_disable_prints_nothing():
    assert isinstance(progress(total=3, file=_Terminal()), tqdm)
    log = io.StringIO()
    with progress(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_without_a_total_lines_come_at_most_once_per_interval():
    log = io.StringIO()
    bar = LogProgress(desc="x", file=log, interval_s=3600)
    for _ in range(500):
        bar.update()
    bar.close()
    assert len(log.getvalue().splitlines()) == 2  # started, done
