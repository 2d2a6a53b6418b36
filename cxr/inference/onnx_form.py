"""The form a classifier is exported in: exact rewrites that change how the network runs, never what it
computes.

:func:`deploy_form` copies an eval-mode network and rewrites every chain of layers it can see, i.e.
each ``nn.Sequential`` (nested plain Sequentials such as ``ConvBNReLU`` or ``DepthwiseSeparableConv``
are flattened into their parent chain first). The rewrites, applied in order:

``fold_bn``
    ``Conv2d -> BatchNorm2d`` becomes one ``Conv2d`` with the BN's running statistics folded into its
    weights and bias (one memory-bound pass fewer per conv).
``drop_inactive``
    ``Dropout`` and ``Identity`` (no-ops in eval mode) are removed.
``scalar_pointwise_pool``
    ``Conv2d 1x1 (1 -> C) [-> ReLU] -> MaxPool2d`` becomes ``[d, -d] -> MaxPool2d -> Conv2d 1x1
    (2 -> C) [-> ReLU]``: the wide pointwise output is never made at full resolution. With one input
    channel ``d`` the (BN-folded) pointwise conv is, per output channel ``c``, the affine map
    ``a_c * d + b_c`` of a scalar, monotone like ReLU, so
    ``maxpool(relu(a_c d + b_c)) = relu(a_c maxpool(d) + b_c)`` for ``a_c >= 0`` and
    ``relu(a_c minpool(d) + b_c)`` for ``a_c < 0``, with ``minpool(d) = -maxpool(-d)``. The 2 -> C conv
    has weights ``(max(a_c, 0), max(-a_c, 0))``: each product is the original one (``(-a)(-m) = am``)
    and the other term an exact 0. This is the first separable stage of ``depthwise_cnn`` on
    1-channel radiographs: its 256-wide map is made at 100x100 instead of 200x200 (1/4 of the
    pointwise FLOPs and of the largest activation).

Every rewrite is verified on a random input: :func:`deploy_form` compares the network's output before
and after each one and keeps it only when they agree within ``atol`` (relative to the output's
magnitude); a rewrite that does not hold is skipped with a warning, never exported.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

Chain = list[nn.Module]


def _flattenable(module: nn.Module) -> bool:
    """A Sequential whose forward is Sequential's own (so its layers may join the parent chain)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves(seq: nn.Sequential) -> Chain:
    out: Chain = []
    for layer in seq:
        out += _leaves(layer) if _flattenable(layer) else [layer]
    return out


def fold_bn(chain: Chain) -> Chain:
    """``Conv2d -> BatchNorm2d`` (eval statistics) as one ``Conv2d``."""
    out: Chain = []
    for layer in chain:
        prev = out[-1] if out else None
        if (
            isinstance(prev, nn.Conv2d)
            and type(layer) is nn.BatchNorm2d
            and layer.track_running_stats
            and layer.running_mean is not None
        ):
            out[-1] = fuse_conv_bn_eval(prev, layer)
        else:
            out.append(layer)
    return out


def drop_inactive(chain: Chain) -> Chain:
    """Without ``Dropout`` and ``Identity`` (eval-mode no-ops)."""
    return [m for m in chain if not isinstance(m, (nn.Dropout, nn.Identity))]


class PoolThenPointwise(nn.Module):
    """Exact form of ``Conv2d 1x1 (1 -> C) [-> ReLU] -> MaxPool2d``: pool ``[d, -d]`` first, then a
    2 -> C 1x1 conv (see the module docstring). Input (B, 1, H, W); output as the pool's."""

    def __init__(self, pointwise: nn.Conv2d, pool: nn.MaxPool2d, relu: bool) -> None:
        super().__init__()
        a = pointwise.weight.detach().reshape(-1)
        self.pool = copy.deepcopy(pool)
        self.pointwise = nn.Conv2d(2, a.numel(), 1, bias=True)
        with torch.no_grad():
            weight = torch.stack([a.clamp(min=0), (-a).clamp(min=0)], dim=1)
            self.pointwise.weight.copy_(weight[:, :, None, None])
            bias = pointwise.bias.detach() if pointwise.bias is not None else torch.zeros_like(a)
            self.pointwise.bias.copy_(bias)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.pool(torch.cat([x, -x], dim=1)))  # pool(cat) = [max x, -min x]
        return torch.relu(y) if self.relu else y


def _is_scalar_pointwise(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.in_channels == 1
        and m.groups == 1
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.padding_mode == "zeros"
    )


def scalar_pointwise_pool(chain: Chain) -> Chain:
    """``Conv2d 1x1 (1 -> C) [-> ReLU] -> MaxPool2d`` as :class:`PoolThenPointwise`."""
    out: Chain = []
    i = 0
    while i < len(chain):
        m = chain[i]
        relu = i + 1 < len(chain) and type(chain[i + 1]) is nn.ReLU
        j = i + (2 if relu else 1)
        pool = chain[j] if j < len(chain) else None
        if _is_scalar_pointwise(m) and type(pool) is nn.MaxPool2d and not pool.return_indices:
            out.append(PoolThenPointwise(m, pool, relu))
            i = j + 1
        else:
            out.append(m)
            i += 1
    return out


REWRITES: dict[str, Callable[[Chain], Chain]] = {
    "fold_bn": fold_bn,
    "drop_inactive": drop_inactive,
    "scalar_pointwise_pool": scalar_pointwise_pool,
}


def _rewrite(module: nn.Module, rewrite: Callable[[Chain], Chain]) -> nn.Module:
    """``module`` with ``rewrite`` applied to every outermost Sequential chain (in place)."""
    if _flattenable(module):
        return nn.Sequential(*rewrite(_leaves(module)))
    for name, child in list(module.named_children()):
        new = _rewrite(child, rewrite)
        if new is not child:
            setattr(module, name, new)
    return module


def max_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to max(1, max |a|): the agreement :func:`deploy_form` demands."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / max(1.0, float(a.abs().max())))


@torch.no_grad()
def deploy_form(
    model: nn.Module,
    example: Tensor,
    rewrites: Sequence[str] | None = None,
    atol: float = 1e-5,
) -> tuple[nn.Module, list[str]]:
    """An eval-mode copy of ``model`` with the exact ``rewrites`` applied, and the names of those kept.

    Args:
        model: the network (left unchanged); it is put through the rewrites in eval mode.
        example: a float32 input (B, C, H, W) of the exported size; the output before and after each
            rewrite is compared on it, and a rewrite that changes it by more than ``atol``
            (:func:`max_difference`) is skipped with a warning.
        rewrites: names from :data:`REWRITES`, applied in that order (None: all of them).

    Raises:
        ValueError: an unknown rewrite name.
    """
    rewrites = list(REWRITES) if rewrites is None else list(rewrites)
    unknown = sorted(set(rewrites) - set(REWRITES))
    if unknown:
        raise ValueError(f"unknown rewrite(s) {unknown}; known: {list(REWRITES)}")
    current = copy.deepcopy(model).eval()
    reference = current(example)
    kept = []
    for name in [r for r in REWRITES if r in rewrites]:
        candidate = _rewrite(copy.deepcopy(current), REWRITES[name]).eval()
        diff = max_difference(reference, candidate(example))
        if diff <= atol:
            if repr(candidate) != repr(current):  # the rewrite found something to change
                kept.append(name)
            current = candidate
        else:
            log.warning("rewrite %s changes the output by %.1e (> %.0e): skipped", name, diff, atol)
    return current, kept
