"""Choosing samples: patient-level stratified train/val splits, class-balanced sampling and
oversampling, class weights."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cxr.data.resumable import split_key

log = logging.getLogger(__name__)


def stratified_group_split(
    strata: Sequence[int], groups: Sequence[Hashable], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and val so that no group (patient) is on both sides.

    Each group belongs to the stratum most of its samples have (ties: the smaller stratum). Within a
    stratum the groups are shuffled with ``np.random.default_rng(seed)`` and moved to val until val
    holds at least ``val_fraction`` of that stratum's samples, with at least one group on each side
    when the stratum has two or more groups, so every such stratum appears in val. Groups are
    sorted before shuffling, so the result depends on the (stratum, group) of each sample and the
    seed, never on the order the samples are listed in.

    Args:
        strata: class (or finer label) of each sample.
        groups: patient id of each sample, same length as ``strata``.
        val_fraction: wanted share of each stratum in val, in (0, 1).
        seed: split seed.

    Returns:
        (train, val): sorted int64 arrays of indices into the inputs, together covering every sample once.
    """
    if len(strata) != len(groups):
        raise ValueError(f"strata and groups differ in length: {len(strata)} vs {len(groups)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_stratum: dict[int, list[Hashable]] = defaultdict(list)
    for g in sorted(members):
        counts = Counter(int(strata[i]) for i in members[g])
        stratum = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        by_stratum[stratum].append(g)

    rng = np.random.default_rng(seed)
    val: list[int] = []
    for stratum in sorted(by_stratum):
        gs = by_stratum[stratum]
        if len(gs) < 2:
            log.warning(
                "stratum %s has a single group (%s): it stays in train and val lacks it", stratum, gs[0]
            )
            continue
        order = rng.permutation(len(gs))
        sizes = np.array([len(members[gs[k]]) for k in order])
        # smallest k whose first k groups reach the target, kept within [1, n_groups - 1]
        k = int(np.searchsorted(np.cumsum(sizes), val_fraction * sizes.sum())) + 1
        k = min(max(k, 1), len(gs) - 1)
        val.extend(i for j in order[:k] for i in members[gs[j]])
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(strata), dtype=np.int64), val_idx)
    return train_idx, val_idx


def inverse_frequency_weights(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Class weights ``w_c = (1 / n_c) / mean_k(1 / n_k)``: float32, mean 1, rarer classes weigh more.

    Raises:
        ValueError: a class has no samples (its weight would be infinite).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if (counts <= 0).any():
        empty = torch.nonzero(counts <= 0).flatten().tolist()
        raise ValueError(
            f"cannot weight classes {empty}: they have no training samples (counts {counts.tolist()})"
        )
    inv = 1.0 / counts
    return (inv / inv.mean()).float()


def balanced_sample_weights(labels: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Per-sample draw weights ``1 / count(label)`` (float64 (N,)): drawn with replacement
    (:class:`~cxr.data.resumable.EpochSampler`), every class comes up equally often in expectation."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("cannot balance the classes of zero samples")
    return torch.as_tensor(1.0 / np.bincount(labels)[labels], dtype=torch.float64)


def oversample_to_balance(labels: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """Indices listing every sample once, and the samples of each smaller class again until every
    class has as many entries as the largest: Go & Bissaliyeva's "generating more images to balance
    the dataset", as we read it (each entry is augmented afresh, so a repeat is a new image).

    A class of ``n`` samples below the largest class's ``m`` gets every sample ``m // n`` times and
    ``m % n`` of them once more, chosen with ``np.random.default_rng(seed)``. Returns a sorted int64
    array of length ``m * number of classes present``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("cannot oversample zero samples")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    target = max(int((labels == c).sum()) for c in classes)
    parts = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        parts += [np.tile(members, target // len(members))]
        parts += [rng.choice(members, target % len(members), replace=False)]
    return np.sort(np.concatenate(parts))


class RepeatedDataset(Dataset):
    """A view of ``dataset`` listing ``dataset[indices[j]]`` as item ``j`` (indices may repeat).

    Keys pass through as :func:`~cxr.data.resumable.split_key` reads them, so a sampler's
    ``(j, sample_seed)`` reaches the base dataset as ``(indices[j], sample_seed)``: every repeat of
    an image gets its own augmentation draw. ``labels`` (when the base has them) follow the view;
    a sample's ``index`` stays the base dataset's.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        if self.indices.size and not 0 <= self.indices.min() <= self.indices.max() < len(dataset):
            raise ValueError(
                f"indices must lie in [0, {len(dataset)}), got {self.indices.min()}..{self.indices.max()}"
            )
        base = getattr(dataset, "labels", None)
        self.labels = None if base is None else np.asarray(base)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]):
        j, seed = split_key(key)
        i = int(self.indices[j])
        return self.dataset[i if seed is None else (i, seed)]
