"""ISIC 2019-LT builder: the ISIC 2019 Training set -> long-tailed DatasetDict (MONICA, ratios 100/200/500).

Raw layout (as downloaded from the ISIC challenge site), in ``--source-dir``:
``ISIC_2019_Training_Input/<image>.jpg`` (25,331 JPEG; some ids end ``_downsampled``),
``ISIC_2019_Training_GroundTruth.csv`` (one-hot columns ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``)
and ``ISIC_2019_Training_Metadata.csv`` (``lesion_id``, may be empty). The label is the one
ground-truth column equal to 1; UNK must be 0 (the 2019 training set has no UNK image).
Validation (50/class) and test (100/class) are balanced and drawn first; train counts use
``floor_plus_one`` rounding, which reproduces the anchor's lists exactly.

The seeded re-draw is lesion-disjoint by default (``lesion_disjoint=True``): all images of one
``lesion_id`` go to the same split, since the ISIC archive holds several photographs of many
lesions and a test image of a lesion seen in training overstates accuracy. Images without a
lesion id are their own lesion. The anchor's lists (``--splits-dir``) are used as they are,
with a warning counting the lesions they share between train and test.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from hubtools.longtail.datasets import (
    AnnotationError,
    LongTailBuilder,
    LongTailConfig,
    Record,
    read_csv_rows,
    require_file,
)

GT_COLUMNS = ("image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
LT_ORDER = ("NV", "MEL", "BCC", "BKL", "AK", "SCC", "VASC", "DF")
TRAIN_COUNTS = {
    100: (5000, 2590, 1342, 695, 360, 187, 97, 51),
    200: (5000, 2346, 1101, 517, 243, 114, 54, 25),
    500: (5000, 2058, 847, 349, 144, 60, 25, 11),
}


def _one_hot(value: str, where: str, column: str) -> bool:
    try:
        v = float(value)
    except ValueError:
        raise AnnotationError(f"{where}: column {column!r} has value {value!r}, expected 0 or 1") from None
    if v not in (0.0, 1.0):
        raise AnnotationError(f"{where}: column {column!r} has value {value!r}, expected 0 or 1")
    return v == 1.0


@dataclass
class ISICConfig(LongTailConfig):
    """An ISIC 2019-LT config; ``lesion_disjoint=False`` draws image by image (leaks lesions, as the anchor)."""

    lesion_disjoint: bool = True


class ISIC2019LT(LongTailBuilder):
    """ISIC 2019-LT: 8 classes, ratios 100/200/500, lesion-disjoint re-draw."""

    BUILDER_CONFIG_CLASS = ISICConfig
    GROUP_NAME = "lesion_id"
    CLASS_NAMES = LT_ORDER
    LICENSE = "cc-by-nc-4.0"
    PRIVATE_BY_DEFAULT = True
    SOURCE = "ISIC 2019 Training (https://challenge.isic-archive.com/data/#2019)"
    DESCRIPTION = "Dermoscopic images of 8 skin lesion classes from the ISIC 2019 challenge training set."
    EXTRA_FEATURES = {"lesion_id": datasets.Value("string")}
    BUILDER_CONFIGS = [
        ISICConfig(
            name=f"isic2019_lt_{r}",
            ratio=r,
            n_max=5000,
            rounding="floor_plus_one",
            val_per_class=50,
            test_per_class=100,
            head=2,
            medium=5,
            expected_train_counts=counts,
            description=f"ISIC 2019 long-tailed, ratio {r}",
        )
        for r, counts in TRAIN_COUNTS.items()
    ]
    DEFAULT_CONFIG_NAME = "isic2019_lt_100"

    def split_groups(self, pool: Sequence[Record]) -> list[str] | None:
        return super().split_groups(pool) if self.config.lesion_disjoint else None

    def scan(self, data_dir: Path) -> list[Record]:
        images = require_file(data_dir / "ISIC_2019_Training_Input", "image folder")
        gt_path = data_dir / "ISIC_2019_Training_GroundTruth.csv"
        header, rows = read_csv_rows(gt_path, GT_COLUMNS)
        if tuple(header[: len(GT_COLUMNS)]) != GT_COLUMNS:
            raise AnnotationError(
                f"{gt_path}: columns {header} are not in the official order {list(GT_COLUMNS)}"
            )
        lesions: dict[str, str] = {}
        meta_path = data_dir / "ISIC_2019_Training_Metadata.csv"
        if meta_path.exists():
            lesions = {
                row["image"]: row["lesion_id"]
                for _, row in read_csv_rows(meta_path, ("image", "lesion_id"))[1]
            }
        records, seen = [], set()
        for line, row in rows:
            where = f"{gt_path}:{line}"
            image = row["image"]
            if not image or image in seen:
                raise AnnotationError(f"{where}: empty or repeated image id {image!r}")
            seen.add(image)
            if _one_hot(row["UNK"], where, "UNK"):
                raise AnnotationError(
                    f"{where}: image {image} is labelled UNK; the 2019 training set has none"
                )
            positives = [c for c in GT_COLUMNS[1:-1] if _one_hot(row[c], where, c)]
            if len(positives) != 1:
                raise AnnotationError(
                    f"{where}: image {image} has {len(positives)} positive classes {positives}, "
                    "expected exactly one"
                )
            path = require_file(images / f"{image}.jpg", f"image of {where}")
            records.append(
                Record(
                    source_id=path.name,
                    orig_label=positives[0],
                    where=where,
                    path=path,
                    extra={"lesion_id": lesions.get(image, "")},
                    group=lesions.get(image, ""),
                )
            )
        return sorted(records, key=lambda r: r.source_id)
