"""Unlabelled image sources for continued pretraining: an image folder, a ``datasets`` image column, or
tiles of the real fundus photo shipped with scikit-image.

Items are ``{"pixel_values": uint8 (3, S, S)}``, resized deterministically: all randomness (crops,
colour) happens later in the training ``loss_fn`` so that resume stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from hubtools.data.offline import DataUnavailable
from hubtools.errors import ArtifactError, ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RETINA_SOURCE = "skimage:retina"


def to_uint8_tensor(image: Image.Image | np.ndarray, size: int) -> torch.Tensor:
    """RGB, bicubic square resize, (3, size, size) uint8."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


class ImageDataset(Dataset):
    """``n`` images produced by ``load(i)``, resized to ``size``; errors name the item's source."""

    def __init__(
        self, load: Callable[[int], Image.Image | np.ndarray], names: Sequence[str], size: int
    ) -> None:
        self.load, self.names, self.size = load, list(names), size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        try:
            image = self.load(index)
            return {"pixel_values": to_uint8_tensor(image, self.size)}
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ArtifactError(f"{self.names[index]}: cannot read image: {err}") from None


def image_folder(path: str | Path, size: int) -> ImageDataset:
    """Every image file under ``path`` (recursive, sorted)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    return ImageDataset(lambda i: Image.open(files[i]), [str(f) for f in files], size)


def hf_image_dataset(
    name_or_path: str, size: int, column: str = "image", split: str = "train"
) -> ImageDataset:
    """A ``datasets`` image column: a ``save_to_disk`` folder or a Hub dataset id (Parquet, no scripts)."""
    import datasets

    path = Path(name_or_path)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(name_or_path, split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ConfigError(f"{name_or_path}: no split {split!r} (has {sorted(ds)})")
        ds = ds[split]
    if column not in ds.column_names:
        raise ConfigError(f"{name_or_path}: no column {column!r} (columns: {ds.column_names})")
    return ImageDataset(lambda i: ds[i][column], [f"{name_or_path}[{i}]" for i in range(len(ds))], size)


def retina_tiles(n: int = 256, size: int = 64, tile: int = 448, seed: int = 0) -> ImageDataset:
    """``n`` fixed tiles of the real fundus photo ``skimage.data.retina()`` (1411², CC0), tile centres
    drawn inside the fundus disc; the only real retinal image available offline."""
    try:
        from skimage import data
    except ImportError:
        raise DataUnavailable("scikit-image is not installed: pip install scikit-image") from None
    photo = data.retina()
    rng = np.random.default_rng(seed)
    centre, radius = photo.shape[0] / 2, photo.shape[0] * 0.42 - tile / 2
    boxes = []
    while len(boxes) < n:
        dy, dx = rng.uniform(-radius, radius, size=2)
        if dy * dy + dx * dx <= radius * radius:
            y, x = int(centre + dy - tile / 2), int(centre + dx - tile / 2)
            boxes.append((y, x))
    return ImageDataset(
        lambda i: photo[boxes[i][0] : boxes[i][0] + tile, boxes[i][1] : boxes[i][1] + tile],
        [f"retina tile {i} at {b}" for i, b in enumerate(boxes)],
        size,
    )


def load_images(
    source: str, size: int, column: str = "image", split: str = "train", n_tiles: int = 256
) -> ImageDataset:
    """Dispatch ``--train-data``: ``skimage:retina``, an image folder, or a ``datasets`` folder / repo id."""
    if source == RETINA_SOURCE:
        return retina_tiles(n_tiles, size)
    path = Path(source)
    if path.is_dir() and not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return image_folder(path, size)
    return hf_image_dataset(source, size, column=column, split=split)


class LabelledImages(Dataset):
    """Labelled images held in memory: ``{"pixel_values": float (3, S, S) ImageNet-normalised, "labels": int}``."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> None:
        if len(pixel_values) != len(labels):
            raise ConfigError(f"{len(pixel_values)} images but {len(labels)} labels")
        self.pixel_values, self.labels, self.class_names = pixel_values, labels.long(), list(class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledImages:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return LabelledImages(self.pixel_values[idx], self.labels[idx], self.class_names)


def grayscale_to_images(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, h, w) grey images of any range -> (N, 3, size, size) ImageNet-normalised, bicubic resize."""
    from hubtools.pretrain.augment import normalize

    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = (x - x.amin(dim=(1, 2), keepdim=True)) / (
        x.amax(dim=(1, 2), keepdim=True) - x.amin(dim=(1, 2), keepdim=True)
    ).clamp(min=1e-6)
    x = torch.nn.functional.interpolate(
        x.unsqueeze(1), size=(size, size), mode="bicubic", align_corners=False
    )
    return normalize(x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous())


def labelled_images(
    source: str,
    size: int,
    split: str = "train",
    max_samples: int | None = None,
    seed: int = 0,
    image_column: str = "image",
    label_column: str = "label",
) -> LabelledImages:
    """``--data`` for fine-tuning and forgetting: ``fashion-mnist`` (Debian, real), ``sklearn:digits`` (real),
    a class-per-subfolder image folder, or a ``datasets`` folder / repo id with image and label columns.
    ``max_samples`` keeps a seeded random subset (stratification is left to the caller)."""
    from hubtools.data.offline import FASHION_MNIST_CLASSES, fashion_mnist
    from hubtools.pretrain.augment import normalize

    if source == "fashion-mnist":
        images, labels = fashion_mnist(split)
        names: Sequence[str] = FASHION_MNIST_CLASSES
    elif source == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels, names = digits.images, digits.target.astype(np.int64), [str(d) for d in range(10)]
    else:
        path = Path(source)
        if path.is_dir() and not (
            (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
        ):
            names = sorted(p.name for p in path.iterdir() if p.is_dir())
            if not names:
                raise ConfigError(f"{path}: expected one subfolder per class")
            files = [
                (f, c) for c, name in enumerate(names) for f in sorted(image_folder(path / name, size).names)
            ]
            pixels = torch.stack([to_uint8_tensor(Image.open(f), size) for f, _ in files]).float() / 255
            dataset = LabelledImages(normalize(pixels), torch.tensor([c for _, c in files]), names)
            return dataset.subset(keep_indices(len(dataset), max_samples, seed))
        import datasets

        table = (
            datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source, split=split)
        )
        if isinstance(table, datasets.DatasetDict):
            table = table[split]
        for column in (image_column, label_column):
            if column not in table.column_names:
                raise ConfigError(f"{source}: no column {column!r} (columns: {table.column_names})")
        names = getattr(table.features[label_column], "names", None) or [
            str(v) for v in sorted(set(table[label_column]))
        ]
        keep = keep_indices(len(table), max_samples, seed)
        pixels = torch.stack([to_uint8_tensor(table[int(i)][image_column], size) for i in keep]).float() / 255
        labels = torch.tensor([table[int(i)][label_column] for i in keep])
        return LabelledImages(normalize(pixels), labels, names)
    keep = keep_indices(len(labels), max_samples, seed)
    return LabelledImages(
        grayscale_to_images(images[keep], size), torch.from_numpy(np.asarray(labels)[keep]), names
    )


def keep_indices(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random subset of ``max_samples`` of them in ascending order."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])
