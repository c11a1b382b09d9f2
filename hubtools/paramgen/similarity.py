"""Behavioural similarity of models: do generated parameters make the same mistakes as the originals?

Parameter-space distance cannot tell a new model from a copy when the collected checkpoints
are consecutive snapshots a few SGD steps apart (any vector off that short path looks "far").
p-diff's own test compares behaviour instead: the set of test examples a model gets wrong,
``W``, and the intersection over union ``|W1 ∩ W2| / |W1 ∪ W2|`` of two models' sets. For each
model the *maximum* IoU over the originals (its most similar original) is what matters: a
generated model that only memorised a checkpoint has a max IoU as high as the originals have
among themselves; a behaviourally new one has a lower one. Prediction agreement (the share of
examples on which two models predict the same class) is reported next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_2d(preds) -> np.ndarray:
    a = np.asarray(preds)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"predictions must be [models, examples], got shape {a.shape}")
    return a


def wrong_iou_matrix(preds_a, preds_b, labels) -> np.ndarray:
    """IoU of the wrong-prediction sets of every model in ``preds_a`` [M, n] with every one in ``preds_b`` [K, n].

    Two models that both get every example right have identical (empty) error sets: IoU 1.
    """
    a, b, y = _as_2d(preds_a), _as_2d(preds_b), np.asarray(labels)
    if a.shape[1] != y.shape[0] or b.shape[1] != y.shape[0]:
        raise ValueError(f"predictions {a.shape} / {b.shape} do not match {y.shape[0]} labels")
    wa, wb = (a != y).astype(np.float64), (b != y).astype(np.float64)
    inter = wa @ wb.T
    union = wa.sum(1)[:, None] + wb.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou


def agreement_matrix(preds_a, preds_b) -> np.ndarray:
    """Share of examples on which each pair of models predicts the same class, [M, K]."""
    a, b = _as_2d(preds_a), _as_2d(preds_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"predictions {a.shape} and {b.shape} cover different examples")
    return (a[:, None, :] == b[None, :, :]).mean(2)


@dataclass
class Similarity:
    """Per model of a group: its most similar reference model by wrong-prediction IoU."""

    max_iou: np.ndarray  # [M]
    nearest: np.ndarray  # [M] index of that reference model
    agreement: np.ndarray  # [M] prediction agreement with it
    max_agreement: np.ndarray  # [M] highest agreement with any reference model

    def summary(self) -> dict[str, float]:
        return {
            "max_iou_median": float(np.median(self.max_iou)),
            "max_iou_mean": float(np.mean(self.max_iou)),
            "agreement_median": float(np.median(self.agreement)),
            "max_agreement_median": float(np.median(self.max_agreement)),
        }


def nearest_similarity(preds, ref_preds, labels, *, same_models: bool = False) -> Similarity:
    """Each model's most similar reference model (max wrong-prediction IoU) and its agreement with it.

    ``same_models=True`` when ``preds`` are the reference models themselves (originals against
    originals): a model is then never its own nearest neighbour.
    """
    a, b = _as_2d(preds), _as_2d(ref_preds)
    iou = wrong_iou_matrix(a, b, labels)
    agree = agreement_matrix(a, b)
    if same_models:
        if a.shape != b.shape:
            raise ValueError("same_models=True needs the same models on both sides")
        if len(a) < 2:
            raise ValueError("a model set needs at least 2 models to compare them with each other")
        np.fill_diagonal(iou, -np.inf)
        np.fill_diagonal(agree, -np.inf)
    nearest = iou.argmax(1)
    rows = np.arange(len(a))
    return Similarity(
        max_iou=iou[rows, nearest],
        nearest=nearest,
        agreement=agree[rows, nearest],
        max_agreement=agree.max(1),
    )
