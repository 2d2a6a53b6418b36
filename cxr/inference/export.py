"""``cxr-export``: a trained classifier as an ONNX file for small devices (the depthwise CNN and
MobileNet exist for them).

The graph takes ``image`` float32 (B, in_chans, S, S), normalised as in training (``(pixel / 255 -
mean) / std``), with a free batch size, and returns ``logits`` (B, num_classes) and
``probabilities``: sigmoid of the one logit (B, 1) = p(pneumonia) for binary models, softmax (B, C)
otherwise. The file's metadata (``onnx.ModelProto.metadata_props``) holds what a device needs:
image size, mean, std, class names, decision threshold, model name and the source checkpoint (name
and SHA-256), and the rewrites applied.

What is exported is the network's deployable form (:func:`cxr.inference.onnx_form.deploy_form`):
BatchNorm folded into the convolutions and other exact rewrites that change how the network runs,
never what it computes; each is verified on a random input before it is kept. When onnxruntime is
installed the file is checked against the PyTorch network as trained (logits and probabilities
within ``atol``). :func:`export_model` exports any classifier ``nn.Module`` the same way (the bench
uses it). The command line is :mod:`cxr.cli.export`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from cxr.inference.members import Member, load_member
from cxr.inference.postprocess.settings import applicable_settings, file_sha256

log = logging.getLogger(__name__)
FORMATS = ("onnx",)
# Bumped when what an export contains changes: cxr-predict re-exports files of another version.
EXPORT_VERSION = "2"


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
        "cxr_checkpoint_sha256": file_sha256(member.path),
    }


def compare_onnx(path: str | Path, model: nn.Module, example: torch.Tensor) -> float | None:
    """Largest absolute difference between ONNX Runtime and PyTorch logits and probabilities on
    ``example``, or None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(["logits", "probabilities"], {"image": example.numpy()})
    with torch.no_grad():
        expected = _WithProbabilities(model.eval())(example)
    return max(float(abs(o - e.numpy()).max()) for o, e in zip(outputs, expected, strict=True))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_model(
    model: nn.Module,
    out: str | Path,
    example: torch.Tensor,
    opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export a classifier ``model`` ((B, C, S, S) -> logits (B, K)) in its deployable form to ONNX.

    ``example``: a float32 input (B, C, S, S) of the size to export (the batch axis stays free); the
    rewrites are verified on it. The file gets ``metadata`` plus ``cxr_rewrites`` (those kept) and
    ``cxr_export_version``, and is written atomically (a temporary file renamed into place). Returns
    ``out``.
    """
    import onnx

    from cxr.inference.onnx_form import deploy_form

    out = Path(out)
    deployed, rewrites = deploy_form(model, example)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        # no onnxscript here, so the TorchScript exporter: it warns about its deprecation and about
        # the models' input-size checks, which tracing fixes for the exported size
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _WithProbabilities(deployed).eval(),
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=["logits", "probabilities"],
            opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    proto = onnx.load(str(tmp))
    meta = {**(metadata or {}), "cxr_rewrites": json.dumps(rewrites), "cxr_export_version": EXPORT_VERSION}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    return out


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
    threshold = decision_threshold
    # as cxr-predict would use it: postprocess.json tuned on this checkpoint, else the task's
    if threshold is None:
        tuned, _ = applicable_settings([member.path])
        threshold = tuned.decision_threshold if tuned is not None else None
        threshold = member.decision_threshold if threshold is None else threshold
    export_model(member.model, out, example, opset, _metadata(member, threshold))
    if check:
        diff = compare_onnx(out, member.model, example)
        if diff is None:
            log.warning("onnxruntime is not installed: %s was not checked against PyTorch", out)
        elif diff > atol:
            out.unlink()
            raise ValueError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> atol {atol:g})")
        else:
            log.info("ONNX Runtime matches PyTorch within %.1e (max |difference| %.1e)", atol, diff)
    return out
