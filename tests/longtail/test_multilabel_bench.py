"""`benchmarks/longtail_multilabel.py --smoke` on the real MRI multi-label set: it runs, writes its envelope,
table and PNG outside benchmarks/results, and its paired differences are the per-seed differences."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.bench.envelope import RESULTS_DIR, Result
from hubtools.data.mri_patches import MRICRON_TEMPLATES
from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_multilabel_benchmark_smoke(tmp_path):
    if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
        data_missing("Debian mricron-data")
    before = sorted(RESULTS_DIR.glob("longtail_multilabel*"))
    before_mtimes = [p.stat().st_mtime_ns for p in before]
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "longtail_multilabel.py"),
            "--smoke",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = Result.model_validate(
        json.loads((tmp_path / "results" / "longtail_multilabel.json").read_text())
    )
    assert result.smoke and result.seeds == [1]
    assert [(r.arm, r.seed) for r in result.runs] == [("bce", 1), ("asl", 1), ("distribution_balanced", 1)]
    for r in result.runs:
        assert all(
            0.0 <= r.metrics[k] <= 100.0 for k in ("map", "many_map", "few_map", "micro_f1", "macro_auroc")
        )
    by_arm = {r.arm: r.metrics for r in result.runs}
    for loss in ("asl", "distribution_balanced"):
        for k in ("map", "few_map"):
            gain = result.details["gains_over_bce"][loss][k]["mean"]
            assert gain == pytest.approx(by_arm[loss][k] - by_arm["bce"][k])
    assert result.tables[0].rows[0][0] == "bce" and result.tables[0].rows[0][-1] == "(baseline)"
    assert (tmp_path / "results" / "longtail_multilabel.png").read_bytes()[:4] == b"\x89PNG"
    assert "| asl |" in (tmp_path / "results" / "longtail_multilabel.md").read_text()
    after = sorted(RESULTS_DIR.glob("longtail_multilabel*"))
    assert after == before and [p.stat().st_mtime_ns for p in after] == before_mtimes
