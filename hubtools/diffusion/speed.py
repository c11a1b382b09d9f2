"""SpeeD timestep sampling and change-aware loss weighting (arXiv 2405.17403; spec: shared/specs/speed.md).

Uniform timestep sampling spends about a third of a DDPM batch on nearly-pure-noise steps
whose loss is already at its floor. SpeeD draws the steps before ``tau`` ``k`` times more
often, adds a "dual" sample reflected about the pivot of the noise schedule, and weights
each sample's loss by how fast the noise variance changes at its step. Only *which t are
drawn and how each sample's loss is weighted* changes; model, scheduler and inference do not.

Every sampler here has one contract, ``sample(batch_size, device, generator) -> (t, w)``,
so a trainer switches between them by name (:func:`make_timestep_sampler`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin

from hubtools.errors import HubtoolsError

SAMPLINGS = ("speed", "no_dual", "uniform")
WEIGHTINGS = ("speed", "none", "p2", "min_snr", "theory")
WEIGHT_MODES = ("paper", "official")
SAMPLER_NAMES = (
    "uniform",
    "speed",
    "speed_official",
    "speed_no_dual",
    "speed_sampling_only",
    "speed_weighting_only",
    "p2",
    "min_snr",
)
# The schedule SpeeD's tau was tuned for (the authors' IDDPM/DiT runs).
_TUNED_T = 1000
_TUNED_TAU = 700
_MIN_SNR_GAMMA = 5.0
_THEORY_RANGE = (0.2, 0.8)


class SamplerError(HubtoolsError, ValueError):
    """A timestep sampler got a parameter outside its valid range or a schedule it cannot use."""


class UniformTimestepSampler(ConfigMixin):
    """The standard DDPM draw: t ~ U{0..T-1}, every sample weighted 1 (the baseline SpeeD is compared to)."""

    config_name = "speed_sampler_config.json"

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise SamplerError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
        self.register_to_config(num_train_timesteps=num_train_timesteps)
        self.num_train_timesteps = num_train_timesteps

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> UniformTimestepSampler:
        """Read T from a diffusers scheduler's config."""
        return cls(int(_scheduler_alphas_cumprod(scheduler).shape[0]))

    @property
    def probs(self) -> torch.Tensor:
        return torch.full((self.num_train_timesteps,), 1.0 / self.num_train_timesteps, dtype=torch.float64)

    @property
    def effective_probs(self) -> torch.Tensor:
        return self.probs

    @property
    def weight_table(self) -> torch.Tensor:
        return torch.ones(self.num_train_timesteps, dtype=torch.float32)

    def sample(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` timesteps (LongTensor) and weights 1 (FloatTensor), drawn on CPU with ``generator``."""
        _check_batch_size(batch_size)
        t = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        return t.to(device), torch.ones(batch_size, dtype=torch.float32, device=device)


class SpeeDTimestepSampler(ConfigMixin):
    """SpeeD's asymmetric (dual) timestep sampler and change-aware loss weights.

    Built from a schedule's ``betas`` (preferred: the cumulative product is recomputed in
    float64, as the authors do) or its ``alphas_cumprod``. Defaults are those of the authors'
    MetFaces and MS-COCO configs: ``k=5, tau=700, lam=0.6``, dual sampling on; the official
    class's own constructor defaults (k=1, lambda=5) are meaningless and not used.

    - ``sampling``: ``speed`` (draw ``B//2+1`` steps from p, append their reflections about
      the pivot, keep the first B), ``no_dual`` (B draws from p) or ``uniform``.
    - ``weighting``: ``speed`` (change-aware), ``none`` (1), ``p2``, ``min_snr``, ``theory``.
    - ``weight_mode``: ``paper`` (the min-max weight for every t) or ``official`` (the authors'
      code, which also sets w=1 for every t >= tau; kept to reproduce their runs).
    - ``normalize_weights``: rescale w so its expectation under :attr:`effective_probs` is 1.
    """

    config_name = "speed_sampler_config.json"

    def __init__(
        self,
        betas: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        alphas_cumprod: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        k: float = 5.0,
        tau: int | None = None,
        lam: float = 0.6,
        dual: bool = True,
        grad_eps: float = 1e-4,
        sampling: str = "speed",
        weighting: str = "speed",
        weight_mode: str = "paper",
        normalize_weights: bool = False,
    ) -> None:
        acp = _alphas_cumprod_float64(betas, alphas_cumprod)
        T = int(acp.shape[0])
        if tau is None:
            tau = _TUNED_TAU if T == _TUNED_T else round(0.7 * T)
            if T != _TUNED_T:
                warnings.warn(
                    f"SpeeD's tau was tuned for T={_TUNED_T}; using tau=round(0.7*T)={tau} for T={T}",
                    stacklevel=2,
                )
        _validate(k=k, tau=tau, lam=lam, grad_eps=grad_eps, T=T)
        for name, value, allowed in (
            ("sampling", sampling, SAMPLINGS),
            ("weighting", weighting, WEIGHTINGS),
            ("weight_mode", weight_mode, WEIGHT_MODES),
        ):
            if value not in allowed:
                raise SamplerError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if sampling == "speed" and not dual:
            sampling = "no_dual"
        self.register_to_config(
            betas=None if betas is None else [float(b) for b in _as_float64(betas, "betas")],
            alphas_cumprod=None if betas is not None else [float(a) for a in acp],
            k=float(k),
            tau=int(tau),
            lam=float(lam),
            dual=sampling == "speed",
            grad_eps=float(grad_eps),
            sampling=sampling,
            weighting=weighting,
            weight_mode=weight_mode,
            normalize_weights=bool(normalize_weights),
        )
        self.num_train_timesteps = T
        self.alphas_cumprod = acp
        self.pivot = _pivot(acp, grad_eps)
        self.sampling = sampling
        self._probs = (
            _single_draw_probs(T, float(k), int(tau)) if sampling != "uniform" else np.full(T, 1.0 / T)
        )
        self._effective = _reflect_mix(self._probs, self.pivot) if sampling == "speed" else self._probs
        weights = _weights(acp, weighting, float(lam), int(tau), weight_mode)
        if normalize_weights:
            weights = weights / float(np.dot(self._effective, weights))
        self._weights64 = weights
        self._weights = torch.from_numpy(weights).float()
        self._probs_t = torch.from_numpy(self._probs)

    @classmethod
    def from_scheduler(cls, scheduler: Any, **kwargs: Any) -> SpeeDTimestepSampler:
        """Build from a diffusers scheduler: its ``betas`` (float64 cumulative product), else ``alphas_cumprod``.

        Warns when the schedule is not the linear 1e-4..0.02 one that ``tau`` was tuned for
        (the pivot is recomputed for any schedule; ``tau`` is an absolute index).
        """
        config = getattr(scheduler, "config", {}) or {}
        schedule = config.get("beta_schedule")
        if schedule is not None and (
            schedule != "linear"
            or not np.isclose(config.get("beta_start", 1e-4), 1e-4)
            or not np.isclose(config.get("beta_end", 0.02), 0.02)
        ):
            warnings.warn(
                f"SpeeD's tau was tuned for the linear 1e-4..0.02 schedule, not {schedule!r} "
                f"({config.get('beta_start')}..{config.get('beta_end')}); the pivot is recomputed, tau is not",
                stacklevel=2,
            )
        betas = getattr(scheduler, "betas", None)
        if betas is not None:
            return cls(betas=betas, **kwargs)
        return cls(alphas_cumprod=_scheduler_alphas_cumprod(scheduler), **kwargs)

    @property
    def probs(self) -> torch.Tensor:
        """p: the distribution of one draw from the multinomial (before reflection), float64 [T]."""
        return self._probs_t.clone()

    @property
    def effective_probs(self) -> torch.Tensor:
        """The distribution of the returned timesteps, dual samples included (large-batch limit:
        half the batch from p, half reflected), float64 [T]."""
        return torch.from_numpy(self._effective.copy())

    @property
    def weight_table(self) -> torch.Tensor:
        """w_t for every t (float32 [T]): what :meth:`sample` returns for the drawn steps."""
        return self._weights.clone()

    def sample(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` timesteps and their loss weights on CPU with ``generator``, then move them.

        With dual sampling the first ``B//2+1`` values are draws from p and the rest their
        reflections about the pivot; keep the batch together, as the authors do.
        """
        _check_batch_size(batch_size)
        T = self.num_train_timesteps
        if self.sampling == "uniform":
            t = torch.randint(0, T, (batch_size,), generator=generator)
        elif self.sampling == "no_dual":
            t = torch.multinomial(self._probs_t, batch_size, replacement=True, generator=generator)
        else:
            drawn = torch.multinomial(
                self._probs_t, batch_size // 2 + 1, replacement=True, generator=generator
            )
            dual = torch.where(drawn < self.pivot, self.pivot - drawn, drawn - self.pivot)
            t = torch.cat([drawn, dual])[:batch_size]
        return t.to(device), self._weights[t].to(device)


def make_timestep_sampler(
    name: str, scheduler: Any, **kwargs: Any
) -> SpeeDTimestepSampler | UniformTimestepSampler:
    """The sampler a trainer config names, built for ``scheduler``; ``kwargs`` go to SpeeD's constructor.

    ``uniform`` (baseline), ``speed``, ``speed_official`` (the authors' weighting, w=1 for t >= tau),
    ``speed_no_dual``, ``speed_sampling_only`` (weights 1), ``speed_weighting_only`` (uniform t),
    ``p2`` and ``min_snr`` (uniform t with those weights).
    """
    presets: dict[str, dict[str, Any]] = {
        "speed": {},
        "speed_official": {"weight_mode": "official"},
        "speed_no_dual": {"sampling": "no_dual"},
        "speed_sampling_only": {"weighting": "none"},
        "speed_weighting_only": {"sampling": "uniform"},
        "p2": {"sampling": "uniform", "weighting": "p2"},
        "min_snr": {"sampling": "uniform", "weighting": "min_snr"},
    }
    if name == "uniform":
        return UniformTimestepSampler.from_scheduler(scheduler)
    if name not in presets:
        raise SamplerError(f"unknown timestep sampler {name!r}; valid names: {', '.join(SAMPLER_NAMES)}")
    return SpeeDTimestepSampler.from_scheduler(scheduler, **{**kwargs, **presets[name]})


def plot_sampler(sampler: SpeeDTimestepSampler | UniformTimestepSampler, path: str | Path) -> Path:
    """PNG of p, the effective distribution and w against the noise schedule's increments.

    A reader sees at once where the probability step (tau) and the reflection pivot sit
    relative to the region where the noise level stops changing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = sampler.num_train_timesteps
    t = np.arange(T)
    fig, (ax_p, ax_w) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_p.plot(t, sampler.probs.numpy(), label="p (one draw)")
    ax_p.plot(t, sampler.effective_probs.numpy(), label="effective (with dual)")
    ax_p.axhline(1.0 / T, color="grey", lw=0.8, ls=":", label="uniform")
    ax_p.set_ylabel("probability")
    ax_w.plot(t, sampler.weight_table.numpy(), color="C3", label="loss weight w_t")
    ax_w.set_ylabel("weight")
    ax_w.set_xlabel("timestep t")
    if isinstance(sampler, SpeeDTimestepSampler):
        acp = sampler.alphas_cumprod
        inc_var, inc_std = np.gradient(1.0 - acp), np.gradient(np.sqrt(1.0 - acp))
        twin = ax_w.twinx()
        twin.plot(t, inc_var / inc_var.max(), color="C2", ls="--", label="d(1-abar)/dt (scaled)")
        twin.plot(t, inc_std / inc_std.max(), color="C4", ls=":", label="d sqrt(1-abar)/dt (scaled)")
        twin.set_ylabel("process increment (scaled)")
        twin.legend(loc="center right", fontsize=8)
        for ax in (ax_p, ax_w):
            ax.axvline(sampler.pivot, color="k", lw=0.8, ls="--")
            ax.axvline(sampler.config.tau, color="k", lw=0.8, ls="-.")
        ax_p.set_title(
            f"SpeeD k={sampler.config.k:g} tau={sampler.config.tau} (-.) pivot={sampler.pivot} (--) "
            f"lam={sampler.config.lam:g} {sampler.config.weight_mode}"
        )
    ax_p.legend(fontsize=8)
    ax_w.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise SamplerError(f"batch_size must be a positive integer, got {batch_size!r}")


def _as_float64(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SamplerError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}") from None
    if array.ndim != 1 or array.size < 2:
        raise SamplerError(f"{name} must be a 1-D sequence of at least 2 numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise SamplerError(f"{name} holds non-finite values")
    return array


def _alphas_cumprod_float64(betas: Any, alphas_cumprod: Any) -> np.ndarray:
    if (betas is None) == (alphas_cumprod is None):
        raise SamplerError("give exactly one of betas and alphas_cumprod (or use from_scheduler)")
    if betas is not None:
        b = _as_float64(betas, "betas")
        if np.any(b <= 0) or np.any(b >= 1):
            bad = int(np.argmax((b <= 0) | (b >= 1)))
            raise SamplerError(f"betas must lie in (0, 1); betas[{bad}] = {b[bad]!r}")
        return np.cumprod(1.0 - b)
    acp = _as_float64(alphas_cumprod, "alphas_cumprod")
    if np.any(acp <= 0) or np.any(acp >= 1) or np.any(np.diff(acp) >= 0):
        raise SamplerError("alphas_cumprod must lie in (0, 1) and decrease strictly with t")
    return acp


def _scheduler_alphas_cumprod(scheduler: Any) -> torch.Tensor:
    acp = getattr(scheduler, "alphas_cumprod", None)
    if acp is None:
        raise SamplerError(
            f"{type(scheduler).__name__} has no alphas_cumprod: SpeeD needs a DDPM-style noise schedule "
            "(DDPMScheduler, DDIMScheduler, ...), not a flow-matching or sigma-only scheduler"
        )
    return torch.as_tensor(acp)


def _validate(*, k: float, tau: int, lam: float, grad_eps: float, T: int) -> None:
    if not isinstance(k, int | float) or isinstance(k, bool) or not np.isfinite(k) or k < 1:
        raise SamplerError(f"k must be a number >= 1 (k=1 is uniform), got k={k!r}")
    if not isinstance(tau, int | np.integer) or isinstance(tau, bool) or not 0 < tau < T:
        raise SamplerError(f"tau must be an integer step with 0 < tau < T={T}, got tau={tau!r}")
    if not isinstance(lam, int | float) or isinstance(lam, bool) or not 0.5 <= lam <= 1.0:
        raise SamplerError(f"lam (lambda) must lie in [0.5, 1], got lam={lam!r}")
    if not isinstance(grad_eps, int | float) or isinstance(grad_eps, bool) or not grad_eps > 0:
        raise SamplerError(f"grad_eps must be > 0, got grad_eps={grad_eps!r}")


def _pivot(acp: np.ndarray, grad_eps: float) -> int:
    """1 + the first t where the noise std sqrt(1-abar) grows by less than grad_eps per step."""
    flat = np.gradient(np.sqrt(1.0 - acp)) < grad_eps
    if not flat.any():
        raise SamplerError(
            f"the noise std never grows by less than grad_eps={grad_eps} per step in this schedule: "
            "SpeeD's pivot is undefined (raise grad_eps or use a longer schedule)"
        )
    pivot = 1 + int(np.argmax(flat))
    if pivot >= acp.shape[0]:
        raise SamplerError(
            f"the pivot falls on the last step (T={acp.shape[0]}): dual samples would leave [0, T)"
        )
    return pivot


def _single_draw_probs(T: int, k: float, tau: int) -> np.ndarray:
    p = np.full(T, 1.0 / (k * tau + T - tau))
    p[:tau] *= k
    return p


def _reflect_mix(p: np.ndarray, pivot: int) -> np.ndarray:
    """Half the batch from p, half the reflections d = |pivot - t| of draws from p."""
    t = np.arange(p.shape[0])
    reflected = np.zeros_like(p)
    np.add.at(reflected, np.abs(pivot - t), p)
    return 0.5 * (p + reflected)


def _weights(acp: np.ndarray, weighting: str, lam: float, tau: int, mode: str) -> np.ndarray:
    T = acp.shape[0]
    if weighting == "none":
        return np.ones(T)
    snr = acp / (1.0 - acp)
    if weighting == "p2":
        return 1.0 / (1.0 + snr)
    if weighting == "min_snr":
        return np.minimum(snr, _MIN_SNR_GAMMA) / (snr + 1.0)
    g = np.gradient(1.0 - acp)
    g_hat = (g - g.min()) / (g.max() - g.min())
    if weighting == "theory":
        low, high = _THEORY_RANGE
        return low + (high - low) * g_hat
    w = (1.0 - lam) + (2.0 * lam - 1.0) * g_hat
    if mode == "official":
        w[tau:] = 1.0
    return w
