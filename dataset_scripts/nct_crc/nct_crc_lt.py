"""NCT-CRC-HE-100K-LT builder: colorectal histology tiles -> long-tailed DatasetDict (ratios 100/200/500).

Raw layout: ``--source-dir`` is the unzipped ``NCT-CRC-HE-100K`` folder, one sub-folder per
tissue class (``ADI BACK DEB LYM MUC MUS NORM STR TUM``) holding ``<CLS>-*.tif`` (224x224 RGB).
The label is the folder name; a folder of another name is an error. Validation and test are
balanced (500/class each), drawn before the long-tailed train set.
"""

from pathlib import Path

from hubtools.longtail.datasets import (
    AnnotationError,
    LongTailBuilder,
    LongTailConfig,
    MissingSourceFile,
    Record,
)

LT_ORDER = ("TUM", "MUS", "LYM", "DEB", "BACK", "STR", "ADI", "MUC", "NORM")
TRAIN_COUNTS = {
    100: (10000, 5623, 3162, 1778, 1000, 562, 316, 178, 100),
    200: (10000, 5157, 2659, 1371, 707, 365, 188, 97, 50),
    500: (10000, 4599, 2115, 972, 447, 206, 95, 43, 20),
}


class NCTCRCLT(LongTailBuilder):
    """NCT-CRC-HE-100K-LT: 9 tissue classes, ratios 100/200/500 (in the anchor's code, not its README)."""

    CLASS_NAMES = LT_ORDER
    LICENSE = "cc-by-4.0"
    SOURCE = "NCT-CRC-HE-100K (Zenodo record 1214456, https://zenodo.org/records/1214456)"
    DESCRIPTION = "H&E colorectal cancer histology tiles of 9 tissue classes (NCT-CRC-HE-100K)."
    BUILDER_CONFIGS = [
        LongTailConfig(
            name=f"nct_lt_{r}",
            ratio=r,
            n_max=10000,
            val_per_class=500,
            test_per_class=500,
            head=2,
            medium=5,
            expected_train_counts=counts,
            description=f"NCT-CRC-HE-100K long-tailed, ratio {r}",
        )
        for r, counts in TRAIN_COUNTS.items()
    ]
    DEFAULT_CONFIG_NAME = "nct_lt_100"

    def scan(self, data_dir: Path) -> list[Record]:
        records = []
        for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in LT_ORDER:
                raise AnnotationError(f"{folder}: unknown class folder; expected {sorted(LT_ORDER)}")
            for path in sorted(folder.glob("*.tif")):
                records.append(
                    Record(
                        source_id=f"{folder.name}/{path.name}",
                        orig_label=folder.name,
                        where=str(path),
                        path=path,
                    )
                )
        missing = sorted(set(LT_ORDER) - {r.orig_label for r in records})
        if missing:
            raise MissingSourceFile(f"{data_dir}: no .tif images for class folder(s) {missing}")
        return records
