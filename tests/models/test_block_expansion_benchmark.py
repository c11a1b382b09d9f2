"""The block-expansion benchmark's --smoke mode runs on real Fashion-MNIST and digits and writes its results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hubtools.data.offline import DataUnavailable, fashion_mnist
from hubtools.testing import data_missing

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "block_expansion.py"


def test_smoke(tmp_path: Path) -> None:
    try:
        fashion_mnist("test")
    except DataUnavailable as err:
        data_missing(err)
    spec = importlib.util.spec_from_file_location("block_expansion_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "results"
    path = module.main(["--smoke", "--out", str(out), "--seeds", "0", "1", "--work", str(tmp_path / "work")])
    assert path == out / "block_expansion.json"
    result = json.loads(path.read_text())
    assert result["smoke"] is True and result["seeds"] == [0, 1]
    assert "benchmarks/block_expansion.py --smoke" in result["command"]
    runs = result["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == sorted(
        (arm, seed) for arm in ("full", "block_expansion", "lora") for seed in (0, 1)
    )
    params = {r["arm"]: r["metrics"]["trainable_params"] for r in runs}
    assert params["lora"] < params["block_expansion"] < params["full"]
    for r in runs:
        m = r["metrics"]
        assert 0.0 <= m["b_accuracy"] <= 1.0 and 0.0 <= m["a_linear_probe_after"] <= 1.0
        assert m["a_linear_probe_retention"] > 0
        curve = r["extra"]["b_accuracy_curve"]
        assert len(curve) >= 3 and curve[-1][1] == pytest.approx(m["b_accuracy"])
    # two seeds: the paired difference from full fine-tuning has a CI, and the verdict says what it judged
    diff = result["details"]["block_expansion_minus_full"]["b_accuracy"]
    assert diff["n"] == 2 and diff["ci_low"] is not None
    assert result["verdict"].startswith("Claim ")
    assert "full_b_accuracy_plateau" in result["details"]
    md = (out / "block_expansion.md").read_text()
    assert "| block_expansion |" in md and "Δ B accuracy vs full" in md
    assert (out / "block_expansion.png").stat().st_size > 1000
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # training folders removed
