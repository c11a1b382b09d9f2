"""The statistics every benchmark verdict rests on, checked against independent computations."""

import statistics

import numpy as np
import pytest

from hubtools.bench.stats import (
    budget_verdict,
    fmt_diff,
    fmt_mean_sd,
    mean_sd,
    paired_by_seed,
    paired_diff,
    plateau,
)


def test_mean_sd_is_sample_sd():
    x = [76.1, 75.2, 77.0]
    m, s = mean_sd(x)
    assert m == pytest.approx(statistics.fmean(x))
    assert s == pytest.approx(statistics.stdev(x))  # ddof = 1
    assert s > float(np.std(x))  # population sd is smaller: the bug this replaces
    assert mean_sd([3.0]) == (3.0, None)
    with pytest.raises(ValueError):
        mean_sd([])
    assert fmt_mean_sd(x, 1) == f"{statistics.fmean(x):.1f} ± {statistics.stdev(x):.1f}"


def test_paired_diff_sees_an_effect_that_seed_noise_hides_unpaired():
    # arms share each seed's large offset (same data order, same init): +0.5 per seed, offsets ±5
    base = np.array([70.0, 80.0, 75.0, 65.0, 85.0])
    method = base + np.array([0.4, 0.6, 0.5, 0.45, 0.55])
    d = paired_diff(method, base)
    assert d.mean == pytest.approx(np.mean(method - base))
    assert 0 < d.ci_low <= d.mean <= d.ci_high <= 0.6 + 1e-12
    assert d.clear is True and not d.identical
    # the unpaired view: the difference of means is tiny next to the pooled sd
    pooled = np.sqrt((np.var(method, ddof=1) + np.var(base, ddof=1)) / 2)
    assert abs(method.mean() - base.mean()) < 0.1 * pooled


def test_paired_diff_ci_matches_an_independent_percentile_bootstrap():
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 1.0, 8)
    d = paired_diff(a, b, resamples=20_000)
    diffs = a - b
    boot = np.random.default_rng(123).choice(diffs, size=(20_000, diffs.size)).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert d.ci_low == pytest.approx(lo, abs=0.08)
    assert d.ci_high == pytest.approx(hi, abs=0.08)
    assert paired_diff(a, b, resamples=20_000) == d  # seeded: a rerun prints the same interval


def test_paired_diff_edge_cases():
    same = paired_diff([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.identical and same.mean == 0 and fmt_diff(same).startswith("no-op")
    shift = paired_diff([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert (shift.ci_low, shift.ci_high) == (1.0, 1.0) and shift.clear
    one = paired_diff([2.0], [1.0])
    assert one.ci_low is None and one.clear is None and fmt_diff(one) == "+1.00"
    with pytest.raises(ValueError):
        paired_diff([1.0, 2.0], [1.0])
    # pairing by seed uses only the seeds both arms ran, in seed order
    d = paired_by_seed({1: 5.0, 2: 7.0, 3: 9.0}, {2: 6.0, 3: 6.0, 4: 0.0})
    assert d.n == 2 and d.mean == pytest.approx(2.0)
    assert paired_by_seed({1: 1.0}, {2: 1.0}) is None


def test_plateau_criterion():
    falling = [100, 60, 40, 30, 27, 24.5]  # still falling ~10 % per evaluation
    p = plateau(falling)
    assert not p.reached and p.rel_change == pytest.approx((30 - 24.5) / np.mean([30, 27, 24.5]))
    assert budget_verdict(falling).startswith("budget insufficient")
    flat = [100, 40, 21.0, 20.5, 20.2]
    assert plateau(flat).reached and budget_verdict(flat) is None
    assert not plateau([1.0, 1.0]).reached and plateau([1.0, 1.0]).rel_change is None
    assert plateau([5.0, 5.0, 5.0, 5.2], window=4, rel_tol=0.05).reached
