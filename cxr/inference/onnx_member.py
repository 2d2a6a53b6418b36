"""Running an exported classifier on ONNX Runtime (CPU): the fast deployable path of ``cxr-predict``.

:func:`make_session` holds the session options that measured fastest for the exported classifiers
(``make bench``, deploy section), and :class:`OnnxClassifier` runs a batch one image at a time,
one image per thread, which keeps each image's widest maps (256 × 100 × 100 floats, 10 MB, in
depthwise_cnn) in a core's cache between layers instead of streaming a whole batch's through memory
(depthwise_cnn about 1.3× faster than one batch on one session; plain_cnn, compute-bound, about the
same).
:func:`onnx_member` turns a PyTorch :class:`~cxr.inference.members.Member` into one whose model is
the checkpoint's ONNX export (:func:`cxr.inference.export.export_onnx`, made beside the checkpoint, or
in a temporary folder when that one is read-only, and reused while it matches the checkpoint's
SHA-256), run by ONNX Runtime. The export is checked against PyTorch when it is made, so both
backends give the same logits within ``atol``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cxr.inference.members import Member
from cxr.inference.postprocess.settings import file_sha256

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pytorch", "onnxruntime")


def onnxruntime_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` import (both are needed to export and to run)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_session(path: str | Path, threads: int | None = None, spinning: bool = False):
    """An ``onnxruntime.InferenceSession`` on the CPU with the tuned options: ``ORT_ENABLE_ALL`` (conv +
    ReLU fusion, the NCHWc blocked layout for conv and max-pool: 1.5× both classifiers over the basic
    level), sequential execution, ``threads`` intra-op threads and one inter-op thread, the memory
    arena and pattern kept (without both every run re-allocates hundreds of MB), and MLAS's assembly
    depthwise kernel rather than its sliding-window one (``mlas.nchwc_depthwise_sliding=0``: the same
    outputs, about 9% faster on depthwise_cnn's 256-channel depthwise conv).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: ``torch.get_num_threads()``, the cores PyTorch would use).
        spinning: worker threads spin between operators instead of sleeping: about 5% faster on an
            idle machine, slower where other work shares the cores (off by default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("mlas.nchwc_depthwise_sliding", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An exported classifier run by ONNX Runtime, called like the PyTorch network.

    ``forward``: float32 (B, C, S, S) normalised images (any memory format, any device: they are copied
    to a contiguous CPU array) -> logits float32 (B, num_classes) on the CPU, computed ``micro_batch``
    images per session call (each image is computed on its own, so the outputs do not depend on it).

    ``threads`` (None: ``torch.get_num_threads()``) are spent on images rather than inside each
    operator: as many single-threaded sessions, each running every ``threads``-th chunk of the batch
    in its own Python thread (ONNX Runtime releases the GIL), so that each core keeps its own image
    in its own cache and no operator waits for the other threads (depthwise_cnn about 1.1× faster
    than one session with ``threads`` threads). A batch of fewer chunks than threads runs on one
    session with ``threads`` intra-op threads instead.

    Inference only (no gradients). The module holds one empty parameter on the CPU so that code
    reading a model's device from its parameters (:attr:`Member.device`) finds the CPU.
    """

    def __init__(self, path: str | Path, threads: int | None = None, micro_batch: int = 1) -> None:
        super().__init__()
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.path = Path(path)
        self.threads = int(threads or torch.get_num_threads())
        self.micro_batch = int(micro_batch)
        self.sessions = [make_session(self.path, 1) for _ in range(self.threads)]
        self.wide = None  # one session with every thread, made for the first small batch
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.input_name = self.sessions[0].get_inputs()[0].name
        self.num_classes = int(self.sessions[0].get_outputs()[0].shape[1])
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def _run(self, session, chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [session.run(["logits"], {self.input_name: chunk})[0] for chunk in chunks]

    def forward(self, images: Tensor) -> Tensor:
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        step, n = self.micro_batch, self.threads
        chunks = [array[i : i + step] for i in range(0, len(array), step)]
        if not chunks:
            return torch.zeros(0, self.num_classes)
        if self.pool is None or len(chunks) < n:
            if self.wide is None:
                self.wide = self.sessions[0] if n == 1 else make_session(self.path, n)
            parts = self._run(self.wide, chunks)
        else:  # session k runs chunks k, k + n, k + 2n, ...
            done = list(self.pool.map(lambda k: self._run(self.sessions[k], chunks[k::n]), range(n)))
            parts = [done[i % n][i // n] for i in range(len(chunks))]
        return torch.from_numpy(np.concatenate(parts))


def _matches(onnx_path: Path, checksum: str) -> bool:
    """Whether ``onnx_path`` is this export version of the checkpoint with this SHA-256."""
    from cxr.inference.export import EXPORT_VERSION, read_metadata

    try:
        meta = read_metadata(onnx_path)
    except Exception:  # unreadable or foreign file: export again
        return False
    return meta.get("cxr_checkpoint_sha256") == checksum and meta.get("cxr_export_version") == EXPORT_VERSION


def ensure_export(checkpoint: str | Path, atol: float = 1e-4) -> Path:
    """The checkpoint's ONNX export: ``<checkpoint>.onnx`` beside it when that is this checkpoint's
    current export (or can be written there), else one in ``$TMPDIR/cxr-onnx``. Exports are checked
    against PyTorch within ``atol`` (:func:`cxr.inference.export.export_onnx`)."""
    from cxr.inference.export import export_onnx

    checkpoint = Path(checkpoint)
    checksum = file_sha256(checkpoint)
    beside = checkpoint.with_suffix(".onnx")
    cached = Path(tempfile.gettempdir()) / "cxr-onnx" / f"{checksum[:16]}.onnx"
    for candidate in (beside, cached):
        if candidate.is_file() and _matches(candidate, checksum):
            return candidate
    target = beside if os.access(beside.parent, os.W_OK) else cached
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s for ONNX Runtime", checkpoint, target)
    return export_onnx(checkpoint, target, atol=atol)


def select_backend(
    members: Sequence[Member], backend: str = "auto", overlays: bool = False, threads: int | None = None
) -> tuple[list[Member], str]:
    """The members to predict with and the backend that runs them (``"pytorch"`` or ``"onnxruntime"``).

    ``"auto"`` takes ONNX Runtime for classifiers on the CPU when onnx and onnxruntime are installed
    and no Grad-CAM ``overlays`` (which need PyTorch's gradients) are asked for, and falls back to
    PyTorch, with a warning, if a checkpoint cannot be exported; PyTorch otherwise (detectors, GPUs).

    Raises:
        ValueError: an unknown ``backend``, or ``"onnxruntime"`` for detectors, with overlays, or
            without onnxruntime installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    members = list(members)
    if backend == "pytorch":
        return members, backend
    why_not = (
        f"these are {members[0].task} checkpoints; ONNX Runtime runs classifiers"
        if members[0].task != "classification"
        else "overlays (Grad-CAM) need PyTorch's gradients"
        if overlays
        else "onnx and onnxruntime are not installed"
        if not onnxruntime_available()
        else None
    )
    if backend == "onnxruntime":
        if why_not:
            raise ValueError(f"--backend onnxruntime: {why_not}; use --backend pytorch")
        return [onnx_member(m, threads) for m in members], backend
    if why_not or any(m.device.type != "cpu" for m in members):
        return members, "pytorch"
    try:
        return [onnx_member(m, threads) for m in members], "onnxruntime"
    except Exception as err:  # an export that fails or does not match: PyTorch still predicts
        log.warning("ONNX Runtime backend unavailable (%s); predicting with PyTorch", err)
        return members, "pytorch"


def onnx_member(member: Member, threads: int | None = None) -> Member:
    """``member`` with its network replaced by its ONNX export on ONNX Runtime (CPU).

    Raises:
        ValueError: ``member`` is not a classifier (detectors stay on PyTorch).
    """
    if member.task != "classification":
        raise ValueError(
            f"{member.path}: the ONNX Runtime backend runs classifiers; this is a {member.task} model"
        )
    return dataclasses.replace(member, model=OnnxClassifier(ensure_export(member.path), threads))
