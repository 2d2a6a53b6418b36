"""The papers' tables, read from their data files, and the builder that fills them from run folders.

A :class:`Table` is one paper table (or one comparison the issue asks for), declared in
``experiments/tables/<name>.yaml``: the experiment config that makes its rows
(``conf/experiment/<experiment>.yaml``), one :class:`Row` per row with the overrides that define it
and the paper's reported numbers, and the metrics to show (names of :data:`METRICS`). Every row is
run once per replicate (seeds for classification, validation folds for detection) and shown as
mean ± std over the replicates that finished (sample std, ddof 1); the ``runs`` column says how
many of them did. A row none of whose runs finished is a gap (``—``), never an error.

A run folder is what ``cxr-train`` writes: ``metrics.json`` (flat scalars) beside ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

GAP = "—"
REPLICATE_KEY = {"classification": "seed", "detection": "datamodule.fold"}


@dataclass(frozen=True)
class Metric:
    """A ``metrics.json`` key as a column: ``scale`` multiplies it (100 for percent) before showing
    it with ``digits`` decimals."""

    key: str
    header: str
    scale: float = 1.0
    digits: int = 3
    spread: bool = True  # False: a value equal across replicates (params, FLOPs), shown without ± std


@dataclass(frozen=True)
class Row:
    """One table row: ``overrides`` (``key=value``) on top of the experiment; ``paper`` holds the
    paper's number for each of the table's ``paper_columns`` (None: not reported)."""

    label: str
    overrides: tuple[str, ...] = ()
    paper: tuple[float | None, ...] = ()
    # True: the row starts from the encoder's ImageNet weights, a local file the user names
    # (``cxr-reproduce --encoder-weights``); without it the row is not run (a gap), never run from scratch
    pretrained_encoder: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    experiment: str
    task: str
    metrics: tuple[Metric, ...]
    rows: tuple[Row, ...]
    paper_columns: tuple[str, ...] = ()
    paper_digits: int = 0
    paper_note: str = ""
    row_header: str = "setting"
    # per-epoch curves (columns of the CSV log) for cxr.reporting.plots.training_curves: (title, train, val)
    curves: tuple[tuple[str, str | None, str | None], ...] = field(default_factory=tuple)
    throughput: bool = False  # measure each row's inference images/s beside the table
    postprocess_single: str | None = None  # run the post-processing sweep; this row is its single model

    @property
    def replicate_key(self) -> str:
        return REPLICATE_KEY[self.task]


_PCT = {"scale": 100.0, "digits": 1}
# The columns a table file may name under ``metrics:``.
METRICS: dict[str, Metric] = {
    "precision_macro": Metric("test/precision_macro", "precision (macro, %)", **_PCT),
    "recall_macro": Metric("test/recall_macro", "recall (macro, %)", **_PCT),
    "f1": Metric("test/f1", "F1 (%)", **_PCT),
    "auroc": Metric("test/auroc", "AUROC (%)", **_PCT),
    "params": Metric("params", "params (M)", scale=1e-6, digits=2, spread=False),
    "gflops": Metric("flops", "GFLOPs / image", scale=1e-9, digits=3, spread=False),
    "params_1": Metric("params", "params (M)", scale=1e-6, digits=1, spread=False),
    "gflops_1": Metric("flops", "GFLOPs / image", scale=1e-9, digits=1, spread=False),
    "train_time": Metric("train_time_s", "train time (s)", digits=0),
    "best_rsna_map": Metric("best/val/rsna_map", "best val mAP (RSNA)", digits=4),
    "map_50": Metric("val/map_50", "val AP50 (COCO, last epoch)", digits=3),
    "val_loss": Metric("val/loss", "val loss (last epoch)", digits=4),
    "val_loss_box_cls": Metric("val/loss_box_cls", "val box cls loss", digits=4),
    "val_loss_box_reg": Metric("val/loss_box_reg", "val box reg loss", digits=4),
    "val_cls_auroc": Metric("val/cls_auroc", "global head AUROC", digits=3),
}
# per-epoch curves of each task (columns of the CSV log): (title, train column, val column)
CURVES = {
    "classification": (
        ("loss", "train/loss_epoch", "val/loss"),
        ("accuracy", "train/accuracy", "val/accuracy"),
    ),
    "detection": (("loss", "train/loss_epoch", "val/loss"), ("RSNA mAP", None, "val/rsna_map")),
}
TABLES_DIR = Path(__file__).resolve().parents[2] / "experiments" / "tables"


def load_table(path: str | Path) -> Table:
    """A :class:`Table` from its data file (``experiments/tables/<name>.yaml``; see that folder's files).

    Raises:
        ValueError: an unknown key, metric or task, or a row whose paper numbers do not match the
            paper columns, naming the file.
    """
    import yaml

    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    known = {
        "title", "experiment", "task", "metrics", "rows", "paper_columns", "paper_digits", "paper_note",
        "row_header", "throughput", "postprocess_single",
    }  # fmt: skip
    if unknown := sorted(set(spec) - known):
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    if spec.get("task") not in REPLICATE_KEY:
        raise ValueError(f"{path}: task must be one of {sorted(REPLICATE_KEY)}, got {spec.get('task')!r}")
    if missing := [m for m in spec.get("metrics", []) if m not in METRICS]:
        raise ValueError(f"{path}: unknown metrics {missing}; known: {sorted(METRICS)}")
    columns = tuple(spec.get("paper_columns", ()))
    rows = []
    for row in spec.get("rows", []):
        paper = tuple(row.get("paper", ()))
        if paper and len(paper) != len(columns):
            raise ValueError(
                f"{path}: row {row['label']!r} has {len(paper)} paper numbers for {len(columns)} columns"
            )
        if unknown := sorted(set(row) - {"label", "overrides", "paper", "pretrained_encoder"}):
            raise ValueError(f"{path}: row {row.get('label')!r} has unknown keys {unknown}")
        rows.append(
            Row(
                str(row["label"]),
                tuple(row.get("overrides", ())),
                paper,
                bool(row.get("pretrained_encoder", False)),
            )
        )
    return Table(
        name=path.stem,
        title=spec["title"],
        experiment=spec["experiment"],
        task=spec["task"],
        metrics=tuple(METRICS[m] for m in spec.get("metrics", [])),
        rows=tuple(rows),
        paper_columns=columns,
        paper_digits=int(spec.get("paper_digits", 0)),
        paper_note=spec.get("paper_note", ""),
        row_header=spec.get("row_header", "setting"),
        curves=CURVES[spec["task"]],
        throughput=bool(spec.get("throughput", False)),
        postprocess_single=spec.get("postprocess_single"),
    )


def load_tables(folder: str | Path = TABLES_DIR) -> tuple[Table, ...]:
    """Every table file of ``folder``, in file-name order."""
    return tuple(load_table(p) for p in sorted(Path(folder).glob("*.yaml")))


TABLES: tuple[Table, ...] = load_tables()


def table_by_name(name: str) -> Table:
    for table in TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no table {name!r}; tables: {', '.join(t.name for t in TABLES)}")


def read_metrics(run_dir: str | Path | None) -> dict[str, float] | None:
    """The scalar metrics of a finished run, or None (no folder, unfinished, or unreadable: logged)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable, counted as missing (%s)", path, err)
        return None
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_value(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return GAP
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def build_table(
    table: Table,
    runs: Mapping[str, Sequence[str | Path | None]],
    extra: Mapping[str, Mapping[str, float | str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill ``table`` from run folders.

    Args:
        runs: row label -> one run folder per replicate (None or a folder without ``metrics.json``
            counts as missing).
        extra: row label -> extra column -> value shown as is (e.g. measured throughput).

    Returns:
        ``(numbers, shown)``: ``numbers`` has per row ``runs`` (finished), ``expected``, every
        metric's ``<key> mean`` and ``<key> std`` (scaled) and the paper columns; ``shown`` the
        formatted strings (mean ± std, ``—`` for gaps) as they go into the Markdown table.
    """
    extra = extra or {}
    numbers, shown = [], []
    for row in table.rows:
        found = [m for m in (read_metrics(r) for r in runs.get(row.label, ())) if m is not None]
        expected = len(runs.get(row.label, ()))
        num: dict[str, object] = {"row": row.label, "runs": len(found), "expected": expected}
        txt: dict[str, str] = {table.row_header: row.label, "runs": f"{len(found)}/{expected}"}
        for metric in table.metrics:
            values = [m[metric.key] * metric.scale for m in found if metric.key in m]
            mean, std = mean_std(values)
            num[f"{metric.key} mean"], num[f"{metric.key} std"] = mean, std
            txt[metric.header] = format_value(mean, std if metric.spread else math.nan, metric.digits)
        for column, value in extra.get(row.label, {}).items():
            num[column] = value
            txt[column] = value if isinstance(value, str) else format_value(float(value), math.nan, 1)
        for column, value in zip(
            table.paper_columns, row.paper or (None,) * len(table.paper_columns), strict=True
        ):
            num[column] = math.nan if value is None else value
            txt[column] = GAP if value is None else f"{value:.{table.paper_digits}f}"
        if found and len(found) < expected:
            log.warning("%s / %s: %d of %d runs finished", table.name, row.label, len(found), expected)
        numbers.append(num)
        shown.append(txt)
    return pd.DataFrame(numbers), pd.DataFrame(shown)


def to_markdown(frame: pd.DataFrame, caption: str) -> str:
    """A caption paragraph and a pipe table (first column left-aligned, the rest right-aligned)."""
    columns = [str(c) for c in frame.columns]
    lines = [
        caption,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|",
    ]
    for values in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    frame_numbers: pd.DataFrame, frame_shown: pd.DataFrame, caption: str, out_dir: str | Path, name: str
) -> tuple[Path, Path]:
    """``<out_dir>/<name>.md`` (caption + table) and ``<name>.csv`` (the numbers)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    md.write_text(to_markdown(frame_shown, caption))
    frame_numbers.to_csv(csv, index=False, float_format="%.6g")
    return md, csv


def postprocess_table(sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The post-processing table from an NMS sweep (columns ``fold``, ``setting``, ``nms_thresh``,
    ``score_thresh``, ``rsna_map``; with ``in_table``, only its True rows, and ``epoch``, the
    checkpoint epoch of each fold): per setting the best mAP over the grid on each fold, then mean ±
    std over folds, with the NMS and score thresholds that most often won."""
    if "in_table" in sweep:
        sweep = sweep[sweep["in_table"].astype(bool)]
    numbers, shown = [], []
    for setting, group in sweep.groupby("setting", sort=False):
        best = group.loc[group.groupby("fold")["rsna_map"].idxmax()]
        mean, std = mean_std(best["rsna_map"].tolist())
        nms, score = best["nms_thresh"].mode().iloc[0], best["score_thresh"].mode().iloc[0]
        per_fold = best.sort_values("fold")["epoch"] if "epoch" in best else pd.Series(dtype=float)
        epochs = ", ".join(str(int(e)) for e in per_fold) if per_fold.notna().all() and len(per_fold) else "—"
        numbers.append(
            {
                "setting": setting,
                "folds": len(best),
                "epoch per fold": epochs,
                "best rsna_map mean": mean,
                "best rsna_map std": std,
                "nms_thresh": nms,
                "score_thresh": score,
            }
        )
        shown.append(
            {
                "setting": setting,
                "folds": str(len(best)),
                "epoch per fold": epochs,
                "best mAP (RSNA)": format_value(mean, std, 4),
                "NMS threshold": f"{nms:g}",
                "score threshold": f"{score:g}",
            }
        )
    return pd.DataFrame(numbers), pd.DataFrame(shown)
