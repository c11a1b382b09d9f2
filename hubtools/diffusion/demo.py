"""Quickstart demo of SpeeD: a tiny DDPM trained on real digits with SpeeD sampling, published, loaded back, sampled.

Small on purpose (8x8 digits, a 2-level UNet, 300 steps: well under a minute on 2 CPU
cores): it shows the artifact's whole life, not image quality; `hubtools diffusion
speedup-bench` measures the speed-up.
"""

from __future__ import annotations

import json

from hubtools.quickstart import DemoContext, DemoResult, register_demo

DEMO_STEPS = 300


@register_demo("speed", "SpeeD DDPM on real digits: train, push, from_pretrained, sample")
def speed_demo(ctx: DemoContext) -> DemoResult:
    import numpy as np
    import torch
    from diffusers import DDPMPipeline

    from hubtools.diffusion.data import load_images
    from hubtools.diffusion.trainer import DDPMTrainConfig, one_torch_thread, train_ddpm
    from hubtools.hub.publish import push_artifact
    from hubtools.train import METRICS_FILE

    repo = ctx.repo_id("ddpm-digits-speed")
    config = DDPMTrainConfig(
        output_dir=ctx.work_dir / "run",
        resume=None,
        dataset="digits",
        image_size=8,
        block_out_channels=(32, 64),
        attention_blocks=(),
        norm_num_groups=16,
        max_steps=DEMO_STEPS,
        batch_size=64,
        lr=1e-3,
        warmup_steps=20,
        ema_decay=0.99,
        log_every=25,
        sampler="speed",
        num_samples=16,
        sample_steps=100,
        eval_examples=64,
    )
    if config.output_dir.exists():  # a demo re-run starts fresh
        import shutil

        shutil.rmtree(config.output_dir)
    images = load_images("digits", image_size=config.image_size)
    with one_torch_thread():
        out = train_ddpm(
            config, images, zoo_fields={"modality": "image", "reproduce": "hubtools quickstart --only speed"}
        )
    push_artifact(out.pipeline_dir, repo)

    def draw(pipe: DDPMPipeline) -> np.ndarray:
        gen = torch.Generator().manual_seed(0)
        return pipe(batch_size=8, generator=gen, num_inference_steps=50, output_type="np").images

    local = DDPMPipeline.from_pretrained(out.pipeline_dir)
    hub = DDPMPipeline.from_pretrained(repo)
    with one_torch_thread():
        a, b = draw(local), draw(hub)
    losses = [
        r["loss"]
        for r in map(json.loads, (config.output_dir / METRICS_FILE).read_text().splitlines())
        if "loss" in r
    ]
    return DemoResult(
        data=f"scikit-learn digits, {images.shape[0]} real 8x8 images",
        artifacts=[repo],
        metrics={
            "steps": out.step,
            "loss_first_log": round(losses[0], 4),
            "loss_last_log": round(losses[-1], 4),
            "heldout_mse": round(out.metrics["heldout_mse"], 4),
            "samples_max_abs_diff_hub_vs_local": float(np.abs(a - b).max()),
            "samples_png": str(out.pipeline_dir / "samples.png"),
        },
    )
