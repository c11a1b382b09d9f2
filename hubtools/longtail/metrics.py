"""Long-tail metrics (as MONICA reports them): per class, grouped and overall, with distinct names.

:func:`lt_report` returns, in percent:

- ``top1``: accuracy over samples;
- ``balanced_acc``: mean per-class recall (classes present in ``labels``);
- ``many_acc`` / ``medium_acc`` / ``few_acc``: mean recall of each group (index cut-offs of the profile);
- ``group_avg_acc``: mean of the three group means (MONICA's "avg"; weights classes unequally);
- ``macro_f1``, ``macro_auroc`` (one-vs-rest, on softmax probabilities unless ``auc_input="logits"``),
  ``macro_auprc`` (one-vs-rest average precision, scikit-learn's step-wise definition);
- ``group_avg_f1``, ``group_avg_auroc``, ``group_avg_auprc``: the same mean of group means as ``group_avg_acc``;
- ``per_class_recall``, ``per_class_f1``, ``per_class_auroc``, ``per_class_auprc``: lists of length C
  (``nan`` where undefined).

A group with no class present in ``labels`` is left out of ``group_avg_*`` and reported as ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import rankdata

from hubtools.errors import ConfigError
from hubtools.longtail.splits import LTProfile, groups_by_threshold


def _group_ids(profile: LTProfile | Sequence[int]) -> np.ndarray:
    if isinstance(profile, LTProfile):
        return profile.groups()
    head, medium = groups_by_threshold(profile)
    ids = np.arange(len(profile))
    return np.where(ids < head, 0, np.where(ids < medium, 1, 2))


def _as_numpy(x: Any, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if dtype is np.float64 else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """One-vs-rest AUROC by the Mann-Whitney U statistic (ties count one half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auprc(scores: np.ndarray, positive: np.ndarray) -> float:
    """One-vs-rest average precision: sum over distinct thresholds of (R_n - R_{n-1}) * P_n, no interpolation."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    hits = positive[order]
    # one operating point per distinct score: tied samples enter together
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores[order])), hits.size - 1]
    tp = np.cumsum(hits)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _group_avg(values: np.ndarray, groups: np.ndarray) -> float:
    """Mean of the many/medium/few group means (groups with no defined value left out)."""
    return _nanmean(np.array([_nanmean(np.where(groups == g, values, np.nan)) for g in range(3)]))


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def lt_report(
    logits: Any,
    labels: Any,
    profile: LTProfile | Sequence[int],
    auc_input: Literal["probs", "logits"] = "probs",
) -> dict[str, Any]:
    """Overall, grouped and per-class metrics of ``logits`` (N x C) against ``labels`` (N), in percent.

    ``profile`` is an :class:`LTProfile`, or the train class counts (groups then by the usual
    many > 100 / few < 20 thresholds, :func:`hubtools.longtail.splits.groups_by_threshold`).
    """
    z = _as_numpy(logits, np.float64)
    y = _as_numpy(labels, np.int64)
    groups = _group_ids(profile)
    num_classes = len(groups)
    if z.ndim != 2 or z.shape[1] != num_classes:
        raise ConfigError(f"logits of shape {z.shape} for a profile of {num_classes} classes")
    if y.shape != (z.shape[0],):
        raise ConfigError(f"labels of shape {y.shape} for logits of shape {z.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    if auc_input not in ("probs", "logits"):
        raise ConfigError(f"auc_input must be 'probs' or 'logits', got {auc_input!r}")

    pred = z.argmax(axis=1)
    scores = _softmax(z) if auc_input == "probs" else z
    recall, f1, auroc, auprc = (np.full(num_classes, np.nan) for _ in range(4))
    for c in range(num_classes):
        true_c, pred_c = y == c, pred == c
        tp = int((true_c & pred_c).sum())
        if true_c.any():
            recall[c] = tp / true_c.sum()
        denom = true_c.sum() + pred_c.sum()
        f1[c] = 2 * tp / denom if denom else 0.0
        auroc[c] = _auroc(scores[:, c], true_c)
        auprc[c] = _auprc(scores[:, c], true_c)
    present = ~np.isnan(recall)

    report: dict[str, Any] = {"top1": 100.0 * float((pred == y).mean()) if y.size else float("nan")}
    report["balanced_acc"] = 100.0 * _nanmean(recall)
    group_means = {}
    for g, name in enumerate(("many", "medium", "few")):
        group_means[name] = 100.0 * _nanmean(np.where(groups == g, recall, np.nan))
        report[f"{name}_acc"] = group_means[name]
    report["group_avg_acc"] = _nanmean(np.array(list(group_means.values())))
    # F1 over the classes present in labels or predictions, as scikit-learn's macro average does
    seen = present | np.isin(np.arange(num_classes), pred)
    report["macro_f1"] = 100.0 * float(f1[seen].mean()) if seen.any() else float("nan")
    report["macro_auroc"] = 100.0 * _nanmean(auroc)
    report["macro_auprc"] = 100.0 * _nanmean(auprc)
    # F1 of a class absent from labels is undefined for the group view (no recall to group by)
    report["group_avg_f1"] = 100.0 * _group_avg(np.where(present, f1, np.nan), groups)
    report["group_avg_auroc"] = 100.0 * _group_avg(auroc, groups)
    report["group_avg_auprc"] = 100.0 * _group_avg(auprc, groups)
    report["per_class_recall"] = (100.0 * recall).tolist()
    report["per_class_f1"] = (100.0 * f1).tolist()
    report["per_class_auroc"] = (100.0 * auroc).tolist()
    report["per_class_auprc"] = (100.0 * auprc).tolist()
    report["num_samples"] = int(y.size)
    return report
