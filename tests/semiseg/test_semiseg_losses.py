"""Losses, pseudo labels, KL, ramp and gates against independent computations of the method's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
from hubtools.semiseg.losses import (
    gaussian_kl,
    pseudo_labels,
    segmentation_loss,
    soft_dice_loss,
    warmup_weight,
)
from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg
from hubtools.semiseg.objective import ObjectiveConfig, semiseg_objective, threshold_distributions


def test_kl_matches_torch_distributions_and_vanishes_at_the_prior():
    torch.manual_seed(0)
    mu, logvar = torch.rand(16, 2), torch.randn(16, 2)
    for mu0, sigma0 in [(0.5, 0.1), (0.7, 0.15), (0.9, 0.3)]:
        expected = kl_divergence(
            Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.tensor(mu0), torch.tensor(sigma0))
        )
        assert torch.allclose(gaussian_kl(mu, logvar, mu0, sigma0), expected, atol=1e-6, rtol=1e-6)
    at_prior = gaussian_kl(torch.full((3,), 0.5), torch.full((3,), 2 * math.log(0.1)), 0.5, 0.1)
    assert torch.allclose(at_prior, torch.zeros(3), atol=1e-6)


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_soft_dice_and_segmentation_loss_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 5, 4)).astype(np.float64)
    target = (rng.random((3, 2, 5, 4)) > 0.6).astype(np.float64)
    tau = 2.0
    p = _np_sigmoid(logits / tau)
    dice = np.mean(
        [
            1 - (2 * (p[:, c] * target[:, c]).sum() + 1e-6) / (p[:, c].sum() + target[:, c].sum() + 1e-6)
            for c in range(2)
        ]
    )
    bce = np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))
    got_dice = soft_dice_loss(torch.from_numpy(p), torch.from_numpy(target)).item()
    got = segmentation_loss(torch.from_numpy(logits), torch.from_numpy(target), temperature=tau).item()
    assert got_dice == pytest.approx(dice, abs=1e-9)
    assert got == pytest.approx(0.5 * dice + 0.5 * bce, abs=1e-9)


def test_pseudo_label_modes_forward_and_gradients():
    prob = torch.tensor([[[0.1, 0.45, 0.55, 0.9]]], requires_grad=True)
    threshold = torch.tensor([[0.5]], requires_grad=True)
    s = 0.05
    soft = pseudo_labels(prob, threshold, "soft", s)
    assert torch.allclose(soft, torch.sigmoid((prob.detach() - 0.5) / s))
    hard = pseudo_labels(prob, threshold, "hard")
    assert hard.tolist() == [[[0.0, 0.0, 1.0, 1.0]]]
    straight = pseudo_labels(prob, threshold, "straight_through", s)
    assert torch.equal(straight.detach(), hard)
    # d yhat / dT: soft and straight-through carry the soft label's derivative -sigmoid'((p - T)/s)/s.
    (g_soft,) = torch.autograd.grad(soft.sum(), threshold)
    (g_st,) = torch.autograd.grad(straight.sum(), threshold)
    z = torch.sigmoid((prob.detach() - 0.5) / s)
    assert torch.allclose(g_soft, -(z * (1 - z) / s).sum().view(1, 1))
    assert torch.allclose(g_st, g_soft)
    assert not hard.requires_grad  # the anchor's comparison: no gradient reaches T
    for mode in ("soft", "straight_through", "hard"):  # and never to the prediction (stop-gradient)
        out = pseudo_labels(prob, threshold, mode, s)
        if out.requires_grad:
            (g_prob,) = torch.autograd.grad(out.sum(), prob, allow_unused=True)
            assert g_prob is None or torch.count_nonzero(g_prob) == 0
    with pytest.raises(ValueError, match="pl_mode"):
        pseudo_labels(prob, threshold, "fuzzy")


def _phi_gradients(mode: str) -> list[torch.Tensor]:
    """Gradients on the threshold head from one BPL step with beta_kl = 0 (so only L_PL can train phi)."""
    torch.manual_seed(0)
    model = UNetForSemiSeg(UNetSegConfig(width=4, depth=1))
    x = torch.rand(4, 1, 16, 16)
    out = model(x)
    cfg = ObjectiveConfig(
        method="bpl", pl_mode=mode, beta_kl=0.0, warmup_start=0.0, warmup_len=0.0, min_foreground=0.0
    )
    target = (x[:2] > 0.5).float()
    loss, metrics = semiseg_objective(
        out.logits[:2],
        target,
        cfg,
        step=5,
        total_steps=10,
        logits_u=out.logits[2:],
        mu=out.threshold_mu[2:],
        logvar=out.threshold_logvar[2:],
    )
    assert metrics["pl_gate"] == 1 and metrics["alpha"] == 1
    model.zero_grad()
    loss.backward()
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.threshold_head.parameters()]


def test_threshold_receives_gradient_from_pseudo_label_loss_in_default_mode():
    assert ObjectiveConfig().pl_mode == "soft" and ObjectiveConfig().method == "bpl"  # the defaults
    for mode in ("soft", "straight_through"):
        grads = _phi_gradients(mode)
        assert sum(g.abs().sum().item() for g in grads) > 1e-6, mode
        # the output layer that makes mu gets a non-zero gradient on the mu bias
        assert grads[-1][0].abs().item() > 1e-6, mode
    hard = _phi_gradients("hard")
    assert all(torch.count_nonzero(g) == 0 for g in hard)  # the anchor flaw: phi only learns from the KL


def test_warmup_ramp():
    total, start, length = 1000, 0.2, 0.1
    assert warmup_weight(0, total, start, length) == 0
    assert warmup_weight(199, total, start, length) == 0
    assert warmup_weight(200 + 50, total, start, length) == pytest.approx(0.5)
    assert warmup_weight(300, total, start, length) == 1
    assert warmup_weight(999, total, start, length) == 1


def test_gates_skip_terms_with_too_little_foreground():
    torch.manual_seed(0)
    logits_l = torch.randn(2, 1, 8, 8)
    target_l = torch.zeros(2, 1, 8, 8)
    target_l[0, 0, :4, :4] = 1
    cfg = ObjectiveConfig(method="pl", warmup_start=0.0, warmup_len=0.0)
    sup = segmentation_loss(logits_l, target_l)
    # unlabelled predictions all below 0.5 -> empty pseudo labels -> PL term skipped
    loss, metrics = semiseg_objective(logits_l, target_l, cfg, 5, 10, logits_u=torch.full((2, 1, 8, 8), -3.0))
    assert metrics["pl_gate"] == 0 and loss.item() == pytest.approx(sup.item())
    loss, metrics = semiseg_objective(logits_l, target_l, cfg, 5, 10, logits_u=torch.full((2, 1, 8, 8), 3.0))
    assert metrics["pl_gate"] == 1 and loss.item() > sup.item()
    # a labelled batch without foreground skips the supervised term
    loss, metrics = semiseg_objective(
        logits_l, torch.zeros_like(target_l), ObjectiveConfig(method="supervised"), 0, 10
    )
    assert metrics["sup_gate"] == 0 and loss.item() == 0
    # before the ramp starts the PL term weighs nothing
    loss, metrics = semiseg_objective(
        logits_l, target_l, ObjectiveConfig(method="pl"), 0, 10, logits_u=torch.full((2, 1, 8, 8), 3.0)
    )
    assert metrics["alpha"] == 0 and loss.item() == pytest.approx(sup.item())


def test_posterior_and_prior_options():
    prob = torch.full((2, 1, 4, 4), 0.8)
    mu, logvar = torch.full((2, 1), 0.3), torch.full((2, 1), math.log(0.04))
    q_mu, q_sigma, p_mu, p_sigma = threshold_distributions(prob, mu, logvar, ObjectiveConfig())
    assert torch.allclose(q_mu, mu) and torch.allclose(q_sigma, torch.full((2, 1), 0.2))
    assert torch.allclose(p_mu, torch.full((2, 1), 0.5)) and torch.allclose(p_sigma, torch.full((2, 1), 0.1))
    cfg = ObjectiveConfig(
        posterior_mean="confidence", posterior_std="heuristic", prior_mean="batch", prior_std="heuristic"
    )
    q_mu, q_sigma, p_mu, p_sigma = threshold_distributions(prob, mu, logvar, cfg)
    assert torch.allclose(q_mu, torch.full((2, 1), 0.8)) and torch.allclose(q_sigma, torch.full((2, 1), 0.1))
    assert torch.allclose(p_mu, torch.full((2, 1), 0.8)) and torch.allclose(p_sigma, torch.full((2, 1), 0.1))
    cfg = ObjectiveConfig(posterior_mean="prior", posterior_std="prior")
    q_mu, q_sigma, _, _ = threshold_distributions(prob, mu, logvar, cfg)
    assert torch.allclose(q_mu, torch.full((2, 1), 0.5)) and torch.allclose(q_sigma, torch.full((2, 1), 0.1))
