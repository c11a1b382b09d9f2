"""Segment an image file with a trained model: ``hubtools semiseg predict``.

Volumes are oriented as the builders orient them: a NIfTI volume (X, Y, Z) becomes axial slices
(Y, X) for a 2D model and a (Z, Y, X) volume for a 3D one, and the mask is written back in the
file's own orientation (with the NIfTI affine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hubtools.semiseg.data import SegmentationDataError


def _read(path: Path) -> tuple[np.ndarray, object]:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel

        img = nibabel.load(str(path))
        return np.asanyarray(img.dataobj), img
    if name.endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(path), None
    if name.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    raise SegmentationDataError(f"{path}: unsupported image format (use .nii/.nii.gz, .tif or .npy)")


def _write(path: Path, mask: np.ndarray, reference: object) -> None:
    name = path.name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel

        affine = reference.affine if reference is not None else np.eye(4)
        nibabel.save(nibabel.Nifti1Image(mask.astype(np.uint8), affine), str(path))
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(path, mask.astype(np.uint8))
    elif name.endswith(".npy"):
        np.save(path, mask.astype(np.uint8))
    else:
        raise SegmentationDataError(f"{path}: unsupported mask format (use .nii/.nii.gz, .tif or .npy)")


def normalise(image: np.ndarray) -> np.ndarray:
    """uint8 by 255 (as the MNI/ch2 builders do); anything else by its 1st/99.8th percentiles (as the nuclei)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    lo, hi = np.percentile(image, [1.0, 99.8])
    return np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1)


def segment(model, image: np.ndarray) -> np.ndarray:
    """Class index per pixel/voxel of a normalised 2D image (H, W) or volume (X, Y, Z)."""
    from hubtools.semiseg.trainer import predict_probabilities

    dims = model.config.spatial_dims
    if image.ndim == 2 and dims == 2:
        batch = torch.from_numpy(image)[None, None]
    elif image.ndim == 3 and dims == 2:
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 1, 0)))[:, None]
    elif image.ndim == 3 and dims == 3:
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 1, 0)))[None, None]
    else:
        raise SegmentationDataError(f"a {dims}D model cannot segment an image of shape {image.shape}")
    prob = predict_probabilities(model, batch.float())
    labels = (prob[:, 0] > 0.5).long() if prob.shape[1] == 1 else prob.argmax(1)
    labels = labels.numpy()
    if image.ndim == 2:
        return labels[0]
    volume = labels if dims == 2 else labels[0]  # (Z, Y, X)
    return volume.transpose(2, 1, 0)


def predict_file(model_path: str, image_path: Path, out_path: Path) -> dict[int, int]:
    """Segment ``image_path`` with the model at ``model_path`` (folder or Hub repo); returns voxels per class."""
    from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg

    model = UNetForSemiSeg.from_pretrained(model_path).eval()
    raw, reference = _read(Path(image_path))
    mask = segment(model, normalise(np.asarray(raw)))
    _write(Path(out_path), mask, reference)
    values, counts = np.unique(mask, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


__all__ = ["normalise", "predict_file", "segment"]
