"""ODIR-5K builder: single-label patients (``odir_lt_100``) or every eye with its patient's labels (``odir_multilabel``).

Raw layout in ``--source-dir``: the fundus photos ``<ID>_left.jpg``/``<ID>_right.jpg`` in
``ODIR-5K_Training_Dataset/`` and the 8-label sheet, one row per patient with columns
``ID, Left-Fundus, Right-Fundus, N, D, G, C, A, H, M, O``: either the official
``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` (needs openpyxl) or the same sheet saved as
``ODIR-5K_Training_Annotations.csv``. Labels are per patient, so a patient with exactly one
positive label contributes both eyes with that label; multi-label patients are left out of the
single-label config. The multi-label config keeps both eyes of every patient with the patient's
label set. Both configs split patient-disjoint (both eyes of an ``ID`` in one split).
"""

from collections.abc import Iterator
from pathlib import Path

from hubtools.longtail.datasets import AnnotationError, LongTailConfig, MissingSourceFile, read_csv_rows
from hubtools.longtail.multilabel import MultiLabelConfig, MultiLabelSheetBuilder

LABELS = (
    "N",
    "D",
    "G",
    "C",
    "A",
    "H",
    "M",
    "O",
)  # normal, diabetes, glaucoma, cataract, AMD, hypertension, myopia, other
COLUMNS = ("ID", "Left-Fundus", "Right-Fundus", *LABELS)
XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
CSV = "ODIR-5K_Training_Annotations.csv"


def _xlsx_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        import openpyxl
    except ImportError:
        raise MissingSourceFile(
            f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or save the sheet as {CSV}"
        ) from None
    sheet = openpyxl.load_workbook(path, read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; found {header}")
    return [
        (i, {h: "" if v is None else str(v).strip() for h, v in zip(header, row, strict=False)})
        for i, row in enumerate(rows[1:], start=2)
    ]


class ODIRLT(MultiLabelSheetBuilder):
    """ODIR-5K: single-label patients long-tailed by frequency (not comparable to MONICA), or the multi-label set."""

    LABEL_COLUMNS = LABELS
    LICENSE = "other"
    LICENSE_NAME = "odir-5k-terms"
    SOURCE = "ODIR-5K (Peking University International Competition on Ocular Disease Intelligent Recognition)"
    GROUP_NAME = "patient"
    DOWNLOAD_PAGE = "https://odir2019.grand-challenge.org/dataset/"
    DESCRIPTION = (
        "Colour fundus photographs (both eyes) of patients with exactly one of ODIR's 8 diagnostic labels."
    )
    BUILDER_CONFIGS = [
        LongTailConfig(name="odir_lt_100", ratio=100, description="ODIR-5K single-label, ratio 100"),
        MultiLabelConfig(
            name="odir_multilabel", description="ODIR-5K, both eyes with the patient's 8-label set"
        ),
    ]
    DEFAULT_CONFIG_NAME = "odir_lt_100"

    def group_id(self, source_id: str, row: dict[str, str]) -> str:
        return row["ID"]

    def sheet_rows(self, data_dir: Path) -> Iterator[tuple[str, Path, str, dict[str, str]]]:
        images = data_dir / "ODIR-5K_Training_Dataset"
        if (data_dir / CSV).exists():
            sheet, rows = data_dir / CSV, read_csv_rows(data_dir / CSV, COLUMNS)[1]
        elif (data_dir / XLSX).exists():
            sheet, rows = data_dir / XLSX, _xlsx_rows(data_dir / XLSX)
        else:
            raise MissingSourceFile(f"{data_dir}: missing label sheet {XLSX} (or {CSV})")
        for line, row in rows:
            for column in ("Left-Fundus", "Right-Fundus"):
                name = row[column]
                if not name:
                    raise AnnotationError(f"{sheet}:{line}: empty {column!r}")
                yield f"{sheet}:{line}", images / name, name, row
