"""Images for DDPM training as one float tensor in [-1, 1], from real offline data or any `datasets` image column.

Small image sets fit in memory as a tensor, which keeps the training loop's ``__getitem__``
free of randomness and decoding (exact resume; a fast CPU step).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hubtools.errors import HubtoolsError

BUILTIN_DATASETS = ("digits", "fashion_mnist")


class ImageDataError(HubtoolsError, ValueError):
    """A training image source is missing, has no such column, or holds something that is not an image."""


def to_model_range(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """[N, C, h, w] floats in [0, 1] -> [N, C, S, S] in [-1, 1]: bilinear (antialiased when shrinking)."""
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        shrink = images.shape[-1] > image_size
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=shrink
        )
    return (images.clamp(0, 1) * 2 - 1).contiguous()


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 real 8x8 digits as floats in [0, 1] ([N, 1, 8, 8]) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The spec's stratified 75/25 split of the digits (1347 train / 450 held-out): x_tr, y_tr, x_te, y_te."""
    from sklearn.model_selection import train_test_split

    x, y = digits_arrays()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    return x_tr, y_tr, x_te, y_te


def fashion_arrays(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST (Debian ``dataset-fashion-mnist``) as floats in [0, 1] ([N, 1, 28, 28]) and labels."""
    from hubtools.data.offline import fashion_mnist

    images, labels = fashion_mnist(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / 255.0)[:, None], labels


def load_images(
    dataset: str,
    *,
    split: str = "train",
    image_column: str = "image",
    image_size: int = 16,
    channels: int = 1,
    limit: int | None = None,
) -> torch.Tensor:
    """Training images as [N, channels, image_size, image_size] in [-1, 1].

    ``dataset`` is ``digits`` (scikit-learn, all 1797), ``fashion_mnist`` (Debian; ``split``
    train/test), a folder written by ``Dataset.save_to_disk``, or anything ``load_dataset``
    takes (a local image folder, a Hub dataset id), read from ``image_column``.
    """
    if dataset in BUILTIN_DATASETS:
        x = digits_arrays()[0] if dataset == "digits" else fashion_arrays(split, limit)[0]
        x = torch.from_numpy(x[:limit] if limit is not None else x)
        if channels != 1:
            x = x.expand(-1, channels, -1, -1)
        return to_model_range(x, image_size)
    return to_model_range(_load_column(dataset, split, image_column, channels, limit), image_size)


def _load_column(dataset: str, split: str, column: str, channels: int, limit: int | None) -> torch.Tensor:
    import datasets

    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ImageDataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    try:
        if (Path(dataset) / "dataset_info.json").is_file() or (Path(dataset) / "state.json").is_file():
            ds = datasets.load_from_disk(dataset)
        else:
            ds = datasets.load_dataset(dataset, split=split)
    except (FileNotFoundError, ValueError) as err:
        raise ImageDataError(f"{dataset}: cannot load the dataset ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ImageDataError(f"{dataset}: no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    if column not in ds.column_names:
        raise ImageDataError(f"{dataset}: no column {column!r}; columns: {', '.join(ds.column_names)}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    arrays = []
    for i, image in enumerate(ds[column]):
        if not hasattr(image, "convert"):
            raise ImageDataError(
                f"{dataset}: row {i} of column {column!r} is a {type(image).__name__}, not an image "
                "(cast the column to datasets.Image())"
            )
        arrays.append(np.asarray(image.convert(mode), dtype=np.float32) / 255.0)
    if not arrays:
        raise ImageDataError(f"{dataset}: split {split!r} holds no images")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        # Mixed sizes: bring each to the first one's size before stacking.
        h, w = arrays[0].shape[:2]
        arrays = [
            np.asarray(ds[i][column].convert(mode).resize((w, h)), dtype=np.float32) / 255.0
            for i in range(len(arrays))
        ]
    x = torch.from_numpy(np.stack(arrays))
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
