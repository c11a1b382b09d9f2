"""lt_report against scikit-learn, and the MONICA group average by hand."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from hubtools.errors import ConfigError
from hubtools.longtail.metrics import lt_report
from hubtools.longtail.splits import LTProfile

ISIC_LIKE = LTProfile(
    class_names=[f"c{i}" for i in range(8)],
    cls_num_list=[5000, 2590, 1342, 695, 360, 187, 97, 51],
    imbalance_ratio=100,
    head=2,
    medium=5,
)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), [30, 25, 20, 15, 12, 10, 8, 6])
    z = rng.normal(size=(y.size, 8))
    z[np.arange(y.size), y] += rng.uniform(0, 2.5, size=y.size)  # informative but imperfect
    return z, y


def test_against_sklearn(data):
    z, y = data
    r = lt_report(torch.tensor(z), torch.tensor(y), ISIC_LIKE)
    pred = z.argmax(1)
    assert r["top1"] == pytest.approx(100 * (pred == y).mean())
    assert r["balanced_acc"] == pytest.approx(100 * balanced_accuracy_score(y, pred), rel=1e-6)
    np.testing.assert_allclose(r["per_class_recall"], 100 * recall_score(y, pred, average=None), rtol=1e-6)
    assert r["macro_f1"] == pytest.approx(100 * f1_score(y, pred, average="macro"), rel=1e-5)
    np.testing.assert_allclose(r["per_class_f1"], 100 * f1_score(y, pred, average=None), rtol=1e-5)
    p = softmax(z)
    assert r["macro_auroc"] == pytest.approx(
        100 * roc_auc_score(y, p, multi_class="ovr", average="macro"), rel=1e-6
    )
    per_class = [roc_auc_score(y == c, p[:, c]) for c in range(8)]
    np.testing.assert_allclose(r["per_class_auroc"], 100 * np.array(per_class), rtol=1e-6)
    raw = lt_report(z, y, ISIC_LIKE, auc_input="logits")
    assert raw["per_class_auroc"][3] == pytest.approx(100 * roc_auc_score(y == 3, z[:, 3]), rel=1e-6)


def test_group_average_differs_from_balanced_accuracy(data):
    z, y = data
    r = lt_report(z, y, ISIC_LIKE)
    rec = np.array(r["per_class_recall"])
    many, medium, few = rec[:2].mean(), rec[2:5].mean(), rec[5:].mean()
    assert (r["many_acc"], r["medium_acc"], r["few_acc"]) == pytest.approx((many, medium, few))
    assert r["group_avg_acc"] == pytest.approx((many + medium + few) / 3)
    assert r["group_avg_acc"] != pytest.approx(r["balanced_acc"])  # 2/3/3 groups weight head classes 1/6
    assert r["top1"] != pytest.approx(r["balanced_acc"])  # imbalanced test set


def test_perfect_and_counts_profile():
    y = np.array([0, 0, 1, 2, 2, 2])
    z = np.eye(3)[y] * 5
    r = lt_report(z, y, [500, 50, 5])  # thresholds: many > 100, few < 20
    assert r["top1"] == r["balanced_acc"] == r["group_avg_acc"] == r["macro_f1"] == r["macro_auroc"] == 100.0
    assert (r["many_acc"], r["medium_acc"], r["few_acc"]) == (100.0, 100.0, 100.0)


def test_absent_class_and_errors():
    y = np.array([0, 0, 1, 1])
    z = np.array([[2.0, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])
    r = lt_report(z, y, [500, 50, 5])
    assert np.isnan(r["per_class_recall"][2]) and np.isnan(r["few_acc"])
    assert r["balanced_acc"] == pytest.approx(50.0)
    assert r["macro_f1"] == pytest.approx(100 * f1_score(y, z.argmax(1), average="macro"))
    with pytest.raises(ConfigError, match="3 classes"):
        lt_report(np.zeros((4, 2)), y, [500, 50, 5])
    with pytest.raises(ConfigError, match="labels must lie"):
        lt_report(z, np.array([0, 1, 2, 3]), [500, 50, 5])
