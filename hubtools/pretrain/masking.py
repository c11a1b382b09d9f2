"""iBOT block-wise masks for the global crops (DINOv2's ``MaskingGenerator`` and ``collate_data_and_cast``).

Python's ``random`` is used as in DINOv2, but seeded from the torch RNG on each call so that the shared
trainer's resume (which restores the torch RNG) reproduces the masks.
"""

from __future__ import annotations

import math
import random

import torch


class BlockMaskGenerator:
    """Masks of a (height, width) patch grid built from random rectangles.

    Rectangles have an area drawn uniformly in [min_num_patches, remaining] (at most ``max_num_patches``)
    and a log-uniform aspect ratio in [min_aspect, 1/min_aspect]; each placement gets up to 10 tries.
    """

    def __init__(
        self,
        height: int,
        width: int,
        max_num_patches: float | None = None,
        min_num_patches: int = 4,
        min_aspect: float = 0.3,
    ) -> None:
        self.height, self.width = height, width
        self.num_patches = height * width
        self.min_num_patches = min_num_patches
        self.max_num_patches = 0.5 * self.num_patches if max_num_patches is None else max_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _place(self, mask: torch.Tensor, max_mask_patches: float, rng: random.Random) -> int:
        delta = 0
        for _ in range(10):
            target = rng.uniform(self.min_num_patches, max_mask_patches)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                window = mask[top : top + h, left : left + w]
                already = int(window.sum())
                if 0 < h * w - already <= max_mask_patches:
                    delta += h * w - already
                    window.fill_(True)
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masking_patches: int, rng: random.Random) -> torch.Tensor:
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num_masking_patches:
            delta = self._place(mask, min(num_masking_patches - count, self.max_num_patches), rng)
            if delta == 0:
                break
            count += delta
        return mask


def sample_masks(
    n_images: int, grid: int, mask_probability: float = 0.5, ratio_range: tuple[float, float] = (0.1, 0.5)
) -> torch.Tensor:
    """(n_images, grid²) bool masks: ``int(n_images · p)`` images get a block mask whose ratio the i-th of
    them draws uniformly in [r_i, r_{i+1}] with r = linspace(ratio_min, ratio_max, n_masked + 1); the
    rest get none; the order is shuffled across images."""
    rng = random.Random(int(torch.randint(0, 2**62, (1,))))
    generator = BlockMaskGenerator(grid, grid)
    n_patches = grid * grid
    n_masked = int(n_images * mask_probability)
    bounds = torch.linspace(ratio_range[0], ratio_range[1], n_masked + 1).tolist()
    masks = [generator(int(n_patches * rng.uniform(bounds[i], bounds[i + 1])), rng) for i in range(n_masked)]
    masks += [torch.zeros(grid, grid, dtype=torch.bool) for _ in range(n_images - n_masked)]
    rng.shuffle(masks)
    return torch.stack(masks).flatten(1)
