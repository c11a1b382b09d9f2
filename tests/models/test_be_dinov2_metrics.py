"""Every downstream metric against scikit-learn on random labels/scores, plus a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from hubtools.models.be_dinov2.metrics import (
    average_precision,
    classification_metrics,
    cohen_kappa,
    macro_aupr,
    macro_auroc,
    mcc,
    mean_ci,
)


def test_quadratic_kappa_hand_case() -> None:
    assert cohen_kappa([0, 1, 2, 2], [0, 2, 2, 1], weights="quadratic") == pytest.approx(7 / 11, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 200, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + np.eye(c)[y] * 1.0
    logits[:20] = np.round(logits[:20], 1)  # ties
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    m = classification_metrics(y, probs, referable_dr=True)
    for weights, key in ((None, "kappa"), ("linear", "kappa_linear"), ("quadratic", "kappa_quadratic")):
        assert m[key] == pytest.approx(skm.cohen_kappa_score(y, pred, weights=weights), abs=1e-9)
    assert m["auroc_macro"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-9
    )
    onehot = np.eye(c)[y]
    assert m["aupr_macro"] == pytest.approx(
        skm.average_precision_score(onehot, probs, average="macro"), abs=1e-9
    )
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-9)
    assert m["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-9)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-9)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average=None).tolist(), abs=1e-9)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average=None).tolist(), abs=1e-9)
    ref, score = (y >= 2).astype(int), probs[:, 2:].sum(1)
    assert m["referable"]["auroc"] == pytest.approx(skm.roc_auc_score(ref, score), abs=1e-9)
    assert m["referable"]["aupr"] == pytest.approx(skm.average_precision_score(ref, score), abs=1e-9)
    assert m["referable"]["f1"] == pytest.approx(skm.f1_score(ref, (score >= 0.5).astype(int)), abs=1e-9)


def test_absent_class_is_skipped_with_warning_and_binary_path() -> None:
    y = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(UserWarning, match="class 2"):
        value = macro_auroc(y, probs)
    expected = np.mean([skm.roc_auc_score(y == 0, probs[:, 0]), skm.roc_auc_score(y == 1, probs[:, 1])])
    assert value == pytest.approx(expected)
    with pytest.warns(UserWarning):
        macro_aupr(y, probs)
    assert average_precision(y == 1, probs[:, 1]) == pytest.approx(
        skm.average_precision_score(y == 1, probs[:, 1])
    )
    assert mcc([0, 0, 0], [0, 0, 0], 2) == 0.0


def test_mean_ci_uses_the_t_distribution() -> None:
    out = mean_ci([0.8, 0.82, 0.78, 0.81, 0.79])
    assert out["mean"] == pytest.approx(0.8)
    assert out["ci_high"] - out["mean"] == pytest.approx(
        2.776445 * np.std([0.8, 0.82, 0.78, 0.81, 0.79], ddof=1) / np.sqrt(5), rel=1e-5
    )
