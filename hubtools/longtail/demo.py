"""Quickstart demo of the long-tail datasets: the real MRI patch set goes up to the Hub and comes back.

Builds the naturally long-tailed brain-MRI patch set (Debian mricron-data: ch2 T1 + AAL atlas,
116 regions) with its ``dataset_scripts`` builder, saves it as a local artifact (Arrow data,
profile JSON, bar chart, card), publishes it as Parquet to the embedded local Hub and loads it
back with the stock ``load_dataset``; every row (image bytes included) and the features must match.
Then a tiny classifier is trained on the published set for a few seconds and published too (the
long-tail Space's model: class distribution, per-class test accuracy, predictions).
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo


def rows_identical(a: object, b: object) -> tuple[int, int]:
    """(identical rows, rows) of two ``datasets.Dataset`` compared with images undecoded (raw bytes)."""
    from datasets import Image

    a = a.cast_column("image", Image(decode=False))  # type: ignore[attr-defined]
    b = b.cast_column("image", Image(decode=False))  # type: ignore[attr-defined]
    if a.num_rows != b.num_rows:  # type: ignore[attr-defined]
        return 0, max(a.num_rows, b.num_rows)  # type: ignore[attr-defined]
    same = 0
    for x, y in zip(a.iter(batch_size=1000), b.iter(batch_size=1000), strict=True):  # type: ignore[attr-defined]
        n = len(next(iter(x.values())))
        same += sum(all(x[k][i] == y[k][i] for k in x) for i in range(n))
    return same, a.num_rows  # type: ignore[attr-defined]


@register_demo(
    "longtail", "Long-tailed MRI patches (116 AAL regions): build, publish, load_dataset round trip"
)
def longtail_roundtrip(ctx: DemoContext) -> DemoResult:
    from datasets import load_dataset

    from hubtools.longtail.datasets import make_builder, prepare, publish, save_build

    builder = make_builder("mri_patches", None, cache_dir=ctx.work_dir / "cache")
    lt = builder.plan().profile
    ds = prepare(builder)
    builder_cfg = builder.config.name
    repo = ctx.repo_id("mri-patches-lt")
    zoo_fields = {
        "modality": "MRI (T1)",
        "anatomy": "brain",
        "reproduce": "hubtools quickstart --only longtail",
    }
    folder = save_build(
        ctx.work_dir / builder_cfg, "mri_patches", builder, ds, lt, repo_id=repo, zoo_fields=zoo_fields
    )
    publish(folder, repo, private=False)
    back = load_dataset(repo, builder_cfg)
    same = {s: rows_identical(ds[s], back[s]) for s in ds}
    features_equal = all(ds[s].features == back[s].features for s in ds)
    if not features_equal or any(a != b for a, b in same.values()):
        raise AssertionError(f"round trip mismatch: features_equal={features_equal} rows={same}")
    identical = sum(a for a, _ in same.values())
    model_repo, test = train_tiny_classifier(ctx, repo, builder_cfg)
    return DemoResult(
        data=f"Debian mricron-data ch2 T1 + AAL atlas: {identical} patches 32x32, {lt.num_classes} regions",
        artifacts=[f"datasets/{repo} ({builder_cfg})", model_repo],
        metrics={
            "classes": lt.num_classes,
            "train_head": lt.cls_num_list[0],
            "train_tail": lt.cls_num_list[-1],
            "imbalance": lt.imbalance_ratio,
            "many/medium/few": f"{lt.head}/{lt.medium - lt.head}/{lt.num_classes - lt.medium}",
            "rows_identical": f"{identical}/{sum(b for _, b in same.values())}",
            "features_equal": features_equal,
            "tiny_model_test_top1": round(test["top1"], 2),
            "tiny_model_test_balanced_acc": round(test["balanced_acc"], 2),
        },
    )


# A tiny ResNet, 3 epochs of Balanced Softmax at the patches' own 32 px: a few seconds on one CPU thread.
TINY_BACKBONE = {"embedding_size": 8, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"}


def train_tiny_classifier(
    ctx: DemoContext, dataset_repo: str, config: str, epochs: int = 3
) -> tuple[str, dict]:
    """Train a tiny classifier on the published set (loaded from the Hub) and publish it; (repo, test report)."""
    import json
    import shutil

    import torch

    from hubtools.hub.publish import push_artifact
    from hubtools.longtail.trainer import METRICS_JSON, BackboneSpec, LongTailTrainConfig, train_longtail

    cfg = LongTailTrainConfig(
        dataset=dataset_repo,
        config=config,
        method="balanced_softmax",
        backbone=BackboneSpec(model_type="resnet", options=TINY_BACKBONE),
        output_dir=ctx.work_dir / "tiny-classifier",
        image_size=32,
        num_epochs=epochs,
        batch_size=256,
        lr=3e-3,
    )
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # a demo re-run trains afresh, never resumes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: extra threads only spin on a busy machine
    try:
        folder = train_longtail(cfg)
    finally:
        torch.set_num_threads(threads)
    repo = ctx.repo_id("mri-patches-lt-tiny-resnet")
    push_artifact(folder, repo)
    return repo, json.loads((folder / METRICS_JSON).read_text())["test"]
