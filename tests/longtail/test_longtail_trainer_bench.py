"""`benchmarks/longtail_mri.py --smoke` on the real MRI patches: it runs, writes its envelope, table and
PNG, and a rerun with --reuse picks up exactly the cached runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.bench.envelope import Result
from hubtools.data.mri_patches import MRICRON_TEMPLATES
from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]


def _smoke(tmp_path, *extra):
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "longtail_mri.py"),
            "--smoke",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "results"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.timeout(600)
def test_benchmark_smoke(tmp_path):
    if not (MRICRON_TEMPLATES / "ch2.nii.gz").exists():
        data_missing("Debian mricron-data")
    out = _smoke(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    path = tmp_path / "results" / "longtail_mri.json"
    result = Result.model_validate(json.loads(path.read_text()))
    assert result.smoke and result.seeds == [1]
    assert [(r.arm, r.seed) for r in result.runs] == [("erm", 1), ("balanced_softmax", 1), ("crt", 1)]
    for r in result.runs:
        assert 0.0 <= r.metrics["balanced_acc"] <= 100.0 and len(r.extra["per_class_recall"]) == 20
    rows = {row[1]: row for row in result.tables[0].rows}
    assert rows["erm"][-1] == "(baseline)"
    gain = result.details["gains_over_erm"]["balanced_softmax"]["balanced_acc"]["mean"]
    erm = next(r for r in result.runs if r.arm == "erm").metrics["balanced_acc"]
    bs = next(r for r in result.runs if r.arm == "balanced_softmax").metrics["balanced_acc"]
    assert gain == pytest.approx(bs - erm)
    assert (tmp_path / "results" / "longtail_mri.png").read_bytes()[:4] == b"\x89PNG"
    assert "| balanced_softmax |" in (tmp_path / "results" / "longtail_mri.md").read_text()

    again = _smoke(tmp_path, "--reuse")  # identical configuration and code: every run comes from the cache
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 1 erm:" not in again.stdout  # nothing was retrained
    rerun = Result.model_validate(json.loads(path.read_text()))
    assert [r.metrics for r in rerun.runs] == [r.metrics for r in result.runs]


def _benchmark_module():
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "longtail_mri_bench", ROOT / "benchmarks" / "longtail_mri.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_flags_collapse_noop_control_and_budget_over_three_seeds():
    from hubtools.bench import Run

    bench = _benchmark_module()
    runs = []
    for s in (1, 2, 3):
        for arm, bal, few in (
            ("erm", 60, 40),
            ("rs", 66, 50),
            ("bad", 20, 1),
            ("same", 60, 40),
            ("erm_no_aug", 70, 45),
        ):
            shift = 0 if arm == "same" else s * (1 + (arm == "rs"))
            runs.append(Run(arm=arm, seed=s, metrics={"balanced_acc": bal + shift, "few_acc": few + shift}))
    runs = [r for r in runs if r.arm != "same"] + [
        Run(arm="same", seed=r.seed, metrics=dict(r.metrics)) for r in runs if r.arm == "erm"
    ]
    arms = ["erm", "rs", "bad", "same", "erm_no_aug"]
    headline, text, judged = bench.verdict(runs, arms, "x", [40, 50, 60, 61, 62, 61, 62])
    checks = judged["checks"]
    assert headline.startswith("best balanced accuracy: rs, +8.0 points over ERM")  # never the control
    assert checks["below_half"] == ["bad"] and checks["below_half_unexplained"] == ["bad"]
    assert checks["noop"] == ["same"] and checks["budget"] is None
    assert "Control erm_no_aug" in text and "bad (no stated reason: a defect)" in text
    assert checks["erm_val_trend"] == pytest.approx([50.0, 57.0, 61.0, 61 + 1 / 3, 61 + 2 / 3], abs=1e-3)
    _, rising, judged = bench.verdict(runs, arms, "x", [10, 20, 30, 40, 50, 60])
    assert judged["checks"]["budget"].startswith("budget insufficient") and "Budget insufficient" in rising
