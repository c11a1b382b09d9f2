"""Losses of supervised, pseudo-label and Bayesian pseudo-label training.

Everything works on per-class sigmoid outputs: ``logits`` and targets of shape
(B, C, *spatial), one channel per foreground class. Dice sums run over the whole batch
so a batch with little foreground still gets a meaningful overlap term.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PLMode = Literal["soft", "straight_through", "hard"]
PL_MODES: tuple[str, ...] = ("soft", "straight_through", "hard")
DICE_EPS = 1e-6


def soft_dice_loss(
    prob: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - (2 sum(p y) + eps) / (sum p + sum y + eps)`` per channel over the whole batch, averaged over channels.

    ``weight`` (same shape, 0/1 or soft) restricts the sums to the pixels it keeps (confidence masking).
    """
    if weight is not None:
        prob, target = prob * weight, target * weight
    dims = [0, *range(2, prob.dim())]
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    return (1 - (2 * intersection + eps) / (denominator + eps)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``0.5 SoftDice(sigmoid(f / tau), y) + 0.5 BCEWithLogits(f / tau, y)``; ``y`` may be soft (pseudo labels).

    With a pixel ``weight`` both terms count only the weighted pixels (the BCE is their weighted mean).
    """
    scaled = logits / temperature
    if weight is None:
        bce = F.binary_cross_entropy_with_logits(scaled, target)
    else:
        per_pixel = F.binary_cross_entropy_with_logits(scaled, target, reduction="none")
        bce = (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
    return 0.5 * soft_dice_loss(torch.sigmoid(scaled), target, weight=weight) + 0.5 * bce


def confidence_mask(prob: torch.Tensor, confidence: float) -> torch.Tensor:
    """1 where ``prob >= confidence`` or ``prob <= 1 - confidence`` (pixels a pseudo label may teach), else 0."""
    return ((prob >= confidence) | (prob <= 1 - confidence)).to(prob.dtype)


def gaussian_kl(
    mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | float, prior_sigma: torch.Tensor | float
) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(mu0, sigma0^2)) = log sigma0 - log sigma + (sigma^2 + (mu - mu0)^2) / (2 sigma0^2) - 1/2``.

    Element-wise; the caller averages over the batch. This is the corrected closed form (the
    Oct-2022 anchor divided by sigma0^4 and mixed variances with standard deviations).
    """
    prior_mu = torch.as_tensor(prior_mu, dtype=mu.dtype, device=mu.device)
    prior_sigma = torch.as_tensor(prior_sigma, dtype=mu.dtype, device=mu.device)
    return (
        torch.log(prior_sigma)
        - 0.5 * logvar
        + (logvar.exp() + (mu - prior_mu) ** 2) / (2 * prior_sigma**2)
        - 0.5
    )


def expand_threshold(threshold: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """(B, C) thresholds broadcast against (B, C, *spatial) probabilities."""
    return threshold.reshape(*threshold.shape, *([1] * (prob.dim() - threshold.dim())))


def pseudo_labels(
    prob: torch.Tensor, threshold: torch.Tensor | float, mode: PLMode = "soft", softness: float = 0.05
) -> torch.Tensor:
    """Pseudo labels of unlabelled images from their own prediction ``prob`` and a threshold ``T``.

    The prediction is always detached (a target must not pull the prediction through itself), so
    the only gradient a pseudo label carries flows to ``T``:

    - ``soft``: ``sigmoid((p - T) / s)``; ``d yhat / d T`` is non-zero, so the pseudo-label loss trains
      the threshold head, which is what the variational objective needs (the default);
    - ``straight_through``: the hard label forward, the soft label's gradient backward;
    - ``hard``: ``1[p > T]`` as the anchor code does: no gradient reaches ``T`` at all.
    """
    if mode not in PL_MODES:
        raise ValueError(f"pl_mode must be one of {PL_MODES}, got {mode!r}")
    prob = prob.detach()
    if not torch.is_tensor(threshold):
        threshold = torch.full(prob.shape[:2], float(threshold), dtype=prob.dtype, device=prob.device)
    t = expand_threshold(threshold, prob)
    hard = (prob > t).to(prob.dtype)
    if mode == "hard":
        return hard
    soft = torch.sigmoid((prob - t) / softness)
    if mode == "soft":
        return soft
    return hard + soft - soft.detach()


def warmup_weight(
    step: int, total_steps: int, warmup_start: float, warmup_len: float, alpha_max: float = 1.0
) -> float:
    """alpha(t): 0 before ``t0 = warmup_start * T``, then linear to ``alpha_max`` over ``warmup_len * T`` steps."""
    t0 = warmup_start * total_steps
    length = warmup_len * total_steps
    if step < t0:
        return 0.0
    if length <= 0:
        return alpha_max
    return alpha_max * min(1.0, (step - t0) / length)


__all__ = [
    "DICE_EPS",
    "confidence_mask",
    "PL_MODES",
    "PLMode",
    "expand_threshold",
    "gaussian_kl",
    "pseudo_labels",
    "segmentation_loss",
    "soft_dice_loss",
    "warmup_weight",
]
