"""The curation benchmarks' ``--smoke`` modes run end to end and report what their full runs report.

``benchmarks/infogrowth.py --smoke`` has its own test (tests/data/test_infogrowth_bench.py); these are the
one-pass stream, Ray and long-tail curation benchmarks.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]


def smoke(name: str, tmp_path: Path) -> dict:
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke", "--out", str(out)]
    r = subprocess.run([*cmd, "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=170)
    if r.returncode != 0 and "DataUnavailable" in r.stderr:
        data_missing(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / f"{name}.json").read_text())
    assert res["smoke"] is True and res["name"] == name and (out / f"{name}.md").exists()
    return res


@pytest.mark.timeout(180)
def test_stream_smoke_passes_its_memory_shard_and_resume_checks(tmp_path):
    res = smoke("infogrowth_stream", tmp_path)
    kill = res["details"]["kill_resume"]
    assert kill["killed"] and kill["byte_identical"] and kill["files"] >= 2
    criteria = {c["criterion"]: c["pass"] for c in res["details"]["criteria"]}
    assert any(k.startswith("every Parquet shard") and v for k, v in criteria.items())
    runs = {r["arm"]: r["metrics"] for r in res["runs"]}
    small, large = runs["2,000 rows"], runs["6,000 rows"]
    assert large["stream_rows"] == 6000 and 0 < large["kept_rows"] <= large["stream_rows"] + 1000
    assert large["index_rows"] > small["index_rows"] and large["peak_rss_mb"] > 0


@pytest.mark.timeout(180)
def test_ray_smoke_agrees_with_the_single_process_curator(tmp_path):
    pytest.importorskip(
        "ray", reason="Ray Data is the optional extra hubtools[distributed]; the set-up installs it"
    )
    res = smoke("infogrowth_ray", tmp_path)
    runs = {r["arm"]: r["metrics"] for r in res["runs"]}
    exact = next(m for a, m in runs.items() if a.startswith("exact index"))
    assert (
        exact["status_agreement"] == 1.0
        and exact["kept_overlap"] == 1.0
        and exact["cleaning_agreement"] == 1.0
    )
    assert exact["select_overlap_topk"] == 1.0
    ray = next(m for a, m in runs.items() if a.startswith("Ray"))
    assert ray["kept_overlap"] == 1.0 and ray["cross_shard_duplicates"] > 0


@pytest.mark.timeout(180)
def test_longtail_curation_smoke_keeps_every_class_and_removes_flipped_labels(tmp_path):
    res = smoke("longtail_curation", tmp_path)
    runs = {r["arm"]: r["metrics"] for r in res["runs"]}
    assert runs["curated"]["classes_kept"] == runs["uncurated"]["classes_kept"]
    assert runs["curated"]["noisy_removed"] > 50.0 and runs["uncurated"]["noisy_removed"] == 0.0
    assert runs["curated"]["train_rows"] < runs["uncurated"]["train_rows"]
    assert res["details"]["acceptance"]["classes_kept_every_seed"] is True
