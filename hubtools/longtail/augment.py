"""Training augmentation for long-tailed training: MONICA's recipe, mixup and RandAugment.

Both act on a batch inside the trainer's loss function, never in ``Dataset.__getitem__``: the shared
loop fetches one batch ahead, so randomness there would break exact resume (see
:mod:`hubtools.train.loop`). They draw from the global torch RNG, which the loop checkpoints.

- :func:`mixup_batch` / :func:`mixup_loss`: lambda ~ Beta(alpha, alpha) (alpha 1), x~ = lambda x +
  (1 - lambda) x[perm], loss lambda L(z, y) + (1 - lambda) L(z, y[perm]) (``mixup``, ``gcl``, MiSLAS
  stage 1).
- :class:`RandAugment`: torchvision's RandAugment (num_ops 2, magnitude 9 of 31 bins, the same 14
  operations and magnitude table), re-implemented on PIL because torchvision is not a dependency.
- :class:`RSGModule`: RSG's feature-level generator of rare-class samples (``rsg``).
- :class:`RecipeAugment`: MONICA's train transform for every method (resize to 264/224 of the
  size and random crop, horizontal and vertical flips, rotation up to 10 degrees, colour jitter
  0.2 brightness / contrast / saturation / hue), batched on tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch import nn

from hubtools.errors import ConfigError


def mixup_batch(
    images: torch.Tensor, alpha: float = 1.0, lam: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed images, the permutation, lambda); ``lam`` fixes lambda instead of drawing it."""
    if alpha <= 0 and lam is None:
        raise ConfigError(f"mixup alpha must be > 0, got {alpha}")
    if lam is None:
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], device=images.device)
    return lam * images + (1.0 - lam) * images[perm], perm, lam


def mixup_loss(
    loss: Callable[..., torch.Tensor],
    logits: torch.Tensor,
    targets: torch.Tensor,
    perm: torch.Tensor,
    lam: float,
    **kw,
) -> torch.Tensor:
    """lambda L(z, y) + (1 - lambda) L(z, y[perm]) for any loss ``L(logits, targets, **kw)``."""
    return lam * loss(logits, targets, **kw) + (1.0 - lam) * loss(logits, targets[perm], **kw)


_BINS = 31


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST)


def _shear(img: Image.Image, v: float, axis: int) -> Image.Image:
    # torchvision shears about the origin (center=[0, 0]); PIL maps output to input pixels
    return _affine(img, (1, v, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, v, 1, 0))


# name -> (magnitude for bin index i of 31, signed?, op(img, magnitude))
_OPS: dict[
    str, tuple[Callable[[int, int, int], float], bool, Callable[[Image.Image, float], Image.Image]]
] = {
    "Identity": (lambda i, w, h: 0.0, False, lambda img, v: img),
    "ShearX": (lambda i, w, h: 0.3 * i / (_BINS - 1), True, lambda img, v: _shear(img, v, 0)),
    "ShearY": (lambda i, w, h: 0.3 * i / (_BINS - 1), True, lambda img, v: _shear(img, v, 1)),
    "TranslateX": (
        lambda i, w, h: 150.0 / 331.0 * w * i / (_BINS - 1),
        True,
        lambda img, v: _affine(img, (1, 0, -int(v), 0, 1, 0)),
    ),
    "TranslateY": (
        lambda i, w, h: 150.0 / 331.0 * h * i / (_BINS - 1),
        True,
        lambda img, v: _affine(img, (1, 0, 0, 0, 1, -int(v))),
    ),
    "Rotate": (lambda i, w, h: 30.0 * i / (_BINS - 1), True, lambda img, v: img.rotate(v)),
    "Brightness": (
        lambda i, w, h: 0.9 * i / (_BINS - 1),
        True,
        lambda img, v: ImageEnhance.Brightness(img).enhance(1.0 + v),
    ),
    "Color": (
        lambda i, w, h: 0.9 * i / (_BINS - 1),
        True,
        lambda img, v: ImageEnhance.Color(img).enhance(1.0 + v),
    ),
    "Contrast": (
        lambda i, w, h: 0.9 * i / (_BINS - 1),
        True,
        lambda img, v: ImageEnhance.Contrast(img).enhance(1.0 + v),
    ),
    "Sharpness": (
        lambda i, w, h: 0.9 * i / (_BINS - 1),
        True,
        lambda img, v: ImageEnhance.Sharpness(img).enhance(1.0 + v),
    ),
    "Posterize": (
        lambda i, w, h: float(8 - round(i / ((_BINS - 1) / 4))),
        False,
        lambda img, v: ImageOps.posterize(img, int(v)),
    ),
    "Solarize": (
        lambda i, w, h: 255.0 * (1 - i / (_BINS - 1)),
        False,
        lambda img, v: ImageOps.solarize(img, v),
    ),
    "AutoContrast": (lambda i, w, h: 0.0, False, lambda img, v: ImageOps.autocontrast(img)),
    "Equalize": (lambda i, w, h: 0.0, False, lambda img, v: ImageOps.equalize(img)),
}


class RandAugment:
    """Apply ``num_ops`` operations drawn uniformly from the 14 of torchvision's RandAugment, each at ``magnitude``.

    Signed operations (shear, translate, rotate, the enhancers) flip sign with probability 1/2.
    Called on uint8 images B x 3 x H x W; returns the same shape and dtype.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9) -> None:
        if num_ops < 0 or not 0 <= magnitude < _BINS:
            raise ConfigError(f"randaugment needs num_ops >= 0 and 0 <= magnitude < {_BINS}")
        self.num_ops, self.magnitude = num_ops, magnitude
        self.names = list(_OPS)

    def apply_op(self, img: Image.Image, name: str, negative: bool = False) -> Image.Image:
        """One operation at this magnitude (``negative`` flips the sign of a signed one)."""
        value_of, signed, op = _OPS[name]
        v = value_of(self.magnitude, *img.size)
        return op(img, -v if signed and negative else v)

    def augment_one(self, img: Image.Image) -> Image.Image:
        for _ in range(self.num_ops):
            name = self.names[int(torch.randint(len(self.names), ()))]
            img = self.apply_op(img, name, negative=bool(torch.rand(()) < 0.5))
        return img

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ConfigError("RandAugment takes uint8 images B x C x H x W")
        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        out = [np.asarray(self.augment_one(Image.fromarray(a))) for a in arrays]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


class RSGModule(nn.Module):
    """Rare-class sample generator (RSG, Wang et al. CVPR 2021) on the feature maps of a middle stage.

    Per class c: ``n_center`` centres mu_ck (channels) and a soft assignment
    gamma_i = softmax(pool(F_i) A_{y_i} + b_{y_i}) of a sample to its class's centres. On the detached
    maps F (B x ch x H x W):

    - CESC = (1/B) sum_i sum_k gamma_ik ||F_i - mu_{y_i k}||^2 (+ before the transfer starts, the CE of a
      contrastive module telling whether the pair (F_i, F_{i + B/2}) shares a class);
    - transfer (``self.transfer`` on): for head-class samples (index < ``head_classes``) the variation
      v = F_h - mu_{y_h, argmax gamma_h} goes through a 3 x 3 conv T and is added to a tail sample's
      maps, F~ = F_t + T(v), labelled y_t; head and tail samples are paired chunk by chunk
      (int(n_h / n_t) rounds of n_t pairs or int(n_t / n_h) rounds of n_h pairs, at least one);
    - MV = CE(contrastive(F_h, T(v)), "different") + (1/n) [sum |(||T(v)|| - ||v||)|
      + sum |cos(F_t - mu_{y_t, argmax gamma_t}, T(v)) - 1|] over spatial positions, with the contrastive
      module's weights held fixed.

    Deviation, stated: the reference computes the norms and the alignment on C-sized chunks of the
    flattened NCHW maps and uses an element-wise product for the alignment; here both are per spatial
    position (channel vectors) and the alignment is a cosine. Used in training only; the saved model is
    the plain backbone and head.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        head_classes: int,
        n_center: int = 3,
        contrastive_dim: int = 128,
        strength: float = 1.0,
    ) -> None:
        super().__init__()
        self.head_classes, self.n_center, self.strength = head_classes, n_center, strength
        self.assign_weight = nn.Parameter(torch.randn(num_classes, channels, n_center))
        self.assign_bias = nn.Parameter(torch.ones(num_classes, n_center))
        self.centres = nn.Parameter(torch.zeros(num_classes, n_center, channels))
        self.transform = nn.Conv2d(channels, channels, 3, padding=1)
        self.contrastive = nn.Sequential(
            nn.Conv2d(2 * channels, contrastive_dim, 1),
            nn.ReLU(),
            nn.Conv2d(contrastive_dim, contrastive_dim, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(contrastive_dim, 2),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.transfer = False

    def assignment(self, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """gamma: B x n_center soft assignment of each sample to its class's centres."""
        pooled = maps.mean(dim=(2, 3))
        scores = torch.einsum("bc,bck->bk", pooled, self.assign_weight[targets]) + self.assign_bias[targets]
        return scores.softmax(dim=1)

    def cesc(self, maps: torch.Tensor, targets: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        centres = self.centres[targets][..., None, None]  # B x K x ch x 1 x 1
        dist = (maps[:, None] - centres).pow(2).sum(dim=(2, 3, 4))  # B x K
        loss = (gamma * dist).sum() / maps.shape[0]
        half = maps.shape[0] // 2
        if not self.transfer and half > 0:
            pairs = torch.cat([maps[:half], maps[half : 2 * half]], dim=1)
            same = (targets[:half] == targets[half : 2 * half]).long()
            loss = loss + F.cross_entropy(self.contrastive(pairs), same)
        return loss

    def _nearest_centre(self, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = self.assignment(maps, targets).argmax(dim=1)
        return self.centres[targets, k].detach()[..., None, None]

    def mv(self, head_maps, head_targets, tail_maps, tail_targets) -> tuple[torch.Tensor, torch.Tensor]:
        """(MV loss, synthesised tail maps F_t + T(v)) for paired head/tail samples (detached maps)."""
        variation = head_maps - self._nearest_centre(head_maps, head_targets)
        moved = self.transform(variation)
        frozen = {k: v.detach() for k, v in self.contrastive.named_parameters()}
        verdict = torch.func.functional_call(
            self.contrastive, frozen, (torch.cat([head_maps, moved], dim=1),)
        )
        n = head_maps.shape[0]
        direction = tail_maps - self._nearest_centre(tail_maps, tail_targets)

        def vectors(x: torch.Tensor) -> torch.Tensor:  # one channel vector per spatial position
            return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

        size = (vectors(moved).norm(dim=1) - vectors(variation).norm(dim=1)).abs().sum()
        align = (F.cosine_similarity(vectors(direction), vectors(moved), dim=1) - 1).abs().sum()
        loss = F.cross_entropy(verdict, torch.zeros(n, dtype=torch.long, device=verdict.device))
        return loss + (size + align) / n, tail_maps + moved

    def forward(
        self, maps: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(maps with synthesised tail samples appended, their targets, CESC, MV)."""
        detached = maps.detach()
        cesc = self.cesc(detached, targets, self.assignment(detached, targets))
        mv = maps.new_zeros(())
        head = targets < self.head_classes
        n_h, n_t = int(head.sum()), int((~head).sum())
        if not self.transfer or n_h == 0 or n_t == 0:
            return maps, targets, cesc, mv
        head_maps, head_y = detached[head], targets[head]
        tail_maps, tail_y = detached[~head], targets[~head]
        extra_maps, extra_y = [], []
        if n_h >= n_t:
            rounds = max(1, int(n_h * self.strength / n_t))
            chunks = [
                (head_maps[j * n_t : (j + 1) * n_t], head_y[j * n_t : (j + 1) * n_t], tail_maps, tail_y)
                for j in range(rounds)
            ]
        else:
            rounds = max(1, int(n_t * self.strength / n_h))
            chunks = [
                (head_maps, head_y, tail_maps[j * n_h : (j + 1) * n_h], tail_y[j * n_h : (j + 1) * n_h])
                for j in range(rounds)
            ]
        for hm, hy, tm, ty in chunks:
            n = min(hm.shape[0], tm.shape[0])
            if n == 0:
                continue
            loss, synthetic = self.mv(hm[:n], hy[:n], tm[:n], ty[:n])
            mv = mv + loss
            extra_maps.append(synthetic)
            extra_y.append(ty[:n])
        return torch.cat([maps, *extra_maps]), torch.cat([targets, *extra_y]), cesc, mv / rounds


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    k = torch.stack([(n + h * 6.0) % 6.0 for n in (5.0, 3.0, 1.0)], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


class RecipeAugment:
    """MONICA's train transform on a uint8 batch B x 3 x S x S (images already resized to S).

    MONICA resizes to 264 px, crops 224 at random, flips both ways, rotates by up to 10 degrees and
    jitters colour (0.2 each of brightness, contrast, saturation and hue). Here the crop (a window of
    224/264 of the image at a random offset), the flips and the rotation are one affine map sampled
    with bilinear interpolation (one resampling instead of three; pixels rotated in from outside are
    0, as in the PIL/torchvision rotation), then the jitter is applied in a fixed order (brightness,
    contrast, saturation, hue; torchvision draws the order at random). Every draw is per image from
    the global torch RNG, which the training loop checkpoints, so a resumed run repeats it exactly.
    Returns uint8, so RandAugment and the trainer's normalisation see the same type as without it.
    """

    def __init__(
        self,
        crop: float = 224.0 / 264.0,
        rotation: float = 10.0,
        hflip: bool = True,
        vflip: bool = True,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.2,
    ) -> None:
        if not 0.0 < crop <= 1.0:
            raise ConfigError(f"crop must be in (0, 1], got {crop}")
        if not 0.0 <= hue <= 0.5:
            raise ConfigError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.crop, self.rotation, self.hflip, self.vflip = crop, rotation, hflip, vflip
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n)

    def geometry(self, n: int) -> torch.Tensor:
        """n x 2 x 3 affine maps (output -> input, normalised coordinates) of crop, flips and rotation."""
        shift = 1.0 - self.crop
        t = torch.stack([self._uniform(n, -shift, shift), self._uniform(n, -shift, shift)], dim=1)
        fx = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        fy = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if self.vflip else torch.ones(n)
        angle = torch.deg2rad(self._uniform(n, -self.rotation, self.rotation))
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        linear = self.crop * torch.diag_embed(torch.stack([fx, fy], 1)) @ rot
        return torch.cat([linear, t[:, :, None]], dim=2)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Colour jitter of float images in [0, 1]."""
        n = x.shape[0]

        def factor(amount: float) -> torch.Tensor:
            return self._uniform(n, max(0.0, 1.0 - amount), 1.0 + amount).to(x)[:, None, None, None]

        if self.brightness:
            x = (x * factor(self.brightness)).clamp(0.0, 1.0)
        if self.contrast:
            mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
            c = factor(self.contrast)
            x = (c * x + (1.0 - c) * mean).clamp(0.0, 1.0)
        if self.saturation:
            s = factor(self.saturation)
            x = (s * x + (1.0 - s) * _grey(x)).clamp(0.0, 1.0)
        if self.hue:
            hsv = rgb_to_hsv(x)
            shift = self._uniform(n, -self.hue, self.hue).to(x)[:, None, None]
            hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], dim=1)
            x = hsv_to_rgb(hsv).clamp(0.0, 1.0)
        return x

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ConfigError(f"RecipeAugment takes uint8 B x 3 x H x W images, got {images.dtype} {tuple(images.shape)}")
        x = images.float() / 255.0
        theta = self.geometry(x.shape[0]).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = self.jitter(x)
        return (x * 255.0).round().to(torch.uint8)
