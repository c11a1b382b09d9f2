"""The speed-up benchmark: its Frechet distance, its steps-to-target arithmetic, and a --smoke run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import linalg

from hubtools.cli import main
from hubtools.diffusion.bench import analyse, frechet_distance, smooth


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
    base = np.concatenate([np.linspace(12.0, 3.2, 9), [3.1, 3.05, 3.0]])  # plateaued: last 3 within 3.3 %
    fast = np.concatenate([np.linspace(12.0, 3.0, 4), np.full(8, 2.0)])  # 3.0 at step 400: 3x
    never = np.full(12, 5.0)
    report = analyse(
        _runs({"uniform": [base, base + 0.1], "speed": [fast, fast + 0.1], "bad": [never, never]}),
        "uniform",
        window=1,
    )
    assert report["target_fid"] == pytest.approx(3.05)
    assert report["baseline_plateau"]["reached"] and report["budget"] is None
    assert report["arms"]["uniform"]["speedup"] == 1.0
    assert report["arms"]["speed"]["steps_to_target"] == 400
    assert report["arms"]["speed"]["speedup"] == 3.0
    assert report["arms"]["speed"]["seeds"] == [0, 1]
    assert report["arms"]["speed"]["speedup_per_seed"] == [3.0, 3.0]
    assert report["arms"]["speed"]["reaches_target_at_third"] is True
    diff = report["arms"]["speed"]["final_fid_minus_baseline"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(-1.0)
    assert report["arms"]["speed"]["verdict"] == "reproduced"
    assert report["arms"]["bad"]["speedup"] is None and report["arms"]["bad"]["verdict"] == "not reproduced"
    np.testing.assert_allclose(smooth(np.array([3.0, 1.0, 2.0, 6.0]), 3), [3.0, 2.0, 2.0, 3.0])


def test_unconverged_baseline_is_budget_insufficient_never_not_reproduced():
    base = np.linspace(12.0, 3.0, 12)  # still falling ~12 % per evaluation at the end
    never = np.full(12, 5.0)
    fast = np.concatenate([np.linspace(12.0, 3.0, 4), np.full(8, 2.0)])
    report = analyse(_runs({"uniform": [base, base], "bad": [never, never], "speed": [fast, fast]}), "uniform", 1)
    assert not report["baseline_plateau"]["reached"]
    for arm in ("bad", "speed"):
        assert report["arms"][arm]["verdict"].startswith("budget insufficient: the uniform baseline")
        assert "not reproduced" not in report["arms"][arm]["verdict"]
    assert report["arms"]["speed"]["speedup"] == 3.0  # measured and reported all the same


def test_speed_pairs_seeds_not_positions():
    base = np.concatenate([np.linspace(12.0, 3.2, 9), [3.1, 3.05, 3.0]])
    runs = _runs({"uniform": [base, base + 5.0]})
    runs["speed"] = {1: {"steps": runs["uniform"][0]["steps"], "fid": list(base + 5.0)}}  # seed 1 only
    report = analyse(runs, "uniform", window=1)
    assert report["arms"]["speed"]["seeds"] == [1]
    assert report["arms"]["speed"]["speedup_per_seed"] == [1.0]  # against seed 1's baseline, not seed 0's
    assert report["arms"]["speed"]["final_fid_minus_baseline"]["identical"] is True


def test_bad_bench_settings(tmp_path):
    for flags, message in ((["--arms", "uniform", "fast"], "unknown arm"),
                           (["--datasets", "cifar10"], "unknown benchmark dataset")):
        result = CliRunner().invoke(main, ["diffusion", "speedup-bench", *flags, "--out", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(300)  # the whole protocol, small: about 45 s on a quiet machine
def test_smoke_run_writes_results(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    args = ["diffusion", "speedup-bench", "--smoke", "--out", str(out), "--work", str(work)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "speedup.json").read_text())
    assert report["smoke"] is True and report["seeds"] == [0]
    assert report["command"].startswith("python benchmarks/speed.py --smoke")
    runs = report["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("digits/speed", 0), ("digits/uniform", 0)]
    for r in runs:
        assert len(r["extra"]["fid"]) == len(r["extra"]["steps"]) == 3 and all(np.isfinite(r["extra"]["fid"]))
        assert r["metrics"]["final_fid"] == r["extra"]["fid"][-1] > 0
    digits = report["details"]["digits"]
    assert digits["classifier_heldout_accuracy"] > 0.7
    assert Path(digits["feature_cnn"]["file"]).is_file() and Path(digits["feature_cnn"]["file"]).is_relative_to(work)
    speed = digits["analysis"]["arms"]["speed"]
    assert speed["final_fid_minus_baseline"]["n"] == 1 and len(speed["speedup_per_seed"]) == 1
    plateaued = digits["analysis"]["baseline_plateau"]["reached"]
    assert speed["verdict"].startswith("budget insufficient") != plateaued
    assert "| digits | speed |" in result.output
    assert (out / "speed_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "Δ final FID vs digits/uniform" in (out / "speedup.md").read_text()

    # --reuse: every run comes from the cache under --work, with the same values
    again = tmp_path / "again"
    result = CliRunner().invoke(main, [*args[:3], "--out", str(again), "--work", str(work), "--reuse"])
    assert result.exit_code == 0, result.output
    second = json.loads((again / "speedup.json").read_text())
    assert second["details"]["digits"]["reused_runs"] == 2 and second["details"]["digits"]["trained_runs"] == 0
    assert [r["metrics"]["final_fid"] for r in second["runs"]] == [r["metrics"]["final_fid"] for r in runs]


def test_script_and_command_share_one_parser(capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("speed_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    shown = capsys.readouterr().out
    for flag in ("--smoke", "--out", "--seeds", "--device", "--work", "--reuse", "--config", "--arms", "--steps"):
        assert flag in shown
