"""Optimiser and LR scheduler of a task, as Lightning's ``configure_optimizers`` returns them.

Both tasks build them from Hydra factories (``_partial_: true``) and follow one monitored metric:
a ``ReduceLROnPlateau`` scheduler must reduce when *that* metric stops improving, so it gets the
task's ``monitor_mode`` (a factory that declares another ``mode`` is a config error, not a silent
choice between the two).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

MONITOR_MODES = ("min", "max")


def check_monitor_mode(monitor_mode: str) -> None:
    if monitor_mode not in MONITOR_MODES:
        raise ValueError(f"monitor_mode must be 'min' or 'max', got {monitor_mode!r}")


def _is_plateau(factory: Callable) -> bool:
    func = factory.func if isinstance(factory, functools.partial) else factory
    return isinstance(func, type) and issubclass(func, ReduceLROnPlateau)


def configure_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., object] | None,
    monitor: str,
    monitor_mode: str,
) -> torch.optim.Optimizer | dict:
    """The optimiser alone without a scheduler, else Lightning's dict with an epoch-wise scheduler
    that follows ``monitor`` (a plateau scheduler in ``monitor_mode``).

    Raises:
        ValueError: a plateau factory whose ``mode`` contradicts ``monitor_mode``.
    """
    opt = optimizer(params=params)
    if scheduler is None:
        return opt
    extra = {}
    if _is_plateau(scheduler):
        declared = getattr(scheduler, "keywords", {}).get("mode", monitor_mode)
        if declared != monitor_mode:
            raise ValueError(
                f"scheduler mode {declared!r} contradicts monitor_mode {monitor_mode!r} for {monitor}"
            )
        extra["mode"] = monitor_mode
    return {
        "optimizer": opt,
        "lr_scheduler": {
            "scheduler": scheduler(optimizer=opt, **extra),
            "monitor": monitor,
            "interval": "epoch",
        },
    }
