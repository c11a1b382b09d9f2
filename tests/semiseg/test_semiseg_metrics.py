"""Dice/IoU against hand-computed cases, and pooled (stacked) scores versus per-slice means."""

from __future__ import annotations

import pytest
import torch

from hubtools.semiseg.metrics import dice_iou, segmentation_scores


def mask(indices, size=5):
    m = torch.zeros(size, dtype=torch.bool)
    m[list(indices)] = True
    return m


def test_dice_iou_cases():
    assert dice_iou(mask({1, 2}), mask({1, 2})) == (1.0, 1.0)
    assert dice_iou(mask({1}), mask({3})) == (0.0, 0.0)
    assert dice_iou(mask(set()), mask(set())) == (1.0, 1.0)
    dice, iou = dice_iou(mask({1, 2}), mask({2, 3}))
    assert dice == pytest.approx(0.5) and iou == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shape"):
        dice_iou(torch.zeros(3), torch.zeros(4))


def test_stacked_score_differs_from_mean_of_slices():
    pred = torch.zeros(2, 1, 4, 4)
    gt = torch.zeros(2, 1, 4, 4)
    pred[0, 0, :2, :2] = 1  # slice 0: perfect
    gt[0, 0, :2, :2] = 1
    pred[1, 0, 0, 0] = 1  # slice 1: one false-positive pixel, empty ground truth
    scores = segmentation_scores(pred, gt, ["fg"])
    per_slice = [dice_iou(pred[i, 0] > 0.5, gt[i, 0] > 0.5)[0] for i in range(2)]
    assert sum(per_slice) / 2 == pytest.approx(0.5)
    assert scores["dice"] == pytest.approx(2 * 4 / (5 + 4))
    assert scores["dice/fg"] == scores["dice"] and scores["iou"] == pytest.approx(4 / 5)


def test_per_class_and_mean():
    prob = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    prob[0, 0] = 0.9
    target[0, 0] = 1  # class a perfect
    prob[0, 1, 0, 0] = 0.9
    target[0, 1, 1, 1] = 1  # class b disjoint
    scores = segmentation_scores(prob, target, ["a", "b"])
    assert scores["dice/a"] == 1 and scores["dice/b"] == 0 and scores["dice"] == 0.5
    with pytest.raises(ValueError, match="class names"):
        segmentation_scores(prob, target, ["a"])
