"""Kvasir-LT builder on HyperKvasir labelled images -> long-tailed DatasetDict (ratio 20, 14 classes).

Raw layout: ``--source-dir`` holds ``labeled-images/<tract>/<category>/<class>/<uuid>.jpg``
(HyperKvasir, not Kvasir v2, which the anchor's README links). The class is the leaf folder;
the 14 classes below are used, HyperKvasir's other 9 are left out. Validation (50/class) and
test (100/class) are balanced; train follows round(998 * 20^(-i/13)).
"""

from pathlib import Path

from hubtools.longtail.datasets import (
    LongTailBuilder,
    LongTailConfig,
    MissingSourceFile,
    Record,
    require_file,
)

LT_ORDER = (
    "bbps-2-3",
    "polyps",
    "cecum",
    "dyed-lifted-polyps",
    "pylorus",
    "dyed-resection-margins",
    "z-line",
    "retroflex-stomach",
    "bbps-0-1",
    "ulcerative-colitis-grade-2",
    "esophagitis-a",
    "retroflex-rectum",
    "esophagitis-b-d",
    "ulcerative-colitis-grade-1",
)
TRAIN_COUNTS = (998, 793, 629, 500, 397, 315, 250, 199, 158, 125, 100, 79, 63, 50)


class HyperKvasirLT(LongTailBuilder):
    """Kvasir-LT: 14 HyperKvasir classes, ratio 20."""

    CLASS_NAMES = LT_ORDER
    LICENSE = "cc-by-4.0"
    SOURCE = "HyperKvasir labelled images (https://datasets.simula.no/hyper-kvasir/)"
    DESCRIPTION = (
        "Gastrointestinal endoscopy images of 14 HyperKvasir classes (landmarks, findings, mucosal views)."
    )
    BUILDER_CONFIGS = [
        LongTailConfig(
            name="kvasir_lt_20",
            ratio=20,
            n_max=998,
            val_per_class=50,
            test_per_class=100,
            head=4,
            medium=8,
            expected_train_counts=TRAIN_COUNTS,
            description="HyperKvasir long-tailed, ratio 20",
        )
    ]
    DEFAULT_CONFIG_NAME = "kvasir_lt_20"

    def scan(self, data_dir: Path) -> list[Record]:
        root = data_dir if data_dir.name == "labeled-images" else data_dir / "labeled-images"
        require_file(root, "HyperKvasir 'labeled-images' folder")
        records = []
        for path in sorted(root.glob("*/*/*/*")):
            if path.suffix.lower() not in (".jpg", ".jpeg") or path.parent.name not in LT_ORDER:
                continue
            records.append(
                Record(
                    source_id=path.relative_to(root).as_posix(),
                    orig_label=path.parent.name,
                    where=str(path),
                    path=path,
                )
            )
        missing = sorted(set(LT_ORDER) - {r.orig_label for r in records})
        if missing:
            raise MissingSourceFile(
                f"{root}: no images for class(es) {missing} (expected <tract>/<category>/<class>/*.jpg)"
            )
        return records
