"""Multi-label losses against hand-written NumPy on a tiny batch, their identities, the registry, and the report."""

import math

import numpy as np
import pytest
import torch

from hubtools.errors import ConfigError
from hubtools.longtail.multilabel import get_multilabel_loss, multi_hot, multilabel_report

RNG = np.random.default_rng(0)
Z = RNG.normal(0, 2, size=(5, 4))
Y = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=float)
COUNTS = [40, 20, 5, 2]
N = 60


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _loss(name, z=Z, y=Y, counts=COUNTS, n=N, **kw):
    fn = get_multilabel_loss(name, counts, n, **kw)
    return float(fn(torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)))


def test_bce_matches_numpy():
    p = _sigmoid(Z)
    ref = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(1).mean()
    assert _loss("bce") == pytest.approx(ref, rel=1e-5)


def test_asl_matches_numpy_and_reduces_to_bce():
    p = _sigmoid(Z)
    pm = np.maximum(p - 0.05, 0)
    ref = (
        -(Y * np.log(p) + (1 - Y) * pm**4 * np.log(1 - pm)).sum(1).mean()
    )  # gamma_pos 0, gamma_neg 4, clip 0.05
    assert _loss("asl") == pytest.approx(ref, rel=1e-5)
    ref2 = -(Y * (1 - p) ** 1 * np.log(p) + (1 - Y) * p**2 * np.log(1 - p)).sum(1).mean()
    assert _loss("asl", gamma_pos=1, gamma_neg=2, clip=0.0) == pytest.approx(ref2, rel=1e-5)
    assert _loss("asl", gamma_neg=0, gamma_pos=0, clip=0.0) == pytest.approx(_loss("bce"), rel=1e-6)
    # the margin discards easy negatives: a negative with p < clip costs nothing
    assert _loss("asl", z=np.full((1, 4), -5.0), y=np.zeros((1, 4))) == 0.0


def test_distribution_balanced_matches_numpy():
    inv = 1 / np.array(COUNTS, float)
    r = inv[None, :] / (Y * inv).sum(1, keepdims=True)
    w = 0.1 + _sigmoid(10 * (r - 0.3))
    nu = -0.05 * np.log(N / np.array(COUNTS, float) - 1)
    z = Z + nu
    elem = Y * np.log1p(np.exp(-z)) + (1 - Y) / 5 * np.log1p(np.exp(5 * z))
    assert _loss("distribution_balanced") == pytest.approx((w * elem).sum(1).mean(), rel=1e-5)
    # the weight of an image's own rarest label is the largest, the rare label's bias the most negative
    loss = get_multilabel_loss("distribution_balanced", COUNTS, N)
    wt = loss.weights(torch.tensor(Y[2:3], dtype=torch.float32)).numpy()[0]
    assert wt[2] > wt[1] > wt[0] and float(loss.bias[3]) < float(loss.bias[0])


def test_distribution_balanced_identities():
    single = np.eye(4)[[0, 1, 2, 3, 1]]  # one positive per image
    uniform = [10, 10, 10, 10]
    bce = _loss("bce", y=single, counts=uniform)
    plain = _loss("distribution_balanced", y=single, counts=uniform, ntr=False, smoothing=False)
    assert plain == pytest.approx(bce, rel=1e-6)
    # with the paper's smoothing r = 1 becomes the constant 0.1 + sigmoid(10 * 0.7)
    smoothed = _loss("distribution_balanced", y=single, counts=uniform, ntr=False)
    assert smoothed == pytest.approx((0.1 + 1 / (1 + math.exp(-7))) * bce, rel=1e-6)
    # an image with no positive label keeps weight 1
    empty = _loss("distribution_balanced", y=np.zeros((5, 4)), counts=uniform, ntr=False)
    assert empty == pytest.approx(_loss("bce", y=np.zeros((5, 4)), counts=uniform), rel=1e-6)


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown multi-label loss 'focal'; available: bce, asl"):
        get_multilabel_loss("focal", COUNTS, N)
    with pytest.raises(ConfigError, match=r"'asl' has no option\(s\) \['gamma'\]"):
        get_multilabel_loss("asl", COUNTS, N, gamma=2)
    with pytest.raises(ConfigError, match=r"'bce' has no option\(s\) \['clip'\]"):
        get_multilabel_loss("bce", COUNTS, N, clip=0.1)
    with pytest.raises(ConfigError, match="positive train count for every label"):
        get_multilabel_loss("distribution_balanced", [3, 0], N)
    with pytest.raises(ConfigError, match="below num_samples 3"):
        get_multilabel_loss("distribution_balanced", [3, 1], 3)


def _ap_by_hand(scores, positive):
    order = np.argsort(-scores)
    hits = positive[order]
    ranks = np.flatnonzero(hits) + 1
    return np.mean(np.cumsum(hits)[ranks - 1] / ranks)


def _auroc_by_hand(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    return np.mean(pos[:, None] > neg[None, :])


def test_report_against_independent_computation():
    rng = np.random.default_rng(3)
    n, c = 60, 7
    y = (rng.random((n, c)) < np.linspace(0.5, 0.05, c)).astype(int)
    y[:, 5] = 0  # a label with no positive in the eval set: NaN, left out
    z = rng.normal(size=(n, c)) + 1.5 * y - 0.8
    counts, head, medium = [90, 70, 50, 30, 15, 10, 5], 2, 4
    rep = multilabel_report(torch.tensor(z), torch.tensor(y), counts, head, medium)
    ap = np.array([_ap_by_hand(z[:, k], y[:, k] == 1) if y[:, k].any() else np.nan for k in range(c)])
    assert np.isnan(rep["per_class_ap"][5]) and rep["num_evaluated_labels"] == 6
    np.testing.assert_allclose(np.array(rep["per_class_ap"]), 100 * ap, rtol=1e-9)
    assert rep["map"] == pytest.approx(100 * np.nanmean(ap))
    assert rep["many_map"] == pytest.approx(100 * np.mean(ap[:2]))
    assert rep["medium_map"] == pytest.approx(100 * np.mean(ap[2:4]))
    assert rep["few_map"] == pytest.approx(100 * np.nanmean(ap[4:]))  # labels 4 and 6; 5 has no positive
    auc = [_auroc_by_hand(z[:, k], y[:, k] == 1) for k in range(c) if y[:, k].any()]
    assert rep["macro_auroc"] == pytest.approx(100 * np.mean(auc))
    pred = z >= 0  # sigmoid >= 0.5
    tp, fp, fn = (pred & (y == 1)).sum(0), (pred & (y == 0)).sum(0), (~pred & (y == 1)).sum(0)
    assert rep["micro_f1"] == pytest.approx(100 * 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    seen = (y.sum(0) > 0) | (pred.sum(0) > 0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    assert rep["macro_f1"] == pytest.approx(100 * f1[seen].mean())
    # the same through sklearn directly
    from sklearn.metrics import average_precision_score

    assert rep["per_class_ap"][0] == pytest.approx(100 * average_precision_score(y[:, 0], z[:, 0]))


def test_report_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="must both be N x 3"):
        multilabel_report(np.zeros((4, 2)), np.zeros((4, 2)), [3, 2, 1], 1, 2)
    with pytest.raises(ConfigError, match="multi-hot"):
        multilabel_report(np.zeros((2, 2)), np.full((2, 2), 2), [3, 2], 1, 2)


def test_multi_hot():
    np.testing.assert_array_equal(multi_hot([[0, 2], [], [1]], 3), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
