"""Real long-tailed medical images offline: brain-MRI patches labelled by AAL region.

Debian's ``mricron-data`` ships a single-subject T1 MRI (``ch2.nii.gz``) and the
hand-drawn AAL atlas (``aal.nii.gz``, 116 regions) on the same 181x217x181 grid. Cutting
square patches on a regular grid of slices and labelling each by the atlas region at its
centre gives thousands of real images whose class sizes follow the regions' volumes,
which are naturally long-tailed (the big cortical regions against the small vermis lobules).
It is the project's real benchmark case for long-tailed classification, and the
material InfoGrowth curates; both read it through :func:`load_mri_patches`.

Determinism: patches are enumerated in (slice, row, col) order and the class order is
fixed by (count descending, AAL code ascending), so two calls with the same arguments
return byte-identical arrays on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubtools.data.offline import debian_path
from hubtools.errors import HubtoolsError

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
MRICRON_PACKAGE = "mricron-data"


class MriDataError(HubtoolsError, ValueError):
    """The MRI volume and the atlas do not fit together (different grids) or the names file is malformed."""


@dataclass
class MriPatches:
    """Square MRI patches with their AAL region labels.

    ``labels`` are re-indexed so class 0 is the most frequent (long-tail order);
    ``class_names[k]`` and ``original_labels[k]`` (the AAL code, 1..116) name class ``k``.
    ``positions[i]`` is the (slice, row, col) voxel of patch ``i``'s centre in the volume
    with the slicing axis moved first.
    """

    images: np.ndarray  # uint8 [N, p, p]
    labels: np.ndarray  # int64 [N], 0 = most frequent class
    class_names: list[str]
    original_labels: np.ndarray  # int64 [C], AAL code of each class
    positions: np.ndarray  # int64 [N, 3]
    patch_size: int
    stride: int
    axis: int

    @property
    def class_counts(self) -> np.ndarray:
        """Patches per class, in class order (non-increasing)."""
        return np.bincount(self.labels, minlength=len(self.class_names))


def read_aal_names(path: Path) -> dict[int, str]:
    """AAL code -> region name from ``aal.nii.txt`` (lines ``<code> <name> <number>``)."""
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise MriDataError(f"{path}: line {lineno}: expected '<code> <name> ...', got {line!r}")
        names[int(fields[0])] = fields[1]
    return names


def _load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.dtype != np.uint8:
        # Both shipped volumes are uint8 without scaling; anything else is not the file we expect.
        raise MriDataError(f"{path}: expected uint8 voxels, got {data.dtype}")
    return data, np.asarray(img.affine)


def load_mri_patches(
    patch_size: int = 32,
    stride: int = 16,
    axis: int = 2,
    slices: slice | None = None,
    min_count: int = 1,
    templates_dir: Path = MRICRON_TEMPLATES,
) -> MriPatches:
    """Cut ``patch_size``-square patches from ch2 on an in-plane grid of step ``stride``.

    ``axis`` is the slicing axis (0 sagittal, 1 coronal, 2 axial); ``slices`` selects the
    slices along it (default all, e.g. ``slice(None, None, 4)`` for every fourth). Patch
    centres are at ``patch_size // 2 + k * stride`` so every patch lies inside the volume;
    a centre on atlas background (label 0) is skipped. Classes with fewer than
    ``min_count`` patches are dropped before re-indexing.

    ``stride=4, slices=slice(None, None, 4)`` is the 4-voxel 3D grid of the offline-data
    notes: 23,133 patches, 116 classes, 652 in the largest, 8 in the smallest.

    Raises:
        DataUnavailable: ``mricron-data`` is not installed.
        MriDataError: the T1 and the atlas are on different grids.
        ValueError: a parameter is out of range.
    """
    if patch_size < 1 or stride < 1 or min_count < 1:
        raise ValueError(
            f"patch_size, stride and min_count must be >= 1, got {patch_size}, {stride}, {min_count}"
        )
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    t1_path = debian_path(Path(templates_dir) / "ch2.nii.gz", MRICRON_PACKAGE)
    atlas_path = debian_path(Path(templates_dir) / "aal.nii.gz", MRICRON_PACKAGE)
    names_path = debian_path(Path(templates_dir) / "aal.nii.txt", MRICRON_PACKAGE)
    t1, t1_affine = _load_volume(t1_path)
    atlas, atlas_affine = _load_volume(atlas_path)
    if t1.shape != atlas.shape or not np.allclose(t1_affine, atlas_affine):
        raise MriDataError(
            f"{t1_path} {t1.shape} and {atlas_path} {atlas.shape} are not on the same grid "
            f"(affines equal: {np.allclose(t1_affine, atlas_affine)})"
        )
    names = read_aal_names(names_path)

    t1 = np.moveaxis(t1, axis, 0)
    atlas = np.moveaxis(atlas, axis, 0)
    n_slices, height, width = t1.shape
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} exceeds the slice size {height}x{width}")
    half = patch_size // 2
    slice_idx = np.arange(n_slices)[slices if slices is not None else slice(None)]
    rows = np.arange(half, height - patch_size + half + 1, stride)
    cols = np.arange(half, width - patch_size + half + 1, stride)
    s, r, c = (g.ravel() for g in np.meshgrid(slice_idx, rows, cols, indexing="ij"))
    centre_labels = atlas[s, r, c].astype(np.int64)
    keep = centre_labels > 0
    s, r, c, centre_labels = s[keep], r[keep], c[keep], centre_labels[keep]

    codes, counts = np.unique(centre_labels, return_counts=True)
    unknown = sorted(set(codes.tolist()) - set(names))
    if unknown:
        raise MriDataError(f"{atlas_path}: region codes {unknown} have no name in {names_path}")
    keep_codes = counts >= min_count
    codes, counts = codes[keep_codes], counts[keep_codes]
    order = np.lexsort((codes, -counts))  # count descending, then AAL code ascending: a total order
    codes = codes[order]
    lookup = np.full(int(atlas.max()) + 1, -1, dtype=np.int64)
    lookup[codes] = np.arange(len(codes))
    labels = lookup[centre_labels]
    kept = labels >= 0
    s, r, c, labels = s[kept], r[kept], c[kept], labels[kept]

    windows = np.lib.stride_tricks.sliding_window_view(t1, (patch_size, patch_size), axis=(1, 2))
    images = np.ascontiguousarray(windows[s, r - half, c - half])
    return MriPatches(
        images=images,
        labels=labels,
        class_names=[names[int(k)] for k in codes],
        original_labels=codes.astype(np.int64),
        positions=np.stack([s, r, c], axis=1).astype(np.int64),
        patch_size=patch_size,
        stride=stride,
        axis=axis,
    )
