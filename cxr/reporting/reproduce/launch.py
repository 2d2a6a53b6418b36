"""Running ``cxr-reproduce``'s jobs: the data they need (synthetic or checked) and one
``cxr-train -m`` multirun process per sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cxr.reporting.reproduce.plan import data_dir
from cxr.reporting.reproduce.profiles import Profile


def launch(overrides: Sequence[str], runs_dir: Path, log_file: Path) -> int:
    """One ``cxr-train -m`` multirun whose jobs land in ``runs_dir/<run id>``; output goes to ``log_file``."""
    cmd = [
        sys.executable,
        "-m",
        "cxr.cli.train",
        "-m",
        *overrides,
        f"hydra.sweep.dir={runs_dir}",
        "hydra.sweep.subdir=${cxr_run_id:}",
        "++skip_finished=true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode


def prepare_data(profile: Profile, data_root: Path, tasks: set[str]) -> None:
    """Smoke: write the synthetic datasets once. Paper: check the datasets are there."""
    folders = {task: data_dir(data_root, task) for task in ("classification", "detection")}
    if profile.synthetic is None:
        missing = [str(folders[t]) for t in sorted(tasks) if not folders[t].is_dir()]
        if missing:
            raise SystemExit(
                f"cxr-reproduce: error: profile {profile.name} needs {' and '.join(missing)} "
                "(set DATA_ROOT=<folder with chest_xray/ and rsna/, or a dataset folder itself>)"
            )
        return
    from cxr.synth.ped_cxr import write_ped_cxr
    from cxr.synth.rsna import write_rsna

    if "classification" in tasks and not (folders["classification"] / "train").is_dir():
        write_ped_cxr(
            folders["classification"], n=profile.synthetic["ped_cxr"], seed=0, min_side=96, max_side=192
        )
    if "detection" in tasks and not (folders["detection"] / "stage_2_train_labels.csv").is_file():
        write_rsna(
            folders["detection"],
            n=profile.synthetic["rsna"],
            seed=0,
            size=profile.synthetic["rsna_size"],
            n_test=0,
        )
