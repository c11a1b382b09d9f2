"""Retinal classification metrics in numpy (``evaluate.load`` fetches code from the Hub: unusable offline).

Definitions follow DINORET/RETFound reporting: accuracy, macro one-vs-rest AUROC (classes absent from
the test set are skipped with a warning), macro AUPR as average precision ``Σ_n (R_n - R_{n-1})·P_n``,
Cohen's kappa (plain, linear, quadratic), macro/weighted F1, multiclass MCC, per-class sensitivity,
specificity and precision; for 5-grade diabetic retinopathy also referable DR (grades 2-4 vs 0-1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``O[i, j]`` = number of samples of true class i predicted as j."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return out


def cohen_kappa(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int | None = None, weights: str | None = None
) -> float:
    """``κ = 1 - Σ w_ij O_ij / Σ w_ij E_ij`` with E the outer product of the marginals / n; ``w`` is 1 off the
    diagonal (plain), ``|i-j|/(C-1)`` (linear) or ``(i-j)²/(C-1)²`` (quadratic)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n_classes = n_classes or int(max(y_true.max(), y_pred.max())) + 1
    observed = confusion(y_true, y_pred, n_classes).astype(np.float64)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    i, j = np.indices((n_classes, n_classes))
    if weights is None:
        w = (i != j).astype(np.float64)
    elif weights == "linear":
        w = np.abs(i - j) / max(n_classes - 1, 1)
    elif weights == "quadratic":
        w = (i - j) ** 2 / max(n_classes - 1, 1) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    denominator = (w * expected).sum()
    return 1.0 - (w * observed).sum() / denominator if denominator > 0 else 0.0


def binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """``Σ_n (R_n - R_{n-1})·P_n`` over the distinct score thresholds, highest first."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, yy = np.asarray(score)[order], y[order]
    last_of_threshold = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(yy)[last_of_threshold]
    fp = (last_of_threshold + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / max(int(y.sum()), 1)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _per_class(fn, y_true: np.ndarray, scores: np.ndarray, name: str) -> float:
    values = []
    for c in range(scores.shape[1]):
        positives = y_true == c
        if positives.all() or not positives.any():
            warnings.warn(
                f"{name}: class {c} has no {'negatives' if positives.all() else 'positives'} in the "
                "test set; skipped",
                stacklevel=3,
            )
            continue
        values.append(fn(positives, scores[:, c]))
    return float(np.mean(values)) if values else float("nan")


def macro_auroc(y_true: Sequence[int], scores: np.ndarray) -> float:
    """Macro one-vs-rest AUROC; a binary problem may pass (N,) positive-class scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return binary_auroc(np.asarray(y_true) == 1, scores)
    return _per_class(binary_auroc, np.asarray(y_true), scores, "AUROC")


def macro_aupr(y_true: Sequence[int], scores: np.ndarray) -> float:
    """Macro one-vs-rest average precision."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return average_precision(np.asarray(y_true) == 1, scores)
    return _per_class(average_precision, np.asarray(y_true), scores, "AUPR")


def f1_scores(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """Macro and support-weighted F1 (a class never predicted nor present scores 0, as scikit-learn)."""
    cm = confusion(np.asarray(y_true), np.asarray(y_pred), n_classes).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "f1_macro": float(f1.mean()),
        "f1_weighted": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
    }


def mcc(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Multiclass Matthews correlation ``(c·s - Σ p_k t_k) / sqrt((s² - Σ p_k²)(s² - Σ t_k²))``."""
    cm = confusion(np.asarray(y_true), np.asarray(y_pred), n_classes).astype(np.float64)
    c, s = np.trace(cm), cm.sum()
    p, t = cm.sum(0), cm.sum(1)
    denominator = math.sqrt((s * s - (p * p).sum()) * (s * s - (t * t).sum()))
    return float((c * s - (p * t).sum()) / denominator) if denominator > 0 else 0.0


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, n_classes: int | None = None, referable_dr: bool = False
) -> dict[str, Any]:
    """Every metric of the downstream protocol from labels and class probabilities (N, C)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = n_classes or probs.shape[1]
    y_pred = probs.argmax(1)
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    fn, fp = cm.sum(1) - tp, cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out: dict[str, Any] = {
            "accuracy": float((y_pred == y_true).mean()),
            "auroc_macro": macro_auroc(y_true, probs if n_classes > 2 else probs[:, 1]),
            "aupr_macro": macro_aupr(y_true, probs if n_classes > 2 else probs[:, 1]),
            "kappa": cohen_kappa(y_true, y_pred, n_classes),
            "kappa_linear": cohen_kappa(y_true, y_pred, n_classes, "linear"),
            "kappa_quadratic": cohen_kappa(y_true, y_pred, n_classes, "quadratic"),
            **f1_scores(y_true, y_pred, n_classes),
            "mcc": mcc(y_true, y_pred, n_classes),
            "sensitivity": np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0).tolist(),
            "specificity": np.divide(tn, tn + fp, out=np.zeros_like(tn), where=tn + fp > 0).tolist(),
            "precision": np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0).tolist(),
        }
    if referable_dr:
        if n_classes != 5:
            raise ValueError("referable DR needs the 5 DR grades")
        out["referable"] = referable_metrics(y_true, probs, threshold=2)
    return out


def referable_metrics(y_true: Sequence[int], probs: np.ndarray, threshold: int = 2) -> dict[str, float]:
    """Grades ``>= threshold`` vs the rest, scored by the summed probability of those grades (referable DR:
    threshold 2 on the 5 DR grades, score p2 + p3 + p4); predicted positive when the score is >= 0.5."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if not 0 < threshold < probs.shape[1]:
        raise ValueError(f"referable threshold {threshold} must split the {probs.shape[1]} classes in two")
    y_ref = (y_true >= threshold).astype(np.int64)
    score = probs[:, threshold:].sum(1)
    pred = (score >= 0.5).astype(np.int64)
    return {
        "accuracy": float((pred == y_ref).mean()),
        "auroc": binary_auroc(y_ref, score) if 0 < y_ref.sum() < len(y_ref) else float("nan"),
        "aupr": average_precision(y_ref, score),
        "f1": _binary_f1(y_ref, pred),
    }


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (as scikit-learn): accuracy that a
    majority-class predictor cannot inflate on imbalanced grades."""
    cm = confusion(np.asarray(y_true), np.asarray(y_pred), n_classes).astype(np.float64)
    support = cm.sum(1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean()) if present.any() else 0.0


def _binary_f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(((pred == 1) & (y == 1)).sum())
    denom = float((pred == 1).sum() + (y == 1).sum())
    return 2 * tp / denom if denom else 0.0


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample sd and the t-distribution confidence interval over seeds/folds (RETFound convention)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "sd": 0.0, "ci_low": mean, "ci_high": mean, "n": len(v)}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(v) - 1)) * sd / math.sqrt(len(v))
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": len(v)}
