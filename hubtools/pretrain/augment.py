"""DINOv2 multi-crop augmentation on batched tensors (torch only: torchvision is not a dependency).

It runs inside the training ``loss_fn``, on the device, drawing from the global torch RNG: the shared
trainer restores that RNG on resume, so a resumed run sees the same crops (random augmentation in a
dataset's ``__getitem__`` would break exact resume, see :mod:`hubtools.train.loop`).

Recipe (``ssl_default_config.yaml`` / ``dinov2/data/augmentations.py``): 2 global crops (scale 0.32-1),
N local crops (scale 0.05-0.32), bicubic resize; every crop: h-flip 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1)
with p 0.8, grayscale p 0.2; global crop 1 blur p 1.0; global crop 2 blur p 0.1 + solarize p 0.2; local
crops blur p 0.5; ImageNet mean/std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes for ``n`` images: (n, 4) = (top, left, h, w); per image the
    first of 10 tries that fits, else a centre crop."""
    area = height * width
    u = torch.rand(n, 10, 4)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    w = torch.round(torch.sqrt(target * torch.exp(log_r)))
    h = torch.round(torch.sqrt(target / torch.exp(log_r)))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    side = float(min(height, width))
    boxes = torch.tensor([(height - side) // 2, (width - side) // 2, side, side]).repeat(n, 1)
    for i in torch.nonzero(first >= 0).flatten().tolist():
        t = int(first[i])
        hh, ww = h[i, t], w[i, t]
        top = torch.floor(u[i, t, 2] * (height - hh + 1))
        left = torch.floor(u[i, t, 3] * (width - ww + 1))
        boxes[i] = torch.stack([top, left, hh, ww])
    return boxes


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor) -> torch.Tensor:
    """Crop every image to its box, optionally mirror it, and resample to ``size`` (bicubic), in one
    ``grid_sample`` call for the whole batch."""
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(images).unbind(1)
    sign = torch.where(flip, -1.0, 1.0).to(images)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp(0.0, 1.0)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1).expand_as(images)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    maxc, _ = images.max(1)
    minc, _ = images.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([hue, sat, maxc], dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6) % 6
    f = h * 6 - torch.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(hsv)
    for k, channels in enumerate(table):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack(channels, dim=1), out)
    return out


def color_jitter(
    images: torch.Tensor,
    apply: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> torch.Tensor:
    """torchvision ColorJitter on the images where ``apply`` is set: brightness, contrast, saturation and hue
    with per-image uniform factors, in a random order (one order per call, not per image)."""
    n = images.shape[0]
    factors = 2 * torch.rand(n, 4, device=images.device) - 1
    out = images
    for op in torch.randperm(4).tolist():
        f = factors[:, op].view(n, 1, 1, 1)
        if op == 0:
            out = (out * (1 + brightness * f)).clamp(0, 1)
        elif op == 1:
            mean = _grayscale(out)[:, :1].mean(dim=(2, 3), keepdim=True)
            out = ((1 + contrast * f) * out - contrast * f * mean).clamp(0, 1)
        elif op == 2:
            out = ((1 + saturation * f) * out - saturation * f * _grayscale(out)).clamp(0, 1)
        else:
            hsv = _rgb_to_hsv(out)
            hsv[:, 0] = (hsv[:, 0] + hue * f.view(n, 1, 1)) % 1.0
            out = _hsv_to_rgb(hsv).clamp(0, 1)
    return torch.where(apply.view(n, 1, 1, 1), out, images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image, reflect padding (radius 3·max sigma)."""
    n, c, height, width = images.shape
    radius = max(1, min(int(math.ceil(3 * float(sigma.max()))), height - 1, width - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(images) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (n·c, 2r+1)
    out = F.pad(images.reshape(1, n * c, height, width), (radius,) * 4, mode="reflect")
    out = F.conv2d(out, kernel.view(n * c, 1, 1, -1), groups=n * c)
    out = F.conv2d(out, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return out.view(n, c, height, width)


@dataclass
class MultiCrop:
    """The DINOv2 crops of a batch: ``global_crops`` (2B, C, G, G) ordered [view 1 of all images, view 2 of
    all images], ``local_crops`` (n_local·B, C, L, L) ordered likewise."""

    global_crops: torch.Tensor
    local_crops: torch.Tensor | None


@dataclass
class MultiCropAugmentation:
    """Settings of the DINOv2 multi-crop recipe; call it on a uint8 or [0, 1] float batch (B, C, H, W).

    Vectorised over the batch (one ``grid_sample`` per view). Blur radii are DINOv2's (sigma 0.1-2.0 px
    at 224 px) scaled to the crop size, so that tiny test crops are not blurred to a flat colour.
    """

    global_size: int = 224
    local_size: int = 98
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2

    def _views(
        self, images: torch.Tensor, size: int, scale: tuple[float, float], blur_p: float, solarize_p: float
    ) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device
        coins = torch.rand(n, 6)
        boxes = random_resized_boxes(n, height, width, scale)
        out = crop_resize(images, boxes, size, flip=(coins[:, 0] < 0.5).to(device))
        out = color_jitter(out, (coins[:, 1] < self.jitter_p).to(device), *self.jitter)
        gray = (coins[:, 2] < self.grayscale_p).to(device).view(n, 1, 1, 1)
        out = torch.where(gray, _grayscale(out), out)
        blur = (coins[:, 3] < blur_p).to(device).view(n, 1, 1, 1)
        if bool(blur.any()):
            sigma = ((0.1 + 1.9 * coins[:, 4]) * size / 224).clamp(min=0.1).to(device)
            out = torch.where(blur, gaussian_blur(out, sigma), out)
        solarize = (coins[:, 5] < solarize_p).to(device).view(n, 1, 1, 1)
        return torch.where(solarize & (out >= 128 / 255), 1.0 - out, out)

    def __call__(self, images: torch.Tensor) -> MultiCrop:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        g1 = self._views(images, self.global_size, self.global_scale, 1.0, 0.0)
        g2 = self._views(images, self.global_size, self.global_scale, 0.1, 0.2)
        local = None
        if self.n_local:
            many = images.repeat(self.n_local, 1, 1, 1)
            local = normalize(self._views(many, self.local_size, self.local_scale, 0.5, 0.0))
        return MultiCrop(global_crops=normalize(torch.cat([g1, g2])), local_crops=local)


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of a [0, 1] batch (B, 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std
