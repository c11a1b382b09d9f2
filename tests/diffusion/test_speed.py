"""SpeeD sampler: probabilities, pivot and weights against an independent computation of the paper's
formulas and the numbers it quotes; empirical frequencies; the loss; bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from hubtools.diffusion.speed import (
    SamplerError,
    SpeeDTimestepSampler,
    UniformTimestepSampler,
    make_timestep_sampler,
    plot_sampler,
)
from hubtools.diffusion.trainer import ddpm_loss

T = 1000
LINEAR = np.linspace(1e-4, 0.02, T)


# --- an independent, loop-based reading of the paper's sampler and weighting -------------------------------------------


def ref_alphas_cumprod(betas):
    out, running = [], 1.0
    for b in betas:
        running *= 1.0 - float(b)
        out.append(running)
    return out


def ref_gradient(values):
    """numpy-style gradient: central differences inside, one-sided at both ends."""
    n = len(values)
    grad = [values[1] - values[0]]
    grad += [(values[i + 1] - values[i - 1]) / 2.0 for i in range(1, n - 1)]
    grad.append(values[n - 1] - values[n - 2])
    return grad


def ref_pivot(betas, eps=1e-4):
    std = [math.sqrt(1.0 - a) for a in ref_alphas_cumprod(betas)]
    for t, g in enumerate(ref_gradient(std)):
        if g < eps:
            return t + 1
    raise AssertionError("no pivot")


def ref_probs(k, tau, n=T):
    return [(k if t < tau else 1.0) / (k * tau + n - tau) for t in range(n)]


def ref_weights(betas, lam, tau, mode):
    g = ref_gradient([1.0 - a for a in ref_alphas_cumprod(betas)])
    lo, hi = min(g), max(g)
    w = [(1 - lam) + (2 * lam - 1) * (x - lo) / (hi - lo) for x in g]
    if mode == "official":
        w = [1.0 if t >= tau else v for t, v in enumerate(w)]
    return w


def ref_effective(p, pivot):
    """Enumerate: half the batch is t ~ p, the other half is its reflection about the pivot."""
    q = [0.5 * x for x in p]
    for t, x in enumerate(p):
        d = pivot - t if t < pivot else t - pivot
        q[d] += 0.5 * x
    return q


@pytest.fixture(scope="module")
def linear_sampler() -> SpeeDTimestepSampler:
    return SpeeDTimestepSampler(betas=LINEAR)


# --- formulas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, tau, lam, mode",
    [
        (5.0, 700, 0.6, "paper"),
        (2.0, 700, 0.6, "official"),
        (10.0, 500, 0.8, "paper"),
        (1.0, 900, 1.0, "official"),
    ],
)
def test_probs_weights_and_effective_match_reference(k, tau, lam, mode):
    s = SpeeDTimestepSampler(betas=LINEAR, k=k, tau=tau, lam=lam, weight_mode=mode)
    pivot = ref_pivot(LINEAR)
    p = ref_probs(k, tau)
    assert s.pivot == pivot
    np.testing.assert_allclose(s.probs.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(s.weight_table.numpy(), ref_weights(LINEAR, lam, tau, mode), rtol=1e-6)
    np.testing.assert_allclose(s.effective_probs.numpy(), ref_effective(p, pivot), rtol=1e-12, atol=1e-15)
    assert s.probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert s.effective_probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert s.probs[tau - 1].item() / s.probs[tau].item() == pytest.approx(k)


@pytest.mark.parametrize(
    "betas, pivot",
    [
        (LINEAR, 642),
        (np.linspace(1e-4**0.5, 0.02**0.5, T) ** 2, 829),  # "quad"
        (np.linspace(0.00085**0.5, 0.012**0.5, T) ** 2, 866),  # diffusers scaled_linear
    ],
)
def test_pivot_values_quoted_by_the_spec(betas, pivot):
    assert SpeeDTimestepSampler(betas=betas).pivot == pivot == ref_pivot(betas)


def test_pivot_of_diffusers_schedulers():
    assert SpeeDTimestepSampler.from_scheduler(DDPMScheduler(T)).pivot == 642
    with pytest.warns(UserWarning, match="tau was tuned"):
        cosine = SpeeDTimestepSampler.from_scheduler(DDPMScheduler(T, beta_schedule="squaredcos_cap_v2"))
    assert cosine.pivot == 959


def test_paper_weights_for_lambda_06_match_the_spec(linear_sampler):
    w = linear_sampler.weight_table.double().numpy()
    assert int(np.argmax(w)) == 219
    assert w[219] == pytest.approx(0.6, abs=1e-6)
    assert w.min() == pytest.approx(0.4, abs=1e-6)
    assert w[0] == pytest.approx(0.409, abs=5e-4)
    assert w[:700].min() == pytest.approx(0.4072, abs=1e-4)
    assert 0.4 - 1e-6 <= w[700:].min() and w[700:].max() <= 0.4073


def test_official_weights_override_steps_after_tau():
    s = SpeeDTimestepSampler(betas=LINEAR, weight_mode="official")
    w = s.weight_table.numpy()
    assert np.all(w[700:] == 1.0)
    assert 0.407 <= w[:700].min() and w[:700].max() <= 0.6 + 1e-6


def test_weight_argmax_with_diffusers_float32_schedule():
    w = SpeeDTimestepSampler(alphas_cumprod=DDPMScheduler(T).alphas_cumprod).weight_table
    assert abs(int(w.argmax()) - 219) <= 1


def test_lambda_half_gives_constant_half_below_tau():
    w = SpeeDTimestepSampler(betas=LINEAR, lam=0.5, weight_mode="official").weight_table.numpy()
    np.testing.assert_allclose(w[:700], 0.5, atol=1e-7)


@pytest.mark.parametrize(
    "k, share_642, share_700, mean_w_paper, mean_w_official",
    [(5.0, 0.078, 0.039, 0.505, 0.528), (2.0, 0.122, 0.088, 0.503, 0.555)],
)
def test_effective_shares_and_expected_weights_quoted_by_the_spec(
    k, share_642, share_700, mean_w_paper, mean_w_official
):
    paper = SpeeDTimestepSampler(betas=LINEAR, k=k)
    official = SpeeDTimestepSampler(betas=LINEAR, k=k, weight_mode="official")
    q = paper.effective_probs.numpy()
    assert q[642:].sum() == pytest.approx(share_642, abs=1.5e-3)
    assert q[700:].sum() == pytest.approx(share_700, abs=1e-3)
    assert float(q @ paper.weight_table.double().numpy()) == pytest.approx(mean_w_paper, abs=1e-3)
    assert float(q @ official.weight_table.double().numpy()) == pytest.approx(mean_w_official, abs=1e-3)
    if k == 5.0:
        assert q[:100].sum() == pytest.approx(0.175, abs=1e-3)


def test_normalized_weights_have_unit_expectation():
    s = SpeeDTimestepSampler(betas=LINEAR, normalize_weights=True)
    assert float(s.effective_probs.numpy() @ s.weight_table.double().numpy()) == pytest.approx(1.0, abs=1e-6)


def test_k1_no_dual_no_weighting_is_exactly_uniform():
    s = SpeeDTimestepSampler(betas=LINEAR, k=1, sampling="no_dual", weighting="none")
    np.testing.assert_allclose(s.effective_probs.numpy(), 1.0 / T, rtol=1e-12)
    assert torch.equal(s.weight_table, torch.ones(T))
    t, w = s.sample(256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, torch.ones(256))


def test_other_weightings():
    acp = np.array(ref_alphas_cumprod(LINEAR))
    snr = acp / (1 - acp)
    p2 = SpeeDTimestepSampler(betas=LINEAR, sampling="uniform", weighting="p2").weight_table.numpy()
    np.testing.assert_allclose(p2, 1 / (1 + snr), rtol=1e-6)
    min_snr = SpeeDTimestepSampler(betas=LINEAR, weighting="min_snr").weight_table.numpy()
    np.testing.assert_allclose(min_snr, np.minimum(snr, 5) / (snr + 1), rtol=1e-6)
    theory = SpeeDTimestepSampler(betas=LINEAR, weighting="theory").weight_table.numpy()
    assert theory.min() == pytest.approx(0.2, abs=1e-6) and theory.max() == pytest.approx(0.8, abs=1e-6)


# --- drawing ----------------------------------------------------------------------------------------


def test_sample_is_deterministic_in_range_and_dual_halves_reflect(linear_sampler):
    t1, w1 = linear_sampler.sample(64, generator=torch.Generator().manual_seed(3))
    t2, w2 = linear_sampler.sample(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2) and torch.equal(w1, w2)
    assert t1.dtype == torch.long and w1.dtype == torch.float32 and t1.shape == w1.shape == (64,)
    assert int(t1.min()) >= 0 and int(t1.max()) < T
    m = 64 // 2 + 1
    drawn, dual = t1[:m], t1[m:]
    assert torch.equal(dual, (642 - drawn[: 64 - m]).abs())
    assert torch.equal(w1, linear_sampler.weight_table[t1])
    odd, _ = linear_sampler.sample(7, generator=torch.Generator().manual_seed(3))
    assert odd.shape == (7,)


def test_empirical_frequencies_match_probabilities():
    n = 200_000
    no_dual = SpeeDTimestepSampler(betas=LINEAR, sampling="no_dual")
    t, _ = no_dual.sample(n, generator=torch.Generator().manual_seed(1234))
    p = no_dual.probs.numpy()
    counts = np.bincount(t.numpy() // 100, minlength=10)
    for d in range(10):
        prob = p[d * 100 : (d + 1) * 100].sum()
        se = math.sqrt(prob * (1 - prob) / n)
        assert abs(counts[d] / n - prob) < 4 * se, (d, counts[d] / n, prob)
    dual = SpeeDTimestepSampler(betas=LINEAR)
    t, _ = dual.sample(n, generator=torch.Generator().manual_seed(1234))
    t = t.numpy()
    assert (t >= 642).mean() == pytest.approx(0.0776, abs=3e-3)
    assert (t >= 700).mean() == pytest.approx(0.0395, abs=3e-3)
    uniform = UniformTimestepSampler(T)
    t, w = uniform.sample(n, generator=torch.Generator().manual_seed(1234))
    assert (t.numpy() >= 700).mean() == pytest.approx(0.30, abs=4 * math.sqrt(0.21 / n))
    assert torch.equal(w, torch.ones(n))


def test_uniform_with_unit_weights_reproduces_the_standard_loss():
    torch.manual_seed(0)
    scheduler = DDPMScheduler(T)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)

    class Wrapped(torch.nn.Module):  # the UNet2DModel call convention: model(x, t).sample
        def forward(self, x, t):
            return type("Out", (), {"sample": model(x) + t.view(-1, 1, 1, 1).float() / T})()

    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t, w = UniformTimestepSampler(T).sample(8, generator=torch.Generator().manual_seed(0))
    loss, _ = ddpm_loss(Wrapped(), scheduler, x0, t, w, noise)
    # The loss diffusers' train_unconditional example uses: F.mse_loss(model_output, noise).
    pred = model(scheduler.add_noise(x0, noise, t)) + t.view(-1, 1, 1, 1).float() / T
    expected = torch.nn.functional.mse_loss(pred, noise)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    # ... and a weighted loss is the mean of weight x per-sample MSE.
    w2 = torch.linspace(0.4, 0.6, 8)
    weighted, per_sample = ddpm_loss(Wrapped(), scheduler, x0, t, w2, noise)
    torch.testing.assert_close(weighted, (w2 * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean())


# --- config, factory, picture -----------------------------------------------------------------------


def test_save_config_from_config_round_trip(tmp_path, linear_sampler):
    s = SpeeDTimestepSampler(
        betas=LINEAR, k=2.0, tau=600, lam=0.8, weight_mode="official", normalize_weights=True
    )
    s.save_config(tmp_path)
    assert (tmp_path / "speed_sampler_config.json").is_file()
    back = SpeeDTimestepSampler.from_config(SpeeDTimestepSampler.load_config(tmp_path))
    assert back.config.k == 2.0 and back.config.tau == 600 and back.config.weight_mode == "official"
    assert torch.equal(back.weight_table, s.weight_table) and torch.equal(back.probs, s.probs)
    gen = [torch.Generator().manual_seed(5) for _ in range(2)]
    assert torch.equal(back.sample(33, generator=gen[0])[0], s.sample(33, generator=gen[1])[0])


@pytest.mark.parametrize(
    "name, sampling, weighting, mode",
    [
        ("speed", "speed", "speed", "paper"),
        ("speed_official", "speed", "speed", "official"),
        ("speed_no_dual", "no_dual", "speed", "paper"),
        ("speed_sampling_only", "speed", "none", "paper"),
        ("speed_weighting_only", "uniform", "speed", "paper"),
        ("p2", "uniform", "p2", "paper"),
        ("min_snr", "uniform", "min_snr", "paper"),
    ],
)
def test_factory_names(name, sampling, weighting, mode):
    s = make_timestep_sampler(name, DDPMScheduler(T), k=2.0)
    assert (s.config.sampling, s.config.weighting, s.config.weight_mode, s.config.k) == (
        sampling,
        weighting,
        mode,
        2.0,
    )


def test_factory_uniform_and_unknown():
    assert isinstance(make_timestep_sampler("uniform", DDPMScheduler(T)), UniformTimestepSampler)
    with pytest.raises(SamplerError, match="unknown timestep sampler 'speedy'"):
        make_timestep_sampler("speedy", DDPMScheduler(T))


def test_plot_sampler_writes_png(tmp_path, linear_sampler):
    path = plot_sampler(linear_sampler, tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be a number >= 1"),
        ({"k": -2.0}, "k must be a number >= 1"),
        ({"k": 0.5}, "k must be a number >= 1"),
        ({"tau": 0}, "0 < tau < T=1000"),
        ({"tau": 1000}, "0 < tau < T=1000"),
        ({"tau": 1500}, "0 < tau < T=1000"),
        ({"tau": 700.5}, "tau must be an integer"),
        ({"lam": 0.4}, r"lam \(lambda\) must lie in \[0.5, 1\]"),
        ({"lam": 1.2}, r"lam \(lambda\) must lie in \[0.5, 1\]"),
        ({"sampling": "dual"}, "sampling must be one of"),
        ({"weighting": "snr"}, "weighting must be one of"),
        ({"weight_mode": "authors"}, "weight_mode must be one of"),
        ({"grad_eps": 1e-9}, "pivot is undefined"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(SamplerError, match=message):
        SpeeDTimestepSampler(betas=LINEAR, **kwargs)


def test_bad_schedules_raise_clear_errors():
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(SamplerError, match="has no alphas_cumprod"):
        SpeeDTimestepSampler.from_scheduler(FlowMatchEulerDiscreteScheduler())
    with pytest.raises(SamplerError, match="has no alphas_cumprod"):
        UniformTimestepSampler.from_scheduler(object())
    with pytest.raises(SamplerError, match=r"betas must lie in \(0, 1\); betas\[3\]"):
        SpeeDTimestepSampler(betas=[0.1, 0.2, 0.3, 1.5, 0.1])
    with pytest.raises(SamplerError, match="exactly one of betas and alphas_cumprod"):
        SpeeDTimestepSampler()
    with pytest.raises(SamplerError, match="decrease strictly"):
        SpeeDTimestepSampler(alphas_cumprod=[0.9, 0.95, 0.5])
    with pytest.raises(SamplerError, match="batch_size must be a positive integer"):
        SpeeDTimestepSampler(betas=LINEAR).sample(0)
    with pytest.raises(SamplerError, match="batch_size must be a positive integer"):
        UniformTimestepSampler(T).sample(-1)
    assert issubclass(SamplerError, ValueError)


def test_other_lengths_warn_and_scale_tau():
    with pytest.warns(UserWarning, match="tau=round"):
        s = SpeeDTimestepSampler(betas=np.linspace(1e-4, 0.04, 500))
    assert s.config.tau == 350
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpeeDTimestepSampler(betas=LINEAR)  # the tuned setting: no warning
