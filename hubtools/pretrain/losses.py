"""DINOv2 self-supervised objectives: the DINO head, DINO (image-level) and iBOT (masked-patch) losses
with centring + sharpening (or Sinkhorn-Knopp), and the KoLeo spreading regulariser.

Each loss module owns its running centre as a buffer, so it is saved and restored with the teacher
that holds it (see :mod:`hubtools.pretrain.ssl`). Under several processes the centre statistics are
averaged over processes, as in DINOv2.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t = t / dist.get_world_size()
    return t


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class DINOHead(nn.Module):
    """MLP (Linear+GELU, no BN) -> bottleneck -> L2 normalise -> weight-normalised prototypes (no bias).

    The prototype matrix is normalised row-wise on every forward with magnitude fixed at 1 (DINO's
    ``weight_norm`` with ``weight_g`` = 1, not trained). Setting ``freeze_prototypes`` makes the prototype
    gradient exactly zero while keeping the parameter in the graph, so DDP sees it used (DINOv2 freezes
    the prototypes for the first epoch).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        self.freeze_prototypes = False
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        prototypes = self.prototypes
        if self.freeze_prototypes:
            prototypes = prototypes * 0 + prototypes.detach()
        return F.linear(x, F.normalize(prototypes, dim=1))


class _CenteredLoss(nn.Module):
    """Teacher-side centring and sharpening shared by the DINO and iBOT losses."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``softmax((z_t - c) / τ_t)``: centring prevents one prototype from dominating, sharpening
        (τ_t < τ_s) prevents the uniform collapse."""
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp normalisation (DINOv2's alternative to centring): equipartition over prototypes."""
        q = torch.exp(teacher_logits.float() / teacher_temp).t()  # K x B
        n_samples = _all_reduce_sum(torch.tensor(q.shape[1], device=q.device, dtype=q.dtype))
        k = q.shape[0]
        q = q / _all_reduce_sum(q.sum())
        for _ in range(n_iterations):
            q = q / _all_reduce_sum(q.sum(dim=1, keepdim=True))
            q = q / k
            q = q / q.sum(dim=0, keepdim=True)
            q = q / n_samples
        return (q * n_samples).t()

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """``c <- m·c + (1 - m)·mean_batch(z_t)`` (mean over all processes)."""
        batch_center = _all_reduce_mean(teacher_logits.float().mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def cross_entropy(
    teacher_probs: torch.Tensor, student_logits: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """``CE(p, z) = -Σ_k p_k · log softmax(z / τ_s)_k`` per row."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(dim=-1)


class DINOLoss(_CenteredLoss):
    """Image-level DINO loss over all (teacher global view, student view) pairs except same-view pairs.

    ``L = [Σ_local j Σ_global i CE(P_t^i, z_s^j) + Σ_{i≠i'} CE(P_t^i, z_s^i')] / (n_g·n_l + n_g·(n_g - 1))``,
    each CE averaged over the batch.
    """

    def forward(
        self, student_global: torch.Tensor, student_local: torch.Tensor | None, teacher_probs: torch.Tensor
    ) -> torch.Tensor:
        """``student_global`` (n_g, B, K) logits, ``student_local`` (n_l, B, K) or None, ``teacher_probs`` (n_g, B, K)."""
        total = student_global.new_zeros((), dtype=torch.float32)
        n_terms = 0
        for i, probs in enumerate(teacher_probs):
            for i2, logits in enumerate(student_global):
                if i2 != i:
                    total = total + cross_entropy(probs, logits, self.student_temp).mean()
                    n_terms += 1
            for logits in student_local if student_local is not None else ():
                total = total + cross_entropy(probs, logits, self.student_temp).mean()
                n_terms += 1
        return total / max(n_terms, 1)


class IBOTPatchLoss(_CenteredLoss):
    """Masked-patch loss: per masked patch CE(teacher patch probs, student patch logits), averaged within
    each image and summed over images, divided by the number of images (unmasked images count)."""

    def forward(
        self, student_masked_logits: torch.Tensor, teacher_masked_probs: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """``*_masked_*`` (M, K) rows for the True entries of ``masks`` (n_images, N) in row-major order."""
        per_patch = cross_entropy(teacher_masked_probs, student_masked_logits, self.student_temp)
        weights = (1.0 / masks.sum(dim=-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        return (per_patch * weights).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator: ``-mean_i log(‖x_i - x_nn(i)‖ + eps)`` on L2-normalised rows,
    nearest neighbour by maximum dot product excluding itself. Spreads features over the sphere."""
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()
