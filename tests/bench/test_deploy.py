"""The deploy section: every path measured and checked against eager PyTorch; ratios, targets and the
report from hand-made results. No timing assertions."""

import pytest

from cxr.bench import report, targets
from cxr.bench.deploy import PATHS, bench_deploy, deploy_ratios, deploy_targets, matmul_peak, measure_deploy
from cxr.bench.settings import Settings


def _deploy(plain_onnx=30.0, dw_onnx=150.0, diff=1e-6) -> dict:
    """A hand-made deploy result: plain 10 / 20 / ``plain_onnx`` images/s, depthwise 15 / 40 / ``dw_onnx``."""
    rates = {"plain_cnn": (10.0, 20.0, plain_onnx), "depthwise_cnn": (15.0, 40.0, dw_onnx)}
    gflops = {"plain_cnn": (6.0, 6.0), "depthwise_cnn": (0.8, 0.6)}
    rows = []
    for model, per_path in rates.items():
        for path, rate in zip(PATHS, per_path, strict=True):
            run = gflops[model][1] if path == "onnxruntime" else gflops[model][0]
            rows.append(
                {
                    "model": model,
                    "path": path,
                    "images_per_s": rate,
                    "cpu_images_per_s": 2 * rate,
                    "gflops": gflops[model][0],
                    "gflops_run": run,
                    "achieved_gflops_per_s": run * 2 * rate,
                    "peak_fraction": run * 2 * rate / 300.0,
                    "max_abs_diff": diff,
                }
            )
    return {
        "peak": {
            "n": 2048,
            "gflops_per_s": 280.0,
            "cpu_gflops_per_s": 300.0,
            "by": {"pytorch": 200.0, "onnxruntime": 300.0},
            "threads": 2,
        },
        "threads": 2,
        "batch": 16,
        "image_size": 200,
        "repeats": 5,
        "rows": rows,
    }


def test_ratios_and_targets_by_hand():
    assert deploy_ratios(_deploy()) == pytest.approx(
        {"eager": 1.5, "folded + channels_last": 2.0, "onnxruntime": 5.0}
    )
    assert deploy_ratios(_deploy(dw_onnx=90.0), "cpu_images_per_s")["onnxruntime"] == pytest.approx(3.0)
    speed, exact = deploy_targets(_deploy())
    assert speed["met"] is True and "2 threads, batch 16, 200 px" in speed["target"]
    assert speed["measured"] == "5.00× per CPU-second (5.00× wall clock)"
    assert exact["met"] is True
    speed, exact = deploy_targets(_deploy(dw_onnx=90.0, diff=3e-4))
    assert speed["met"] is False and speed["measured"].startswith("3.00×") and exact["met"] is False
    missing = {**_deploy(), "rows": [r for r in _deploy()["rows"] if r["model"] != "plain_cnn"]}
    assert deploy_targets(missing)[0]["met"] is None and deploy_ratios(missing)["eager"] is None


def test_report_shows_every_path_with_its_share_of_the_peak():
    from tests.bench.test_bench import _result

    result = _result()
    result["deploy"] = _deploy()
    result["ratios"] = targets.ratios(result)
    result["targets"] = targets.targets(result) + deploy_targets(result["deploy"])
    text = report.markdown(result)
    assert "## Deployable CPU paths (Test CPU, fp32, 2 threads, batch 16, 200 px)" in text
    assert "| depthwise_cnn | onnxruntime | 150 | 300 | 0.8 | 0.6 | 180 | 60 % | 1.0e-06 |" in text
    assert "| plain_cnn | eager | 10 | 20 | 6 | 6 | 120 | 40 % | 1.0e-06 |" in text
    assert (
        "| images/s | 1.50× | 2.00× | 5.00× |" in text
        and "| per CPU-second | 1.50× | 2.00× | 5.00× |" in text
    )
    assert "| depthwise_cnn ≥ 4× plain_cnn's images/s on ONNX Runtime" in text
    # 6 / 0.6 = 10× the executed FLOPs, at 60 % vs plain's 120 % of the peak: 5× in all
    assert "ratio of executed FLOPs (10.0×) times the ratio of efficiencies" in text
    assert "(depthwise_cnn at 60% of the peak ÷ plain_cnn at 120% = 0.50) = 5.00×" in text
    assert "at either end of this run, 300 GFLOP/s per CPU-second (pytorch 200, onnxruntime 300)." in text
    assert "Made by `make bench`" in text  # a hand-made result names no sections: all of them
    alone = report.markdown({**result, "sections": ["deploy"]})
    assert "Made by `python -m cxr.bench --sections deploy`" in alone
    failed = {
        **result["deploy"],
        "rows": [*result["deploy"]["rows"], {"model": "x", "path": "eager", "error": "boom"}],
    }
    assert "| x | eager | failed: boom |" in report.markdown({**result, "deploy": failed})


def test_matmul_peak_is_positive():
    peak = matmul_peak(n=128, repeats=2)
    assert peak["n"] == 128 and peak["gflops_per_s"] > 0
    assert peak["cpu_gflops_per_s"] == pytest.approx(max(peak["by"].values()), abs=0.06)
    assert "pytorch" in peak["by"]


def test_quick_section_measures_every_path_and_matches_eager(monkeypatch):
    pytest.importorskip("onnxruntime")
    from cxr.bench import deploy

    peaks = iter([1.0, 2.0])  # the end of the run finds the higher peak
    monkeypatch.setattr(
        deploy,
        "matmul_peak",
        lambda: {"n": 64, "gflops_per_s": 1.0, "cpu_gflops_per_s": next(peaks), "threads": 1},
    )
    s = Settings.quick_run(cls_size=32, deploy_batch=2, deploy_threads=1, deploy_repeats=1)
    out = measure_deploy(s)
    assert [(r["model"], r["path"]) for r in out["rows"]] == [(m, p) for m in s.deploy_models for p in PATHS]
    for row in out["rows"]:
        assert row["images_per_s"] > 0 and row["cpu_images_per_s"] > 0 and row["max_abs_diff"] <= 1e-4
        assert row["gflops_run"] <= row["gflops"] * 1.001  # a rewrite may skip work, never add it
        assert row["peak_fraction"] == pytest.approx(row["achieved_gflops_per_s"] / 2.0)
    assert out["peak"]["cpu_gflops_per_s"] == 2.0
    dw_onnx = next(r for r in out["rows"] if r["model"] == "depthwise_cnn" and r["path"] == "onnxruntime")
    assert dw_onnx["gflops_run"] < dw_onnx["gflops"]  # the first stage's pointwise conv runs pooled


def test_figure_has_a_deploy_panel_with_every_model_and_path():
    from cxr.bench import plot
    from tests.bench.test_bench import _result

    fig = plot.draw({**_result(), "deploy": _deploy()})
    ax = fig.axes[-1]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(PATHS)
    assert sorted(bar.get_width() for bar in ax.patches) == sorted(
        r["images_per_s"] for r in _deploy()["rows"]
    )
    assert len(plot.draw({**_result(), "pipeline": [], "models": [], "deploy": _deploy()}).axes) == 1


def test_section_runs_in_a_child_process_and_reports_its_failure():
    out = bench_deploy(Settings.quick_run(deploy_models=("no_such_model",)), timeout=300)
    assert out["error"].startswith("exit 1")
    assert deploy_ratios(out)["onnxruntime"] is None and deploy_targets(out)[0]["met"] is None
    assert "The section failed: exit 1" in report._deploy_section(out, {"cpu": "x"})[2]


def test_fast_paths_get_more_rounds_than_the_minimum():
    from cxr.bench.deploy import _time_in_turns

    calls = {"a": 0, "b": 0}

    def counter(key):
        def run():
            calls[key] += 1

        return run

    times = _time_in_turns({"a": counter("a"), "b": counter("b")}, repeats=3)
    assert [len(times["a"][0]), len(times["b"][1])] == [3, 3] and calls == {"a": 4, "b": 4}  # + warm-up
    times = _time_in_turns({"a": counter("a")}, repeats=3, min_seconds=0.05)
    assert len(times["a"][0]) > 3 and len(times["a"][0]) == len(times["a"][1])
