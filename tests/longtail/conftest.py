"""Tiny raw files in each source's real format (same npz keys, CSV columns, folder names, dtypes)."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def image_bytes(seed: int, size: int = 8, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


ISIC_COLUMNS = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
# Per class images in the tiny ISIC folder (the class order of the GT columns is not the LT order).
ISIC_COUNTS = {"NV": 8, "MEL": 5, "BCC": 4, "BKL": 3, "AK": 3, "SCC": 3, "VASC": 3, "DF": 3}


def make_isic(root: Path, unk_row: bool = False) -> dict[str, str]:
    """ISIC 2019 layout: input folder of JPEGs, one-hot GT CSV, metadata CSV with lesion_id. Returns id -> class."""
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    truth, rows, meta = {}, [], []
    n = 0
    for cls, count in ISIC_COUNTS.items():
        for _ in range(count):
            image_id = f"ISIC_{n:07d}" + ("_downsampled" if n == 3 else "")
            (images / f"{image_id}.jpg").write_bytes(image_bytes(n))
            rows.append([image_id] + [f"{float(c == cls):.1f}" for c in ISIC_COLUMNS[1:]])
            meta.append([image_id, "", f"IL_{n // 2:07d}" if n % 5 else ""])
            truth[image_id] = cls
            n += 1
    if unk_row:
        (images / "ISIC_9999999.jpg").write_bytes(image_bytes(99))
        rows.append(["ISIC_9999999"] + ["0.0"] * 8 + ["1.0"])
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ISIC_COLUMNS, rows)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "lesion_id"], meta)
    return truth


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    make_isic(tmp_path / "isic")
    return tmp_path / "isic"


def make_npz(
    path: Path,
    train_counts: list[int],
    channels: int,
    n_val: int = 4,
    n_test: int = 5,
    size: int = 28,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A MedMNIST npz: uint8 images N x H x W (x 3), labels N x 1; train labels shuffled over rows."""
    rng = np.random.default_rng(seed)
    num_classes = len(train_counts)
    arrays = {}
    train_labels = rng.permutation(np.repeat(np.arange(num_classes), train_counts))
    for key, labels in (
        ("train", train_labels),
        ("val", np.arange(n_val) % num_classes),
        ("test", np.arange(n_test) % num_classes),
    ):
        shape = (len(labels), size, size) + ((3,) if channels == 3 else ())
        arrays[f"{key}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{key}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def make_class_tree(
    root: Path,
    counts: dict[str, int],
    suffix: str,
    fmt: str,
    prefix_dirs: dict[str, str] | None = None,
    name=lambda cls, i: f"{cls}-{i:04d}",
) -> None:
    """One folder per class (optionally under tract/category folders), files created in shuffled order."""
    rng = np.random.default_rng(7)
    jobs = [(cls, i) for cls, n in counts.items() for i in range(n)]
    for k in rng.permutation(len(jobs)):  # creation order differs from sorted order on purpose
        cls, i = jobs[k]
        folder = root / (prefix_dirs or {}).get(cls, "") / cls
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name(cls, i)}{suffix}").write_bytes(image_bytes(int(k), fmt=fmt))
