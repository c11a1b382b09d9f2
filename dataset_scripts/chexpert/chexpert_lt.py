"""CheXpert-LT builder (hubtools' single-label rule; the anchor defines no CheXpert split).

Raw layout: ``--source-dir`` holds ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``) with
``train.csv`` (columns ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 findings below,
valued 1, 0, -1 = uncertain, or blank) and the JPEGs the ``Path`` column names, relative to
``--source-dir``. An image is kept when exactly one finding is 1 (-1 is not positive).
Radiographs stay greyscale (their JPEG bytes are kept as they are).
"""

from collections.abc import Iterator
from pathlib import Path

from hubtools.longtail.datasets import AnnotationError, LongTailConfig, MissingSourceFile, read_csv_rows
from hubtools.longtail.sources import SingleLabelSheetBuilder

FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


class CheXpertLT(SingleLabelSheetBuilder):
    """CheXpert training set, single-finding images, long-tailed by frequency (not comparable to MONICA)."""

    LABEL_COLUMNS = FINDINGS
    LICENSE = "other"
    LICENSE_NAME = "chexpert-research-use-agreement"
    PRIVATE_BY_DEFAULT = True
    IMAGE_MODE = None
    SOURCE = "CheXpert (Stanford AIMI; research use agreement)"
    DESCRIPTION = "Chest radiographs with exactly one positive CheXpert finding."
    BUILDER_CONFIGS = [
        LongTailConfig(name="chexpert_lt_100", ratio=100, description="CheXpert single-label, ratio 100")
    ]
    DEFAULT_CONFIG_NAME = "chexpert_lt_100"

    def sheet_rows(self, data_dir: Path) -> Iterator[tuple[str, Path, str, dict[str, str]]]:
        sheet = next(
            (
                data_dir / d / "train.csv"
                for d in ("CheXpert-v1.0-small", "CheXpert-v1.0")
                if (data_dir / d / "train.csv").exists()
            ),
            None,
        )
        if sheet is None:
            raise MissingSourceFile(
                f"{data_dir}: missing CheXpert-v1.0-small/train.csv (or CheXpert-v1.0/train.csv)"
            )
        for line, row in read_csv_rows(sheet, ("Path", *FINDINGS))[1]:
            rel = row["Path"]
            if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                raise AnnotationError(f"{sheet}:{line}: Path {rel!r} must be relative to the source folder")
            yield f"{sheet}:{line}", data_dir / rel, rel, row
