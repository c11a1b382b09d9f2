"""Statistics every benchmark verdict uses: seed spread, paired differences, plateaus, no-ops.

Why these and not others: benchmark arms here share seeds, data order and initial weights, so the
comparison that removes that shared noise is the *paired* difference per seed; with 3-5 seeds the
spread must be the sample standard deviation (ddof=1), since population std understates it by ~18 %
at n = 3; and a "not reproduced" is only a finding when the baseline had stopped improving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95
N_RESAMPLES = 10_000


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); sd is None for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_sd needs at least one value")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


@dataclass(frozen=True)
class PairedDiff:
    """``method - baseline`` over paired seeds: mean difference and its bootstrap CI."""

    n: int
    mean: float
    ci_low: float | None
    ci_high: float | None
    identical: bool  # every paired value equal: the method did nothing measurable

    @property
    def clear(self) -> bool | None:
        """The CI excludes zero (None when there is no CI: fewer than 2 seeds)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def as_dict(self) -> dict:
        return asdict(self) | {"clear": self.clear}


def paired_diff(
    method: Sequence[float], baseline: Sequence[float], *, seed: int = 0, resamples: int = N_RESAMPLES
) -> PairedDiff:
    """Paired difference ``method[i] - baseline[i]`` with a percentile bootstrap 95 % CI of its mean.

    The two sequences must be aligned by seed. The percentile method is used because BCa is undefined
    for the 3-5 seeds a benchmark has when differences coincide; the resampling is seeded so that a
    rerun prints the same interval.
    """
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_diff needs two equal-length 1-D sequences, got {a.shape} and {b.shape}")
    d = a - b
    identical = bool(np.array_equal(a, b))
    if d.size < 2:
        return PairedDiff(int(d.size), float(d.mean()), None, None, identical)
    if np.all(d == d[0]):  # no spread: the bootstrap distribution is a point
        return PairedDiff(int(d.size), float(d[0]), float(d[0]), float(d[0]), identical)
    res = _scipy_stats.bootstrap(
        (d,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return PairedDiff(int(d.size), float(d.mean()), float(ci.low), float(ci.high), identical)


def paired_by_seed(
    method: dict[int, float], baseline: dict[int, float], **kwargs
) -> PairedDiff | None:
    """:func:`paired_diff` over the seeds both arms have (None when they share none)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    return paired_diff([method[s] for s in seeds], [baseline[s] for s in seeds], **kwargs)


@dataclass(frozen=True)
class Plateau:
    """Whether a curve has stopped changing: the last ``window`` evaluations within ``rel_tol``."""

    reached: bool
    window: int
    rel_tol: float
    rel_change: float | None  # (max - min) / |mean| over the window; None when too few points

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, what: str = "the baseline") -> str:
        if self.rel_change is None:
            return f"{what} has fewer than {self.window} evaluations: no plateau can be judged"
        verb = "plateaued" if self.reached else "has not plateaued"
        return (
            f"{what} {verb}: its last {self.window} evaluations span {100 * self.rel_change:.1f} % "
            f"(criterion: within {100 * self.rel_tol:.0f} %)"
        )


def plateau(curve: Sequence[float], *, window: int = 3, rel_tol: float = 0.05) -> Plateau:
    """Plateau criterion used by every "budget insufficient" verdict.

    The last ``window`` values must lie within ``rel_tol`` of their mean's magnitude. A curve still
    falling 7-10 % per evaluation fails it, so a comparison drawn from it is labelled as such.
    """
    x = np.asarray(curve, dtype=float)
    if x.size < window:
        return Plateau(False, window, rel_tol, None)
    tail = x[-window:]
    scale = abs(float(tail.mean()))
    span = float(tail.max() - tail.min())
    rel = span / scale if scale > 0 else (0.0 if span == 0 else float("inf"))
    return Plateau(bool(rel <= rel_tol), window, rel_tol, rel)


BUDGET_INSUFFICIENT = "budget insufficient"


def budget_verdict(baseline_curve: Sequence[float], **kwargs) -> str | None:
    """``None`` when the baseline plateaued, else the "budget insufficient" sentence saying why."""
    p = plateau(baseline_curve, **kwargs)
    return None if p.reached else f"{BUDGET_INSUFFICIENT}: {p.describe()}"


def fmt_mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± sd`` (sample sd) as printed in every table; a single value prints alone."""
    m, s = mean_sd(values)
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def fmt_diff(d: PairedDiff | None, digits: int = 2) -> str:
    """``+1.23 [0.40, 2.10]`` for a paired difference with its CI; ``no-op`` when identical."""
    if d is None:
        return "–"
    if d.identical:
        return "no-op (identical)"
    if d.ci_low is None:
        return f"{d.mean:+.{digits}f}"
    return f"{d.mean:+.{digits}f} [{d.ci_low:+.{digits}f}, {d.ci_high:+.{digits}f}]"
