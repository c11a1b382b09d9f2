"""The speed-up benchmark: its Frechet distance, its steps-to-target arithmetic, and a --smoke run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import linalg

from hubtools.cli import main
from hubtools.diffusion.bench import BenchConfig, analyse, frechet_distance, run_bench, smooth


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(300, 6)) @ rng.normal(size=(6, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def _runs(curves_by_arm):
    steps = list(range(100, 100 * (len(next(iter(curves_by_arm.values()))[0]) + 1), 100))
    return {
        arm: {s: {"steps": steps, "fid": list(c)} for s, c in enumerate(curves)}
        for arm, curves in curves_by_arm.items()
    }


def test_analyse_counts_steps_to_the_baseline_final_quality():
    base = np.linspace(12.0, 3.0, 12)  # reaches 3.0 at step 1200
    fast = np.concatenate([np.linspace(12.0, 3.0, 4), np.full(8, 2.0)])  # 3.0 at step 400: 3x
    never = np.full(12, 5.0)
    report = analyse(
        _runs({"uniform": [base, base + 0.1], "speed": [fast, fast + 0.1], "bad": [never, never]}),
        "uniform",
        window=1,
    )
    assert report["target_fid"] == pytest.approx(3.05)
    assert report["arms"]["uniform"]["speedup"] == 1.0
    assert report["arms"]["speed"]["steps_to_target"] == 400
    assert report["arms"]["speed"]["speedup"] == 3.0
    assert report["arms"]["speed"]["speedup_per_seed"] == [3.0, 3.0]
    assert report["arms"]["speed"]["reaches_target_at_third"] is True
    assert report["arms"]["speed"]["verdict"] == "reproduced"
    assert report["arms"]["bad"]["speedup"] is None and report["arms"]["bad"]["verdict"] == "not reproduced"
    np.testing.assert_allclose(smooth(np.array([3.0, 1.0, 2.0, 6.0]), 3), [3.0, 2.0, 2.0, 3.0])


def test_bad_bench_settings(tmp_path):
    from hubtools.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown arm"):
        run_bench(BenchConfig(out=tmp_path, arms=("uniform", "fast")))
    with pytest.raises(ConfigError, match="unknown benchmark dataset"):
        run_bench(BenchConfig(out=tmp_path, datasets=("cifar10",)))


def test_smoke_run_writes_results(tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["diffusion", "speedup-bench", "--smoke", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "speedup.json").read_text())
    digits = report["datasets"]["digits"]
    assert set(digits["runs"]) == {"uniform", "speed"}
    run = digits["runs"]["speed"]["0"]
    assert len(run["fid"]) == len(run["steps"]) == 3 and all(np.isfinite(run["fid"]))
    assert digits["classifier_heldout_accuracy"] > 0.7
    assert "speed" in digits["analysis"]["arms"] and "| digits | speed |" in result.output
    assert (out / "speed_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "speed_feature_cnn_digits.safetensors").is_file()
