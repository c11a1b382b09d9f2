"""Quickstart demo of Bayesian pseudo labels: a tiny BPL U-Net on real nuclei goes up to the Hub and comes back.

Real data: stardist's ``img2d.tif`` fluorescence nuclei with their manual masks, 64x64 tiles,
10% of the training tiles labelled. The trained model is published with its card to the
embedded Hub, loaded back with ``from_pretrained`` and must give identical test predictions.
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo

DEMO_STEPS = 150


@register_demo("semiseg", "Bayesian pseudo labels: U-Net on real nuclei (10% labelled), Hub round trip")
def semiseg_demo(ctx: DemoContext) -> DemoResult:
    import torch

    from hubtools.hub.publish import push_artifact
    from hubtools.semiseg.data import nuclei_dataset
    from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg
    from hubtools.semiseg.trainer import (
        MODEL_DIR,
        SemiSegTrainConfig,
        evaluate,
        predict_probabilities,
        save_model_artifact,
        train_semiseg,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two on a busy 2-core machine
    try:
        data = nuclei_dataset(tile=64, labelled_fraction=0.1)
        cfg = SemiSegTrainConfig(
            output_dir=ctx.work_dir / "run",
            method="bpl",
            steps=DEMO_STEPS,
            width=8,
            depth=3,
            resume=None,
            log_every=25,
            overlays=True,
        )
        if cfg.output_dir.exists():
            import shutil

            shutil.rmtree(cfg.output_dir)
        result = train_semiseg(data, cfg, save_artifact=False)
        repo = ctx.repo_id("semiseg-nuclei-bpl")
        folder = save_model_artifact(
            result.model,
            cfg.output_dir / MODEL_DIR,
            cfg,
            data,
            result.scores,
            repo_id=repo,
            zoo_fields={
                "modality": "fluorescence microscopy",
                "anatomy": "cell nuclei",
                "reproduce": "hubtools quickstart --only semiseg",
            },
        )
        push_artifact(folder, repo)
        reloaded = UNetForSemiSeg.from_pretrained(repo).eval()
        test = torch.from_numpy(data.splits["test"].images)
        diff = (
            (predict_probabilities(result.model, test) - predict_probabilities(reloaded, test))
            .abs()
            .max()
            .item()
        )
        scores = evaluate(reloaded, data)
    finally:
        torch.set_num_threads(threads)
    if diff != 0.0:
        raise AssertionError(f"reloaded model differs from the trained one: max |dp| = {diff}")
    history = result.threshold_history
    return DemoResult(
        data=f"stardist img2d.tif nuclei: {len(data.splits['labelled'].images)} labelled + "
        f"{len(data.splits['unlabelled'].images)} unlabelled 64x64 tiles, {len(test)} test tiles",
        artifacts=[repo],
        metrics={
            "test_dice": round(scores["dice"], 4),
            "test_iou": round(scores["iou"], 4),
            "T_mu": round(history[-1]["T_mu"], 4) if history else None,
            "steps": DEMO_STEPS,
            "reload_max_abs_diff": diff,
        },
    )
