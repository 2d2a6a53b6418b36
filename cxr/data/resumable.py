"""A training order that is a pure function of (seed, epoch), and a train loader Lightning can resume mid-epoch.

Three things made runs irreproducible or unresumable with a plain shuffled ``DataLoader``:

1. ``RandomSampler`` draws each epoch's permutation from the global torch RNG, which model init and
   dropout also consume, so a resumed run sees other batches than the run it continues;
2. albumentations' ``Compose`` without a seed draws from fresh OS entropy, so augmented runs were
   not reproducible at all, and seeding it once would give every worker the same random sequence;
3. after a mid-epoch checkpoint Lightning restarts a plain loader from the epoch's first batch.

:class:`EpochSampler` yields ``(index, sample_seed)`` pairs: the order and each sample's seed follow
from (seed, epoch) alone. Datasets pass the seed to :func:`seed_augmentation`, so the augmentation
of a sample depends on (seed, epoch, position) only: not on the number of workers, on persistent
workers, or on interruptions. :class:`ResumableLoader` counts the batches it hands out per epoch
(``state_dict``) and skips them after ``load_state_dict``; Lightning saves and restores that state
with every checkpoint (the ``_Stateful`` loader protocol).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from non-negative integers (``np.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> 1)


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """``dataset[key]`` accepts a plain index or :class:`EpochSampler`'s ``(index, sample_seed)``."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


def seed_augmentation(transform: Any, seed: int | None) -> None:
    """Re-seed the albumentations pipeline of a :class:`~cxr.data.transforms.RadiographTransform`.

    One numpy and one Python generator are shared by all transforms of the pipeline (albumentations'
    own ``set_random_seed`` would give each transform the same seed, so their draws would coincide).
    ``seed=None`` or a transform without augmentation leaves everything as it is.
    """
    compose = getattr(transform, "compose", None)
    if seed is None or compose is None:
        return
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


class EpochSampler(DistributedSampler):
    """Yields ``(index, sample_seed)``: a permutation of ``range(n)``, or ``num_samples`` weighted draws
    with replacement when ``weights`` are given, generated from ``(seed, epoch)`` only.

    Lightning calls :meth:`set_epoch` before every epoch. :meth:`skip` drops the first items of the
    next iteration (used to resume mid-epoch); ``len()`` stays the full epoch length. Under
    ``torch.distributed`` every process draws the same epoch and keeps its share, ``rank::world_size``
    (padded by repetition to equal shares, as ``DistributedSampler`` does); being a
    ``DistributedSampler`` is what makes Lightning leave it in place instead of wrapping it.
    """

    shuffle = True  # read by Lightning's checks; the order is shuffled

    def __init__(
        self,
        n: int,
        seed: int,
        weights: Sequence[float] | torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> None:
        # DistributedSampler.__init__ is skipped on purpose: it needs a process group at construction
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one sample, got n={n}")
        self.n, self.seed, self.epoch, self._skip = int(n), int(seed), 0, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(f"weights has {len(self.weights)} entries for n={n} samples")
        self.num_samples = int(num_samples) if num_samples is not None else self.n
        if self.weights is None and self.num_samples != self.n:
            raise ValueError("num_samples other than n needs weights (draws with replacement)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, count: int) -> None:
        self._skip = int(count)

    @staticmethod
    def _shard() -> tuple[int, int]:
        """(rank, world size) of this process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self._shard()[1])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        seeds = torch.randint(0, 2**62, (len(order),), generator=generator)
        rank, world = self._shard()
        if world > 1:
            padded = torch.arange(len(self) * world) % len(order)
            order, seeds = order[padded][rank::world], seeds[padded][rank::world]
        start, self._skip = self._skip, 0
        yield from zip(order[start:].tolist(), seeds[start:].tolist(), strict=True)


class ResumableLoader(DataLoader):
    """Train loader over an :class:`EpochSampler` whose position Lightning checkpoints.

    ``state_dict()`` is ``{"epoch", "batches"}``: the batches handed out in the current epoch. After
    ``load_state_dict`` the next iteration of that same epoch skips them. Iteration starts lazily at
    the first batch, after Lightning has called ``set_epoch``; worker base seeds come from a
    generator seeded per epoch, so creating the iterator never draws from the global torch RNG.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int = 1,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            generator=torch.Generator(),
        )
        self._epoch, self._yielded = 0, 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator:
        return self._batches()

    def _batches(self) -> Iterator:
        sampler = self.sampler
        epoch = int(getattr(sampler, "epoch", 0))
        done = 0
        if self._resume is not None and self._resume[0] == epoch and hasattr(sampler, "skip"):
            done = min(self._resume[1], len(self))
            sampler.skip(done * int(self.batch_size))
        self._resume = None
        self.generator.manual_seed(mix_seed(getattr(sampler, "seed", 0), epoch, 1))
        self._epoch, self._yielded = epoch, done
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded, "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Lightning counts the finished batches of the epoch itself and ends it after len(loader) in
        # all; skipping the same number of batches keeps both counts in step even when the batch size
        # changed (the interrupted epoch then covers slightly different samples).
        saved = int(state.get("batch_size", self.batch_size))
        if saved != self.batch_size:
            log.warning(
                "resuming with batch_size %d instead of %d: the rest of the interrupted epoch skips "
                "%d batches of the new size",
                self.batch_size,
                saved,
                int(state["batches"]),
            )
        self._resume = (int(state["epoch"]), int(state["batches"]))
