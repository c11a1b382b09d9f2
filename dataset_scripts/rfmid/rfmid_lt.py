"""RFMiD builder: single-label images (``rfmid_lt_100``) or every image with its disease set (``rfmid_multilabel``).

Raw layout in ``--source-dir``: ``Training_Set/Training/<ID>.png`` and
``Training_Set/RFMiD_Training_Labels.csv`` with columns ``ID, Disease_Risk`` and the 45 binary
disease columns below. An image is kept when exactly one disease column is 1, or as ``NORMAL``
when ``Disease_Risk`` is 0 and no disease is marked; multi-disease images are left out of the
single-label config. The multi-label config keeps every image with its diseases (``NORMAL``
being a label too); RFMiD publishes no patient id, so its split is by image.
"""

from collections.abc import Iterator
from pathlib import Path

from hubtools.longtail.datasets import AnnotationError, LongTailConfig, read_csv_rows
from hubtools.longtail.multilabel import MultiLabelConfig, MultiLabelSheetBuilder

DISEASES = (
    "DR",
    "ARMD",
    "MH",
    "DN",
    "MYA",
    "BRVO",
    "TSLN",
    "ERM",
    "LS",
    "MS",
    "CSR",
    "ODC",
    "CRVO",
    "TV",
    "AH",
    "ODP",
    "ODE",
    "ST",
    "AION",
    "PT",
    "RT",
    "RS",
    "CRS",
    "EDN",
    "RPEC",
    "MHL",
    "RP",
    "CWS",
    "CB",
    "ODPM",
    "PRH",
    "MNF",
    "HR",
    "CRAO",
    "TD",
    "CME",
    "PTCR",
    "CF",
    "VH",
    "MCA",
    "VS",
    "BRAO",
    "PLQ",
    "HPED",
    "CL",
)


class RFMiDLT(MultiLabelSheetBuilder):
    """RFMiD training set: single-label images long-tailed by frequency (not comparable to MONICA), or multi-label."""

    LABEL_COLUMNS = ("NORMAL", *DISEASES)
    LICENSE = "cc-by-nc-4.0"
    PRIVATE_BY_DEFAULT = True
    SOURCE = "RFMiD, Retinal Fundus Multi-Disease Image Dataset (IEEE DataPort)"
    DOWNLOAD_PAGE = "https://riadd.grand-challenge.org/download-all-classes/"
    DESCRIPTION = "Retinal fundus photographs with exactly one of RFMiD's 45 disease labels, or normal."
    BUILDER_CONFIGS = [
        LongTailConfig(name="rfmid_lt_100", ratio=100, description="RFMiD single-label, ratio 100"),
        MultiLabelConfig(name="rfmid_multilabel", description="RFMiD, every image with its diseases"),
    ]
    DEFAULT_CONFIG_NAME = "rfmid_lt_100"

    def sheet_rows(self, data_dir: Path) -> Iterator[tuple[str, Path, str, dict[str, str]]]:
        root = data_dir / "Training_Set"
        sheet = root / "RFMiD_Training_Labels.csv"
        for line, row in read_csv_rows(sheet, ("ID", "Disease_Risk", *DISEASES))[1]:
            where = f"{sheet}:{line}"
            if not row["ID"].isdigit():
                raise AnnotationError(f"{where}: ID {row['ID']!r} is not a number")
            risk = self.positive(row["Disease_Risk"], where, "Disease_Risk")
            row["NORMAL"] = (
                "1" if not risk and not any(self.positive(row[d], where, d) for d in DISEASES) else "0"
            )
            yield where, root / "Training" / f"{row['ID']}.png", f"Training/{row['ID']}.png", row
