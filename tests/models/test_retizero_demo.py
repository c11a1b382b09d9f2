"""The RetiZero quickstart demo, in-process against the test Hub, and the benchmark's --smoke mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hubtools.data.offline import DataUnavailable, fashion_mnist
from hubtools.quickstart import DEMOS, DemoContext

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _needs_fashion_mnist() -> None:
    try:
        fashion_mnist("test")
    except DataUnavailable as err:
        pytest.skip(str(err))


def test_demo(hub, tmp_path: Path) -> None:
    from hubtools.models.retizero.demo import FUNDUS_LABELS, retizero_demo

    assert "retizero" in DEMOS
    ctx = DemoContext(hub_url=hub.url, token=hub.write_token, user=hub.user, work_dir=tmp_path)
    result = retizero_demo(ctx)
    assert result.artifacts == [f"{hub.user}/retizero-tiny"]
    assert result.metrics["merged_export_max_abs_diff"] <= 1e-5
    assert result.metrics["retina_top_label"] in FUNDUS_LABELS
    assert 0.0 <= result.metrics["unseen_zero_shot_top1"] <= result.metrics["unseen_zero_shot_top3"] <= 1.0
    assert 0.0 <= result.metrics["seen_zero_shot_top1"] <= 1.0 and result.metrics["chance_top1"] == 0.2


@pytest.mark.parametrize("data", ["fmnist", "mri"])
def test_benchmark_smoke(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if data == "mri":
        from hubtools.data.mri_patches import MRICRON_TEMPLATES

        if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
            pytest.skip("mricron-data is not installed")
    module = _load_script("retizero_zero_shot")
    monkeypatch.setattr(
        sys, "argv", ["retizero_zero_shot.py", "--smoke", "--data", data, "--out", str(tmp_path)]
    )
    module.main()
    stem = "retizero_zero_shot" + ("" if data == "fmnist" else "_mri") + "_smoke"
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["meta"]["data"] == data and len(record["meta"]["unseen"]) == 5
    assert {r["arm"] for r in record["runs"]} == {"pretrained_text", "random_text"}
    for arm in record["summary"].values():
        assert arm["unseen_chance_top1"][0] == pytest.approx(0.2)
        assert 0.0 <= arm["unseen_top1"][0] <= arm["unseen_top3"][0] <= 1.0
        assert 0.0 <= arm["retrieval_p@1"][0] <= 1.0
    assert (tmp_path / f"{stem}.png").stat().st_size > 1000
    assert "| pretrained_text |" in (tmp_path / f"{stem}.md").read_text()


def test_digits_gate_smoke_and_gate_logic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_script("retizero_digits")
    assert module.gate_failures({"top1": 0.31, "top3": 0.5, "top5": 0.7, "p@1": 0.4}) == []
    assert len(module.gate_failures({"top1": 0.29, "top3": 0.2, "top5": 0.7, "p@1": 0.1})) == 3
    monkeypatch.setattr(sys, "argv", ["retizero_digits.py", "--smoke", "--out", str(tmp_path)])
    assert module.main() == 0
    record = json.loads((tmp_path / "retizero_digits_smoke.json").read_text())
    assert record["n_train"] == 1200 and record["steps"] == 5 and record["gate_failures"] == []
    report = record["zero_shot"]
    assert sum(map(sum, report["confusion_matrix"])) == record["n_test"]
    assert report["top1"] <= report["top3"] <= report["top5"]
    for suffix in ("_zeroshot.png", "_retrieval.png"):
        assert (tmp_path / f"retizero_digits_smoke{suffix}").stat().st_size > 1000


def test_device_check_runs_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_script("device_check_retizero")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored afterwards; the script sets it for --device cpu
    out = tmp_path / "check.json"
    argv = ["device_check_retizero.py", "--device", "cpu", "--steps", "2", "--n-test", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    report = module.main()
    assert json.loads(out.read_text()) == report and report["device"] == "cpu"
    assert set(report["runs"]) == {"no", "bf16"}
    for run in report["runs"].values():
        assert run["finite"] and len(run["losses"]) == 2 and run["model_device"] == "cpu"
    drift = report["runs"]["bf16"]["max_abs_diff_vs_fp32"]
    assert (
        0 < drift["image_embeds"] < 0.05 and 0 < drift["text_embeds"] < 0.05
    )  # bf16 really ran, and is close
