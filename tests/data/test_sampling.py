"""Patient-level stratified split, class-balanced sampler and inverse-frequency class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr.data.resumable import EpochSampler
from cxr.data.sampling import (
    RepeatedDataset,
    balanced_sample_weights,
    inverse_frequency_weights,
    oversample_to_balance,
    stratified_group_split,
)


def _groups_of(indices, groups):
    return {groups[i] for i in indices}


def test_split_keeps_groups_whole_and_hits_the_fraction_per_stratum():
    # 40 groups of stratum 0 with 2 samples each, 20 groups of stratum 1 with 1 sample each
    groups = [f"a{i // 2}" for i in range(80)] + [f"b{i}" for i in range(20)]
    strata = [0] * 80 + [1] * 20
    train, val = stratified_group_split(strata, groups, val_fraction=0.25, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert not _groups_of(train, groups) & _groups_of(val, groups)
    # the smallest number of whole groups reaching 25 %: 10 of 40 two-image groups, 5 of 20 singles
    assert sum(strata[i] == 0 for i in val) == 20 and sum(strata[i] == 1 for i in val) == 5


def test_split_puts_every_stratum_with_two_groups_in_val_and_keeps_lone_groups_in_train():
    strata = [0] * 10 + [1, 1] + [2]
    groups = [f"n{i}" for i in range(10)] + ["v1", "v2"] + ["lone"]
    train, val = stratified_group_split(strata, groups, val_fraction=0.01, seed=3)
    assert {strata[i] for i in val} == {0, 1}
    assert 12 in train


def test_mixed_group_follows_its_majority_stratum():
    # patient "p" has two stratum-1 images and one stratum-2 image, so it joins stratum 1 beside "x";
    # with two groups there, exactly one of them must go to val
    strata = [1, 1, 2, 1] + [2] * 10
    groups = ["p", "p", "p", "x"] + [f"y{i}" for i in range(10)]
    for seed in range(10):
        _, val = stratified_group_split(strata, groups, val_fraction=0.05, seed=seed)
        in_val = _groups_of(val, groups)
        assert len(in_val & {"p", "x"}) == 1 and len(in_val) == 2


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 15)), min_size=2, max_size=60),
    st.integers(0, 2**16),
    st.floats(0.05, 0.6),
)
def test_split_is_a_partition_independent_of_order(samples, seed, fraction):
    strata = [s for s, _ in samples]
    groups = [f"g{g}" for _, g in samples]
    train, val = stratified_group_split(strata, groups, fraction, seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(samples)))
    assert not _groups_of(train, groups) & _groups_of(val, groups)
    perm = np.random.default_rng(seed).permutation(len(samples))
    _, val_p = stratified_group_split([strata[i] for i in perm], [groups[i] for i in perm], fraction, seed)
    assert _groups_of(val_p, [groups[i] for i in perm]) == _groups_of(val, groups)


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        stratified_group_split([0, 1], ["a"], 0.1, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_group_split([0, 1], ["a", "b"], 0.0, 0)


def test_inverse_frequency_weights_by_hand():
    torch.testing.assert_close(inverse_frequency_weights([10, 30]), torch.tensor([1.5, 0.5]))
    # 1/n = (1, 1/2, 1/4), mean 7/12 -> (12/7, 6/7, 3/7)
    torch.testing.assert_close(
        inverse_frequency_weights(torch.tensor([1, 2, 4])), torch.tensor([12, 6, 3]) / 7
    )
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        inverse_frequency_weights([5, 0])


def test_balanced_weights_draw_every_class_equally_often_and_follow_the_seed():
    labels = np.array([0] * 10 + [1] * 90)
    weights = balanced_sample_weights(labels)
    assert weights[:10].sum() == pytest.approx(weights[10:].sum())
    draws = [i for epoch in range(20) for i, _ in _epoch(EpochSampler(100, 0, weights=weights), epoch)]
    assert len(draws) == 2000
    assert 0.45 <= labels[draws].mean() <= 0.55
    same = _epoch(EpochSampler(100, 1, weights=weights), 0)
    assert (
        same
        == _epoch(EpochSampler(100, 1, weights=weights), 0)
        != _epoch(EpochSampler(100, 2, weights=weights), 0)
    )
    with pytest.raises(ValueError, match="zero samples"):
        balanced_sample_weights([])


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_oversampling_balances_the_classes_by_repeating_the_smaller_ones():
    labels = np.array([0] * 3 + [1] * 8 + [2] * 5)
    idx = oversample_to_balance(labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [8, 8, 8]
    counts = np.bincount(idx, minlength=len(labels))
    assert (counts >= 1).all()  # every sample at least once
    assert (counts[labels == 1] == 1).all()  # the largest class is not repeated
    assert sorted(counts[labels == 0].tolist()) == [2, 3, 3] and sorted(counts[labels == 2].tolist()) == [
        1,
        1,
        2,
        2,
        2,
    ]
    assert np.array_equal(oversample_to_balance(labels, seed=0), idx)
    with pytest.raises(ValueError, match="zero samples"):
        oversample_to_balance([], seed=0)


def test_repeated_dataset_passes_each_repeat_its_own_key():
    class Echo:
        labels = np.array([0, 1, 1])

        def __len__(self):
            return 3

        def __getitem__(self, key):
            return key

    view = RepeatedDataset(Echo(), [0, 0, 2])
    assert len(view) == 3 and view.labels.tolist() == [0, 0, 1]
    assert [view[(j, 10 + j)] for j in range(3)] == [(0, 10), (0, 11), (2, 12)]
    assert view[1] == 0
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        RepeatedDataset(Echo(), [3])


def test_oversampled_epoch_has_equal_classes_and_fresh_draws_of_repeats(ped_cxr_dir, tmp_path):
    import albumentations as A

    from cxr.data.ped_cxr import PedChestXrayDataModule

    dm = PedChestXrayDataModule(
        ped_cxr_dir, image_size=32, batch_size=8, cache_dir=tmp_path / "cache", sampler="oversample",
        augment=[A.Affine(rotate=(-90, 90), p=1.0)],
    )  # fmt: skip
    dm.setup()
    base = np.bincount(dm._dataset("train").labels)
    assert base[0] != base[1]  # the synthetic tree is imbalanced, as the real one is
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    labels, indices, images = [], [], {}
    for batch in loader:
        labels += batch["label"].tolist()
        for i, image in zip(batch["index"].tolist(), batch["image"], strict=True):
            images.setdefault(i, []).append(image)
        indices += batch["index"].tolist()
    assert len(labels) == len(loader.sampler) == 2 * base.max()  # the epoch grew to balance
    assert np.bincount(labels).tolist() == [base.max()] * 2
    repeats = {i: draws for i, draws in images.items() if len(draws) > 1}
    assert repeats and set(indices) == set(range(len(dm.splits["train"])))
    # a repeated image is augmented afresh each time it appears
    assert all(not torch.equal(draws[0], draws[1]) for draws in repeats.values())
