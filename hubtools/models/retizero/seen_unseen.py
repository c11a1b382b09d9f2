"""The seen/unseen-class experiment of the demo and the benchmark, on a real captioned corpus
(:mod:`hubtools.models.retizero.corpora`: Fashion-MNIST or brain-MRI regions).

RetiZero is trained on SEEN classes only; zero-shot Top-k is then measured on UNSEEN classes (their prompts
never appeared in training), against chance and a linear probe trained on those classes' labels, and
image-to-image retrieval P@k on held-out images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from hubtools.models.retizero.corpora import FASHION, CaptionedSource, captioned_pairs


class OnePerClassOrder(Sampler[int]):
    """Consecutive groups of one index per class: with ``batch_size = n_classes`` no batch holds two captions of
    the same class (CLIP would treat them as negatives). Depends only on ``seed`` and the epoch (exact resume)."""

    def __init__(self, labels: Sequence[int], seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.per_class = min(int((self.labels == c).sum()) for c in self.classes)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_class * len(self.classes)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        columns = [rng.permutation(np.flatnonzero(self.labels == c))[: self.per_class] for c in self.classes]
        for j in range(self.per_class):
            for c in rng.permutation(len(self.classes)):
                yield int(columns[c][j])


def linear_probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Logistic regression on frozen image features (the supervised reference for zero-shot)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def tiny_retizero(seed: int = 0, pretrained_text: bool = True):
    """The benchmarks' model and processor: a random tiny ViT (hidden 64, 4 layers, patch 4, 32 px; frozen base +
    LoRA r 8, spec §4) and all-MiniLM-L6-v2 (real weights, or the same architecture randomly initialised)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel

    from hubtools.data.offline import minilm_path
    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor

    torch.manual_seed(seed)
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
    if pretrained_text:
        text = AutoModel.from_pretrained(minilm_path())
    else:
        text = AutoModel.from_config(AutoConfig.from_pretrained(minilm_path()))
    model = RetiZeroModel.from_towers(vision, text, vision_lora={"r": 8}, projection_dim=64)
    processor = RetiZeroProcessor(
        ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        AutoTokenizer.from_pretrained(minilm_path()),
    )
    return model, processor


def run_seen_unseen(
    work_dir: str | Path,
    *,
    source: CaptionedSource = FASHION,
    seen: Sequence[str] | None = None,
    unseen: Sequence[str] | None = None,
    steps: int = 200,
    n_train_per_class: int = 100,
    n_test_per_class: int = 40,
    seed: int = 0,
    pretrained_text: bool = True,
    lr: float = 1e-3,
) -> dict[str, float]:
    """Train a tiny-ViT + MiniLM RetiZero on seen classes (default: the first half of ``source``'s classes);
    zero-shot, linear probe and retrieval metrics."""
    from hubtools.models.retizero.train import train_retizero
    from hubtools.models.retizero.zero_shot import (
        image_features,
        retrieval_metrics,
        topk_accuracy,
        zero_shot_classify,
    )
    from hubtools.train import TrainConfig

    half = len(source.classes) // 2
    seen = list(seen) if seen is not None else source.classes[:half]
    unseen = list(unseen) if unseen is not None else source.classes[half:]
    model, processor = tiny_retizero(seed, pretrained_text)
    train_pairs = captioned_pairs(source, "train", seen, n_train_per_class, seed)
    config = TrainConfig(
        output_dir=Path(work_dir) / f"run-{source.name}-seed{seed}-{'pre' if pretrained_text else 'rand'}",
        max_steps=steps,
        batch_size=len(seen),
        lr=lr,
        weight_decay=1e-5,
        scheduler="cosine",
        warmup_steps=steps // 10,
        max_grad_norm=1.0,
        log_every=max(1, steps // 10),
        seed=seed,
        resume=None,
    )
    sampler = OnePerClassOrder(train_pairs["label"], seed)
    model = train_retizero(model, processor, train_pairs, config, sampler=sampler).model.eval()

    test = captioned_pairs(source, "test", seen + unseen, n_test_per_class, seed)
    images, labels = [im.convert("RGB") for im in test["image"]], np.asarray(test["label"])
    is_unseen = labels >= len(seen)
    unseen_images = [im for im, u in zip(images, is_unseen, strict=True) if u]
    unseen_labels = labels[is_unseen] - len(seen)
    seen_images = [im for im, u in zip(images, is_unseen, strict=True) if not u]
    metrics: dict[str, float] = {}
    probs = zero_shot_classify(model, processor, unseen_images, unseen, source.templates)
    metrics.update({f"unseen_{k}": v for k, v in topk_accuracy(probs, unseen_labels).items()})
    probs = zero_shot_classify(model, processor, seen_images, seen, source.templates)
    metrics["seen_top1"] = topk_accuracy(probs, labels[~is_unseen], ks=(1,))["top1"]
    metrics["unseen_chance_top1"] = 1.0 / len(unseen)

    # Linear probe on the unseen classes: trained on their labelled TRAIN images, tested on the same test images.
    probe_train = captioned_pairs(source, "train", unseen, n_train_per_class, seed + 1)
    train_x = image_features(model, processor, [im.convert("RGB") for im in probe_train["image"]], "cls")
    test_x = image_features(model, processor, unseen_images, "cls")
    metrics["unseen_linear_probe_top1"] = linear_probe_accuracy(
        train_x.cpu().numpy(), np.asarray(probe_train["label"]), test_x.cpu().numpy(), unseen_labels
    )
    retrieval = retrieval_metrics(image_features(model, processor, images, "retrieval").cpu(), labels)
    metrics.update({f"retrieval_{k}": v for k, v in retrieval.items()})
    metrics["retrieval_chance_p@1"] = 1.0 / (len(seen) + len(unseen))
    metrics["logit_scale"] = float(model.effective_logit_scale().detach())
    return metrics
