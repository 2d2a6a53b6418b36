"""Config errors: one line naming the key, the problem and what is valid, before any data is read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cxr.data.cache as cache
from cxr.cli.train import run
from cxr.config.compose import CONFIG_DIR, compose
from cxr.config.validate import (
    ConfigError,
    check_overrides,
    check_run_folder,
    config_changes,
    validate_config,
)

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def no_data_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode images fails the test: config errors must come first."""

    import cxr.data.ped_cxr
    import cxr.data.rsna

    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the config was checked")

    # every name the datamodules call it by (imported first: a module imported while this patch is
    # in place would keep the refusing function for good)
    for module in (cache, cxr.data.ped_cxr, cxr.data.rsna):
        monkeypatch.setattr(module, "build_cache", refuse)


# --- the command line ---------------------------------------------------------------------------


def test_unknown_model_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(["model=vgg16"])
    assert _one_line(err) == f"model=vgg16: no such config; valid: {', '.join(MODELS)}"
    with pytest.raises(ConfigError, match=r"^model=plain_cn: no such config \(did you mean 'plain_cnn'\?\)"):
        check_overrides(["model=plain_cn"])


def test_every_value_of_a_sweep_is_checked() -> None:
    check_overrides(["-m", f"model={','.join(MODELS)}"])
    with pytest.raises(
        ConfigError, match=r"^model=depthwise_cn: no such config \(did you mean 'depthwise_cnn'\?\)"
    ):
        check_overrides(["-m", "model=plain_cnn,depthwise_cn"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "datamodule.batchsize=4",
            "datamodule.batchsize: no such key (did you mean 'batch_size'?); keys of datamodule: ",
        ),
        (
            "trainer.max_epoch=3",
            "trainer.max_epoch: no such key (did you mean 'max_epochs'?); keys of trainer: ",
        ),
        (
            "task.optimizer.learning_rate=0.1",
            "task.optimizer.learning_rate: no such key; keys of task.optimizer: lr",
        ),
        (
            "task.optimizer.weight_decay=0.1",
            "task.optimizer.weight_decay: torch.optim.Adam takes it, but the config leaves it at its "
            "default (0); set it with +task.optimizer.weight_decay=<value>",
        ),
        ("seed.value=1", "seed.value: seed is a single value, not a group of keys"),
    ],
)
def test_a_typo_in_a_key_names_the_nearest_valid_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert _one_line(err).startswith(expected)


def test_a_typo_below_another_group_choice_is_checked_against_that_choice() -> None:
    with pytest.raises(
        ConfigError, match=r"^augment\.affine\.scale_sigm: no such key \(did you mean 'scale_sigma'\?\)"
    ):
        check_overrides(["augment=light", "augment.affine.scale_sigm=0.1"])
    check_overrides(
        ["augment=light", "augment.affine.scale_sigma=0.2", "hydra.run.dir=/somewhere", "-m", "seed=0,1"]
    )


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cxr.cli.train", "datamodule.batchsize=4"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "cxr-train: error: datamodule.batchsize: no such key (did you mean 'batch_size'?); keys of datamodule: "
        "batch_size, cache_dir, data_dir, image_size, labels, mean, num_workers, pin_memory, sampler, seed, split, "
        "std, strict, val_fraction"
    ]
    assert not (tmp_path / "logs").exists()  # stopped before Hydra made a run folder


def test_cli_missing_data_folder_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no such data"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxr.cli.train",
            f"datamodule.data_dir='{missing}'",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cxr-train: error: datamodule.data_dir={missing} does not exist")
    assert "expected layout: <data_dir>/train/NORMAL/*.jpeg" in last and "Traceback" not in done.stderr


# --- the composed config ------------------------------------------------------------------------


def _cfg(tmp_path: Path, data_dir: Path, *overrides: str):
    return compose(
        [f"datamodule.data_dir={data_dir}", f"datamodule.cache_dir={tmp_path / 'cache'}", *overrides],
        output_dir=tmp_path / "run",
    )


def test_missing_data_path_names_path_and_layout_before_reading(tmp_path: Path, no_data_reads) -> None:
    with pytest.raises(ConfigError) as err:
        run(_cfg(tmp_path, tmp_path / "chest_xray"))
    text = _one_line(err)
    assert text.startswith(f"datamodule.data_dir={tmp_path / 'chest_xray'} does not exist")
    assert "expected layout: <data_dir>/train/NORMAL/*.jpeg, <data_dir>/train/PNEUMONIA/*.jpeg" in text
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"data_dir=.*rsna does not exist.*stage_2_train_labels\.csv"):
        run(
            compose(
                ["datamodule=rsna", f"datamodule.data_dir={tmp_path / 'rsna'}"], output_dir=tmp_path / "run"
            )
        )


def test_a_key_the_class_does_not_take_is_named_with_the_valid_ones(
    ped_cxr_dir: Path, tmp_path: Path, no_data_reads
) -> None:
    with pytest.raises(ConfigError) as err:
        run(_cfg(tmp_path, ped_cxr_dir, "+datamodule.batchsize=4"))
    assert _one_line(err).startswith(
        "datamodule.batchsize: is not an argument of "
        "cxr.data.ped_cxr.PedChestXrayDataModule (did you mean 'batch_size'?); "
        "valid keys: batch_size, cache_dir, data_dir,"
    )
    with pytest.raises(ConfigError, match=r"^model\.widht: is not an argument of cxr\.models\.PlainCNN"):
        validate_config(_cfg(tmp_path, ped_cxr_dir, "+model.widht=3"))
    with pytest.raises(
        ConfigError,
        match=r"^task\.optimizer\.betas2: is not an argument of torch\.optim\.Adam "
        r"\(did you mean 'betas'\?\)",
    ):
        validate_config(_cfg(tmp_path, ped_cxr_dir, "+task.optimizer.betas2=0.9"))
    with pytest.raises(ConfigError, match=r"^task\.model: is set by cxr-train itself"):
        validate_config(_cfg(tmp_path, ped_cxr_dir, "+task.model=x"))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            ["model._target_=cxr.models.PlainCnn"],
            r"^model\._target_: cannot import 'cxr\.models\.PlainCnn' \(cxr\.models "
            r"has no 'PlainCnn' \(did you mean 'PlainCNN'\?\)\)$",
        ),
        (
            ["~datamodule.data_dir"],
            r"^datamodule: .*PedChestXrayDataModule needs data_dir, which the config does not set$",
        ),
        (
            ["datamodule.labels=three_class", "model.num_classes=1"],
            r"^model\.num_classes=1 does not fit datamodule\.labels=three_class, "
            r"which needs 3 \(leave model\.num_classes out: the labels set it\)$",
        ),
        (["model.in_chans=3"], r"^model\.in_chans=3: the datamodules give 1-channel"),
        (
            ["callbacks.nonfinite.mode=halt"],
            r"^callbacks\.nonfinite\.mode=halt: not a mode; valid: stop, skip, off$",
        ),
        (
            ["datamodule.std=0"],
            r"^datamodule\.std=0: the normalisation divides by it; use a positive number$",
        ),
        (
            ["+augment.flip._target_=albumentations.HorizontalFlip", "+augment.flip.q=1"],
            r"^augment\.flip: Argument\(s\) 'q' are not valid",
        ),
        (
            ["ckpt_path=/nowhere/model.ckpt"],
            r"^ckpt_path=/nowhere/model\.ckpt: no such file; use a checkpoint file, "
            r"'last'",
        ),
    ],
)
def test_config_problems_are_one_line(
    overrides: list[str], pattern: str, ped_cxr_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        validate_config(_cfg(tmp_path, ped_cxr_dir, *overrides))
    _one_line(err)


def test_every_shipped_config_group_option_validates(
    ped_cxr_dir: Path, rsna_dir: Path, tmp_path: Path
) -> None:
    for group in ("model", "augment", "trainer", "logger", "callbacks"):
        for name in sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")):
            if group == "model" and name == "retinanet":
                continue  # a detector: validated with the RSNA datamodule below
            validate_config(_cfg(tmp_path, ped_cxr_dir, f"{group}={name}"))
    if (CONFIG_DIR / "model" / "retinanet.yaml").exists() and (
        CONFIG_DIR / "task" / "detection.yaml"
    ).exists():
        validate_config(_cfg(tmp_path, rsna_dir, "datamodule=rsna", "model=retinanet", "task=detection"))


def test_config_changes_ignore_what_a_resume_may_change() -> None:
    old = {
        "seed": 0,
        "ckpt_path": None,
        "trainer": {"max_epochs": 5, "precision": "32-true"},
        "task": {"optimizer": {"lr": 1e-4}},
        "paths": {"output_dir": "/a"},
        "datamodule": {"num_workers": 2},
    }
    new = {
        "seed": 0,
        "ckpt_path": "last",
        "trainer": {"max_epochs": 9, "precision": "32-true"},
        "task": {"optimizer": {"lr": 3e-3}},
        "paths": {"output_dir": "/b"},
        "datamodule": {"num_workers": 0},
        "callbacks": {"nonfinite": {"mode": "skip"}},
    }
    assert config_changes(old, new) == ["task.optimizer.lr: 0.0001 -> 0.003"]
    assert config_changes(old, old) == []


# --- issue 14, item 10: values, pairings and folders ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs=abc: expected a whole number"),
        (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5: expected a whole number"),
        (["seed=abc"], "seed=abc: expected a whole number"),
        (["task.optimizer.lr=fast"], "task.optimizer.lr=fast: expected a number"),
        (
            ["model=retinanet"],
            "model=retinanet is a detector, but task=classification needs a classifier; classification "
            "runs use datamodule=ped_cxr task=classification and a classifier (plain_cnn, depthwise_cnn, "
            "mobilenet)",
        ),
        (
            ["task=detection"],
            "model=plain_cnn is a classifier, but task=detection needs a detector; detection runs use "
            "datamodule=rsna model=retinanet task=detection",
        ),
    ],
)
def test_wrong_values_and_pairings_are_one_line_before_any_data_is_read(
    overrides: list[str], expected: str, ped_cxr_dir: Path, tmp_path: Path, no_data_reads
) -> None:
    with pytest.raises(ConfigError) as err:
        run(_cfg(tmp_path, ped_cxr_dir, *overrides))
    assert _one_line(err) == expected
    assert not (tmp_path / "run").exists()


def test_detection_data_with_a_classification_task_is_refused_before_any_data_is_read(
    rsna_dir: Path, tmp_path: Path, no_data_reads
) -> None:
    with pytest.raises(ConfigError) as err:
        run(_cfg(tmp_path, rsna_dir, "datamodule=rsna", "model=plain_cnn"))
    assert _one_line(err).startswith(
        "datamodule=rsna is detection data (boxes), but task=classification needs classification data"
    )


def test_a_run_folder_that_is_a_file_or_under_one_is_refused(ped_cxr_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for folder, expected in (
        (blocker, f"paths.output_dir={blocker}: is an existing file, not a folder"),
        (blocker / "run", f"paths.output_dir={blocker / 'run'}: {blocker} is a file, not a folder"),
    ):
        cfg = compose([f"datamodule.data_dir={ped_cxr_dir}"], output_dir=folder)
        with pytest.raises(ConfigError) as err:
            run(cfg)
        assert _one_line(err) == expected
    # the command line: before Hydra makes the folder (its own error would be a traceback)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxr.cli.train",
            f"datamodule.data_dir={ped_cxr_dir}",
            f"hydra.run.dir={blocker}/run",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"cxr-train: error: hydra.run.dir={blocker}/run: {blocker} is a file, not a folder"
    )
    assert blocker.read_text() == "x"
    # a sweep's folder, composed from the first value of each swept key
    with pytest.raises(ConfigError) as err:
        check_run_folder(
            ["-m", f"datamodule.data_dir={ped_cxr_dir}", "seed=0,1", f"hydra.sweep.dir={blocker}/sweep"]
        )
    assert _one_line(err) == f"hydra.sweep.dir={blocker}/sweep: {blocker} is a file, not a folder"


def test_cli_data_problem_found_while_training_is_one_line(tmp_path: Path, ped_cxr_dir: Path) -> None:
    """A problem of the data that only the datamodule sees (a byte-identical train and test image under
    strict=true) stops cxr-train with one line naming it, not a traceback."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ped_cxr_dir, data)
    leaked = next((data / "train" / "NORMAL").iterdir())
    shutil.copy(leaked, data / "test" / "NORMAL" / f"copy-{leaked.name}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxr.cli.train",
            f"datamodule.data_dir={data}",
            "datamodule.strict=true",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "trainer=cpu",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("cxr-train: error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr[-2000:]
    assert leaked.name in errors[0] and "Traceback" not in done.stderr
