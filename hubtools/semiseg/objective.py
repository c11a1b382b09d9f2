"""The training objective of all three methods: ``L = L_sup + alpha(t) (beta_pl L_PL + beta_kl KL)``.

- ``supervised``: ``L_sup`` only.
- ``pl``: pseudo label ``1[p_u > 0.5]`` (the EM view: the E-step labels, the M-step is this
  optimiser step); no KL.
- ``bpl``: the threshold is a latent variable with posterior ``q_phi(T | x_u) = N(mu, sigma^2)``
  and prior ``N(mu0, sigma0^2)``; one reparameterised sample ``T = mu + sigma eps`` per image and
  step, the pseudo-label loss as the negative log-likelihood of the ELBO plus ``beta_kl KL``.

Where the pseudo labels come from (``teacher``): ``"ema"`` (default) labels the unlabelled images
with an EMA teacher's probabilities on a weak view while the student sees a strong view
(:mod:`hubtools.semiseg.teacher`); ``"none"`` labels them with the student's own forward pass,
as the original method does, which loses to supervised-only on the MNI benchmark (confirmation bias).
``confidence`` keeps only the pixels whose source probability is ``>= c`` or ``<= 1 - c`` in the
student's pseudo-label loss.

How the threshold T learns (BPL): the pseudo label's log-likelihood reaches T only through a label
that depends smoothly on T. ``pl_mode="soft"`` (``sigmoid((p - T) / s)``) and ``"straight_through"``
give ``dL_PL/dT != 0``; ``"hard"`` (``1[p > T]``, the original code) gives none, so its q(T) is pulled
onto the prior by the KL alone and its threshold is *sampled from the prior, not learned*
(:data:`THRESHOLD_LEARNS`). The likelihood term that trains T uses every pixel, also where the
confidence mask hides a pixel from the student. With self-labels (``teacher="none"``) the likelihood
is highest where T sits at the model's own decision boundary 0.5, so T only leaves the prior mean when
that is not 0.5; with a teacher T settles where the teacher's probabilities cross the student's
boundary (the benchmark's prior sweep shows where it ends).

The gates of the anchor skip a term without breaking the graph (multiplying by 0), so every
parameter receives a (possibly zero) gradient each step, as DDP requires.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from hubtools.config import StrictModel
from hubtools.semiseg.losses import (
    confidence_mask,
    gaussian_kl,
    pseudo_labels,
    segmentation_loss,
    warmup_weight,
)

Method = Literal["supervised", "pl", "bpl"]
METHODS: tuple[str, ...] = ("supervised", "pl", "bpl")
# Whether the pseudo-label likelihood gives the threshold head a gradient, per ``pl_mode``.
THRESHOLD_LEARNS: dict[str, bool] = {"soft": True, "straight_through": True, "hard": False}


class ObjectiveConfig(StrictModel):
    """The loss settings. Prior, KL weight and gates follow the method's published brain configuration;
    teacher, confidence masking and the plateau-triggered ramp are hubtools' defaults (see the module doc)."""

    method: Method = "bpl"
    pl_mode: Literal["soft", "straight_through", "hard"] = Field(
        "soft", description="how Bayesian pseudo labels depend on T (bpl only; plain PL labels are hard)"
    )
    pl_threshold: float = Field(0.5, gt=0, lt=1, description="fixed threshold of plain pseudo labels")
    prior_mu: float = Field(0.5, gt=0, lt=1)
    prior_sigma: float = Field(0.1, gt=0)
    softness: float = Field(0.05, gt=0, description="s of the soft pseudo label sigmoid((p - T) / s)")
    beta_pl: float = Field(1.0, ge=0)
    beta_kl: float = Field(0.1, ge=0)
    teacher: Literal["ema", "none"] = Field(
        "ema",
        description="pseudo labels from an EMA teacher on a weak view (ema) or the student's own pass (none)",
    )
    ema_decay: float = Field(0.99, ge=0, lt=1, description="teacher <- d teacher + (1 - d) student per step")
    confidence: float = Field(
        0.8,
        ge=0.5,
        lt=1,
        description="student learns pseudo labels only where p >= c or p <= 1 - c (0.5: all)",
    )
    warmup_trigger: Literal["plateau", "step"] = Field(
        "plateau",
        description="start the ramp once the supervised loss plateaus (between warmup_start and warmup_latest), "
        "or at warmup_start exactly",
    )
    warmup_start: float = Field(0.2, ge=0, le=1, description="alpha(t) is 0 before warmup_start * steps")
    warmup_latest: float = Field(
        0.5, ge=0, le=1, description="plateau trigger: the ramp starts by this fraction"
    )
    warmup_len: float = Field(0.1, ge=0, le=1, description="then rises linearly over warmup_len * steps")
    plateau_window: int = Field(50, ge=1, description="steps per window of the plateau test")
    plateau_tol: float = Field(
        0.02, ge=0, description="plateau: a window improved by less than this (relative)"
    )
    alpha_max: float = Field(1.0, ge=0)
    min_foreground: float = Field(
        0.005, ge=0, lt=1, description="skip a term whose (pseudo) label foreground fraction is <= this"
    )
    conf_lower: float = Field(
        0.0, ge=0, lt=1, description="skip PL when the batch's mean T is outside (this, 1)"
    )
    posterior_mean: Literal["learned", "confidence", "prior"] = "learned"
    posterior_std: Literal["learned", "heuristic", "prior"] = "learned"
    prior_mean: Literal["fixed", "batch"] = "fixed"
    prior_std: Literal["fixed", "heuristic"] = "fixed"
    prior_std_gamma: float = Field(2.0, gt=0, description="heuristic prior std = min(mu0, 1 - mu0) / gamma")


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(-1)


def threshold_distributions(
    prob_u: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, cfg: ObjectiveConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) and prior (mean, std) of the threshold, each (B, C), per the anchor's options."""
    confidence = _spatial_mean(prob_u.detach())
    q_mu = {"learned": mu, "confidence": confidence, "prior": torch.full_like(mu, cfg.prior_mu)}[
        cfg.posterior_mean
    ]
    if cfg.posterior_std == "learned":
        q_sigma = torch.exp(0.5 * logvar)
    elif cfg.posterior_std == "heuristic":
        q_sigma = torch.minimum(q_mu, 1 - q_mu).clamp_min(1e-4) / 2
    else:
        q_sigma = torch.full_like(mu, cfg.prior_sigma)
    p_mu = (
        torch.full_like(mu, cfg.prior_mu) if cfg.prior_mean == "fixed" else confidence.mean(0).expand_as(mu)
    )
    if cfg.prior_std == "fixed":
        p_sigma = torch.full_like(mu, cfg.prior_sigma)
    else:
        p_sigma = torch.minimum(p_mu, 1 - p_mu).clamp_min(1e-4) / cfg.prior_std_gamma
    return q_mu, q_sigma, p_mu, p_sigma


def semiseg_objective(
    logits_l: torch.Tensor,
    target_l: torch.Tensor,
    cfg: ObjectiveConfig,
    step: int,
    total_steps: int,
    temperature: float = 1.0,
    logits_u: torch.Tensor | None = None,
    mu: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
    reduce_batch: bool = False,
    source_prob_u: torch.Tensor | None = None,
    alpha: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and the scalars to log (``loss_sup``, ``loss_pl``, ``kl``, ``alpha``, ``pl_gate``,
    ``pl_foreground``, ``pl_confident``, ``T_mu``, ``T_sigma``).

    ``step`` is the optimiser step being taken (0-based), ``mu``/``logvar`` the threshold head's
    output for the unlabelled images (B, C). ``reduce_batch`` draws one threshold per batch.
    ``source_prob_u`` are the probabilities the pseudo labels come from (a teacher's, aligned with
    ``logits_u``); ``None`` uses the student's own. ``alpha`` overrides the step-based ramp.
    """
    fg_l = target_l.float().mean()
    sup_gate = (fg_l > cfg.min_foreground).to(logits_l.dtype)
    loss_sup = segmentation_loss(logits_l, target_l, temperature)
    total = sup_gate * loss_sup
    metrics: dict[str, torch.Tensor] = {"loss_sup": loss_sup.detach(), "sup_gate": sup_gate.detach()}
    if cfg.method == "supervised" or logits_u is None:
        return total, metrics

    if alpha is None:
        alpha = warmup_weight(step, total_steps, cfg.warmup_start, cfg.warmup_len, cfg.alpha_max)
    prob_u = (
        torch.sigmoid(logits_u.detach() / temperature) if source_prob_u is None else source_prob_u.detach()
    )
    if cfg.method == "pl":
        target_u = pseudo_labels(prob_u, cfg.pl_threshold, mode="hard")
        kl = torch.zeros((), dtype=logits_u.dtype, device=logits_u.device)
        threshold_mean = torch.full((), cfg.pl_threshold, device=logits_u.device)
        in_range = torch.ones((), dtype=torch.bool, device=logits_u.device)
    else:
        if mu is None or logvar is None:
            raise ValueError("method 'bpl' needs the threshold head's mu and logvar")
        q_mu, q_sigma, p_mu, p_sigma = threshold_distributions(prob_u, mu, logvar, cfg)
        threshold = q_mu + q_sigma * torch.randn_like(q_mu)
        if reduce_batch:
            threshold = threshold.mean(0, keepdim=True).expand_as(threshold)
        target_u = pseudo_labels(prob_u, threshold, mode=cfg.pl_mode, softness=cfg.softness)
        kl = gaussian_kl(q_mu, 2 * torch.log(q_sigma), p_mu, p_sigma).mean()
        threshold_mean = threshold.detach().mean()
        in_range = (threshold_mean > cfg.conf_lower) & (threshold_mean < 1)
        metrics["T_mu"] = q_mu.detach().mean()
        metrics["T_sigma"] = q_sigma.detach().mean()
    pl_foreground = target_u.detach().mean()
    pl_gate = ((pl_foreground > cfg.min_foreground) & in_range).to(logits_u.dtype)
    weight = confidence_mask(prob_u, cfg.confidence) if cfg.confidence > 0.5 else None
    # The student learns from the (masked) labels; T learns from the likelihood of every pixel. The
    # value is the student's loss, the gradient w.r.t. T that of the unmasked likelihood.
    loss_pl = segmentation_loss(logits_u, target_u.detach(), temperature, weight)
    if target_u.requires_grad:
        likelihood = segmentation_loss(logits_u.detach(), target_u, temperature)
        loss_pl = loss_pl + (likelihood - likelihood.detach())
    total = total + alpha * pl_gate * (cfg.beta_pl * loss_pl + cfg.beta_kl * kl)
    metrics.update(
        pl_confident=weight.mean().detach() if weight is not None else torch.ones(()),
        loss_pl=loss_pl.detach(),
        kl=kl.detach(),
        alpha=torch.tensor(alpha),
        pl_gate=pl_gate.detach(),
        pl_foreground=pl_foreground,
        T_sample=threshold_mean,
    )
    return total, metrics


__all__ = [
    "METHODS",
    "THRESHOLD_LEARNS",
    "Method",
    "ObjectiveConfig",
    "semiseg_objective",
    "threshold_distributions",
]
