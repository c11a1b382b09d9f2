"""The quickstart demo, run in-process against the test Hub: expand, SSL on fundus tiles, remote-code round trip."""

from __future__ import annotations

from pathlib import Path

from hubtools.models.be_dinov2.demo import be_dinov2_demo
from hubtools.quickstart import DEMOS, DemoContext


def test_demo(hub, tmp_path: Path) -> None:
    assert "be-dinov2" in DEMOS
    ctx = DemoContext(hub_url=hub.url, token=hub.write_token, user=hub.user, work_dir=tmp_path)
    result = be_dinov2_demo(ctx)
    assert result.artifacts == [f"{hub.user}/be-dinoret-tiny"]
    assert result.metrics["identity_max_diff_at_init"] == 0 and result.metrics["hub_reload_max_abs_diff"] == 0
    assert result.metrics["ssl_steps"] == 12 and result.metrics["teacher_cls_std"] > 1e-3
