"""Planning of ``cxr-reproduce``: every (table, row, replicate) job with its run id, and the Hydra
multirun override lists that cover a table's jobs.

A row with ``pretrained_encoder: true`` starts its encoder from ImageNet weights in a local file
(:data:`ENCODER_WEIGHTS_ENV` / ``--encoder-weights``): its jobs get ``model.pretrained_path=<the
file, absolute>``, which is part of their run id (so they never share runs with from-scratch rows).
The id holds the file's path, not its content: a different file under the same path would reuse
finished runs, so give new weights a new name; captions state the file's SHA-256. Without a file
the row's jobs are planned but not run (:attr:`Job.skip` says why), and the table shows a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.config.runs import run_id
from cxr.reporting.reproduce.profiles import Profile
from cxr.reporting.tables import Table

ENCODER_WEIGHTS_ENV = "CXR_ENCODER_WEIGHTS"  # the default of ``cxr-reproduce --encoder-weights``
_PRETRAINED = "model.pretrained_path"


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one of the same key (Hydra refuses two)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return list(merged.values())


@dataclass
class Job:
    """One run: ``fixed`` overrides (experiment, profile, data, extra), the row's and the replicate's."""

    table: str
    row: str
    fixed: tuple[str, ...]
    row_overrides: tuple[str, ...]
    replicate: str
    run_id: str = ""
    skip: str = ""  # why the job is not run (no run id then), e.g. its row's encoder weights are missing

    def overrides(self, replicate_key: str) -> list[str]:
        return merge_overrides(self.fixed, self.row_overrides, [f"{replicate_key}={self.replicate}"])


def _substitute(override: str, profile: Profile) -> str:
    key, _, value = override.partition("=")
    if key == "model.encoder" and value in profile.encoders:
        return f"{key}={profile.encoders[value]}"
    if key == "datamodule.image_size" and value.isdigit() and int(value) in profile.image_sizes:
        return f"{key}={profile.image_sizes[int(value)]}"
    return override


def data_dir(data_root: Path, task: str) -> Path:
    """A task's dataset under ``data_root``: ``chest_xray/`` or ``rsna/`` inside it, or ``data_root``
    itself when it is already that layout (a Kermany ``train/`` folder or the challenge's CSV)."""
    if task == "classification":
        return data_root if (data_root / "train").is_dir() else data_root / "chest_xray"
    return data_root if (data_root / "stage_2_train_labels.csv").is_file() else data_root / "rsna"


def fixed_overrides(
    table: Table, profile: Profile, data_root: Path, cache_dir: Path | None, extra: Sequence[str] = ()
) -> tuple[str, ...]:
    cache = [f"datamodule.cache_dir={cache_dir}"] if cache_dir is not None else []
    return tuple(
        merge_overrides(
            [
                f"experiment={table.experiment}",
                *getattr(profile, table.task),
                f"datamodule.data_dir={data_dir(data_root, table.task)}",
                *cache,
            ],
            extra,
        )
    )


def check_encoder_weights(path: str, encoder: str, in_chans: int) -> None:
    """Raise (one line naming ``path``) unless ``path`` is a local state dict of the timm classifier
    ``encoder``, before any training starts."""
    import timm

    from cxr.models.weights import load_local_weights

    try:
        load_local_weights(timm.create_model(encoder, in_chans=in_chans, pretrained=False), path)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"encoder weights for {encoder} (the encoder this profile runs): {err}") from None


def _value(overrides: Sequence[str], key: str) -> object:
    """The value ``overrides`` give ``key`` as Hydra parses it (quotes removed), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = [o for o in overrides if _key(o) == key]
    return OverridesParser.create().parse_override(found[-1]).value() if found else None


def _weights_given(encoder_weights: Path | None, extra: Sequence[str]) -> str | None:
    if encoder_weights is None:
        given = _value(extra, _PRETRAINED)
        return None if given in (None, "") else str(given)
    path = str(Path(encoder_weights).expanduser().resolve())
    if "'" in path or "\\" in path:
        raise ValueError(f"encoder weights {path}: rename it without ' or \\ (it goes into a Hydra override)")
    return path


def _missing_weights(encoder: str) -> str:
    return (
        f"not run: it starts from ImageNet weights of {encoder} (the encoder this profile runs) and no "
        f"local weight file was given; run it with `--encoder-weights FILE` or {ENCODER_WEIGHTS_ENV}=FILE, "
        f"FILE being a timm state dict of {encoder} (torch.save(model.state_dict()) or .safetensors; "
        "nothing is downloaded)"
    )


def plan(
    tables: Sequence[Table],
    profile: Profile,
    data_root: Path,
    cache_dir: Path | None,
    extra: Sequence[str] = (),
    encoder_weights: Path | None = None,
) -> list[Job]:
    """Every (table, row, replicate) job, with its run id from the config composed in-process.

    ``encoder_weights``: the local ImageNet weights of the rows with ``pretrained_encoder`` (else an
    ``extra`` ``model.pretrained_path=<file>``); without either, those rows' jobs get a ``skip``
    reason and no run id. Raises ValueError (naming the file) where it does not fit the encoder.
    """
    from cxr.config.compose import compose

    weights = _weights_given(encoder_weights, extra)
    checked: set[tuple[str, str, int]] = set()
    jobs = []
    for table in tables:
        fixed = fixed_overrides(table, profile, data_root, cache_dir, extra)
        for row in table.rows:
            row_overrides = tuple(_substitute(o, profile) for o in row.overrides)
            if row.pretrained_encoder and weights is not None:
                row_overrides = (*row_overrides, f"{_PRETRAINED}='{weights}'")  # quoted: spaces, commas
            for rep in profile.seeds if table.task == "classification" else profile.folds:
                job = Job(table.name, row.label, fixed, row_overrides, str(rep))
                cfg = compose(job.overrides(table.replicate_key))
                if row.pretrained_encoder and weights is None:
                    job.skip = _missing_weights(cfg.model.encoder)
                else:
                    job.run_id = run_id(cfg)
                if row.pretrained_encoder and weights is not None:
                    key = (weights, str(cfg.model.encoder), int(cfg.model.get("in_chans", 1)))
                    if key not in checked:
                        check_encoder_weights(*key)
                        checked.add(key)
                jobs.append(job)
    return jobs


def weights_note(table: Table, jobs: Sequence[Job]) -> str:
    """Caption sentences for ``table``'s pretrained-encoder rows: the weight file each ran from (path
    and SHA-256, as the run id holds only the path), or why it was not run and how to run it."""
    from cxr.inference.postprocess.settings import file_sha256

    notes = []
    for row in (r for r in table.rows if r.pretrained_encoder):
        row_jobs = [j for j in jobs if j.table == table.name and j.row == row.label]
        if not row_jobs:
            continue
        if row_jobs[0].skip:
            notes.append(f"Row “{row.label}”: {row_jobs[0].skip}.")
            continue
        path = str(_value(row_jobs[0].overrides(table.replicate_key), _PRETRAINED))
        digest = file_sha256(path)[:16] if Path(path).is_file() else "file gone"
        notes.append(f"Row “{row.label}”: encoder weights `{path}` (SHA-256 {digest}…).")
    return (" " + " ".join(notes)) if notes else ""


def sweep_commands(table: Table, jobs: Sequence[Job]) -> list[list[str]]:
    """Hydra multirun override lists that cover ``jobs`` (all of one table): rows whose overrides
    set the same single key share one sweep over its values; the replicate key is always swept.
    Jobs not to be run (``skip``) are left out."""
    by_keys: dict[tuple[str, ...], dict[str, Job]] = {}
    jobs = [j for j in jobs if not j.skip]
    if not jobs:
        return []
    for job in jobs:
        by_keys.setdefault(tuple(_key(o) for o in job.row_overrides), {}).setdefault(job.row, job)
    reps = ",".join(dict.fromkeys(j.replicate for j in jobs))
    commands = []
    for keys, rows in by_keys.items():
        first = next(iter(rows.values()))
        if len(keys) == 1:
            values = ",".join(dict.fromkeys(j.row_overrides[0].partition("=")[2] for j in rows.values()))
            commands.append(
                merge_overrides(first.fixed, [f"{keys[0]}={values}", f"{table.replicate_key}={reps}"])
            )
        else:
            commands += [
                merge_overrides(j.fixed, j.row_overrides, [f"{table.replicate_key}={reps}"])
                for j in rows.values()
            ]
    return commands
