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


def _batch(model, image: np.ndarray) -> torch.Tensor:
    dims = model.config.spatial_dims
    if image.ndim == 2 and dims == 2:
        return torch.from_numpy(image)[None, None].float()
    if image.ndim == 3 and dims == 2:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 1, 0)))[:, None].float()
    if image.ndim == 3 and dims == 3:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 1, 0)))[None, None].float()
    raise SegmentationDataError(f"a {dims}D model cannot segment an image of shape {image.shape}")


def _unbatch(model, values: torch.Tensor, image: np.ndarray) -> np.ndarray:
    """(B, *spatial) back to the image's own layout."""
    array = values.numpy()
    if image.ndim == 2:
        return array[0]
    volume = array if model.config.spatial_dims == 2 else array[0]  # (Z, Y, X)
    return volume.transpose(2, 1, 0)


def segment(model, image: np.ndarray) -> np.ndarray:
    """Class index per pixel/voxel of a normalised 2D image (H, W) or volume (X, Y, Z)."""
    return segment_with_confidence(model, image)[0]


@torch.no_grad()
def segment_with_confidence(model, image: np.ndarray, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class index and threshold confidence per pixel/voxel (see ``UNetForSemiSeg.threshold_confidence``).

    Labels binarise at p > 0.5 (one channel) or take the argmax (several); the confidence is that of the
    predicted class's channel (background: the lowest foreground channel's).
    """
    batch = _batch(model, image)
    model.eval()
    probs, confs = [], []
    for i in range(0, len(batch), chunk):
        part = batch[i : i + chunk]
        probs.append(model.probabilities(part))
        confs.append(model.threshold_confidence(part)[1])
    prob, conf = torch.cat(probs), torch.cat(confs)
    if prob.shape[1] == 1:
        labels, confidence = (prob[:, 0] > 0.5).long(), conf[:, 0]
    else:
        labels = prob.argmax(1)
        confidence = conf.gather(1, labels[:, None])[:, 0]
    return _unbatch(model, labels, image), _unbatch(model, confidence.float(), image)


def confidence_png_path(mask_path: Path) -> Path:
    """``mask.nii.gz`` -> ``mask.confidence.png`` (beside the mask)."""
    name = Path(mask_path).name
    for ext in (".nii.gz", ".nii", ".tiff", ".tif", ".npy"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return Path(mask_path).with_name(name + ".confidence.png")


def plot_confidence(
    image: np.ndarray, mask: np.ndarray, confidence: np.ndarray, path: Path, learned: bool
) -> Path:
    """Image | mask | confidence map; a volume shows its axial slice (last axis) with the most foreground."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if image.ndim == 3:
        z = int(np.argmax((mask > 0).reshape(-1, mask.shape[-1]).sum(0)))
        image, mask, confidence = image[..., z].T, mask[..., z].T, confidence[..., z].T
        where = f" (axial slice {z})"
    else:
        where = ""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image" + where)
    axes[1].imshow(mask, cmap="viridis", interpolation="nearest")
    axes[1].set_title("prediction")
    shown = axes[2].imshow(confidence, cmap="magma", vmin=0.5, vmax=1.0)
    source = "learned q(T)" if learned else "prior of T (not learned)"
    axes[2].set_title(f"confidence under {source}")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def predict_file(
    model_path: str, image_path: Path, out_path: Path, confidence_png: Path | None = None
) -> dict[int, int]:
    """Segment ``image_path`` with the model at ``model_path`` (folder or Hub repo); returns voxels per class.

    With ``confidence_png`` also saves image | mask | per-pixel confidence under the threshold distribution.
    """
    from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg

    model = UNetForSemiSeg.from_pretrained(model_path).eval()
    raw, reference = _read(Path(image_path))
    image = normalise(np.asarray(raw))
    mask, confidence = segment_with_confidence(model, image)
    _write(Path(out_path), mask, reference)
    if confidence_png is not None:
        plot_confidence(
            image, mask, confidence, confidence_png, bool(getattr(model.config, "threshold_learned", False))
        )
    values, counts = np.unique(mask, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


__all__ = [
    "confidence_png_path",
    "normalise",
    "plot_confidence",
    "predict_file",
    "segment",
    "segment_with_confidence",
]
