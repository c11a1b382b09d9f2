"""Dice and IoU of binary masks, per class and mean.

Scores are computed once over everything passed in (a whole test volume, or all test slices of a
volume stacked), not averaged per slice: a slice with no foreground would otherwise count as a
perfect 1.0 or a 0.0 depending on one stray voxel.
"""

from __future__ import annotations

import numpy as np
import torch


def dice_iou(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """``Dice = 2|P n G| / (|P| + |G|)`` and ``IoU = |P n G| / |P u G|`` of two boolean masks; both 1.0 when both are empty."""
    p = torch.as_tensor(pred).bool()
    g = torch.as_tensor(target).bool()
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from target shape {tuple(g.shape)}")
    inter = (p & g).sum().item()
    sizes = p.sum().item() + g.sum().item()
    union = sizes - inter
    if sizes == 0:
        return 1.0, 1.0
    return 2 * inter / sizes, inter / union


def segmentation_scores(
    prob: torch.Tensor, target: torch.Tensor, class_names: list[str] | tuple[str, ...], threshold: float = 0.5
) -> dict[str, float]:
    """Dice and IoU per class and their mean, from probabilities (N, C, *spatial) and binary targets.

    Binarises at ``threshold`` (0.5: evaluation never uses the learned pseudo-label threshold).
    Keys: ``dice/<class>``, ``iou/<class>``, ``dice``, ``iou`` (means over classes).
    """
    if prob.shape != target.shape:
        raise ValueError(
            f"probabilities {tuple(prob.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    if prob.shape[1] != len(class_names):
        raise ValueError(f"{prob.shape[1]} output channels but {len(class_names)} class names")
    scores: dict[str, float] = {}
    dices, ious = [], []
    for c, name in enumerate(class_names):
        dice, iou = dice_iou(prob[:, c] > threshold, target[:, c] > 0.5)
        scores[f"dice/{name}"], scores[f"iou/{name}"] = dice, iou
        dices.append(dice)
        ious.append(iou)
    scores["dice"] = float(np.mean(dices))
    scores["iou"] = float(np.mean(ious))
    return scores


__all__ = ["dice_iou", "segmentation_scores"]
