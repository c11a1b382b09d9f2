"""Forgetting evaluation: how much of the original-domain (natural image) ability survives adaptation.

The anchor has no protocol; the reference (Bafghi et al.) measures ImageNet accuracy of the adapted
backbone. Here a frozen-feature probe on the backbone's CLS token (``pooler_output``) before and after
adaptation: DINO's weighted kNN (k = 20, cosine, weights ``exp(sim / 0.07)``) and a logistic-regression
linear probe. Reported as ``before``, ``after``, ``forgetting = before - after``, ``retention = after / before``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from hubtools.pretrain.data import LabelledImages


@torch.no_grad()
def cls_features(backbone: nn.Module, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The backbone's CLS feature after its final norm, in eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = torch.cat(
        [
            backbone(pixel_values=pixel_values[i : i + batch_size].to(device)).pooler_output.float().cpu()
            for i in range(0, len(pixel_values), batch_size)
        ]
    )
    backbone.train(was_training)
    return out


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """DINO's weighted kNN classifier on L2-normalised features."""
    train_f, test_f = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    sims, idx = (test_f @ train_f.t()).topk(min(k, len(train_f)), dim=1)
    votes = torch.zeros(len(test_f), n_classes)
    votes.scatter_add_(1, train_labels[idx], (sims / temperature).exp())
    return float((votes.argmax(1) == test_labels).float().mean())


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    seed: int = 0,
) -> float:
    """Multinomial logistic regression on standardised frozen features."""
    scaler = StandardScaler().fit(train_features.numpy())
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(train_features.numpy()), train_labels.numpy())
    return float((clf.predict(scaler.transform(test_features.numpy())) == test_labels.numpy()).mean())


def probe_scores(
    backbone: nn.Module, train_set: LabelledImages, test_set: LabelledImages, k: int = 20
) -> dict[str, float]:
    """kNN and linear-probe accuracy of ``backbone``'s frozen CLS features."""
    train_f, test_f = (
        cls_features(backbone, train_set.pixel_values),
        cls_features(backbone, test_set.pixel_values),
    )
    return {
        "knn_accuracy": knn_accuracy(train_f, train_set.labels, test_f, test_set.labels, k=k),
        "linear_probe_accuracy": linear_probe_accuracy(train_f, train_set.labels, test_f, test_set.labels),
    }


def forgetting_report(
    before: nn.Module, after: nn.Module, train_set: LabelledImages, test_set: LabelledImages, k: int = 20
) -> dict[str, Any]:
    """Probe scores of the base (``before``) and adapted (``after``) backbones on the same original-domain data."""
    b, a = probe_scores(before, train_set, test_set, k), probe_scores(after, train_set, test_set, k)
    report: dict[str, Any] = {}
    for metric in b:
        report[metric] = {
            "before": b[metric],
            "after": a[metric],
            "forgetting": b[metric] - a[metric],
            "retention": a[metric] / b[metric] if b[metric] else float("nan"),
        }
    return report
