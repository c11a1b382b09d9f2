"""The RetiZero quickstart demo, in-process against the test Hub, and the benchmark's --smoke mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hubtools.data.offline import DataUnavailable, fashion_mnist
from hubtools.quickstart import DEMOS, DemoContext

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "retizero_zero_shot.py"


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


def test_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("retizero_zero_shot_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["retizero_zero_shot.py", "--smoke", "--out", str(tmp_path)])
    module.main()
    record = json.loads((tmp_path / "retizero_zero_shot_smoke.json").read_text())
    assert {r["arm"] for r in record["runs"]} == {"pretrained_text", "random_text"}
    for arm in record["summary"].values():
        assert arm["unseen_chance_top1"][0] == pytest.approx(0.2)
        assert 0.0 <= arm["unseen_top1"][0] <= arm["unseen_top3"][0] <= 1.0
        assert 0.0 <= arm["retrieval_p@1"][0] <= 1.0
    assert (tmp_path / "retizero_zero_shot_smoke.png").stat().st_size > 1000
    assert "| pretrained_text |" in (tmp_path / "retizero_zero_shot_smoke.md").read_text()
