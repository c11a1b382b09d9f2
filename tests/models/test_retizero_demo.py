"""The RetiZero quickstart demo, in-process against the test Hub, and the benchmark's --smoke mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from hubtools.data.offline import DataUnavailable, fashion_mnist
from hubtools.quickstart import DEMOS, DemoContext
from hubtools.testing import data_missing

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
        data_missing(err)


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
def test_benchmark_smoke(data: str, tmp_path: Path) -> None:
    if data == "mri":
        from hubtools.data.mri_patches import MRICRON_TEMPLATES

        if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
            data_missing("mricron-data is not installed")
    module = _load_script("retizero_zero_shot")
    out = tmp_path / "results"
    module.main(["--smoke", "--data", data, "--out", str(out), "--work", str(tmp_path / "work")])
    stem = "retizero_zero_shot" + ("" if data == "fmnist" else "_mri")
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["smoke"] is True and record["seeds"] == [0] and record["name"] == stem
    assert record["config"]["data"] == data and len(record["config"]["unseen"]) == 5
    assert {(r["arm"], r["seed"]) for r in record["runs"]} == {("pretrained_text", 0), ("random_text", 0)}
    for run in record["runs"]:
        m = run["metrics"]
        assert m["unseen_chance_top1"] == pytest.approx(0.2)
        assert 0.0 <= m["unseen_top1"] <= m["unseen_top3"] <= 1.0
        assert 0.0 <= m["seen_top1"] <= 1.0 and 0.0 <= m["retrieval_p@1"] <= 1.0
        assert 0.0 <= m["unseen_linear_probe_top1"] <= 1.0
        curve = run["extra"]["loss_curve"]  # 3 steps, logged every step
        assert len(curve) == 3 and all(0.0 < x < 100.0 for x in curve)
    gain = record["details"]["gains_over_random_text"]["unseen_top1"]
    by_arm = {r["arm"]: r["metrics"]["unseen_top1"] for r in record["runs"]}
    assert gain["n"] == 1 and gain["mean"] == pytest.approx(by_arm["pretrained_text"] - by_arm["random_text"])
    assert "One seed only" in record["verdict"]
    assert (out / f"{stem}.png").stat().st_size > 1000
    md = (out / f"{stem}.md").read_text()
    assert "(smoke run)" in md and "| pretrained_text |" in md and "Δ unseen_top1 vs random_text" in md
    # the runs are cached under --work: --reuse rebuilds the same result without training
    module.main(
        [
            "--smoke",
            "--data",
            data,
            "--reuse",
            "--out",
            str(tmp_path / "again"),
            "--work",
            str(tmp_path / "work"),
        ]
    )
    assert json.loads((tmp_path / "again" / f"{stem}.json").read_text())["runs"] == record["runs"]


def test_zero_shot_verdicts_pair_by_seed_and_need_a_plateau() -> None:
    from hubtools.bench import Run

    module = _load_script("retizero_zero_shot")

    def runs(gains: list[float]) -> list[Run]:
        out = []
        for seed, g in enumerate(gains):
            base = 0.2 + 0.05 * seed  # seed noise larger than the gain: only pairing sees the gain
            for arm, v in (("pretrained_text", base + g), ("random_text", base)):
                metrics = {k: 0.5 for k in module.COLUMNS} | {"unseen_top1": v, "unseen_chance_top1": 0.2}
                out.append(Run(arm=arm, seed=seed, metrics=metrics))
        return out

    flat, falling = [2.0, 1.0, 0.5, 0.5, 0.5], [2.0, 1.5, 1.2, 1.0, 0.8]
    _, text, gains = module.judge(runs([0.04, 0.05, 0.06]), {"random_text": [falling] * 3}, "fmnist")
    assert text.startswith("Reproduced") and gains["unseen_top1"]["clear"]
    _, text, _ = module.judge(runs([0.03, -0.02, 0.0]), {"random_text": [flat] * 3}, "fmnist")
    assert text.startswith("Not reproduced")
    _, text, _ = module.judge(runs([0.03, -0.02, 0.0]), {"random_text": [falling] * 3}, "fmnist")
    assert "budget insufficient" in text and "Not reproduced" not in text
    _, text, _ = module.judge(runs([0.0, 0.0, 0.0]), {"random_text": [flat] * 3}, "fmnist")
    assert "no-op" in text


def test_digits_gate_smoke_and_gate_logic(tmp_path: Path) -> None:
    module = _load_script("retizero_digits")
    assert module.gate_failures({"top1": 0.31, "top3": 0.5, "top5": 0.7, "p@1": 0.4}) == []
    assert len(module.gate_failures({"top1": 0.29, "top3": 0.2, "top5": 0.7, "p@1": 0.1})) == 3
    out = tmp_path / "results"
    assert module.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    record = json.loads((out / "retizero_digits.json").read_text())
    assert record["smoke"] is True and record["seeds"] == [0] and "gate is not applied" in record["verdict"]
    (run,) = record["runs"]
    assert run["seed"] == 0 and run["extra"]["n_train"] == 1200 and run["extra"]["steps"] == 5
    assert sum(map(sum, run["extra"]["confusion_matrix"])) == run["extra"]["n_test"] == 55
    m = run["metrics"]
    assert 0.0 <= m["top1"] <= m["top3"] <= m["top5"] <= 1.0 and 0.0 <= m["p@1"] <= m["hit@5"] <= 1.0
    assert len(run["extra"]["loss_curve"]) == 5 and run["extra"]["gate_failures"] == []
    for suffix in ("_zeroshot.png", "_retrieval.png"):
        assert (out / f"retizero_digits{suffix}").stat().st_size > 1000
    assert "| 0 |" in (out / "retizero_digits.md").read_text()


def test_digits_gate_fails_with_exit_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trained model below the gate makes main() return 1 and says why, with the loss plateau."""
    module = _load_script("retizero_digits")
    names = list(module.DIGITS.classes)
    weak = {
        "n_train": 1200,
        "n_test": 10,
        "steps": 1,
        "train_seconds": 0.1,
        "final_loss": 2.0,
        "logit_scale": 10.0,
        "loss_curve": [2.3, 2.2, 2.0],
        "log_every": 1,
        "zero_shot": {
            "top1": 0.1,
            "top3": 0.3,
            "top5": 0.5,
            "per_class": {c: {"n": 1, "top1": 0.1, "top3": 0.3, "top5": 0.5} for c in names},
            "confusion_matrix": np.eye(10, dtype=int).tolist(),
        },
        "retrieval": {"p@1": 0.5, "p@3": 0.4, "p@5": 0.3, "hit@1": 0.5, "hit@3": 0.6, "hit@5": 0.7},
        "grid": [[0.0, None, 1.0]],
        "grid_rows": [{"query": "zero", "neighbours": ["one"] * 5}],
    }
    monkeypatch.setattr(module, "run", lambda *a, **k: weak)
    out = tmp_path / "results"
    assert module.main(["--steps", "1", "--out", str(out), "--work", str(tmp_path / "work")]) == 1
    record = json.loads((out / "retizero_digits.json").read_text())
    assert record["verdict"].startswith("Gate FAILED") and "top1 = 0.100 < 0.3" in record["verdict"]
    assert "has not plateaued" in record["verdict"] and record["runs"][0]["metrics"]["gate_pass"] is False
