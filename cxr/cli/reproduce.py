"""The ``cxr-reproduce`` command line (``python -m cxr.cli.reproduce``, ``make reproduce-tables``):
arguments, then plan → launch the sweeps → write the tables, printing each table's run status."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from cxr.cli.common import HelpFormatter


def main(argv: Sequence[str] | None = None) -> None:
    import cxr.reporting.reproduce
    from cxr.config.runs import job_status
    from cxr.reporting.reproduce.launch import launch, prepare_data
    from cxr.reporting.reproduce.outputs import write_outputs
    from cxr.reporting.reproduce.plan import ENCODER_WEIGHTS_ENV, plan, sweep_commands
    from cxr.reporting.reproduce.profiles import PROFILES
    from cxr.reporting.tables import TABLES, table_by_name

    parser = argparse.ArgumentParser(
        prog="cxr-reproduce",
        description=cxr.reporting.reproduce.__doc__.splitlines()[0],
        epilog="Overrides after -- go to every job, e.g. -- hydra/launcher=slurm",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke", help="how big the runs are")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with chest_xray/ and rsna/, or one dataset folder itself (a Kermany train/ test/ "
        "folder or the RSNA challenge layout); smoke default: logs/reproduce/data, generated",
    )
    parser.add_argument(
        "--data-note",
        default="",
        help="what the data is, for every caption (DATA_NOTE=...): release, split, sizes",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: experiments/results/<profile>")
    parser.add_argument(
        "--tables",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"only these tables: {', '.join(t.name for t in TABLES)}",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="train nothing; build tables from what ran"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sweeps and the jobs' status, run nothing"
    )
    parser.add_argument(
        "--encoder-weights",
        type=Path,
        default=os.environ.get(ENCODER_WEIGHTS_ENV) or None,
        metavar="FILE",
        help="local ImageNet weights (timm state dict, .pth/.pt/.safetensors) of the encoder the profile "
        "runs, for the rows that start from them (the resolution table's 'ImageNet-pretrained encoder' "
        f"row); default ${ENCODER_WEIGHTS_ENV}. Without it those rows are not run (a gap). Nothing is "
        "downloaded. For every job: -- model.pretrained_path=FILE",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    profile = PROFILES[args.profile]
    tables = (
        [table_by_name(n) for n in args.tables]
        if args.tables
        else [t for t in TABLES if t.task in profile.tasks]
    )
    synthetic = profile.synthetic is not None
    data_root = args.data_root or (Path("logs/reproduce/data") if synthetic else None)
    if data_root is None:
        parser.error(f"--profile {profile.name} needs --data-root (DATA_ROOT=...) with chest_xray/ and rsna/")
    out = args.out or Path("experiments/results") / profile.name
    cache_dir = Path("logs/reproduce/cache") if synthetic else None
    runs_dir = out / "runs"
    command = f"make reproduce-tables PROFILE={profile.name}" + (
        f" DATA_ROOT={args.data_root}" if args.data_root else ""
    )
    if args.data_note:
        command += f' DATA_NOTE="{args.data_note}"'
    if args.encoder_weights:
        command = f"{ENCODER_WEIGHTS_ENV}={args.encoder_weights} {command}"

    start = time.perf_counter()

    if not args.dry_run and not args.tables_only:
        prepare_data(profile, data_root, {t.task for t in tables})
    try:
        jobs = plan(tables, profile, data_root, cache_dir, args.overrides, args.encoder_weights)
    except ValueError as err:
        parser.error(str(err))
    for table in tables:
        table_jobs = [j for j in jobs if j.table == table.name]
        status = [job_status(runs_dir / j.run_id) for j in table_jobs if not j.skip]
        pending = len(status) - status.count("finished")
        commands = sweep_commands(table, table_jobs)
        skipped = {j.row: j.skip for j in table_jobs if j.skip}
        print(
            f"[{table.name}] {len(table_jobs)} runs: {status.count('finished')} finished, "
            f"{status.count('interrupted')} interrupted (resumed), {status.count('new')} new"
            + (f", {len(table_jobs) - len(status)} not run" if skipped else ""),
            flush=True,
        )
        for row, reason in skipped.items():
            print(f"  {row}: {reason}", flush=True)
        for overrides in commands:
            if args.dry_run:
                print("  cxr-train -m " + " ".join(overrides))
            elif pending and not args.tables_only:
                t0 = time.perf_counter()
                code = launch(overrides, runs_dir, runs_dir / "logs" / f"{table.name}.log")
                note = (
                    ""
                    if code == 0
                    else f" — exit code {code}, see {runs_dir / 'logs' / (table.name + '.log')}"
                )
                print(f"  sweep done in {time.perf_counter() - t0:.0f} s{note}", flush=True)
    if args.dry_run:
        return
    written = write_outputs(tables, jobs, profile, out, data_root, command, cache_dir, args.data_note)
    missing = sum(bool(j.skip) or job_status(runs_dir / j.run_id) != "finished" for j in jobs)
    print(
        f"wrote {len(written)} files to {out} in {time.perf_counter() - start:.0f} s"
        + (f"; {missing} runs missing (gaps in the tables)" if missing else "")
    )


if __name__ == "__main__":
    main()
