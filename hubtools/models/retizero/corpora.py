"""Real image–text corpora built offline for the RetiZero demo and benchmarks.

No retinal image–text corpus exists offline, so the pairs are real images that ship in packages, captioned with
written class knowledge (several descriptive sentences per class, not just the label word):

- ``FASHION``: Fashion-MNIST (Debian ``dataset-fashion-mnist``), the official train/test split.
- ``MRI``: brain-MRI patches of ten AAL atlas regions (Debian ``mricron-data``, :mod:`hubtools.data.mri_patches`);
  each region's left- and right-hemisphere parts form one class, and the split is by hemisphere (train = left,
  test = right), so no test patch is cut from the same place as a training patch.
- ``DIGITS``: scikit-learn's handwritten digits, first 1 200 images train, last 597 test (spec §4 CI gate).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPLITS = ("train", "test")


@dataclass(frozen=True)
class CaptionedSource:
    """Real grayscale images whose classes are described in words.

    ``load(split)`` returns uint8 images ``[N, H, W]`` and labels indexing ``classes`` (the keys of
    ``descriptions``, in order); ``templates`` turn a class name into zero-shot prompts.
    """

    name: str
    descriptions: dict[str, list[str]]
    templates: list[str]
    load: Callable[[str], tuple[np.ndarray, np.ndarray]]

    @property
    def classes(self) -> list[str]:
        return list(self.descriptions)


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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@functools.lru_cache(maxsize=2)
def _load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    from hubtools.data.offline import fashion_mnist

    _check_split(split)
    return fashion_mnist(split)


FASHION = CaptionedSource(
    "fmnist",
    FASHION_DESCRIPTIONS,
    ["a photo of a {}", "a picture of a {}, a piece of clothing"],
    _load_fashion,
)

# Zero-shot class name -> (AAL region prefix, sentences on lobe, location and function).
MRI_REGIONS: dict[str, tuple[str, list[str]]] = {
    "middle frontal gyrus": (
        "Frontal_Mid",
        [
            "the middle frontal gyrus on the lateral surface of the frontal lobe",
            "frontal cortex between the superior and inferior frontal sulci, used for working memory and attention",
            "a large convolution of the dorsolateral prefrontal cortex in the front of the brain",
        ],
    ),
    "middle temporal gyrus": (
        "Temporal_Mid",
        [
            "the middle temporal gyrus on the lateral side of the temporal lobe",
            "temporal cortex between the superior and inferior temporal sulci, involved in language and meaning",
            "a long gyrus of the temporal lobe above the ear, processing words and visual motion",
        ],
    ),
    "precentral gyrus": (
        "Precentral",
        [
            "the precentral gyrus, the primary motor cortex just in front of the central sulcus",
            "the posterior frontal lobe strip that sends motor commands to the muscles",
            "motor cortex running from the top of the brain down to the lateral sulcus",
        ],
    ),
    "middle occipital gyrus": (
        "Occipital_Mid",
        [
            "the middle occipital gyrus on the lateral surface of the occipital lobe",
            "visual association cortex at the back of the brain",
            "occipital cortex near the back of the skull that processes what the eyes see",
        ],
    ),
    "cerebellar crus I": (
        "Cerebelum_Crus1",
        [
            "crus I of the cerebellar hemisphere, in the posterior lobe of the cerebellum",
            "cerebellar cortex with fine parallel folia below the occipital lobe, linked to cognition",
            "the lateral cerebellum at the back of the skull base, under the tentorium",
        ],
    ),
    "superior frontal gyrus": (
        "Frontal_Sup",
        [
            "the superior frontal gyrus along the top of the frontal lobe, next to the midline",
            "the uppermost frontal convolution, involved in self-awareness and higher cognition",
            "dorsal prefrontal cortex at the top and front of the brain",
        ],
    ),
    "inferior temporal gyrus": (
        "Temporal_Inf",
        [
            "the inferior temporal gyrus on the lower edge of the temporal lobe",
            "ventral temporal cortex that recognises objects and faces",
            "the bottom gyrus of the temporal lobe, just above the skull base",
        ],
    ),
    "postcentral gyrus": (
        "Postcentral",
        [
            "the postcentral gyrus, the primary somatosensory cortex just behind the central sulcus",
            "the anterior parietal lobe strip that receives touch, pain and body position",
            "sensory cortex running from the top of the brain down to the lateral sulcus",
        ],
    ),
    "calcarine cortex": (
        "Calcarine",
        [
            "the calcarine sulcus on the medial surface of the occipital lobe, the primary visual cortex",
            "striate visual cortex V1 near the midline at the very back of the brain",
            "medial occipital cortex that first receives signals from the eyes",
        ],
    ),
    "cerebellar lobule VIII": (
        "Cerebelum_8",
        [
            "lobule VIII of the cerebellar hemisphere, in the lower posterior cerebellum",
            "inferior cerebellar cortex with dense folia, involved in movement and balance",
            "the bottom of the cerebellum, near the foramen magnum at the base of the skull",
        ],
    ),
}
MRI_HEMISPHERE = {"train": "_L", "test": "_R"}


@functools.lru_cache(maxsize=2)
def _load_mri(split: str) -> tuple[np.ndarray, np.ndarray]:
    from hubtools.data.mri_patches import load_mri_patches

    _check_split(split)
    # The 4-voxel grid of the offline-data notes (23,133 patches) at the tiny ViT's 32 px.
    patches = load_mri_patches(patch_size=32, stride=4, slices=slice(None, None, 4))
    lookup = np.full(len(patches.class_names), -1, dtype=np.int64)
    for label, (prefix, _) in enumerate(MRI_REGIONS.values()):
        lookup[patches.class_names.index(prefix + MRI_HEMISPHERE[split])] = label
    labels = lookup[patches.labels]
    keep = labels >= 0
    return patches.images[keep], labels[keep]


MRI = CaptionedSource(
    "mri",
    {name: sentences for name, (_, sentences) in MRI_REGIONS.items()},
    ["a brain MRI patch of the {}", "a T1-weighted MRI slice through the {}"],
    _load_mri,
)

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_TRAIN = 1200


@functools.lru_cache(maxsize=2)
def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    _check_split(split)
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 ink levels -> 8-bit
    part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return images[part], digits.target[part].astype(np.int64)


DIGITS = CaptionedSource(
    "digits",
    {word: [f"a handwritten digit {word}"] for word in DIGIT_WORDS},
    ["a handwritten digit {}"],
    _load_digits,
)
SOURCES = {source.name: source for source in (FASHION, MRI, DIGITS)}


def captioned_pairs(
    source: CaptionedSource,
    split: str,
    classes: Sequence[str] | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
):
    """A `datasets.Dataset` (image, text, label) of ``source``'s real ``split`` images of ``classes`` (default
    all), ``n_per_class`` drawn at random (default all), each captioned with one of its class's sentences;
    ``label`` indexes ``classes``. Images are RGB at their own size (the processor resizes)."""
    from datasets import ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    classes = list(classes) if classes is not None else source.classes
    unknown = sorted(set(classes) - set(source.classes))
    if unknown:
        raise ValueError(f"{source.name} has no classes {unknown}; it has {source.classes}")
    images, labels = source.load(split)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {"image": [], "text": [], "label": []}
    for new_label, name in enumerate(classes):
        pool = np.flatnonzero(labels == source.classes.index(name))
        if n_per_class is not None:
            if n_per_class > len(pool):
                raise ValueError(f"{source.name}/{split}/{name}: {len(pool)} images, asked for {n_per_class}")
            pool = rng.choice(pool, size=n_per_class, replace=False)
        for i in pool:
            rows["image"].append(PILImage.fromarray(images[i]).convert("RGB"))
            rows["text"].append(str(rng.choice(source.descriptions[name])))
            rows["label"].append(new_label)
    features = Features({"image": Image(), "text": Value("string"), "label": ClassLabel(names=classes)})
    return Dataset.from_dict(rows, features=features)


__all__ = ["DIGITS", "FASHION", "MRI", "MRI_REGIONS", "SOURCES", "CaptionedSource", "captioned_pairs"]
