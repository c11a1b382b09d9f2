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
        [sys.executable, str(ROOT / "benchmarks" / "longtail_mri.py"), "--smoke",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "results"), *extra],
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
