"""benchmarks/build_throughput.py --smoke runs end to end and reports sane figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]


def test_build_throughput_smoke(tmp_path):
    if not Path("/usr/share/mricron/templates/ch2.nii.gz").exists():
        data_missing("Debian mricron-data is not installed")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "build_throughput.py"), "--smoke", "--out", str(out),
         "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "build_throughput.json").read_text())
    assert result["smoke"] and result["name"] == "build_throughput" and result["seeds"] == [0]
    assert (out / "build_throughput.png").read_bytes()[:4] == b"\x89PNG"
    assert "| MRI patches (real) | build num_proc=1 |" in (out / "build_throughput.md").read_text()
    runs = {r["arm"]: r for r in result["runs"]}  # one round in smoke: one run per arm, seed = round 0
    assert set(runs) == {"mri_patches/limit", "mri_patches/build_np1", "isic_folder/limit", "isic_folder/build_np1"}
    assert all(r["seed"] == 0 for r in runs.values())
    mri, isic = runs["mri_patches/build_np1"]["metrics"], runs["isic_folder/build_np1"]["metrics"]
    assert runs["mri_patches/limit"]["metrics"]["rows"] == mri["rows"] == 5836  # every 16th axial slice, 4-px grid
    assert runs["isic_folder/limit"]["metrics"]["rows"] == isic["rows"] == 400
    assert result["details"]["isic_folder"]["images"] == 400
    for source, b in (("mri_patches", mri), ("isic_folder", isic)):
        assert b["rows_per_s"] > 0 and b["arrow_bytes"] > 0 and 0 < b["vs_limit"] < 5
        limit = runs[f"{source}/limit"]["metrics"]["rows_per_s"]
        assert b["vs_limit"] == pytest.approx(b["rows_per_s"] / limit)
        assert b["rows_per_s"] == pytest.approx(b["rows"] / b["seconds"])
    assert not list(work.iterdir())  # the ISIC folder and Arrow caches are removed
    assert "rows/s" in proc.stdout
