"""A real image–text corpus built offline, and the seen/unseen-class experiment of the demo and the benchmark.

No retinal image–text corpus exists offline, so the pairs are real Fashion-MNIST images captioned with
written class knowledge (several descriptive sentences per class, not just the label word). RetiZero is
trained on SEEN classes only; zero-shot Top-k is then measured on UNSEEN classes (their prompts never
appeared in training), against chance and a linear probe trained on those classes' labels, and
image-to-image retrieval P@k on held-out images.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

FASHION_DESCRIPTIONS: dict[str, list[str]] = {
    "T-shirt": [
        "a short-sleeved cotton T-shirt with a round neck",
        "a casual tee worn on the upper body, with short sleeves",
        "a plain top with short sleeves and no collar",
    ],
    "trouser": [
        "a pair of long trousers with two legs",
        "long pants that cover both legs down to the ankles",
        "a pair of jeans or slacks seen from the front",
    ],
    "pullover": [
        "a warm knitted pullover sweater with long sleeves",
        "a wool jumper pulled over the head, with long sleeves",
        "a thick long-sleeved sweater for cold weather",
    ],
    "dress": [
        "a one-piece dress for women that hangs from the shoulders",
        "a long gown or frock covering the body and legs",
        "a sleeveless summer dress with a flared skirt",
    ],
    "coat": [
        "a long coat with sleeves and buttons down the front",
        "a winter overcoat or jacket worn outdoors",
        "a heavy coat with a collar and long sleeves",
    ],
    "sandal": [
        "an open sandal with thin straps for summer",
        "a light open-toed shoe held on the foot by straps",
        "a flat strappy sandal that shows the toes",
    ],
    "shirt": [
        "a button-up shirt with a collar and sleeves",
        "a formal shirt with buttons down the front",
        "a long-sleeved blouse or dress shirt with a collar",
    ],
    "sneaker": [
        "a low sports sneaker with laces and a rubber sole",
        "a trainer shoe for running, seen from the side",
        "a casual athletic shoe with a flat sole",
    ],
    "bag": [
        "a handbag with a handle for carrying things",
        "a leather purse or tote bag",
        "a shoulder bag with a strap",
    ],
    "ankle boot": [
        "a short boot that covers the ankle, with a heel",
        "a leather ankle boot with a thick sole",
        "a high shoe reaching just above the ankle",
    ],
}
FASHION_CLASSES = list(FASHION_DESCRIPTIONS)
TEMPLATES = ["a photo of a {}", "a picture of a {}, a piece of clothing"]


@functools.lru_cache(maxsize=2)
def _fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    from hubtools.data.offline import fashion_mnist

    return fashion_mnist(split)


def fashion_pairs(split: str, classes: Sequence[str], n_per_class: int, seed: int = 0):
    """A `datasets.Dataset` (image, text, label) of real Fashion-MNIST images of ``classes``, each captioned
    with one of its class's sentences; ``label`` indexes ``classes``."""
    from datasets import ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    images, labels = _fashion_mnist(split)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {"image": [], "text": [], "label": []}
    for new_label, name in enumerate(classes):
        pool = np.flatnonzero(labels == FASHION_CLASSES.index(name))
        for i in rng.choice(pool, size=n_per_class, replace=False):
            rows["image"].append(PILImage.fromarray(images[i]).convert("RGB"))
            rows["text"].append(str(rng.choice(FASHION_DESCRIPTIONS[name])))
            rows["label"].append(new_label)
    features = Features({"image": Image(), "text": Value("string"), "label": ClassLabel(names=list(classes))})
    return Dataset.from_dict(rows, features=features)


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


def _image_features(model, processor, images: list, retrieval: bool = False) -> torch.Tensor:
    with torch.no_grad():
        feats = []
        for i in range(0, len(images), 64):
            pixels = processor(images=images[i : i + 64])["pixel_values"]
            if retrieval:
                feats.append(model.get_retrieval_features(pixels))
            else:
                feats.append(model.vision_model(pixel_values=pixels).last_hidden_state[:, 0])
        return torch.cat(feats)


def linear_probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Logistic regression on frozen image features (the supervised reference for zero-shot)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def run_seen_unseen(
    work_dir: str | Path,
    *,
    seen: Sequence[str] = FASHION_CLASSES[:5],
    unseen: Sequence[str] = FASHION_CLASSES[5:],
    steps: int = 200,
    n_train_per_class: int = 100,
    n_test_per_class: int = 40,
    seed: int = 0,
    pretrained_text: bool = True,
    lr: float = 1e-3,
) -> dict[str, float]:
    """Train a tiny-ViT + MiniLM RetiZero on seen classes; zero-shot, linear probe and retrieval metrics."""
    from transformers import AutoModel, AutoTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel

    from hubtools.data.offline import minilm_path
    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor
    from hubtools.models.retizero.train import train_retizero
    from hubtools.models.retizero.zero_shot import retrieval_metrics, topk_accuracy, zero_shot_classify
    from hubtools.train import TrainConfig

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
        text = AutoModel.from_config(AutoModel.from_pretrained(minilm_path()).config)
    model = RetiZeroModel.from_towers(vision, text, vision_lora={"r": 8}, projection_dim=64)
    processor = RetiZeroProcessor(
        ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        AutoTokenizer.from_pretrained(minilm_path()),
    )
    train_pairs = fashion_pairs("train", seen, n_train_per_class, seed)
    config = TrainConfig(
        output_dir=Path(work_dir) / f"run-seed{seed}-{'pre' if pretrained_text else 'rand'}",
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

    test = fashion_pairs("test", list(seen) + list(unseen), n_test_per_class, seed)
    images, labels = [im.convert("RGB") for im in test["image"]], np.asarray(test["label"])
    is_unseen = labels >= len(seen)
    unseen_images = [im for im, u in zip(images, is_unseen, strict=True) if u]
    unseen_labels = labels[is_unseen] - len(seen)
    seen_images = [im for im, u in zip(images, is_unseen, strict=True) if not u]
    metrics: dict[str, float] = {}
    probs = zero_shot_classify(model, processor, unseen_images, list(unseen), TEMPLATES)
    metrics.update({f"unseen_{k}": v for k, v in topk_accuracy(probs, unseen_labels).items()})
    probs = zero_shot_classify(model, processor, seen_images, list(seen), TEMPLATES)
    metrics["seen_top1"] = topk_accuracy(probs, labels[~is_unseen], ks=(1,))["top1"]
    metrics["unseen_chance_top1"] = 1.0 / len(unseen)

    # Linear probe on the unseen classes: trained on their labelled TRAIN images, tested on the same test images.
    probe_train = fashion_pairs("train", unseen, n_train_per_class, seed + 1)
    train_x = _image_features(model, processor, [im.convert("RGB") for im in probe_train["image"]]).numpy()
    test_x = _image_features(model, processor, unseen_images).numpy()
    metrics["unseen_linear_probe_top1"] = linear_probe_accuracy(
        train_x, np.asarray(probe_train["label"]), test_x, unseen_labels
    )
    retrieval = retrieval_metrics(_image_features(model, processor, images, retrieval=True), labels)
    metrics.update({f"retrieval_{k}": v for k, v in retrieval.items()})
    metrics["retrieval_chance_p@1"] = 1.0 / (len(seen) + len(unseen))
    metrics["logit_scale"] = float(model.effective_logit_scale().detach())
    return metrics
