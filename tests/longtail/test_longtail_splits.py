"""Exponential long-tail profile, seeded split drawing, LTProfile."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from hubtools.longtail.splits import (
    LTProfile,
    draw_splits,
    groups_by_threshold,
    long_tail_subset,
    lt_order,
    profile,
    stratified_holdout,
)

# Train counts of the anchor's (MONICA's) split files.
SPEC_ROUND = {
    "nct_100": (10000, 9, 100, [10000, 5623, 3162, 1778, 1000, 562, 316, 178, 100]),
    "nct_200": (10000, 9, 200, [10000, 5157, 2659, 1371, 707, 365, 188, 97, 50]),
    "nct_500": (10000, 9, 500, [10000, 4599, 2115, 972, 447, 206, 95, 43, 20]),
    "kvasir_20": (998, 14, 20, [998, 793, 629, 500, 397, 315, 250, 199, 158, 125, 100, 79, 63, 50]),
    "path": (12885, 9, 100, [12885, 7246, 4075, 2291, 1289, 725, 407, 229, 129]),
    "blood": (2330, 8, 100, [2330, 1207, 625, 324, 168, 87, 45, 23]),
    "tissue": (53075, 8, 100, [53075, 27490, 14238, 7375, 3820, 1978, 1025, 531]),
    "organa": (6164, 11, 100, [6164, 3889, 2454, 1548, 977, 616, 389, 245, 155, 98, 62]),
}
SPEC_ISIC = {
    100: [5000, 2590, 1342, 695, 360, 187, 97, 51],
    200: [5000, 2346, 1101, 517, 243, 114, 54, 25],
    500: [5000, 2058, 847, 349, 144, 60, 25, 11],
}


@pytest.mark.parametrize("key", sorted(SPEC_ROUND))
def test_profile_reproduces_anchor_counts(key):
    n_max, classes, ratio, expected = SPEC_ROUND[key]
    assert profile(n_max, classes, ratio) == expected


@pytest.mark.parametrize("ratio", sorted(SPEC_ISIC))
def test_isic_uses_floor_plus_one(ratio):
    assert profile(5000, 8, ratio, "floor_plus_one") == SPEC_ISIC[ratio]
    assert profile(5000, 8, ratio) != SPEC_ISIC[ratio]


def test_availability_caps_dermamnist_and_organ_c_s():
    # DermaMNIST official train counts in LT order (HAM10000's 7007-image train split)
    assert profile(4693, 7, 100, available=[4693, 779, 769, 359, 228, 99, 80]) == [
        4693,
        779,
        769,
        359,
        218,
        99,
        47,
    ]
    # OrganC/S shipped counts are capped versions of the profile: never above it
    for n_max, shipped in (
        (2986, [2986, 1572, 1173, 750, 473, 299, 188, 119, 75, 47, 30]),
        (3464, [3464, 2004, 1379, 870, 549, 346, 219, 138, 87, 55, 35]),
    ):
        assert profile(n_max, 11, 100, available=shipped) == shipped
        assert all(s <= p for s, p in zip(shipped, profile(n_max, 11, 100), strict=True))


def test_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ratio >= 1"):
        profile(10, 3, 0.5)
    with pytest.raises(ValueError, match="rounding must be"):
        profile(10, 3, 10, rounding="ceil")  # type: ignore[arg-type]


def test_draw_splits_quotas_disjoint_seeded():
    labels = np.repeat(np.arange(4), [30, 20, 12, 9])
    a = draw_splits(labels, [10, 6, 3, 1], val_per_class=2, test_per_class=3, seed=5)
    b = draw_splits(labels, [10, 6, 3, 1], val_per_class=2, test_per_class=3, seed=5)
    c = draw_splits(labels, [10, 6, 3, 1], val_per_class=2, test_per_class=3, seed=6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    assert np.bincount(labels[a["train"]]).tolist() == [10, 6, 3, 1]
    assert np.bincount(labels[a["validation"]]).tolist() == [2] * 4
    assert np.bincount(labels[a["test"]]).tolist() == [3] * 4
    parts = [set(a[k].tolist()) for k in a]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    with pytest.raises(ValueError, match="class 3 has 9 records, fewer than its quotas"):
        draw_splits(labels, [10, 6, 3, 5], val_per_class=2, test_per_class=3)


def test_validation_draw_does_not_depend_on_the_ratio():
    labels = np.repeat(np.arange(3), [40, 30, 20])
    r10 = draw_splits(labels, profile(30, 3, 10), val_per_class=5, test_per_class=5, seed=1)
    r2 = draw_splits(
        labels, profile(30, 3, 2, available=[30, 20, 10]), val_per_class=5, test_per_class=5, seed=1
    )
    assert np.array_equal(r10["validation"], r2["validation"]) and np.array_equal(r10["test"], r2["test"])


def test_stratified_holdout_keeps_every_class_in_train():
    labels = np.repeat(np.arange(3), [50, 5, 2])
    val, test, rest = stratified_holdout(labels, (0.1, 0.2), seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 1, 1]
    assert np.bincount(labels[test], minlength=3).tolist() == [10, 1, 0]
    assert np.bincount(labels[rest], minlength=3).tolist() == [35, 3, 1]


def test_lt_order_and_groups():
    assert lt_order([5, 9, 9, 1]).tolist() == [1, 2, 0, 3]
    assert groups_by_threshold([500, 150, 101, 100, 50, 20, 19, 3]) == (3, 6)
    lt = LTProfile(
        class_names=list("abcdef"), cls_num_list=[60, 30, 15, 8, 4, 2], imbalance_ratio=30, head=2, medium=4
    )
    assert [lt.group_of(i) for i in range(6)] == ["many", "many", "medium", "medium", "few", "few"]
    assert lt.groups().tolist() == [0, 0, 1, 1, 2, 2]
    assert lt.priors().sum() == pytest.approx(1.0)
    assert LTProfile.from_json(lt.to_json()) == lt
    with pytest.raises(ValueError, match="head <= medium"):
        LTProfile(class_names=["a"], cls_num_list=[1], imbalance_ratio=1, head=2, medium=1)


def test_long_tail_subset_on_any_dataset():
    labels = np.repeat(np.arange(4), [10, 40, 25, 40])
    ds = Dataset.from_dict(
        {"x": np.arange(labels.size).tolist(), "y": labels.tolist()},
        features=Features({"x": Value("int64"), "y": ClassLabel(names=["w", "x", "y", "z"])}),
    )
    sub, lt = long_tail_subset(ds, ratio=10, label_column="y", seed=3)
    # order by frequency, ties by id: x(40), z(40), y(25), w(10); counts 40, 40*10^-1/3, ... capped
    assert lt.class_names == ["x", "z", "y", "w"]
    assert lt.cls_num_list == [40, 19, 9, 4]
    assert sub.features["y"].names == ["x", "z", "y", "w"]
    assert np.bincount(sub["y"]).tolist() == [40, 19, 9, 4]
    orig_names = ["w", "x", "y", "z"]
    assert all(
        lt.class_names[y] == orig_names[o] for y, o in zip(sub["y"], sub["orig_label_id"], strict=True)
    )
    again, _ = long_tail_subset(ds, ratio=10, label_column="y", seed=3)
    assert again["x"] == sub["x"]
