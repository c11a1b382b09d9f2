"""``FundusImageProcessor``: the preprocessing a fundus classifier was trained with, saved beside it.

Fundus photographs are a bright disc (the field of view) on a black frame whose width varies between
cameras; cropping to the disc and padding to a square makes the retina fill the same share of the input
whatever the camera. CLAHE (on the lightness channel only, so colours keep their hue) evens out the
vignetting and exposure differences between photos. Then a bicubic resize to ``size`` and ImageNet
mean/std, as DINOv2 was trained with.

This file imports only numpy, PIL and transformers (scikit-image only inside :meth:`apply_clahe`, when
``clahe=True``), so ``register_for_auto_class`` can copy it into a model folder and
``AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`` or ``pipeline(...)`` load it
without hubtools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def _to_uint8_rgb(image: Any) -> np.ndarray:
    """PIL image, (H, W[, C]) array (uint8, or float in [0, 1]) or (C, H, W) tensor/array -> (H, W, 3) uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


class FundusImageProcessor(BaseImageProcessor):
    """Field-of-view crop -> optional CLAHE -> bicubic resize to ``size`` x ``size`` -> ImageNet normalisation.

    ``fov_threshold`` (0-255) separates the fundus disc from the black frame on the larger of the red and
    green channels (the blue channel of a fundus photo is dark even inside the disc). ``clahe_clip_limit``
    is scikit-image's ``equalize_adapthist`` clip limit (fraction of the histogram).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        crop_fov: bool = True,
        fov_threshold: int = 20,
        clahe: bool = False,
        clahe_clip_limit: float = 0.01,
        image_mean: list[float] | tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
        image_std: list[float] | tuple[float, ...] = IMAGENET_DEFAULT_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = int(size["height"] if isinstance(size, dict) else size)
        self.crop_fov = bool(crop_fov)
        self.fov_threshold = int(fov_threshold)
        self.clahe = bool(clahe)
        self.clahe_clip_limit = float(clahe_clip_limit)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]

    def field_of_view_box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """``(top, left, bottom, right)`` (exclusive ends) of the pixels brighter than ``fov_threshold``;
        None when nothing is (a black image keeps its frame)."""
        mask = np.maximum(image[..., 0], image[..., 1]) > self.fov_threshold
        # A row/column belongs to the disc when a few pixels of it do: isolated bright noise in the frame
        # (text, sensor specks) must not stretch the box.
        rows = np.nonzero(mask.sum(1) >= max(1, round(0.005 * mask.shape[1])))[0]
        cols = np.nonzero(mask.sum(0) >= max(1, round(0.005 * mask.shape[0])))[0]
        if len(rows) == 0 or len(cols) == 0:
            return None
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1

    def crop_field_of_view(self, image: np.ndarray) -> np.ndarray:
        """Crop (H, W, 3) uint8 to the disc's bounding box and pad it with black to a centred square."""
        box = self.field_of_view_box(image)
        if box is None:
            return image
        top, left, bottom, right = box
        disc = image[top:bottom, left:right]
        h, w = disc.shape[:2]
        side = max(h, w)
        out = np.zeros((side, side, 3), dtype=image.dtype)
        y, x = (side - h) // 2, (side - w) // 2
        out[y : y + h, x : x + w] = disc
        return out

    def apply_clahe(self, image: np.ndarray) -> np.ndarray:
        """CLAHE on the L channel of LAB; (H, W, 3) uint8 in and out."""
        from skimage import color, exposure  # only needed with clahe=True

        lab = color.rgb2lab(image.astype(np.float64) / 255.0)
        lab[..., 0] = (
            exposure.equalize_adapthist(lab[..., 0] / 100.0, clip_limit=self.clahe_clip_limit) * 100.0
        )
        rgb = color.lab2rgb(lab)
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    def process_one(self, image: Any) -> np.ndarray:
        """One image -> (3, size, size) float32, normalised."""
        array = _to_uint8_rgb(image)
        if self.crop_fov:
            array = self.crop_field_of_view(array)
        if self.clahe:
            array = self.apply_clahe(array)
        resized = Image.fromarray(array).resize((self.size, self.size), Image.Resampling.BICUBIC)
        x = np.asarray(resized, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        """An image or a list of images -> ``{"pixel_values": (N, 3, size, size)}``."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values = np.stack([self.process_one(image) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)
