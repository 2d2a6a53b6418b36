"""Planning of ``cxr-reproduce``: every (table, row, replicate) job with its run id, and the Hydra
multirun override lists that cover a table's jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.config.runs import run_id
from cxr.reporting.reproduce.profiles import Profile
from cxr.reporting.tables import Table


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

    def overrides(self, replicate_key: str) -> list[str]:
        return merge_overrides(self.fixed, self.row_overrides, [f"{replicate_key}={self.replicate}"])


def _substitute(override: str, profile: Profile) -> str:
    key, _, value = override.partition("=")
    if key == "model.encoder" and value in profile.encoders:
        return f"{key}={profile.encoders[value]}"
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


def plan(
    tables: Sequence[Table],
    profile: Profile,
    data_root: Path,
    cache_dir: Path | None,
    extra: Sequence[str] = (),
) -> list[Job]:
    """Every (table, row, replicate) job, with its run id from the config composed in-process."""
    from cxr.config.compose import compose

    jobs = []
    for table in tables:
        fixed = fixed_overrides(table, profile, data_root, cache_dir, extra)
        for row in table.rows:
            row_overrides = tuple(_substitute(o, profile) for o in row.overrides)
            for rep in profile.seeds if table.task == "classification" else profile.folds:
                job = Job(table.name, row.label, fixed, row_overrides, str(rep))
                job.run_id = run_id(compose(job.overrides(table.replicate_key)))
                jobs.append(job)
    return jobs


def sweep_commands(table: Table, jobs: Sequence[Job]) -> list[list[str]]:
    """Hydra multirun override lists that cover ``jobs`` (all of one table): rows whose overrides
    set the same single key share one sweep over its values; the replicate key is always swept."""
    by_keys: dict[tuple[str, ...], dict[str, Job]] = {}
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
