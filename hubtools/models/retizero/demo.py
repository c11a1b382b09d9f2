"""Quickstart demo of RetiZero: a tiny dual encoder (random tiny ViT + LoRA, the real MiniLM text tower) trained
briefly on real Fashion-MNIST images captioned with class descriptions (seen classes only), zero-shot on seen and
unseen classes (a few seconds of training: far from the benchmark's numbers, and reported as such), exported with LoRA merged, published with its remote code, reloaded, and run through transformers'
zero-shot-image-classification pipeline on the real fundus photo ``skimage.data.retina()``.

No RetiZero weights or retinal captions exist offline: the retina labels' scores show the mechanics (a valid
distribution over prompts), not a diagnosis.
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo

FUNDUS_LABELS = ["normal fundus", "glaucoma", "diabetic retinopathy", "age-related macular degeneration"]
# A few seconds of training: the point is the mechanics (train, zero-shot, merged export, remote code, pipeline).
# The 300-step, 3-seed numbers are in benchmarks/retizero_zero_shot.py.
DEMO_STEPS = 60


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
    from transformers import AutoModel, pipeline

    from hubtools.hub.publish import push_artifact
    from hubtools.models.retizero.corpora import FASHION, captioned_pairs
    from hubtools.models.retizero.seen_unseen import OnePerClassOrder, tiny_retizero
    from hubtools.models.retizero.train import save_retizero, train_retizero
    from hubtools.models.retizero.zero_shot import topk_accuracy, zero_shot_classify
    from hubtools.train import TrainConfig

    seen, unseen = FASHION.classes[:5], FASHION.classes[5:]
    model, processor = tiny_retizero(seed=0)
    pairs = captioned_pairs(FASHION, "train", seen, 40)
    config = TrainConfig(
        output_dir=ctx.work_dir / "run",
        max_steps=DEMO_STEPS,
        batch_size=len(seen),
        lr=1e-3,
        weight_decay=1e-5,
        scheduler="cosine",
        warmup_steps=DEMO_STEPS // 10,
        max_grad_norm=1.0,
        log_every=10,
        resume=None,
    )
    trained = train_retizero(
        model, processor, pairs, config, sampler=OnePerClassOrder(pairs["label"])
    ).model.eval()

    test = captioned_pairs(FASHION, "test", seen + unseen, 12)
    images, labels = [im.convert("RGB") for im in test["image"]], torch.tensor(test["label"])
    is_unseen = labels >= len(seen)
    probs = zero_shot_classify(
        trained,
        processor,
        [im for im, u in zip(images, is_unseen, strict=True) if u],
        unseen,
        FASHION.templates,
    )
    zero_shot = topk_accuracy(probs, labels[is_unseen] - len(seen), ks=(1, 3))
    probs = zero_shot_classify(
        trained,
        processor,
        [im for im, u in zip(images, is_unseen, strict=True) if not u],
        seen,
        FASHION.templates,
    )
    seen_top1 = topk_accuracy(probs, labels[~is_unseen], ks=(1,))["top1"]

    repo_id = ctx.repo_id("retizero-tiny")
    folder = save_retizero(
        trained,
        processor,
        ctx.work_dir / "retizero-tiny",
        repo_id=repo_id,
        base_model=["sentence-transformers/all-MiniLM-L6-v2"],
        candidate_labels=FUNDUS_LABELS,
        training_data="200 real Fashion-MNIST images of 5 classes, captioned with written class descriptions.",
        training_procedure=f"Tiny random-init ViT (frozen, LoRA r 8) + MiniLM, {DEMO_STEPS} steps CLIP + evidential loss.",
        # trained on Fashion-MNIST captions: the catalogue must not list it as a retinal model
        zoo_fields={"modality": "image", "anatomy": "n/a (demo trained on Fashion-MNIST)",
                    "reproduce": "hubtools quickstart --only retizero"},
    )
    push_artifact(folder, repo_id)
    reloaded = AutoModel.from_pretrained(repo_id).eval()
    probe = processor(images=images[:4])["pixel_values"]
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
            "train_steps": DEMO_STEPS,
            "seen_zero_shot_top1": round(seen_top1, 3),
            "unseen_zero_shot_top1": round(zero_shot["top1"], 3),
            "unseen_zero_shot_top3": round(zero_shot["top3"], 3),
            "chance_top1": 0.2,
            "note": f"{DEMO_STEPS} steps on 200 images: a mechanics check; 3-seed results: "
            "benchmarks/results/retizero_zero_shot.md",
            "merged_export_max_abs_diff": merge_diff,
            "retina_top_label": scores[0]["label"],
        },
    )
