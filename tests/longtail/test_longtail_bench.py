"""benchmarks/build_throughput.py --smoke runs end to end and reports sane figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_build_throughput_smoke(tmp_path):
    if not Path("/usr/share/mricron/templates/ch2.nii.gz").exists():
        pytest.skip("Debian mricron-data is not installed")
    out = tmp_path / "bt.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "build_throughput.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    mri, isic = result["mri_patches"], result["isic_folder"]
    assert mri["limit"]["rows"] == mri["builds"][0]["rows"] == 5836  # every 16th axial slice, 4-px grid
    assert isic["images"] == isic["builds"][0]["rows"] == 400
    for b in mri["builds"] + isic["builds"]:
        assert b["rows_per_s"] > 0 and b["arrow_bytes"] > 0 and 0 < b["vs_limit"] < 5
    assert "rows/s" in proc.stdout
