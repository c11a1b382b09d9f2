"""``benchmarks/infogrowth.py --smoke``: the ablation runs on real Fashion-MNIST and reports paired results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("random", "gain only", "cleaning only", "InfoGrowth", "InfoGrowth + entropy gain")


def run_smoke(out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "infogrowth.py"), "--smoke", "--out", str(out)]
    return subprocess.run([*cmd, "--work", str(work), *extra], capture_output=True, text=True, timeout=180)


def test_benchmark_smoke_runs_the_ablation_and_reports(tmp_path):
    out = tmp_path / "results"
    r = run_smoke(out, tmp_path / "work")
    if r.returncode != 0 and "DataUnavailable" in r.stderr:
        data_missing("dataset-fashion-mnist is not installed")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "infogrowth.json").read_text())
    assert res["smoke"] is True and res["seeds"] == [0] and res["name"] == "infogrowth"
    runs = {r["arm"]: r["metrics"] for r in res["runs"]}
    # every ablation arm of both budgets was trained and tested
    for b in ("30%", "50%"):
        for arm in ARMS:
            m = runs[f"fashion_mnist: {arm}@{b}"]
            assert 10.0 < m["accuracy"] <= 100.0 and m["classes"] == 10
    assert runs["fashion_mnist: clean oracle"]["noisy_share"] == 0.0
    # the arms really differ where they should: no cleaner keeps the noise, the cleaner removes it
    assert runs["fashion_mnist: gain only@30%"]["noisy_share"] > 10.0
    assert runs["fashion_mnist: InfoGrowth@30%"]["noisy_share"] < 8.0
    assert runs["fashion_mnist: cleaning only@30%"]["noisy_share"] < 8.0
    default = runs["fashion_mnist: curator probe (default)"]
    assert default["noise_removed"] > 80.0 and default["clean_lost_to_cleaner"] < 15.0
    assert runs["fashion_mnist: curator no cleaner"]["noise_removed"] < 25.0  # only duplicates go
    checks = res["details"]["claim_checks"]["fashion_mnist"]
    assert {c["arm"] for k, c in checks.items() if k != "cleaner"} == set(ARMS) - {"random"} | {
        "margin cleaner + gain",
        "cosine cleaner + gain",
    }
    for k, c in checks.items():
        if k == "cleaner":
            assert c["noise_removed"] == pytest.approx(default["noise_removed"])
            continue
        # one seed: the paired difference is the plain difference, with no CI
        assert c["vs_random"]["n"] == 1 and c["vs_random"]["ci_low"] is None
        assert c["vs_random"]["mean"] == pytest.approx(c["accuracy"] - c["random"])
    assert "One seed only" in res["verdict"]
    md = (out / "infogrowth.md").read_text()
    assert "(smoke run)" in md and "| InfoGrowth@30% |" in md
    assert (out / "infogrowth.png").read_bytes()[:4] == b"\x89PNG"
    # --reuse picks up the finished run from --work instead of recomputing it
    again = run_smoke(tmp_path / "again", tmp_path / "work", "--reuse")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "infogrowth.json").read_text())["runs"] == res["runs"]
