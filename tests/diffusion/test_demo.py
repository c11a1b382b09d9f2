"""The quickstart demo: a SpeeD DDPM trained on real digits goes up to the local Hub and comes back identical."""

from __future__ import annotations

from hubtools.diffusion.demo import DEMO_STEPS, speed_demo
from hubtools.quickstart import DEMOS, DemoContext


def test_speed_demo_round_trips_through_the_local_hub(hub, tmp_path):
    assert DEMOS["speed"].fn is speed_demo
    ctx = DemoContext(hub_url=hub.url, token=hub.write_token, user=hub.user, work_dir=tmp_path)
    result = speed_demo(ctx)
    assert result.artifacts == [f"{hub.user}/ddpm-digits-speed"]
    m = result.metrics
    assert m["steps"] == DEMO_STEPS
    assert m["samples_max_abs_diff_hub_vs_local"] == 0.0
    assert m["loss_last_log"] < 0.5 * m["loss_first_log"]
    assert (tmp_path / "run" / "pipeline" / "samples.png").is_file()
