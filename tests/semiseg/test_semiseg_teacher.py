"""Teacher-student pseudo labels: EMA update, views, confidence masking, the plateau ramp, and where T's
gradient comes from, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
from hubtools.semiseg.losses import confidence_mask, pseudo_labels, segmentation_loss, warmup_weight
from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg
from hubtools.semiseg.objective import THRESHOLD_LEARNS, ObjectiveConfig, semiseg_objective
from hubtools.semiseg.teacher import EMATeacher, RampSchedule, elastic_grid, strong_view, warp


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_weighted_loss_counts_only_the_kept_pixels():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 1, 6, 5))
    target = rng.random((2, 1, 6, 5))
    keep = rng.random((2, 1, 6, 5)) > 0.4
    p = _np_sigmoid(logits)
    pk, tk = p[keep], target[keep]
    dice = 1 - (2 * (pk * tk).sum() + 1e-6) / (pk.sum() + tk.sum() + 1e-6)
    bce = np.mean(-(tk * np.log(pk) + (1 - tk) * np.log(1 - pk)))
    got = segmentation_loss(
        torch.from_numpy(logits), torch.from_numpy(target), weight=torch.from_numpy(keep.astype(np.float64))
    )
    assert got.item() == pytest.approx(0.5 * dice + 0.5 * bce, abs=1e-9)
    prob = torch.tensor([0.05, 0.2, 0.21, 0.5, 0.79, 0.8, 0.95])
    assert confidence_mask(prob, 0.8).tolist() == [1, 1, 0, 0, 0, 1, 1]


def test_ema_teacher_follows_the_formula_and_round_trips():
    torch.manual_seed(0)
    student = UNetForSemiSeg(UNetSegConfig(width=2, depth=1))
    teacher = EMATeacher(student, decay=0.9)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)
    for name, value in teacher.module.state_dict().items():
        expected = 0.9 * before[name] + 0.1 * student.state_dict()[name]
        assert torch.allclose(value, expected, atol=1e-6), name
    assert not any(p.requires_grad for p in teacher.module.parameters())
    other = EMATeacher(UNetForSemiSeg(UNetSegConfig(width=2, depth=1)), decay=0.5)
    other.load_state_dict(teacher.state_dict())
    assert other.decay == 0.9
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.module.state_dict().values(), teacher.module.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(student, decay=1.0)


@pytest.mark.parametrize("shape", [(2, 1, 12, 10), (2, 1, 3, 12, 10)])
def test_zero_warp_is_the_identity_and_a_warp_moves_image_and_target_together(shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    assert torch.allclose(warp(x, elastic_grid(x.shape, 0.0)), x, atol=1e-5)
    grid = elastic_grid(x.shape, 3.0)
    moved = warp(x, grid)
    assert moved.shape == x.shape and not torch.allclose(moved, x, atol=1e-3)
    # targets stay aligned: warping a per-pixel (affine) function of the image equals that function of
    # the warped image, since the resampling is linear in the values
    assert torch.allclose(warp(0.3 * x + 0.2, grid), 0.3 * moved + 0.2, atol=1e-6)
    view, g = strong_view(x, intensity=False, elastic=3.0)
    assert g is not None and view.shape == x.shape
    if x.dim() == 5:  # the slice axis is never displaced: each output slice samples its own slice
        assert torch.allclose(g[..., 2], elastic_grid(x.shape, 0.0)[..., 2])


def test_plateau_ramp_starts_after_the_loss_flattens_and_within_its_bounds():
    losses = [1.0 / (1 + 0.05 * t) if t < 300 else 1.0 / (1 + 0.05 * 300) for t in range(1000)]
    ramp = RampSchedule(1000, trigger="plateau", earliest=0.1, latest=0.5, window=50, tol=0.02)
    for step, loss in enumerate(losses, start=1):
        ramp.record(loss)
        ramp.end_step(step)
    # independent: window means, first window after step >= 100 improving < 2 % on its predecessor
    means = [np.mean(losses[i : i + 50]) for i in range(0, 1000, 50)]
    expected = next(
        50 * (k + 1)
        for k in range(1, len(means))
        if 50 * (k + 1) >= 100 and means[k - 1] - means[k] < 0.02 * means[k - 1]
    )
    assert ramp.start == expected
    assert ramp.alpha(expected - 1, 0.1) == 0 and ramp.alpha(expected + 50, 0.1) == pytest.approx(0.5)
    # a loss that keeps falling: the ramp starts at `latest`
    falling = RampSchedule(1000, earliest=0.1, latest=0.5, window=50, tol=0.02)
    for step in range(1, 1001):
        falling.record(1.0 - step / 1001)
        falling.end_step(step)
    assert falling.start == 500
    # trigger "step" is the fixed ramp of warmup_weight
    fixed = RampSchedule(1000, trigger="step", earliest=0.2)
    assert all(fixed.alpha(t, 0.1) == warmup_weight(t, 1000, 0.2, 0.1) for t in range(0, 1000, 7))


def test_ramp_state_round_trip_mid_window():
    a = RampSchedule(400, window=20, earliest=0.0, latest=0.9)
    b = RampSchedule(400, window=20, earliest=0.0, latest=0.9)
    losses = np.linspace(1, 0.9, 400) ** 3
    for step in range(1, 131):
        a.record(losses[step - 1])
        a.end_step(step)
    b.load_state_dict(a.state_dict())
    for step in range(131, 401):
        for r in (a, b):
            r.record(losses[step - 1])
            r.end_step(step)
    assert a.start == b.start and a.window_means == b.window_means


def _objective_grads(source: torch.Tensor | None, mode: str, confidence: float):
    torch.manual_seed(0)
    logits_u = torch.randn(2, 1, 8, 8, requires_grad=True)
    mu = torch.full((2, 1), 0.45, requires_grad=True)
    logvar = torch.full((2, 1), -6.0, requires_grad=True)
    cfg = ObjectiveConfig(
        method="bpl",
        pl_mode=mode,
        beta_kl=0.0,
        warmup_trigger="step",
        warmup_start=0.0,
        warmup_len=0.0,
        min_foreground=0.0,
        confidence=confidence,
    )
    logits_l = torch.randn(2, 1, 8, 8)
    loss, metrics = semiseg_objective(
        logits_l,
        (logits_l > 0).float(),
        cfg,
        step=1,
        total_steps=2,
        logits_u=logits_u,
        mu=mu,
        logvar=logvar,
        source_prob_u=source,
    )
    g_logits, g_mu = torch.autograd.grad(loss, [logits_u, mu], allow_unused=True)
    return g_logits, g_mu, metrics


@pytest.mark.parametrize("with_teacher", [False, True])
def test_threshold_gradient_is_nonzero_where_the_mode_says_it_learns(with_teacher):
    source = torch.rand(2, 1, 8, 8) if with_teacher else None
    for mode, learns in THRESHOLD_LEARNS.items():
        _, g_mu, _ = _objective_grads(source, mode, confidence=0.8)
        got = 0.0 if g_mu is None else g_mu.abs().sum().item()
        assert (got > 1e-6) == learns, (mode, got)


def test_split_loss_has_the_gradients_of_the_plain_elbo_term_without_a_mask():
    """Without masking, (student loss on detached labels) + (likelihood for T) has exactly the gradients of
    the plain pseudo-label loss ``L(logits, yhat(T))``: the split only changes what the mask can reach."""
    g_logits, g_mu, _ = _objective_grads(None, "soft", confidence=0.5)
    torch.manual_seed(0)
    logits_u = torch.randn(2, 1, 8, 8, requires_grad=True)
    mu = torch.full((2, 1), 0.45, requires_grad=True)
    logvar = torch.full((2, 1), -6.0, requires_grad=True)
    torch.randn(2, 1, 8, 8)  # logits_l, drawn in the same order
    eps = torch.randn_like(mu)  # the objective's reparameterisation draw
    threshold = mu + torch.exp(0.5 * logvar) * eps
    target = pseudo_labels(torch.sigmoid(logits_u.detach()), threshold, "soft", 0.05)
    plain = segmentation_loss(logits_u, target)
    e_logits, e_mu = torch.autograd.grad(plain, [logits_u, mu])
    assert torch.allclose(g_logits, e_logits, atol=1e-7)
    assert torch.allclose(g_mu, e_mu, atol=1e-7)


def test_mask_hides_pixels_from_the_student_but_not_from_the_threshold():
    source = torch.rand(2, 1, 8, 8)
    g_masked, gmu_masked, metrics = _objective_grads(source, "soft", confidence=0.8)
    g_all, gmu_all, _ = _objective_grads(source, "soft", confidence=0.5)
    hidden = confidence_mask(source, 0.8) == 0
    assert hidden.any() and torch.count_nonzero(g_masked[hidden]) == 0
    assert torch.count_nonzero(g_all[hidden]) > 0
    assert torch.allclose(gmu_masked, gmu_all)
    assert metrics["pl_confident"].item() == pytest.approx(confidence_mask(source, 0.8).mean().item())


def test_threshold_confidence_is_the_normal_cdf_of_the_probability():
    torch.manual_seed(0)
    model = UNetForSemiSeg(
        UNetSegConfig(width=4, depth=1, threshold_init_mu=0.4, threshold_init_sigma=0.2)
    ).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        foreground, confidence = model.threshold_confidence(x)
        out = model(x)
    p = torch.sigmoid(out.logits).double().numpy()
    mu = out.threshold_mu.double().numpy()[:, :, None, None]
    sigma = np.exp(0.5 * out.threshold_logvar.double().numpy())[:, :, None, None]
    from scipy.stats import norm

    expected = norm.cdf((p - mu) / sigma)
    assert np.allclose(foreground.double().numpy(), expected, atol=1e-5)
    assert np.allclose(confidence.double().numpy(), np.maximum(expected, 1 - expected), atol=1e-5)
