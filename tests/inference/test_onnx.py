"""The deployable ONNX path: exact rewrites, the exported file on ONNX Runtime, the cached export that
cxr-predict runs."""

import inspect
import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from cxr.inference import onnx_form
from cxr.inference.members import classify, load_member
from cxr.inference.onnx_form import PoolThenPointwise, deploy_form, max_difference
from cxr.models import MODELS, create_model
from cxr.tasks.checkpoint_format import FORMAT_VERSION

SIZE = 32


def _model(name: str, **kwargs) -> nn.Module:
    """A small classifier with BatchNorm statistics far from the identity (so folding matters)."""
    kwargs = {"widths": [8, 8, 8], "hidden": 8, **kwargs}
    if "image_size" in inspect.signature(MODELS[name]).parameters:
        kwargs["image_size"] = SIZE
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))  # both signs: both pooling branches
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model, kwargs


def _images(n: int = 3, chans: int = 1, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, chans, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["plain_cnn", "depthwise_cnn"])
def test_deploy_form_computes_what_the_network_computes(name):
    model, _ = _model(name)
    deployed, kept = deploy_form(model, _images(2))
    assert "fold_bn" in kept or name == "plain_cnn"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    with torch.no_grad():
        assert max_difference(model(_images(5, seed=3)), deployed(_images(5, seed=3))) < 1e-5


def test_one_channel_pointwise_runs_after_the_pool_and_only_there():
    model, _ = _model("depthwise_cnn")
    deployed, kept = deploy_form(model, _images(2))
    rewritten = [m for m in deployed.modules() if isinstance(m, PoolThenPointwise)]
    assert "scalar_pointwise_pool" in kept and len(rewritten) == 1  # the first stage: 1 input channel
    assert rewritten[0].pointwise.in_channels == 2 and rewritten[0].pointwise.out_channels == 8
    rgb, _ = _model("depthwise_cnn", in_chans=3)  # 3 input channels: not a scalar map, left alone
    deployed, kept = deploy_form(rgb, _images(2, chans=3))
    assert "scalar_pointwise_pool" not in kept
    assert not any(isinstance(m, PoolThenPointwise) for m in deployed.modules())


def test_a_rewrite_that_changes_the_output_is_skipped(monkeypatch, caplog):
    def drop_relu(chain):  # not exact: must never reach an export
        return [m for m in chain if not isinstance(m, nn.ReLU)]

    monkeypatch.setitem(onnx_form.REWRITES, "drop_relu", drop_relu)
    model, _ = _model("plain_cnn")
    with caplog.at_level(logging.WARNING, logger="cxr.inference.onnx_form"):
        deployed, kept = deploy_form(model, _images(2))
    assert "drop_relu" not in kept and "rewrite drop_relu changes the output" in caplog.text
    assert any(isinstance(m, nn.ReLU) for m in deployed.modules())
    with pytest.raises(ValueError, match="unknown rewrite"):
        deploy_form(model, _images(2), rewrites=["fold_everything"])


@pytest.mark.parametrize("name", ["plain_cnn", "depthwise_cnn"])
def test_exported_model_on_onnx_runtime_matches_pytorch(tmp_path, name):
    pytest.importorskip("onnxruntime")
    from cxr.inference.export import export_model, read_metadata
    from cxr.inference.onnx_member import make_session

    model, _ = _model(name)
    path = export_model(model, tmp_path / "m.onnx", _images(2))
    session = make_session(path, threads=1)
    images = _images(5, seed=4)  # another batch size than traced
    logits, probs = session.run(["logits", "probabilities"], {"image": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(probs, torch.sigmoid(expected).numpy(), atol=1e-5)
    assert "fold_bn" in read_metadata(path)["cxr_rewrites"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def _checkpoint(path, name="depthwise_cnn"):
    model, kwargs = _model(name)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "epoch": 0,
            "hyper_parameters": {"threshold": 0.5},
            "cxr": {
                "format_version": FORMAT_VERSION,
                "model_name": name,
                "model_kwargs": kwargs,
                "task": "ClassificationTask",
                "datamodule": {"image_size": SIZE, "mean": 0.5, "std": 0.25, "labels": "binary"},
            },
        },
        path,
    )
    return path


def test_onnx_member_predicts_as_the_pytorch_member(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxr.inference.onnx_member import OnnxClassifier, onnx_member

    ckpt = _checkpoint(tmp_path / "model.ckpt")
    member = load_member(ckpt)
    fast = onnx_member(member, threads=1)
    assert isinstance(fast.model, OnnxClassifier) and fast.device == torch.device("cpu")
    assert fast.model.path == tmp_path / "model.onnx"
    images = _images(4, seed=5)
    torch.testing.assert_close(classify(fast, images), classify(member, images), atol=1e-4, rtol=0)


def test_the_export_is_reused_until_the_checkpoint_changes(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxr.inference.onnx_member import ensure_export

    ckpt = _checkpoint(tmp_path / "model.ckpt")
    first = ensure_export(ckpt)
    os.utime(first, (1, 1))  # an old stamp: reuse must not depend on file times
    assert ensure_export(ckpt) == first and first.stat().st_mtime == 1
    _checkpoint(ckpt, "plain_cnn")  # other weights, same file name
    assert ensure_export(ckpt) == first and first.stat().st_mtime > 1


def test_a_read_only_checkpoint_folder_exports_to_a_temporary_folder(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from cxr.inference import onnx_member

    ckpt = _checkpoint(tmp_path / "model.ckpt")
    monkeypatch.setattr(onnx_member.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setattr(onnx_member.os, "access", lambda path, mode: False)
    path = onnx_member.ensure_export(ckpt)
    assert path.parent == tmp_path / "tmp" / "cxr-onnx" and not (tmp_path / "model.onnx").exists()


def test_detectors_stay_on_pytorch(tmp_path):
    from cxr.inference.onnx_member import onnx_member

    member = load_member(_checkpoint(tmp_path / "model.ckpt"))
    member.task = "detection"
    with pytest.raises(ValueError, match=r"model\.ckpt: the ONNX Runtime backend runs classifiers"):
        onnx_member(member)


def test_auto_backend_takes_onnx_runtime_for_classifiers_on_the_cpu_only(tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    from cxr.inference import onnx_member
    from cxr.inference.onnx_member import OnnxClassifier, select_backend

    members = [load_member(_checkpoint(tmp_path / "model.ckpt"))]
    fast, used = select_backend(members, "auto")
    assert used == "onnxruntime" and isinstance(fast[0].model, OnnxClassifier)
    assert select_backend(members, "auto", overlays=True)[1] == "pytorch"  # Grad-CAM needs gradients
    assert select_backend(members, "pytorch")[0] == members
    with pytest.raises(ValueError, match="--backend onnxruntime: overlays"):
        select_backend(members, "onnxruntime", overlays=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend(members, "tensorrt")

    def broken(checkpoint, atol=1e-4):
        raise ValueError("export differs")

    monkeypatch.setattr(onnx_member, "ensure_export", broken)
    with caplog.at_level(logging.WARNING, logger="cxr.inference.onnx_member"):
        assert select_backend(members, "auto")[1] == "pytorch"  # falls back, saying why
    assert "export differs" in caplog.text
    monkeypatch.setattr(onnx_member, "onnxruntime_available", lambda: False)
    assert select_backend(members, "auto")[1] == "pytorch"
    with pytest.raises(ValueError, match="onnxruntime are not installed"):
        select_backend(members, "onnxruntime")


def test_cxr_predict_backends_give_the_same_predictions(tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    import pandas as pd
    from PIL import Image

    from cxr.cli.predict import main as predict
    from cxr.synth.phantom import chest_phantom

    ckpt = _checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(chest_phantom(rng, 60 + 8 * i, 72)).save(tmp_path / "in" / f"img{i}.png")
    tables = {}
    for backend in ("pytorch", "onnxruntime", "auto"):
        out = tmp_path / backend
        predict(
            ["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(out), "--backend", backend]
        )
        tables[backend] = pd.read_csv(out / "predictions.csv").sort_values("file")
        used = json.loads((out / "settings.json").read_text())["backend"]
        assert used == ("onnxruntime" if backend == "auto" else backend)  # auto: ONNX Runtime on the CPU
    for backend in ("onnxruntime", "auto"):
        np.testing.assert_allclose(
            tables[backend]["probability"], tables["pytorch"]["probability"], atol=1e-4
        )
        assert (tables[backend]["label"] == tables["pytorch"]["label"]).all()


def test_onnx_classifier_gives_the_same_logits_however_it_splits_the_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxr.inference.export import export_model
    from cxr.inference.onnx_member import OnnxClassifier

    model, _ = _model("depthwise_cnn")
    path = export_model(model, tmp_path / "m.onnx", _images(2))
    images = _images(5, seed=6)
    with torch.no_grad():
        expected = model(images)
    for threads, micro in ((1, 1), (1, 8), (2, 1), (3, 2)):  # (3, 2): 3 chunks on 3 sessions, in order
        logits = OnnxClassifier(path, threads, micro_batch=micro)(images)
        assert logits.shape == (5, 1) and torch.allclose(logits, expected, atol=1e-5), (threads, micro)
    two = OnnxClassifier(path, 2)
    assert torch.allclose(two(images[:1]), expected[:1], atol=1e-5)  # fewer images than threads
    assert two(images[:0]).shape == (0, 1)
    with pytest.raises(ValueError, match="micro_batch"):
        OnnxClassifier(path, 1, micro_batch=0)
