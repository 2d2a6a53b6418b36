"""Checkpoints never unpickle arbitrary objects; tampered or truncated files fail with one clear line."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
import torch
from torch import nn

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.config.validate import ConfigError
from cxr.data.resumable import EpochSampler, ResumableLoader
from cxr.inference.checkpoint import CheckpointError, load_model, read_checkpoint
from cxr.tasks.callbacks.nonfinite import NonFiniteGuard
from cxr.tasks.callbacks.resume import ResumeCheckpoint

PACKAGE = Path(__file__).resolve().parents[2] / "cxr"


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _tampered(path: Path, marker: Path) -> Path:
    torch.save(
        {
            "state_dict": {"model.weight": torch.zeros(2)},
            "cxr": {"model_name": "plain_cnn"},
            "hyper_parameters": _Payload(marker),
        },
        path,
    )
    return path


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _tampered(tmp_path / "model.ckpt", marker)
    for load in (read_checkpoint, load_model):
        with pytest.raises(CheckpointError) as err:
            load(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{path}: refused to load")
        assert "may be tampered with" in text and "GLOBAL" in text and "open" in text
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"state_dict": {"model.w": torch.arange(1000.0)}}, buf)
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(
        CheckpointError, match=r"cut\.ckpt: not a loadable checkpoint, truncated or corrupt \("
    ) as err:
        read_checkpoint(truncated)
    assert "\n" not in str(err.value)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: not a loadable checkpoint"):
        read_checkpoint(tmp_path / "empty.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt: no 'state_dict'"):
        read_checkpoint(tmp_path / "foreign.ckpt")


def test_cxr_train_refuses_a_tampered_checkpoint_before_reading_data(
    ped_cxr_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = _tampered(tmp_path / "evil.ckpt", marker)
    base = [f"datamodule.data_dir={ped_cxr_dir}", f"datamodule.cache_dir={tmp_path / 'cache'}", "trainer=cpu"]
    with pytest.raises(ConfigError, match=r"^ckpt_path: .*evil\.ckpt: refused to load"):
        run(compose([*base, f"ckpt_path={evil}"], output_dir=tmp_path / "a"))
    # the same file as the run folder's resume point (ckpt_path=last, the default)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    _tampered(tmp_path / "b" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(
        ConfigError, match=r"^ckpt_path: .*last\.ckpt: refused to load.*remove it to start over"
    ):
        run(compose(base, output_dir=tmp_path / "b"))
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_resume_state_of_our_callbacks_and_loader_loads_weights_only(tmp_path: Path) -> None:
    loader = ResumableLoader(
        torch.utils.data.TensorDataset(torch.zeros(10)), EpochSampler(10, seed=0), batch_size=3
    )
    state = {
        "callbacks": {
            "ResumeCheckpoint": ResumeCheckpoint(tmp_path).state_dict(),
            "NonFiniteGuard": NonFiniteGuard("skip").state_dict(),
        },
        "loops": {"fit_loop": {"state_dict": {"combined_loader": [loader.state_dict()]}}},
        "state_dict": nn.Linear(2, 2).state_dict(),
    }
    torch.save(state, tmp_path / "last.ckpt")
    back = read_checkpoint(tmp_path / "last.ckpt")  # weights_only=True
    assert back["loops"] == state["loops"]
    assert torch.equal(
        back["callbacks"]["ResumeCheckpoint"]["rng"]["torch"],
        state["callbacks"]["ResumeCheckpoint"]["rng"]["torch"],
    )


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield f"{owner}.{name}" if owner else name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_no_code_path_unpickles_untrusted_files() -> None:
    """Every torch.load in the package passes weights_only=True; no pickle/joblib loads, no allow_pickle."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, keywords, line in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            flag = keywords.get("weights_only")
            if name == "torch.load" and not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load"):
                problems.append(f"{where}: {name}")
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                problems.append(f"{where}: allow_pickle")
            is_trainer_call = (
                name.endswith((".fit", ".test", ".validate", ".predict")) and "ckpt_path" in keywords
            )
            if is_trainer_call and not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: {name}(ckpt_path=...) without weights_only=True")
    assert not problems, problems


def test_refusals_never_pass_on_torchs_advice_to_load_unsafely(ped_cxr_dir: Path, tmp_path: Path) -> None:
    """A pickled checkpoint or ``pretrained_path`` is one line naming the object; torch's advice to
    retry with ``weights_only=False`` (or to allow-list the object) is not repeated."""
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(_tampered(tmp_path / "model.ckpt", marker))
    torch.save({"stem.weight": torch.zeros(1), "extra": _Payload(marker)}, tmp_path / "weights.pth")
    base = [f"datamodule.data_dir={ped_cxr_dir}", f"datamodule.cache_dir={tmp_path / 'cache'}", "trainer=cpu"]
    with pytest.raises(ConfigError) as train_err:
        run(
            compose(
                [*base, "model=mobilenet", f"model.pretrained_path={tmp_path / 'weights.pth'}"],
                output_dir=tmp_path / "run",
            )
        )
    pretrained = str(train_err.value)
    assert (
        pretrained.startswith(f"model: {tmp_path / 'weights.pth'}: refused to load")
        and "GLOBAL" in pretrained
    )
    for text in (str(err.value), pretrained):
        assert "\n" not in text
        assert "weights_only" not in text and "safe_globals" not in text and "trust" not in text
    assert not marker.exists() and not (tmp_path / "cache").exists()
