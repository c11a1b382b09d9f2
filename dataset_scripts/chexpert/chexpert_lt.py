"""CheXpert-LT builder: single-finding images (``chexpert_lt_100``) or every image with its findings (``chexpert_multilabel``).

Raw layout: ``--source-dir`` holds ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``) with
``train.csv`` (columns ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 findings below,
valued 1, 0, -1 = uncertain, or blank) and the JPEGs the ``Path`` column names, relative to
``--source-dir``. Single-label: an image is kept when exactly one finding is 1 (-1 is not
positive). Multi-label: every image, with the findings that are 1; -1 (uncertain) counts as
negative (U-Zeros, default) or, with ``uncertain="positive"``, as positive (U-Ones). Both
configs split patient-disjoint (``patientNNNNN`` in ``Path``). Radiographs stay greyscale (their JPEG bytes
are kept as they are).
"""

import re
from collections.abc import Iterator
from pathlib import Path

from hubtools.longtail.datasets import AnnotationError, LongTailConfig, MissingSourceFile, read_csv_rows
from hubtools.longtail.multilabel import MultiLabelConfig, MultiLabelSheetBuilder

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


PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")


class CheXpertLT(MultiLabelSheetBuilder):
    """CheXpert training set: single-finding images long-tailed by frequency (not comparable to MONICA),
    or the full multi-label set."""

    LABEL_COLUMNS = FINDINGS
    LICENSE = "other"
    LICENSE_NAME = "chexpert-research-use-agreement"
    PRIVATE_BY_DEFAULT = True
    IMAGE_MODE = None
    SOURCE = "CheXpert (Stanford AIMI; research use agreement)"
    GROUP_NAME = "patient"
    DOWNLOAD_PAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    DESCRIPTION = "Chest radiographs with exactly one positive CheXpert finding."
    BUILDER_CONFIGS = [
        LongTailConfig(name="chexpert_lt_100", ratio=100, description="CheXpert single-label, ratio 100"),
        MultiLabelConfig(
            name="chexpert_multilabel", description="CheXpert, every image with its 14 findings"
        ),
    ]
    DEFAULT_CONFIG_NAME = "chexpert_lt_100"

    def group_id(self, source_id: str, row: dict[str, str]) -> str:
        m = PATIENT.search(source_id)
        return m.group(1) if m else ""

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
