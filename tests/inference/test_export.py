"""cxr-export: classifiers to ONNX, checked against PyTorch with ONNX Runtime."""

import json

import numpy as np
import pytest
import torch

from cxr.cli.export import main as export
from cxr.inference.export import export_onnx
from cxr.inference.members import load_member
from cxr.inference.postprocess import PostprocessSettings
from cxr.models import create_model
from cxr.tasks.checkpoint_format import FORMAT_VERSION

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*LeafSpec")


def _checkpoint(path, name, kwargs, task="ClassificationTask", labels="binary", threshold=0.5, size=32):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "epoch": 0,
            "hyper_parameters": {"threshold": threshold},
            "cxr": {
                "format_version": FORMAT_VERSION,
                "model_name": name,
                "model_kwargs": kwargs,
                "task": task,
                "datamodule": {"image_size": size, "mean": 0.5, "std": 0.25, "labels": labels},
            },
        },
        path,
    )
    return path


def _metadata(path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize(
    ("name", "kwargs", "labels"),
    [
        ("depthwise_cnn", {"widths": [8, 8, 8], "hidden": 8, "pool": "after", "head": "avgpool"}, "binary"),
        ("mobilenet", {"variant": "mobilenetv3_small_100", "num_classes": 3}, "three_class"),
    ],
)
def test_onnx_runtime_matches_pytorch(tmp_path, name, kwargs, labels):
    ort = pytest.importorskip("onnxruntime")
    ckpt = _checkpoint(tmp_path / "model.ckpt", name, kwargs, labels=labels)
    path = export_onnx(ckpt)
    assert path == tmp_path / "model.onnx"
    member = load_member(ckpt)
    images = torch.randn(
        3, 1, 32, 32, generator=torch.Generator().manual_seed(1)
    )  # another batch size than traced
    with torch.no_grad():
        logits = member.model(images)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits, probs = session.run(["logits", "probabilities"], {"image": images.numpy()})
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-4, rtol=1e-4)
    expected = torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    meta = _metadata(path)
    assert meta["cxr_image_size"] == "32" and meta["cxr_mean"] == "0.5" and meta["cxr_std"] == "0.25"
    assert json.loads(meta["cxr_class_names"]) == list(member.class_names)
    assert meta["cxr_decision_threshold"] == "0.5" and meta["cxr_model"] == name


def test_detectors_and_unknown_formats_are_refused(tmp_path, capsys):
    detector = {"encoder": "test_resnet", "image_size": 64, "fpn_channels": 16}
    ckpt = _checkpoint(tmp_path / "det.ckpt", "retinanet", detector, task="DetectionTask", size=64)
    with pytest.raises(SystemExit, match=r"det\.ckpt: cxr-export handles the classifiers .* detection model"):
        export(["--ckpt", str(ckpt)])
    for argv, message in (
        (["--ckpt", str(ckpt), "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
        ([], "the following arguments are required: --ckpt"),
    ):
        with pytest.raises(SystemExit) as info:
            export(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_trained_classifier_is_tuned_then_exported_with_its_threshold(tmp_path, ped_cxr_dir, capsys):
    from cxr.cli.train import run
    from cxr.cli.tune import main as tune
    from cxr.config.compose import compose

    run(
        compose(
            [
                f"datamodule.data_dir={ped_cxr_dir}",
                "datamodule.image_size=32",
                "datamodule.batch_size=8",
                "datamodule.num_workers=0",
                f"datamodule.cache_dir={tmp_path / 'cache'}",
                "model=depthwise_cnn",
                "model.widths=[8,8,8]",
                "model.hidden=8",
                "trainer=cpu",
                "trainer.max_epochs=1",
                "trainer.enable_progress_bar=false",
                "test=false",
            ],
            output_dir=tmp_path / "run",
        )
    )
    ckpt = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))
    tune(
        [
            *("--ckpt", str(ckpt)),
            *("--data-dir", str(ped_cxr_dir)),
            *("--cache-dir", str(tmp_path / "cache")),
            *("--target-recall", "1.0"),
        ]
    )
    settings = PostprocessSettings.load(tmp_path / "run" / "checkpoints" / "postprocess.json")
    assert settings.chosen_on["recall"] == 1.0 and settings.chosen_on["objective"] == "recall >= 1.0"
    export(["--ckpt", str(ckpt), "--out", str(tmp_path / "model.onnx")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "model.onnx")
    assert float(_metadata(tmp_path / "model.onnx")["cxr_decision_threshold"]) == settings.decision_threshold
