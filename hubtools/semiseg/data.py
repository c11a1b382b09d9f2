"""Segmentation datasets: the split layout, input checks, and builders for the real data that ships offline.

Layout: a ``datasets.DatasetDict`` with splits ``labelled``, ``unlabelled`` and
``test``; columns ``image`` (float32 array, channels first: (C, H, W) or (C, D, H, W)) and
``mask`` (uint8 class indices, (H, W) or (D, H, W); None in ``unlabelled``). Published with
``push_to_hub`` it is Parquet, so Hub users load it with plain ``load_dataset``.

Builders (real data, read from installed packages, never downloaded):

- :func:`nuclei_dataset`: stardist's ``img2d.tif`` fluorescence nuclei with manual instance masks
  (binary: label > 0), tiled; the bottom quarter of the image is the held-out test region.
- :func:`mni_dataset`: nilearn's MNI152 T1 with grey/white-matter probability maps, binary grey
  matter (probability > 0.5) or 3-class tissue (argmax), as 2D axial slices or 3D z-slabs. Slices
  are grouped into consecutive blocks and every third block is test: adjacent slices of one
  template are near duplicates, so a random split would test on training data.
- :func:`brain_mask_dataset`: Debian ``mricron-data``'s single-subject ``ch2`` T1 with the brain
  mask of its skull-stripped version (``ch2bet > 0``), as 3D slabs (or 2D slices).

In every builder the labelled images are ``round(fraction * pool)`` (at least 1) evenly spaced
images of the training pool and the rest of the pool is unlabelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from hubtools.data.offline import debian_path, package_dir
from hubtools.errors import HubtoolsError

SPLITS = ("labelled", "unlabelled", "test")
BINARY_CLASSES = ("background", "foreground")
MRICRON_DIR = Path("/usr/share/mricron/templates")
MNI_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TEST_CORRUPTION_SEED = 1234


class SegmentationDataError(HubtoolsError, ValueError):
    """A segmentation dataset is unusable: mask/image shape mismatch, labels outside the classes, empty split."""


@dataclass
class SegmentationArrays:
    """One split as arrays: ``images`` (N, C, *spatial) float32, ``masks`` (N, *spatial) int64 or None."""

    images: np.ndarray
    masks: np.ndarray | None


@dataclass
class SegmentationData:
    """A dataset ready to train on, with what the card and the report need to say about it."""

    splits: dict[str, SegmentationArrays]
    class_names: tuple[str, ...]
    spatial_dims: int
    description: str

    @property
    def labelled_fraction(self) -> float:
        n_l, n_u = len(self.splits["labelled"].images), len(self.splits["unlabelled"].images)
        return n_l / (n_l + n_u)

    def to_datasets(self):  # -> datasets.DatasetDict (imported lazily: datasets is slow to import)
        """The ``DatasetDict`` (labelled/unlabelled/test) to save or ``push_to_hub``."""
        import datasets

        first = self.splits["labelled"].images
        array = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}
        features = datasets.Features(
            {
                "image": array[first.ndim - 1](shape=first.shape[1:], dtype="float32"),
                "mask": array[first.ndim - 2](shape=first.shape[2:], dtype="uint8"),
            }
        )
        out = {}
        for name, split in self.splits.items():
            masks = [None] * len(split.images) if split.masks is None else list(split.masks.astype(np.uint8))
            out[name] = datasets.Dataset.from_dict(
                {"image": list(split.images), "mask": masks},
                features=features,
                info=datasets.DatasetInfo(description=self.description, features=features),
            )
        return datasets.DatasetDict(out)


def output_channels(class_names: Sequence[str]) -> list[str]:
    """The classes that get a sigmoid channel: the foreground for binary data, every class otherwise."""
    return [class_names[1]] if len(class_names) == 2 else list(class_names)


def one_hot_targets(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, *spatial) class indices -> (N, C, *spatial) float targets matching :func:`output_channels`."""
    if num_classes == 2:
        return (masks == 1).unsqueeze(1).float()
    return F.one_hot(masks.long(), num_classes).movedim(-1, 1).float()


def check_split(split: SegmentationArrays, name: str, num_classes: int, spatial_dims: int) -> None:
    """Raise :class:`SegmentationDataError` for a mask whose shape is not the image's or a label outside
    ``0..num_classes-1``, naming the split, the example and the offending shape or values."""
    images = split.images
    if images.ndim != spatial_dims + 2:
        raise SegmentationDataError(
            f"split '{name}': images have shape {images.shape[1:]}, expected (channels, "
            f"{'D, ' if spatial_dims == 3 else ''}H, W) for {spatial_dims}D data"
        )
    if split.masks is None:
        return
    masks = split.masks
    if len(masks) != len(images) or masks.shape[1:] != images.shape[2:]:
        for i in range(min(len(images), len(masks))):
            if masks[i].shape != images[i].shape[1:]:
                raise SegmentationDataError(
                    f"split '{name}', example {i}: mask shape {masks[i].shape} differs from the image's "
                    f"spatial shape {images[i].shape[1:]}"
                )
        raise SegmentationDataError(f"split '{name}': {len(masks)} masks for {len(images)} images")
    bad = (masks < 0) | (masks >= num_classes)
    if bad.any():
        i = int(np.argwhere(bad.reshape(len(masks), -1).any(1))[0, 0])
        values = sorted({int(v) for v in np.unique(masks[i][bad[i]])})
        raise SegmentationDataError(
            f"split '{name}', example {i}: label values {values[:10]} outside the declared classes "
            f"0..{num_classes - 1} ({num_classes} classes)"
        )


def check_data(data: SegmentationData) -> None:
    """Every check the trainer relies on: all splits present, a non-empty labelled split, valid masks."""
    missing = [s for s in SPLITS if s not in data.splits]
    if missing:
        raise SegmentationDataError(f"dataset has no split(s) {missing}; expected {list(SPLITS)}")
    if len(data.splits["labelled"].images) == 0:
        raise SegmentationDataError(
            "the 'labelled' split is empty: semi-supervised training needs labelled images"
        )
    if len(data.splits["test"].images) == 0:
        raise SegmentationDataError("the 'test' split is empty: nothing to evaluate on")
    for name in ("labelled", "test"):
        if data.splits[name].masks is None:
            raise SegmentationDataError(f"split '{name}' has no masks")
    if len(data.class_names) < 2:
        raise SegmentationDataError(
            f"need at least 2 classes (background + foreground), got {data.class_names}"
        )
    for name, split in data.splits.items():
        check_split(split, name, len(data.class_names), data.spatial_dims)


def from_datasets(
    dataset_dict, class_names: Sequence[str] | None = None, description: str = ""
) -> SegmentationData:
    """A :class:`SegmentationData` from a ``DatasetDict`` in the layout above (from disk or the Hub).

    Without ``class_names`` the classes are 0..max label of the labelled and test masks
    (``background``/``foreground`` when that is 0..1).
    """
    missing = [s for s in SPLITS if s not in dataset_dict]
    if missing:
        raise SegmentationDataError(f"dataset has no split(s) {missing}; expected {list(SPLITS)}")
    splits = {}
    for name in SPLITS:
        ds = dataset_dict[name]
        for column in ("image", "mask"):
            if column not in ds.column_names:
                raise SegmentationDataError(
                    f"split '{name}' has no column '{column}' (columns: {ds.column_names})"
                )
        if ds.num_rows == 0:
            if name == "labelled":
                raise SegmentationDataError(
                    "the 'labelled' split is empty: semi-supervised training needs labelled images"
                )
            splits[name] = SegmentationArrays(np.zeros((0, 1, 1, 1), np.float32), None)
            continue
        images = [np.asarray(x, dtype=np.float32) for x in ds["image"]]
        shapes = {x.shape for x in images}
        if len(shapes) != 1:
            raise SegmentationDataError(f"split '{name}': images of different shapes {sorted(shapes)[:3]}")
        raw_masks = ds["mask"]
        masks = None
        if name != "unlabelled":
            if any(m is None for m in raw_masks):
                raise SegmentationDataError(f"split '{name}' has examples without a mask")
            mask_list = [np.asarray(m) for m in raw_masks]
            for i, (img, m) in enumerate(zip(images, mask_list, strict=True)):
                if m.shape != img.shape[1:]:
                    raise SegmentationDataError(
                        f"split '{name}', example {i}: mask shape {m.shape} differs from the image's spatial "
                        f"shape {img.shape[1:]}"
                    )
            masks = np.stack(mask_list).astype(np.int64)
        splits[name] = SegmentationArrays(np.stack(images), masks)
    if class_names is None:
        top = max(int(splits[s].masks.max()) for s in ("labelled", "test") if splits[s].masks is not None)
        class_names = BINARY_CLASSES if top <= 1 else tuple(f"class_{i}" for i in range(top + 1))
    first = splits["labelled"].images
    data = SegmentationData(splits, tuple(class_names), first.ndim - 2, description)
    check_data(data)
    return data


def load_segmentation_data(source: str, class_names: Sequence[str] | None = None) -> SegmentationData:
    """A folder written by ``DatasetDict.save_to_disk`` or a Hub dataset repo id."""
    import datasets

    if Path(source).exists():
        dd = datasets.load_from_disk(source)
    else:
        dd = datasets.load_dataset(source)
    return from_datasets(dd, class_names, description=source)


# --- splits and augmentation -------------------------------------------------------------------


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (deterministic, so every seed sees the same labels)."""
    k = max(1, min(n, k))
    return sorted({int(round((i + 0.5) * n / k - 0.5)) for i in range(k)})


def split_pool(
    images: np.ndarray, masks: np.ndarray, labelled_fraction: float
) -> dict[str, SegmentationArrays]:
    """Labelled = ``round(fraction * N)`` (at least 1) evenly spaced pool items, unlabelled = the rest."""
    if not 0 < labelled_fraction <= 1:
        raise SegmentationDataError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
    chosen = evenly_spaced(len(images), round(labelled_fraction * len(images)))
    rest = [i for i in range(len(images)) if i not in set(chosen)]
    return {
        "labelled": SegmentationArrays(images[chosen], masks[chosen]),
        "unlabelled": SegmentationArrays(images[rest], None),
    }


def scan_variability(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random scanner differences per image: gamma U(0.7, 1.5), a smooth multiplicative bias
    field ``1 + c0 x + c1 y + c2 xy + c3 x^2 + c4 y^2`` with c ~ U(-0.2, 0.2) on [-1, 1]^2 (in-plane),
    and Gaussian noise with sigma ~ U(0, 0.05). Images are expected in [0, 1]."""
    n, device = images.shape[0], images.device
    shape = (n,) + (1,) * (images.dim() - 1)

    def uniform(lo: float, hi: float, size: tuple[int, ...]) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=generator).to(device)

    gamma = uniform(0.7, 1.5, shape)
    h, w = images.shape[-2:]
    y = torch.linspace(-1, 1, h, device=device).view(h, 1)
    x = torch.linspace(-1, 1, w, device=device).view(1, w)
    c = uniform(-0.2, 0.2, (n, 5))
    field = 1 + sum(c[:, i].view(shape) * term for i, term in enumerate((x, y, x * y, x**2, y**2)))
    sigma = uniform(0.0, 0.05, shape)
    noise = torch.randn(images.shape, generator=generator).to(device)
    return images.clamp_min(0) ** gamma * field + sigma * noise


# --- builders for the real data ----------------------------------------------------------------


def _percentile_normalise(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def nuclei_image() -> tuple[np.ndarray, np.ndarray]:
    """stardist's ``img2d.tif`` scaled to [0, 1] by its 1st/99.8th percentiles, and ``mask2d.tif > 0``."""
    import tifffile

    folder = package_dir("stardist", "pip install --no-deps stardist==0.9.2") / "data" / "images"
    image = _percentile_normalise(tifffile.imread(folder / "img2d.tif"))
    mask = (tifffile.imread(folder / "mask2d.tif") > 0).astype(np.int64)
    if image.shape != mask.shape:
        raise SegmentationDataError(f"{folder}: img2d.tif {image.shape} and mask2d.tif {mask.shape} differ")
    return image, mask


def nuclei_dataset(
    tile: int = 64, labelled_fraction: float = 0.1, test_fraction: float = 0.25
) -> SegmentationData:
    """Real fluorescence nuclei (stardist ``img2d.tif``/``mask2d.tif``, DSB2018, 125 manually outlined
    nuclei) tiled into ``tile`` x ``tile`` patches; test = the tiles of the bottom ``test_fraction`` rows."""
    image, mask = nuclei_image()
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    test_rows = max(1, round(test_fraction * rows))
    pool_img, pool_mask, test_img, test_mask = [], [], [], []
    for r in range(rows):
        for c in range(cols):
            window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            target = (test_img, test_mask) if r >= rows - test_rows else (pool_img, pool_mask)
            target[0].append(image[window][None])
            target[1].append(mask[window])
    splits = split_pool(np.stack(pool_img), np.stack(pool_mask), labelled_fraction)
    splits["test"] = SegmentationArrays(np.stack(test_img), np.stack(test_mask))
    return SegmentationData(
        splits,
        BINARY_CLASSES[:1] + ("nucleus",),
        2,
        f"stardist img2d.tif nuclei (DSB2018), {tile}x{tile} tiles, test = bottom {test_rows} tile rows",
    )


def _load_nifti(path: Path) -> np.ndarray:
    import nibabel

    return np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32)


def _downsample(volume: np.ndarray, resolution: int) -> np.ndarray:
    """Average-pool a 1 mm volume by ``resolution`` and crop x and y to a multiple of 8."""
    v = torch.from_numpy(volume)[None, None]
    v = F.avg_pool3d(v, resolution)[0, 0].numpy() if resolution > 1 else volume
    return v[: v.shape[0] // 8 * 8, : v.shape[1] // 8 * 8]


def _block_split(
    image: np.ndarray,
    label: np.ndarray,
    foreground: np.ndarray,
    dims: Literal[2, 3],
    block: int,
    labelled_fraction: float,
    min_foreground: float = 0.02,
    corrupt_test: bool = True,
) -> dict[str, SegmentationArrays]:
    """Axial slices (2D) or z-slabs of ``block`` slices (3D) of (X, Y, Z) volumes; blocks with
    ``foreground`` fraction <= ``min_foreground`` are dropped; block b with b % 3 == 1 is test."""
    z_size = image.shape[2]
    if dims == 2:
        keep = [z for z in range(z_size) if foreground[:, :, z].mean() > min_foreground]
        items = [(image[:, :, z].T[None], label[:, :, z].T) for z in keep]  # (1, Y, X): rows = y
        groups = [i // block for i in range(len(items))]
    else:
        starts = [
            z
            for z in range(0, z_size - block + 1, block)
            if foreground[:, :, z : z + block].mean() > min_foreground
        ]
        items = [
            (
                image[:, :, z : z + block].transpose(2, 1, 0)[None],
                label[:, :, z : z + block].transpose(2, 1, 0),
            )
            for z in starts
        ]
        groups = list(range(len(items)))
    test = [i for i, g in enumerate(groups) if g % 3 == 1]
    pool = [i for i, g in enumerate(groups) if g % 3 != 1]
    images = np.stack([items[i][0] for i in range(len(items))]).astype(np.float32)
    masks = np.stack([items[i][1] for i in range(len(items))]).astype(np.int64)
    splits = split_pool(images[pool], masks[pool], labelled_fraction)
    test_images = images[test]
    if corrupt_test:
        g = torch.Generator().manual_seed(TEST_CORRUPTION_SEED)
        test_images = scan_variability(torch.from_numpy(test_images), g).numpy().astype(np.float32)
    splits["test"] = SegmentationArrays(test_images, masks[test])
    return splits


def mni_dataset(
    dims: Literal[2, 3] = 2,
    resolution: int = 4,
    tissue: Literal["gm", "3class"] = "gm",
    labelled_fraction: float = 0.1,
    block: int | None = None,
    corrupt_test: bool = True,
) -> SegmentationData:
    """MNI152 (nilearn) T1 / 255 with grey matter (probability > 0.5) or background/GM/WM (argmax) labels.

    2D: axial slices with > 2% grey matter in blocks of ``block`` slices (default 2 at 4 mm, 4 at 2 mm);
    3D: z-slabs of ``block`` slices (default 4). Test images get one fixed scan-variability corruption
    (seed 1234) so that the test asks for robustness, as a new scanner would.
    """
    folder = package_dir("nilearn", "pip install --no-deps nilearn==0.14.1") / "datasets" / "data"
    t1 = _downsample(_load_nifti(folder / MNI_FILE.format("t1")) / 255.0, resolution)
    gm = _downsample(_load_nifti(folder / MNI_FILE.format("gm")) / 255.0, resolution)
    if tissue == "gm":
        label, class_names = (gm > 0.5).astype(np.int64), ("background", "grey_matter")
    elif tissue == "3class":
        wm = _downsample(_load_nifti(folder / MNI_FILE.format("wm")) / 255.0, resolution)
        stacked = np.stack([1 - np.clip(gm + wm, 0, 1), gm, wm])
        label, class_names = stacked.argmax(0).astype(np.int64), ("background", "grey_matter", "white_matter")
    else:
        raise SegmentationDataError(f"tissue must be 'gm' or '3class', got {tissue!r}")
    if block is None:
        block = (2 if resolution >= 4 else 4) if dims == 2 else 4
    splits = _block_split(t1, label, gm > 0.5, dims, block, labelled_fraction, corrupt_test=corrupt_test)
    return SegmentationData(
        splits,
        class_names,
        dims,
        f"nilearn MNI152 2009a T1 at {resolution} mm, {tissue} labels, "
        + ("axial slices" if dims == 2 else f"z-slabs of {block} slices")
        + f" in blocks of {block}, every third block test",
    )


def brain_mask_dataset(
    dims: Literal[2, 3] = 3, resolution: int = 4, labelled_fraction: float = 0.1, block: int = 4
) -> SegmentationData:
    """Brain vs. not brain on the single-subject ``ch2`` T1 (Debian ``mricron-data``); the mask is
    ``ch2bet > 0`` (its skull-stripped version) at > 0.5 after down-sampling."""
    t1 = _load_nifti(debian_path(MRICRON_DIR / "ch2.nii.gz", "mricron-data")) / 255.0
    bet = (_load_nifti(debian_path(MRICRON_DIR / "ch2bet.nii.gz", "mricron-data")) > 0).astype(np.float32)
    image, brain = _downsample(t1, resolution), _downsample(bet, resolution) > 0.5
    splits = _block_split(
        image,
        brain.astype(np.int64),
        brain,
        dims,
        block if dims == 3 else 2,
        labelled_fraction,
        corrupt_test=False,
    )
    return SegmentationData(
        splits,
        ("background", "brain"),
        dims,
        f"mricron ch2 T1 at {resolution} mm, brain mask from ch2bet, "
        + ("axial slices" if dims == 2 else f"z-slabs of {block} slices"),
    )


BUILDERS = {
    "nuclei": lambda fraction, dims: nuclei_dataset(labelled_fraction=fraction),
    "mni-gm": lambda fraction, dims: mni_dataset(dims=dims, labelled_fraction=fraction),
    "mni-tissue": lambda fraction, dims: mni_dataset(dims=dims, tissue="3class", labelled_fraction=fraction),
    "brain-mask": lambda fraction, dims: brain_mask_dataset(dims=dims, labelled_fraction=fraction),
}


def builtin_dataset(name: str, labelled_fraction: float, dims: int) -> SegmentationData:
    """One of :data:`BUILDERS` by name (the ``--data`` values that need no files)."""
    if name not in BUILDERS:
        raise SegmentationDataError(f"unknown built-in dataset {name!r}; choose from {sorted(BUILDERS)}")
    if name == "nuclei" and dims != 2:
        raise SegmentationDataError("the nuclei data is 2D: use --dims 2")
    data = BUILDERS[name](labelled_fraction, dims)
    check_data(data)
    return data


def pool_size(data: SegmentationData) -> int:
    """Images in the training pool (labelled + unlabelled)."""
    return len(data.splits["labelled"].images) + len(data.splits["unlabelled"].images)


__all__ = [
    "BINARY_CLASSES",
    "BUILDERS",
    "SPLITS",
    "SegmentationArrays",
    "SegmentationData",
    "SegmentationDataError",
    "brain_mask_dataset",
    "builtin_dataset",
    "check_data",
    "check_split",
    "evenly_spaced",
    "from_datasets",
    "load_segmentation_data",
    "mni_dataset",
    "nuclei_dataset",
    "nuclei_image",
    "one_hot_targets",
    "output_channels",
    "pool_size",
    "scan_variability",
    "split_pool",
]
