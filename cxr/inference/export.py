"""``cxr-export``: a trained classifier as an ONNX file for small devices (the depthwise CNN and
MobileNet exist for them).

The graph takes ``image`` float32 (B, in_chans, S, S), normalised as in training (``(pixel / 255 -
mean) / std``), with a free batch size, and returns ``logits`` (B, num_classes) and
``probabilities``: sigmoid of the one logit (B, 1) = p(pneumonia) for binary models, softmax (B, C)
otherwise. The file's metadata (``onnx.ModelProto.metadata_props``) holds what a device needs:
image size, mean, std, class names, decision threshold, model name and the source checkpoint.
When onnxruntime is installed the export is checked against PyTorch on random inputs. The command
line is :mod:`cxr.cli.export`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from cxr.inference.members import Member, load_member
from cxr.inference.postprocess.settings import applicable_settings

log = logging.getLogger(__name__)
FORMATS = ("onnx",)


class _WithProbabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image)
        return logits, torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)


def _metadata(member: Member, threshold: float | None) -> dict[str, str]:
    return {
        "cxr_model": member.meta["model_name"],
        "cxr_image_size": str(member.image_size),
        "cxr_mean": str(member.mean),
        "cxr_std": str(member.std),
        "cxr_class_names": json.dumps(list(member.class_names)),
        "cxr_decision_threshold": "" if threshold is None else str(threshold),
        "cxr_input": "image float32 (B, C, S, S): (pixel / 255 - mean) / std",
        "cxr_checkpoint": member.path.name,
    }


def compare_onnx(path: str | Path, model: nn.Module, example: torch.Tensor) -> float | None:
    """Largest absolute difference between ONNX Runtime and PyTorch probabilities on ``example``,
    or None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(["probabilities"], {"image": example.numpy()})[0]
    with torch.no_grad():
        torch_probs = _WithProbabilities(model)(example)[1].numpy()
    return float(abs(onnx_probs - torch_probs).max())


def export_onnx(
    checkpoint: str | Path,
    out: str | Path | None = None,
    opset: int = 17,
    check: bool = True,
    atol: float = 1e-4,
    decision_threshold: float | None = None,
) -> Path:
    """Export a classifier checkpoint to ONNX and return the file's path.

    Raises:
        ValueError: the checkpoint is a detector, or ONNX Runtime's output differs from PyTorch's by
            more than ``atol``.
    """
    import onnx

    member = load_member(checkpoint, "cpu", optimise=False)  # the network as trained
    if member.task != "classification":
        raise ValueError(
            f"{member.path}: cxr-export handles the classifiers (plain_cnn, depthwise_cnn, mobilenet); "
            f"this is a {member.task} model ({member.meta['model_name']})"
        )
    out = Path(out) if out is not None else member.path.with_suffix(".onnx")
    in_chans = int(member.meta["model_kwargs"].get("in_chans", 1))
    example = torch.randn(
        2, in_chans, member.image_size, member.image_size, generator=torch.Generator().manual_seed(0)
    )
    with warnings.catch_warnings():
        # no onnxscript here, so the TorchScript exporter: it warns about its deprecation and about
        # the models' input-size checks, which tracing fixes for the exported size
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _WithProbabilities(member.model).eval(),
            (example,),
            str(out),
            dynamo=False,
            input_names=["image"],
            output_names=["logits", "probabilities"],
            opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    proto = onnx.load(str(out))
    threshold = decision_threshold
    # as cxr-predict would use it: postprocess.json tuned on this checkpoint, else the task's
    if threshold is None:
        tuned, _ = applicable_settings([member.path])
        threshold = tuned.decision_threshold if tuned is not None else None
        threshold = member.decision_threshold if threshold is None else threshold
    for key, value in _metadata(member, threshold).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    if check:
        diff = compare_onnx(out, member.model, example)
        if diff is None:
            log.warning("onnxruntime is not installed: %s was not checked against PyTorch", out)
        elif diff > atol:
            raise ValueError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> atol {atol:g})")
        else:
            log.info("ONNX Runtime matches PyTorch within %.1e (max |difference| %.1e)", atol, diff)
    return out
