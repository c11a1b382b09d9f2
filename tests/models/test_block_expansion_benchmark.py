"""The block-expansion benchmark's --smoke mode runs on real Fashion-MNIST and digits and writes its results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hubtools.data.offline import DataUnavailable, fashion_mnist

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "block_expansion.py"


def test_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        fashion_mnist("test")
    except DataUnavailable as err:
        pytest.skip(str(err))
    spec = importlib.util.spec_from_file_location("block_expansion_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["block_expansion.py", "--smoke", "--out", str(tmp_path)])
    module.main()
    record = json.loads((tmp_path / "block_expansion_smoke.json").read_text())
    assert {r["arm"] for r in record["runs"]} == {"full", "block_expansion", "lora"}
    summary = record["summary"]
    assert (
        summary["lora"]["trainable_params"]
        < summary["block_expansion"]["trainable_params"]
        < summary["full"]["trainable_params"]
    )
    for arm in summary.values():
        assert 0.0 <= arm["b_accuracy"][0] <= 1.0 and arm["a_linear_probe_retention"] > 0
    assert (tmp_path / "block_expansion_smoke.png").stat().st_size > 1000
    assert "| block_expansion |" in (tmp_path / "block_expansion_smoke.md").read_text()
