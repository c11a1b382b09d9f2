"""Classifier heads and post-hoc corrections for long-tailed training (spec longtail.md 2.4).

Heads map features f (B x D) to logits (B x C):

- ``linear``: ``nn.Linear``;
- ``cosine``: cosines between normalised f and normalised class weights (``ldam_drw``, ``gcl``; the
  loss applies the scale s);
- ``lws``: a frozen linear head times learnable per-class scales s_c (init 1);
- ``tau_norm``: w_c / ||w_c||^tau, bias dropped (tau = 0: the weights without bias);
- ``disalign``: z'_c = (1 + sigma a_c) z_c + sigma b_c with sigma = sigmoid(g(f)) over a frozen linear head.

Post-hoc: :func:`logit_adjust` (z - tau log pi) and :func:`select_tau` (a grid searched on validation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hubtools.errors import ConfigError

CLASSIFIERS = ("linear", "cosine", "lws", "tau_norm", "disalign")


class CosineClassifier(nn.Module):
    """Cosine similarity of normalised features and class weights, in [-1, 1]."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).t()


def _frozen_linear(dim: int, num_classes: int, linear: nn.Linear | None) -> nn.Linear:
    if linear is None:
        linear = nn.Linear(dim, num_classes)
    if (linear.in_features, linear.out_features) != (dim, num_classes):
        raise ConfigError(
            f"head of shape {linear.out_features} x {linear.in_features}, expected {num_classes} x {dim}"
        )
    linear.requires_grad_(False)
    return linear


class LWSClassifier(nn.Module):
    """Learnable weight scaling: logits s_c (w_c . f + b_c) with the linear head frozen, only s trained."""

    def __init__(self, dim: int, num_classes: int, linear: nn.Linear | None = None) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * self.scales


class TauNormClassifier(nn.Module):
    """Tau-normalised weights w_c / ||w_c||^tau of a trained linear head; the bias is dropped."""

    def __init__(self, dim: int, num_classes: int, linear: nn.Linear | None = None, tau: float = 1.0) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.tau = tau

    def normalized_weight(self) -> torch.Tensor:
        w = self.linear.weight
        return w / w.norm(dim=1, keepdim=True).pow(self.tau)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.normalized_weight().t()


class DisAlignClassifier(nn.Module):
    """Distribution alignment: z'_c = (1 + sigma a_c) z_c + sigma b_c, sigma = sigmoid(g(f)), g: D -> 1."""

    def __init__(self, dim: int, num_classes: int, linear: nn.Linear | None = None) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.confidence = nn.Linear(dim, 1)
        nn.init.constant_(self.confidence.weight, 0.1)
        nn.init.zeros_(self.confidence.bias)
        self.scale = nn.Parameter(torch.ones(num_classes))
        self.shift = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(self.confidence(features))
        return (1 + sigma * self.scale) * self.linear(features) + sigma * self.shift


def get_classifier(name: str, dim: int, num_classes: int, **kw) -> nn.Module:
    """Head ``name`` for ``dim``-dimensional features and ``num_classes`` classes.

    ``lws``, ``tau_norm`` and ``disalign`` take ``linear=`` (the trained stage-1 head, frozen in place);
    ``tau_norm`` also ``tau=``.
    """
    builders: dict[str, Callable[..., nn.Module]] = {
        "linear": nn.Linear,
        "cosine": CosineClassifier,
        "lws": LWSClassifier,
        "tau_norm": TauNormClassifier,
        "disalign": DisAlignClassifier,
    }
    if name not in builders:
        raise ConfigError(f"unknown classifier {name!r}; valid: {', '.join(CLASSIFIERS)}")
    if dim < 1 or num_classes < 2:
        raise ConfigError(f"need dim >= 1 and num_classes >= 2, got {dim}, {num_classes}")
    try:
        return builders[name](dim, num_classes, **kw)
    except TypeError as e:
        raise ConfigError(f"classifier {name!r}: {e}") from None


def logit_adjust(logits: torch.Tensor, cls_num_list: Sequence[int], tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment z - tau log pi (Menon et al.) for an ERM model."""
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    if logits.shape[-1] != counts.numel():
        raise ConfigError(f"logits with {logits.shape[-1]} classes for {counts.numel()} class counts")
    return logits - (tau * torch.log(counts / counts.sum())).to(logits)


def select_tau(
    score: Callable[[float], float], grid: Sequence[float] = tuple(np.round(np.arange(0, 2.01, 0.25), 2))
) -> tuple[float, float]:
    """The (tau, score) of ``grid`` with the highest ``score(tau)`` on validation (the first on ties)."""
    best = max(((float(t), float(score(float(t)))) for t in grid), key=lambda ts: ts[1])
    return best
