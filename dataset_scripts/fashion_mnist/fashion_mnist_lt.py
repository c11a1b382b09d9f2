"""Long-tailed Fashion-MNIST (ratio 100): a second real set, from Debian ``dataset-fashion-mnist``.

Not medical; it is the larger real check of the long-tail methods next to the MRI patches.
Read through :func:`hubtools.data.offline.fashion_mnist` (the gzipped IDX files under
``/usr/share/datasets/fashion-mnist``). Validation: 500 images per class drawn from the
official train split first (balanced); train: round(5500 * 100^(-i/9)) of the rest, in the
original class order (all classes are equally frequent at the source, ties keep the id order);
test: the official balanced 10k test split.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubtools.data.offline import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, fashion_mnist
from hubtools.longtail.datasets import LongTailBuilder, LongTailConfig, Record

TRAIN_COUNTS = (5500, 3297, 1977, 1185, 710, 426, 255, 153, 92, 55)


class FashionMNISTLT(LongTailBuilder):
    """Fashion-MNIST-LT, ratio 100, balanced validation and test."""

    CLASS_NAMES = FASHION_MNIST_CLASSES
    LICENSE = "mit"
    PARALLEL_BUILD = False  # images are in memory already; worker start-up would cost more than it saves
    TEST_DISTRIBUTION = "balanced"
    SOURCE = "Fashion-MNIST (Zalando Research), Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
    DESCRIPTION = "28x28 greyscale photos of 10 kinds of clothing (Fashion-MNIST), made long-tailed."
    BUILDER_CONFIGS = [
        LongTailConfig(
            name="fashion_mnist_lt_100",
            ratio=100,
            n_max=5500,
            val_per_class=500,
            head=3,
            medium=7,
            expected_train_counts=TRAIN_COUNTS,
            description="Fashion-MNIST long-tailed, ratio 100",
        )
    ]
    DEFAULT_CONFIG_NAME = "fashion_mnist_lt_100"

    _arrays: dict[str, np.ndarray] | None = None

    @property
    def data_dir(self) -> Path:
        return FASHION_MNIST_DIR

    def scan(self, data_dir: Path) -> list[Record]:
        self._arrays, records = {}, []
        for split, official in (("train", None), ("test", "test")):
            images, labels = fashion_mnist(split)
            self._arrays[split] = images
            records += [
                Record(
                    source_id=f"{split}_{i}",
                    orig_label=FASHION_MNIST_CLASSES[lab],
                    split=official,
                    row=i,
                    where=f"{data_dir} {split} image {i}",
                )
                for i, lab in enumerate(labels.tolist())
            ]
        return records

    def iter_images(self, records: Sequence[Record]) -> Iterator[tuple[Record, Any]]:
        assert self._arrays is not None
        for rec in records:
            yield rec, self._arrays[rec.source_id.split("_")[0]][rec.row]
