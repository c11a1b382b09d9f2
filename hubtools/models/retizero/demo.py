"""Quickstart demo of RetiZero: a tiny dual encoder (random tiny ViT + LoRA, the real MiniLM text tower) trained
briefly on real Fashion-MNIST images captioned with class descriptions (seen classes only), zero-shot on unseen
classes, exported with LoRA merged, published with its remote code, reloaded, and run through transformers'
zero-shot-image-classification pipeline on the real fundus photo ``skimage.data.retina()``.

No RetiZero weights or retinal captions exist offline: the retina labels' scores show the mechanics (a valid
distribution over prompts), not a diagnosis.
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo

FUNDUS_LABELS = ["normal fundus", "glaucoma", "diabetic retinopathy", "age-related macular degeneration"]


@register_demo(
    "retizero", "RetiZero: vision-language dual encoder, unseen-class zero-shot, merged Hub export"
)
def retizero_demo(ctx: DemoContext) -> DemoResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny towers are overhead-bound: extra threads only spin on a busy machine
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: DemoContext) -> DemoResult:
    import torch
    from PIL import Image
    from skimage import data
    from transformers import AutoModel, AutoTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel, pipeline

    from hubtools.data.offline import minilm_path
    from hubtools.hub.publish import push_artifact
    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor
    from hubtools.models.retizero.seen_unseen import (
        FASHION_CLASSES,
        TEMPLATES,
        OnePerClassOrder,
        fashion_pairs,
    )
    from hubtools.models.retizero.train import save_retizero, train_retizero
    from hubtools.models.retizero.zero_shot import topk_accuracy, zero_shot_classify
    from hubtools.train import TrainConfig

    seen, unseen = FASHION_CLASSES[:5], FASHION_CLASSES[5:]
    torch.manual_seed(0)
    vision = ViTModel(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            patch_size=4,
            image_size=32,
        ),
        add_pooling_layer=False,
    )
    model = RetiZeroModel.from_towers(
        vision, AutoModel.from_pretrained(minilm_path()), vision_lora={"r": 8}, projection_dim=64
    )
    processor = RetiZeroProcessor(
        ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        AutoTokenizer.from_pretrained(minilm_path()),
    )
    pairs = fashion_pairs("train", seen, 40)
    config = TrainConfig(
        output_dir=ctx.work_dir / "run",
        max_steps=40,
        batch_size=len(seen),
        lr=1e-3,
        log_every=10,
        resume=None,
    )
    trained = train_retizero(
        model, processor, pairs, config, sampler=OnePerClassOrder(pairs["label"])
    ).model.eval()

    test = fashion_pairs("test", unseen, 12)
    probs = zero_shot_classify(
        trained, processor, [im.convert("RGB") for im in test["image"]], unseen, TEMPLATES
    )
    zero_shot = topk_accuracy(probs, test["label"], ks=(1, 3))

    repo_id = ctx.repo_id("retizero-tiny")
    folder = save_retizero(
        trained,
        processor,
        ctx.work_dir / "retizero-tiny",
        repo_id=repo_id,
        base_model=["sentence-transformers/all-MiniLM-L6-v2"],
        candidate_labels=FUNDUS_LABELS,
        training_data="200 real Fashion-MNIST images of 5 classes, captioned with written class descriptions.",
        training_procedure="Tiny random-init ViT (frozen, LoRA r 8) + MiniLM, 40 steps CLIP + evidential loss.",
    )
    push_artifact(folder, repo_id)
    reloaded = AutoModel.from_pretrained(repo_id).eval()
    probe = processor(images=[im.convert("RGB") for im in test["image"][:4]])["pixel_values"]
    with torch.no_grad():
        merge_diff = float(
            (
                reloaded.get_image_features(probe).pooler_output
                - trained.get_image_features(probe).pooler_output
            )
            .abs()
            .max()
        )
    retina = Image.fromarray(data.retina()[200:1200, 200:1200])
    classify = pipeline("zero-shot-image-classification", model=str(folder))
    scores = classify(retina, candidate_labels=FUNDUS_LABELS, hypothesis_template="A fundus photograph of {}")
    total = sum(s["score"] for s in scores)
    if merge_diff > 1e-5 or abs(total - 1.0) > 1e-4 or reloaded.config.vision_lora is not None:
        raise AssertionError(f"merge_diff={merge_diff} pipeline_total={total}")
    return DemoResult(
        data="real Fashion-MNIST (Debian dataset-fashion-mnist) with class descriptions; real fundus photo "
        "skimage.data.retina (CC0); real all-MiniLM-L6-v2 text tower",
        artifacts=[repo_id],
        metrics={
            "train_steps": 40,
            "unseen_zero_shot_top1": round(zero_shot["top1"], 3),
            "unseen_zero_shot_top3": round(zero_shot["top3"], 3),
            "unseen_chance_top1": 0.2,
            "merged_export_max_abs_diff": merge_diff,
            "retina_top_label": scores[0]["label"],
        },
    )
