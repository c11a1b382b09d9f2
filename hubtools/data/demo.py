"""Quickstart demo of InfoGrowth: curate a noisy real Fashion-MNIST stream, publish the selection, load it back.

2,400 real Fashion-MNIST training images: 240 verified seed rows (24 per class) and a stream of
2,160 rows in which 20% of the labels are flipped on purpose. The encoder stand-in is PCA-32
fitted on the seed images (no image weights ship offline). ``hubtools data infogrowth``'s own
code path cleans the stream, scores gains, selects 30% and pushes the subset to the embedded
Hub; ``load_dataset`` reads it back and the demo checks that the flipped labels were removed.
"""

from __future__ import annotations

import numpy as np

from hubtools.quickstart import DemoContext, DemoResult, register_demo

N_PER_CLASS_SEED = 24
N_STREAM = 2160
NOISE = 0.2


def build_noisy_fashion_mnist(work_dir, seed: int = 0):  # noqa: ANN001, ANN201 - demo helper
    """A ``DatasetDict`` {trusted, train} of real Fashion-MNIST rows with 20% flipped labels in ``train``."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
    from sklearn.decomposition import PCA

    from hubtools.data.offline import FASHION_MNIST_CLASSES, fashion_mnist

    images, labels = fashion_mnist("train")
    rng = np.random.default_rng(seed)
    seed_idx = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), N_PER_CLASS_SEED, replace=False) for c in range(10)]
    )
    rest = np.setdiff1d(np.arange(len(labels)), seed_idx)
    stream_idx = rng.choice(rest, N_STREAM, replace=False)
    pca = PCA(32, random_state=seed).fit(images[seed_idx].reshape(len(seed_idx), -1) / 255.0)

    def embed(idx: np.ndarray) -> np.ndarray:
        z = pca.transform(images[idx].reshape(len(idx), -1) / 255.0).astype(np.float32)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    y_stream = labels[stream_idx].copy()
    noisy = rng.random(N_STREAM) < NOISE
    y_stream[noisy] = (y_stream[noisy] + rng.integers(1, 10, noisy.sum())) % 10
    feats = Features(
        {
            "image": Image(),
            "label": ClassLabel(names=list(FASHION_MNIST_CLASSES)),
            "img_emb": List(Value("float32"), length=32),
            "injected_noise": Value("bool"),
        }
    )

    def table(idx: np.ndarray, y: np.ndarray, flipped: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {
                "image": list(images[idx]),
                "label": y.tolist(),
                "img_emb": embed(idx).tolist(),
                "injected_noise": flipped.tolist(),
            },
            features=feats,
        )

    dd = DatasetDict(
        {
            "trusted": table(seed_idx, labels[seed_idx], np.zeros(len(seed_idx), bool)),
            "train": table(stream_idx, y_stream, noisy),
        }
    )
    path = work_dir / "fashion-mnist-noisy"
    dd.save_to_disk(str(path))
    return path, noisy


@register_demo("infogrowth", "InfoGrowth: clean + select a noisy real Fashion-MNIST stream, publish, reload")
def infogrowth_demo(ctx: DemoContext) -> DemoResult:
    from datasets import load_dataset

    from hubtools.data.cli import InfoGrowthConfig, curate_to_folder

    src, noisy = build_noisy_fashion_mnist(ctx.work_dir)
    repo = ctx.repo_id("fashion-mnist-infogrowth")
    cfg = InfoGrowthConfig(
        dataset=str(src),
        split="train",
        seed_split="trusted",
        label_column="label",
        budget=0.3,
        encoder_id="pca32-on-seed",
        out=ctx.work_dir / "selection",
        push_to_hub=repo,
    )
    zoo_fields = {
        "modality": "image",
        "task": "image-classification",
        "reproduce": "hubtools quickstart --only infogrowth",
    }
    summary = curate_to_folder(cfg, show_progress=False, zoo_fields=zoo_fields)
    back = load_dataset(repo, split="train")
    rejected = load_dataset(repo, split="rejected")
    if back.num_rows != summary["selected"]:
        raise AssertionError(f"reloaded {back.num_rows} rows, selected {summary['selected']}")
    sel_noisy = np.asarray(back["injected_noise"])
    removed = float(np.asarray(rejected["injected_noise"]).sum() / noisy.sum())
    rej_noise = np.asarray(rejected["injected_noise"])
    clean_lost = float(
        (~rej_noise & (np.asarray(rejected["ig_status"]) == "dropped_noisy")).sum() / (~noisy).sum()
    )
    classes = len(set(back["label"]))
    if removed < 0.8 or sel_noisy.mean() > 0.1 or classes != 10:
        raise AssertionError(
            f"curation did not work: noise removed {removed:.2f}, noisy share in selection "
            f"{sel_noisy.mean():.2f}, classes {classes}"
        )
    c = summary["counts"]
    return DemoResult(
        data=f"Fashion-MNIST (Debian dataset-fashion-mnist): {N_PER_CLASS_SEED * 10} seed + {N_STREAM} stream rows, "
        f"{NOISE:.0%} labels flipped",
        artifacts=[f"datasets/{repo}"],
        metrics={
            "selected_rows": back.num_rows,
            "noise_removed": round(removed, 3),
            "noisy_share_selected": round(float(sel_noisy.mean()), 3),
            "noisy_share_stream": round(float(noisy.mean()), 3),
            "clean_lost": round(clean_lost, 3),
            "dropped": c["dropped_noisy"],
            "classes_kept": f"{classes}/10",
        },
    )
