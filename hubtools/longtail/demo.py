"""Quickstart demo of the long-tail datasets: the real MRI patch set goes up to the Hub and comes back.

Builds the naturally long-tailed brain-MRI patch set (Debian mricron-data: ch2 T1 + AAL atlas,
116 regions) with its ``dataset_scripts`` builder, saves it as a local artifact (Arrow data,
profile JSON, bar chart, card), publishes it as Parquet to the embedded local Hub and loads it
back with the stock ``load_dataset``; every row (image bytes included) and the features must match.
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
    folder = save_build(ctx.work_dir / builder_cfg, "mri_patches", builder, ds, lt, repo_id=repo)
    publish(folder, repo, private=False)
    back = load_dataset(repo, builder_cfg)
    same = {s: rows_identical(ds[s], back[s]) for s in ds}
    features_equal = all(ds[s].features == back[s].features for s in ds)
    if not features_equal or any(a != b for a, b in same.values()):
        raise AssertionError(f"round trip mismatch: features_equal={features_equal} rows={same}")
    identical = sum(a for a, _ in same.values())
    return DemoResult(
        data=f"Debian mricron-data ch2 T1 + AAL atlas: {identical} patches 32x32, {lt.num_classes} regions",
        artifacts=[f"datasets/{repo} ({builder_cfg})"],
        metrics={
            "classes": lt.num_classes,
            "train_head": lt.cls_num_list[0],
            "train_tail": lt.cls_num_list[-1],
            "imbalance": lt.imbalance_ratio,
            "many/medium/few": f"{lt.head}/{lt.medium - lt.head}/{lt.num_classes - lt.medium}",
            "rows_identical": f"{identical}/{sum(b for _, b in same.values())}",
            "features_equal": features_equal,
        },
    )
