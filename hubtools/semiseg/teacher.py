"""Teacher-student pseudo labelling: an EMA teacher, weak/strong views, and a ramp that waits for a plateau.

Why: pseudo labels taken from the student's own forward pass on the same view teach the student
what it already predicts, so its early mistakes come back as targets (confirmation bias: on the
MNI grey-matter slices the pseudo-label foreground drifted to 0.41 against a true 0.18 and every
pseudo-label method ended below supervised-only). The usual remedy has three parts, all here:

- the targets come from a *teacher*, an exponential moving average of the student's weights, which
  changes slowly and averages out the noise of single steps (:class:`EMATeacher`);
- the teacher sees the *weak* view (crop and flip only) and the student a *strong* view of the same
  image (scanner-like intensity changes and a smooth elastic warp; the warp is applied to the
  teacher's probabilities too, so targets stay aligned) (:func:`strong_view`);
- the pseudo-label weight ramps up only once the supervised loss has stopped falling, so the teacher
  is no longer immature when its labels start to count (:class:`RampSchedule`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hubtools.semiseg.data import scan_variability


class EMATeacher:
    """A frozen copy of the student whose weights follow ``t <- d t + (1 - d) s`` after every step.

    Buffers are copied as they are. The teacher is a checkpoint object (``state_dict`` /
    ``load_state_dict``), so a resumed run continues from the same teacher. Under several processes
    the students are identical after every step (DDP averages gradients), hence so are the teachers.
    """

    def __init__(self, student: nn.Module, decay: float = 0.99) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(student).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device | str) -> EMATeacher:
        self.module.to(device)
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards ``student`` (call after each optimiser step)."""
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach().to(t.device), 1 - self.decay)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    @torch.no_grad()
    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``sigmoid(logits / tau)`` of the teacher on ``pixel_values`` (no gradient)."""
        out = self.module(pixel_values=pixel_values)
        return torch.sigmoid(out.logits / self.module.config.logit_temperature)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["module"])


def elastic_grid(
    shape: torch.Size | tuple[int, ...],
    magnitude: float,
    control: int = 4,
    device: torch.device | None = None,
) -> torch.Tensor:
    """A smooth random sampling grid for ``F.grid_sample`` on (N, C, *spatial) images.

    A ``control`` x ``control`` lattice of displacements ~ U(-magnitude, magnitude) pixels is
    upsampled bicubically to the image size: in-plane (the last two axes) only, as a
    slightly different head position or anatomy would look; 3D volumes keep their slice axis.
    """
    n, spatial = shape[0], tuple(shape[2:])
    h, w = spatial[-2:]
    coarse = (torch.rand(n, 2, control, control, device=device) * 2 - 1) * magnitude
    disp = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    # pixels -> normalised [-1, 1] coordinates (align_corners=False convention)
    disp = torch.stack([disp[:, 0] * 2 / w, disp[:, 1] * 2 / h], dim=-1)  # (N, H, W, 2) as (x, y)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None] + disp
    if len(spatial) == 2:
        return grid
    d = spatial[0]
    zs = torch.linspace(-1 + 1 / d, 1 - 1 / d, d, device=device).view(1, d, 1, 1, 1).expand(n, d, h, w, 1)
    return torch.cat([grid[:, None].expand(n, d, h, w, 2), zs], dim=-1)


def warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` on ``grid`` (bilinear, borders repeated: no black corners)."""
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def strong_view(
    weak: torch.Tensor, intensity: bool = True, elastic: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The student's view of a weak view: scanner-like intensity changes (gamma, bias field, noise)
    and an elastic warp of up to ``elastic`` pixels (0: none). Returns the image and the grid, which
    the caller applies to the teacher's probabilities so that targets match the warped image."""
    grid = elastic_grid(weak.shape, elastic, device=weak.device) if elastic > 0 else None
    x = warp(weak, grid) if grid is not None else weak
    if intensity:
        x = scan_variability(x)
    return x, grid


class RampSchedule:
    """When the pseudo-label weight alpha(t) starts: at a fixed fraction of training, or once the
    supervised loss has plateaued.

    ``plateau`` compares the mean supervised loss of consecutive windows of ``window`` steps; the
    ramp starts after the first window whose mean improved on the previous one by less than ``tol``
    (relative), but never before ``earliest * total`` steps and always by ``latest * total``. The
    window means are averaged over processes, so every process starts at the same step. It is a
    checkpoint object: a resumed run starts its ramp where the uninterrupted run would.
    """

    def __init__(
        self,
        total_steps: int,
        trigger: str = "plateau",
        earliest: float = 0.2,
        latest: float = 0.5,
        window: int = 50,
        tol: float = 0.02,
    ) -> None:
        if trigger not in ("step", "plateau"):
            raise ValueError(f"trigger must be 'step' or 'plateau', got {trigger!r}")
        self.total, self.trigger = total_steps, trigger
        self.earliest, self.latest, self.window, self.tol = earliest, latest, window, tol
        self.start: float | None = earliest * total_steps if trigger == "step" else None
        self._sum, self._count = 0.0, 0
        self.window_means: list[float] = []

    def record(self, loss_sup: float) -> None:
        """Add one micro-batch's supervised loss to the current window."""
        self._sum += float(loss_sup)
        self._count += 1

    def end_step(self, step: int, accelerator: Any | None = None) -> None:
        """Called after optimiser step ``step`` (1-based count of steps done)."""
        if self.start is not None:
            return
        if step >= self.latest * self.total:
            self.start = step
            return
        if step % self.window:
            return
        mean = torch.tensor([self._sum / max(self._count, 1)], dtype=torch.float64)
        if accelerator is not None and accelerator.num_processes > 1:
            mean = accelerator.reduce(mean.to(accelerator.device), reduction="mean").cpu()
        self._sum, self._count = 0.0, 0
        previous = self.window_means[-1] if self.window_means else None
        self.window_means.append(float(mean))
        if (
            previous is not None
            and step >= self.earliest * self.total
            and previous - float(mean) < self.tol * previous
        ):
            self.start = step

    def alpha(self, step: int, length: float, alpha_max: float = 1.0) -> float:
        """alpha at optimiser step ``step`` (0-based): 0 until the start, then linear to ``alpha_max``
        over ``length * total`` steps."""
        if self.start is None or step < self.start:
            return 0.0
        n = length * self.total
        return alpha_max if n <= 0 else alpha_max * min(1.0, (step - self.start) / n)

    def state_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "sum": self._sum,
            "count": self._count,
            "window_means": list(self.window_means),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state["start"]
        self._sum, self._count = float(state["sum"]), int(state["count"])
        self.window_means = list(state["window_means"])


__all__ = ["EMATeacher", "RampSchedule", "elastic_grid", "strong_view", "warp"]
