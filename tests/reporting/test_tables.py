"""The table builder on fake run folders: hand-computed mean ± std, gaps for missing runs, files."""

import json
import math

import pandas as pd
import pytest

from cxr.config.compose import compose
from cxr.reporting.tables import (
    GAP,
    TABLES,
    TABLES_DIR,
    Metric,
    Row,
    Table,
    build_table,
    load_table,
    mean_std,
    postprocess_table,
    read_metrics,
    table_by_name,
    write_table,
)

TABLE = Table(
    name="t",
    title="T",
    experiment="go2020",
    task="classification",
    metrics=(Metric("test/recall_macro", "recall (%)", scale=100.0, digits=1), Metric("params", "params")),
    rows=(
        Row("a", ("augment=none",), (97.0,)),
        Row("b", ("augment=paper_da",), (93.0,)),
        Row("c", ("augment=light",), (None,)),
    ),
    paper_columns=("paper recall (%)",),
)


def _run(folder, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({**metrics, "test/confusion_matrix": [[1, 2], [3, 4]]}))
    return folder


def test_mean_and_sample_std_by_hand():
    assert mean_std([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    mean, std = mean_std([0.4])
    assert mean == 0.4 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


def test_rows_aggregate_replicates_and_missing_runs_are_gaps(tmp_path):
    runs = {
        "a": [
            _run(tmp_path / "a0", **{"test/recall_macro": 0.8, "params": 10}),
            _run(tmp_path / "a1", **{"test/recall_macro": 0.9, "params": 10}),
        ],
        "b": [
            _run(tmp_path / "b0", **{"test/recall_macro": 0.5, "params": 10}),
            tmp_path / "never_ran",
            None,
        ],
        "c": [tmp_path / "missing0", tmp_path / "missing1"],
    }
    numbers, shown = build_table(TABLE, runs)
    assert list(shown["runs"]) == ["2/2", "1/3", "0/2"]
    assert shown.loc[0, "recall (%)"] == f"85.0 ± {100 * math.sqrt(0.005):.1f}"  # std of 80, 90 = 7.07
    assert shown.loc[1, "recall (%)"] == "50.0"  # one run: no std
    assert shown.loc[2, "recall (%)"] == GAP and shown.loc[2, "params"] == GAP  # a gap, not a crash
    assert list(shown["paper recall (%)"]) == ["97", "93", GAP]
    assert numbers.loc[0, "test/recall_macro mean"] == pytest.approx(85.0)
    assert numbers.loc[0, "test/recall_macro std"] == pytest.approx(100 * math.sqrt(0.005))
    assert math.isnan(numbers.loc[2, "test/recall_macro mean"]) and numbers.loc[2, "runs"] == 0


def test_extra_columns_and_written_files(tmp_path):
    runs = {"a": [_run(tmp_path / "a0", **{"test/recall_macro": 0.8, "params": 10})]}
    numbers, shown = build_table(TABLE, runs, extra={"a": {"CPU img/s": 123.45, "GPU img/s": "n/a (no GPU)"}})
    assert shown.loc[0, "CPU img/s"] == "123.5" and shown.loc[0, "GPU img/s"] == "n/a (no GPU)"
    md, csv = write_table(numbers, shown, "Caption.", tmp_path / "out", "t")
    text = md.read_text().splitlines()
    assert text[0] == "Caption." and text[2].startswith("| setting | runs | recall (%) |")
    assert len(text) == 4 + 3  # caption, blank, header, rule, three rows
    assert pd.read_csv(csv)["runs"].tolist() == [1, 0, 0]


def test_unreadable_metrics_count_as_missing(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    assert read_metrics(tmp_path) is None
    assert read_metrics(None) is None


def test_postprocess_table_takes_the_best_grid_point_per_fold():
    sweep = pd.DataFrame(
        [
            (0, "single", 0.1, 0.3, 0.20),
            (0, "single", 0.5, 0.3, 0.30),
            (1, "single", 0.1, 0.3, 0.10),
            (1, "single", 0.5, 0.4, 0.05),
            (0, "ensemble", 0.1, 0.3, 0.40),
            (1, "ensemble", 0.1, 0.3, 0.20),
        ],
        columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"],
    )
    numbers, shown = postprocess_table(sweep)
    assert list(numbers["setting"]) == ["single", "ensemble"]
    assert numbers.loc[0, "best rsna_map mean"] == pytest.approx(0.2)  # folds: 0.30, 0.10
    assert numbers.loc[1, "best rsna_map mean"] == pytest.approx(0.3)  # folds: 0.40, 0.20
    assert shown.loc[1, "best mAP (RSNA)"] == f"0.3000 ± {math.sqrt(0.02):.4f}"


def test_a_table_file_with_a_typo_is_one_error_naming_the_file(tmp_path):
    good = (TABLES_DIR / "go2020_table2.yaml").read_text()
    bad = tmp_path / "t.yaml"
    bad.write_text(good.replace("metrics:", "metric:"))
    with pytest.raises(ValueError, match=r"t\.yaml: unknown keys \['metric'\]"):
        load_table(bad)
    bad.write_text(good.replace("auroc]", "aucroc]"))
    with pytest.raises(ValueError, match=r"t\.yaml: unknown metrics \['aucroc'\]"):
        load_table(bad)
    bad.write_text(good.replace("paper: [97.0, 79.0]", "paper: [97.0]"))
    with pytest.raises(ValueError, match="has 1 paper numbers for 2 columns"):
        load_table(bad)


def test_every_table_row_composes_with_its_experiment():
    """Each row's overrides name keys and options that exist (Hydra composes them)."""
    for table in TABLES:
        for row in table.rows:
            compose([f"experiment={table.experiment}", *row.overrides])


def test_table_specs_carry_the_papers_numbers():
    table2 = table_by_name("go2020_table2")
    assert [r.paper for r in table2.rows] == [(97.0, 79.0), (93.0, 84.0)]
    table3 = table_by_name("gabruseva2020_table3_augment")
    assert [r.paper[0] for r in table3.rows] == [0.2461, 0.2544, 0.2502, 0.2556, 0.2610]
    for table in TABLES:
        assert all(len(r.paper) in (0, len(table.paper_columns)) for r in table.rows), table.name
    with pytest.raises(KeyError, match="no table 'nope'"):
        table_by_name("nope")
