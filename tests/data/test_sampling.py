"""Patient-level stratified split, class-balanced sampler and inverse-frequency class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr.data.sampling import class_balanced_sampler, inverse_frequency_weights, stratified_group_split


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


def test_class_balanced_sampler_is_balanced_and_seeded():
    labels = np.array([0] * 10 + [1] * 90)
    draws = [i for _ in range(20) for i in class_balanced_sampler(labels, seed=0)]
    assert len(draws) == 2000
    assert 0.45 <= labels[draws].mean() <= 0.55
    assert list(class_balanced_sampler(labels, seed=1)) == list(class_balanced_sampler(labels, seed=1))
    assert list(class_balanced_sampler(labels, seed=1)) != list(class_balanced_sampler(labels, seed=2))
    assert len(list(class_balanced_sampler(labels, seed=0, num_samples=7))) == 7
