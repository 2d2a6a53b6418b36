"""Parameter and FLOP counts of the registered models; ``cxr-models`` (:mod:`cxr.cli.models`) prints them.

FLOPs are what ``torch.utils.flop_counter.FlopCounterMode`` reports: 2 per multiply-add of the
convolutions, matmuls and linear layers (so FLOPs = 2 x MACs; e.g. a 3x3 conv from 1 to 256
channels on a 200x200 map is 2 * 200*200 * 256 * 9 = 184.3 MFLOPs). Element-wise work (BN, ReLU,
pooling) is not counted. Models are built on the ``meta`` device, so profiling allocates no memory
and runs no arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cxr.models import create_model, input_size_kwargs

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 1, 200, 200)) -> int:
    """FLOPs (2 x MACs) of one eval-mode forward pass on a float32 input of ``input_shape``.

    The input is created on the device of the model's first parameter (CPU if it has none); the
    model's training mode is restored afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(tuple(input_shape), dtype=torch.float32, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def receptive_field(model: nn.Module) -> int:
    """Side in input pixels of the region one value of ``model.stages``' output depends on.

    Walks the convolutions and max-pools of ``model.stages`` in registration order, which is the
    order they run in for the sequential stages of :class:`~cxr.models.layers.ConvPoolClassifier`
    (``r += (k - 1) * jump``, ``jump *= stride``; dilation 1 assumed).
    """
    field, jump = 1, 1
    for module in model.stages.modules():
        if isinstance(module, nn.Conv2d | nn.MaxPool2d):
            k, s = module.kernel_size, module.stride
            k, s = (k[0] if isinstance(k, tuple) else k), (s[0] if isinstance(s, tuple) else s)
            field += (k - 1) * jump
            jump *= s
    return field


def model_cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params": ..., "flops": ...}`` of ``model``; ``flops`` is left out (with a warning) when
    the counter cannot trace the model."""
    cost = {"params": count_params(model)}
    try:
        cost["flops"] = count_flops(model, input_shape)
    except Exception as err:  # a FLOP count is a nicety: never fail a run for it
        log.warning("FLOP count failed for %s: %s", type(model).__name__, err)
    return cost


def profile_table(names: Sequence[str], image_size: int = 200, in_chans: int = 1) -> list[dict]:
    """One row per model with its default arguments (sized for ``image_size`` where the model's
    layers depend on it): ``{"model", "params", "gflops"}`` (GFLOPs per image)."""
    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name, in_chans=in_chans, **input_size_kwargs(name, image_size))
        flops = count_flops(model, (1, in_chans, image_size, image_size))
        rows.append({"model": name, "params": count_params(model), "gflops": flops / 1e9})
    return rows


def format_markdown(rows: Sequence[dict], image_size: int) -> str:
    lines = [f"| model | params | GFLOPs / image ({image_size} px) |", "|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['params']:,} | {r['gflops']:.3f} |" for r in rows]
    return "\n".join(lines)
