"""`benchmarks/longtail_mri.py --smoke` on the real MRI patches: it runs and writes its table, JSON and PNG."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.data.mri_patches import MRICRON_TEMPLATES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (MRICRON_TEMPLATES / "ch2.nii.gz").exists(), reason="needs Debian mricron-data")
def test_benchmark_smoke(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "longtail_mri.py"),
            "--smoke",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "longtail_mri_smoke.json").read_text())
    assert set(result["summary"]) == {"erm", "balanced_softmax", "crt"}
    for row in result["summary"].values():
        assert 0.0 <= row["balanced_acc"][0] <= 100.0 and row["few_acc"][0] == row["few_acc"][0]
    assert (tmp_path / "results" / "longtail_mri_smoke.png").stat().st_size > 0
    assert "| balanced_softmax |" in (tmp_path / "results" / "longtail_mri_smoke.md").read_text()
