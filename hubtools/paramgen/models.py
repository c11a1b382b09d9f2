"""The trainable components of p-diff / COND P-DIFF, as diffusers ``ModelMixin`` + ``ConfigMixin`` classes.

Being diffusers models is what lets a pipeline holding them ``save_pretrained`` /
``from_pretrained`` / ``push_to_hub``. diffusers resolves a non-diffusers component by looking
up the names ``ModelMixin`` (and ``SchedulerMixin``) in the namespace of the module that
defines it, so this module imports them by those names.

A saved pipeline carries a byte-for-byte copy of this file in each of these components'
folders, and diffusers loads it from there as remote code (``trust_remote_code=True``) where
hubtools is not installed: so it imports only torch and diffusers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ConditionEncoder",
    "CondParamDenoiser",
    "ConfigMixin",
    "ModelMixin",
    "ParamAutoencoder",
    "ParamDenoiser",
    "ParamNormalizer",
    "interpolate_noise",
]


def interpolate_noise(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """p-diff's noise augmentation: ``(1 - s) * x + s * eps``, an interpolation, not an addition.

    A two-element ``sigma`` draws ``s ~ U(lo, hi)`` once per call (the anchor's behaviour).
    """
    if isinstance(sigma, Sequence) and not isinstance(sigma, str):
        lo, hi = float(sigma[0]), float(sigma[1])
        s = lo + (hi - lo) * float(torch.rand(()))
    else:
        s = float(sigma)
    if s == 0.0:
        return x
    return (1.0 - s) * x + s * torch.randn_like(x)


class ParamAutoencoder(ModelMixin, ConfigMixin):
    """1-D conv autoencoder from a flat parameter vector [B, d] to a latent [B, C, l] in (-1, 1).

    Encoder: 4 blocks, each a "same"-padded conv then a stride-``fold_rate`` conv, so the
    padded length ``L = l * fold_rate**4`` with ``l = ceil(d / fold_rate**4)`` folds to ``l``
    exactly (the anchor's unpadded convs crash for ``d < 625``).
    The decoder mirrors it with transposed convs. ``param_spec`` (a :class:`ParamSpec` dict)
    is carried in the config so a saved pipeline knows which tensors its vectors fill.
    """

    @register_to_config
    def __init__(
        self,
        in_dim: int,
        fold_rate: int = 5,
        kernel_size: int = 5,
        enc_channels: Sequence[int] = (4, 4, 4, 4),
        dec_channels: Sequence[int] = (4, 256, 256, 8),
        input_noise: float | Sequence[float] = 0.001,
        latent_noise: float | Sequence[float] = 0.1,
        param_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if in_dim < 1 or fold_rate < 2 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ParamAutoencoder: need in_dim >= 1, fold_rate >= 2 and an odd kernel_size, got "
                f"{in_dim}, {fold_rate}, {kernel_size}"
            )
        if len(enc_channels) != 4 or len(dec_channels) != 4:
            raise ValueError("ParamAutoencoder: enc_channels and dec_channels need 4 entries each")
        self.latent_length = max(1, math.ceil(in_dim / fold_rate**4))
        self.padded_dim = self.latent_length * fold_rate**4
        k, f = kernel_size, fold_rate
        enc_in = [1, *enc_channels[:-1]]
        self.encoder = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(enc_in, enc_channels, strict=True)):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU()]
            layers += [
                nn.InstanceNorm1d(c_in),
                nn.Conv1d(c_in, c_out, k, padding=k // 2),
                nn.LeakyReLU(),
                nn.InstanceNorm1d(c_out),
                nn.Conv1d(c_out, c_out, f, stride=f),
            ]
            self.encoder.append(nn.Sequential(*layers))
        dec_out = [*dec_channels[1:], 1]
        self.decoder = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(dec_channels, dec_out, strict=True)):
            # Instance-normalising a length-1 latent would zero it (and torch refuses it): skip that one norm.
            first_norm = nn.Identity() if (i == 0 and self.latent_length == 1) else nn.InstanceNorm1d(c_in)
            self.decoder.append(
                nn.Sequential(
                    nn.LeakyReLU(),
                    first_norm,
                    nn.ConvTranspose1d(c_in, c_in, f, stride=f),
                    nn.LeakyReLU(),
                    nn.InstanceNorm1d(c_in),
                    nn.Conv1d(c_in, c_out, k, padding=k // 2),
                )
            )
        # The first decoder block needs the latent's channel count.
        if dec_channels[0] != enc_channels[-1]:
            self.latent_proj: nn.Module = nn.Conv1d(enc_channels[-1], dec_channels[0], 1)
        else:
            self.latent_proj = nn.Identity()

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (int(self.config.enc_channels[-1]), self.latent_length)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.config.in_dim:
            raise ValueError(
                f"ParamAutoencoder expects [batch, {self.config.in_dim}] vectors, got {tuple(x.shape)}"
            )
        return F.pad(x, (0, self.padded_dim - x.shape[1])).unsqueeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free latent [B, C, l] of vectors [B, d] (what the diffusion stage learns)."""
        h = self._pad(x)
        for block in self.encoder:
            h = block(h)
        return torch.tanh(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Vectors [B, d] from latents [B, C, l]; the padding is cropped."""
        h = self.latent_proj(z)
        for block in self.decoder:
            h = block(h)
        return h[:, 0, : self.config.in_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training reconstruction with p-diff's input and latent noise (interpolation, then clamp)."""
        z = self.encode(interpolate_noise(x, self.config.input_noise))
        z = interpolate_noise(z, self.config.latent_noise).clamp(-1.0, 1.0)
        return self.decode(z)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.InstanceNorm1d(c_in),
        nn.Conv1d(c_in, c_out, 3, padding=1),
        nn.LeakyReLU(),
        nn.InstanceNorm1d(c_out),
        nn.Conv1d(c_out, c_out, 3, padding=1),
    )


class _ConvStack(nn.Module):
    """The anchor's 1-D denoiser body: 4 encoder + 4 decoder blocks, additive skips, no down-sampling.

    ``emb`` [B, 1, L] (time, and for COND P-DIFF the condition) is added to the input of every
    block; it is looked up per sample, never broadcast from sample 0 (the anchor's bug).
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c = list(channels)
        if len(c) != 4:
            raise ValueError(f"denoiser channels need 4 entries, got {c}")
        self.enc = nn.ModuleList([_block(a, b) for a, b in zip([1, *c[:-1]], c, strict=True)])
        self.dec = nn.ModuleList([_block(a, b) for a, b in zip(c[::-1], [*c[::-1][1:], 1], strict=True)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.enc:
            h = block(h + emb)
            skips.append(h)
        for i, block in enumerate(self.dec):
            h = block(h + emb)
            if i < 3:
                h = h + skips[2 - i]
        return h


def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} timesteps for a batch of {batch}")
    return t


class ParamDenoiser(ModelMixin, ConfigMixin):
    """epsilon-prediction network on flattened latents [B, 1, L_z] with a per-sample timestep embedding."""

    @register_to_config
    def __init__(
        self, latent_dim: int, channels: Sequence[int] = (64, 128, 256, 512), num_train_timesteps: int = 1000
    ) -> None:
        super().__init__()
        self.time_embedding = nn.Embedding(num_train_timesteps, latent_dim)
        self.body = _ConvStack(channels)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        """``sample`` [B, 1, L_z] (or [B, L_z]); ``timestep`` a scalar or one per sample."""
        x = sample.reshape(sample.shape[0], 1, -1)
        emb = self.time_embedding(_timesteps(timestep, x.shape[0], x.device)).unsqueeze(1)
        return self.body(x, emb).reshape(sample.shape)


class ConditionEncoder(ModelMixin, ConfigMixin):
    """Task condition -> embedding [B, D_c]: a learned table (``embedding``) or an MLP on a condition vector.

    An external text embedding (e.g. a MiniLM sentence vector of the task description) is just
    a condition vector for ``mode="mlp"``; that is what lets an unseen description be used.
    """

    @register_to_config
    def __init__(
        self,
        mode: str = "mlp",
        cond_dim: int = 384,
        embed_dim: int = 16,
        hidden_dim: int = 64,
        num_tasks: int = 0,
    ) -> None:
        super().__init__()
        if mode == "embedding":
            if num_tasks < 1:
                raise ValueError("ConditionEncoder(mode='embedding') needs num_tasks >= 1")
            self.net: nn.Module = nn.Embedding(num_tasks, embed_dim)
        elif mode == "mlp":
            self.net = nn.Sequential(
                nn.Linear(cond_dim, hidden_dim), nn.LeakyReLU(), nn.Linear(hidden_dim, embed_dim)
            )
            # The training tasks' condition vectors, so a saved pipeline can be asked for task i by index.
            self.register_buffer("task_conditions", torch.zeros(num_tasks, cond_dim))
        else:
            raise ValueError(f"ConditionEncoder mode must be 'embedding' or 'mlp', got {mode!r}")

    def condition_for_tasks(self, task_ids: torch.Tensor) -> torch.Tensor:
        """The input this encoder takes for known task indices (the index, or the stored condition vector)."""
        task_ids = task_ids.long().reshape(-1)
        n = self.config.num_tasks
        if n == 0 or int(task_ids.min()) < 0 or int(task_ids.max()) >= n:
            raise ValueError(f"task index {task_ids.tolist()} out of range: this encoder knows {n} tasks")
        if self.config.mode == "embedding":
            return task_ids
        return self.task_conditions[task_ids]

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        if self.config.mode == "embedding":
            return self.net(condition.long().reshape(-1))
        if condition.dim() != 2 or condition.shape[1] != self.config.cond_dim:
            raise ValueError(
                f"condition vectors must be [batch, {self.config.cond_dim}], got {tuple(condition.shape)}"
            )
        return self.net(condition.float())


class CondParamDenoiser(ModelMixin, ConfigMixin):
    """COND P-DIFF denoiser: the condition embedding joins the latent along the length axis ("concat").

    ``injection="add"`` instead projects it to the latent length and adds it with the time
    embedding at every block (the vision code's variant).
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int,
        cond_embed_dim: int = 16,
        channels: Sequence[int] = (64, 128, 256, 512),
        num_train_timesteps: int = 1000,
        injection: str = "concat",
    ) -> None:
        super().__init__()
        if injection not in ("concat", "add"):
            raise ValueError(f"injection must be 'concat' or 'add', got {injection!r}")
        length = latent_dim + cond_embed_dim if injection == "concat" else latent_dim
        self.time_embedding = nn.Embedding(num_train_timesteps, length)
        self.body = _ConvStack(channels)
        if injection == "concat":
            self.out = nn.Linear(length, latent_dim)
        else:
            self.cond_proj = nn.Linear(cond_embed_dim, latent_dim)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, cond_embedding: torch.Tensor
    ) -> torch.Tensor:
        x = sample.reshape(sample.shape[0], 1, -1)
        emb = self.time_embedding(_timesteps(timestep, x.shape[0], x.device)).unsqueeze(1)
        c = cond_embedding.reshape(x.shape[0], 1, -1).to(x.dtype)
        if self.config.injection == "concat":
            h = self.body(torch.cat([x, c], dim=2), emb)
            out = self.out(h)
        else:
            out = self.body(x, emb + self.cond_proj(c))
        return out.reshape(sample.shape)


class ParamNormalizer(ModelMixin, ConfigMixin):
    """Per-coordinate z-score of parameter vectors: global, per task, or none (persistent buffers).

    COND P-DIFF's anchor normalises per task, which makes the condition nearly irrelevant
    (de-normalising with a task's statistics already gives its mean checkpoint); ``global`` is
    the default so the condition has to carry the task.
    """

    @register_to_config
    def __init__(
        self, dim: int, mode: str = "global", task_names: Sequence[str] = (), min_std: float = 1e-8
    ) -> None:
        super().__init__()
        if mode not in ("global", "per_task", "none"):
            raise ValueError(f"normalization must be 'global', 'per_task' or 'none', got {mode!r}")
        rows = max(1, len(task_names)) if mode == "per_task" else 1
        self.register_buffer("mean", torch.zeros(rows, dim))
        self.register_buffer("std", torch.ones(rows, dim))

    def fit(self, params: torch.Tensor, task_ids: torch.Tensor | None = None) -> ParamNormalizer:
        """Set the statistics from vectors [K, d] (and their task index for ``per_task``)."""
        if self.config.mode == "none":
            return self
        with torch.no_grad():
            if self.config.mode == "global":
                self.mean.copy_(params.mean(0, keepdim=True))
                self.std.copy_(params.std(0, keepdim=True).nan_to_num(0.0).clamp_min(self.config.min_std))
            else:
                if task_ids is None:
                    raise ValueError("per_task normalisation needs the task index of every vector")
                for i in range(self.mean.shape[0]):
                    rows = params[task_ids == i]
                    if len(rows) == 0:
                        raise ValueError(f"per_task normalisation: task {i} has no vectors")
                    self.mean[i] = rows.mean(0)
                    self.std[i] = rows.std(0).nan_to_num(0.0).clamp_min(self.config.min_std)
        return self

    def _rows(self, task_ids: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.mode != "per_task":
            return self.mean, self.std
        if task_ids is None:
            raise ValueError(
                "per_task normalisation needs a task index: unseen tasks have no statistics "
                "(use normalization='global' to condition on new task descriptions)"
            )
        idx = torch.as_tensor(task_ids, device=self.mean.device).long().reshape(-1).expand(n)
        return self.mean[idx], self.std[idx]

    def normalize(self, params: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        mean, std = self._rows(task_ids, params.shape[0])
        return (params - mean) / std

    def denormalize(self, params: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        mean, std = self._rows(task_ids, params.shape[0])
        return params * std + mean
