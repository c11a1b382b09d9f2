"""Two-stage p-diff / COND P-DIFF training on the shared trainer: autoencoder, then latent DDPM.

Both stages are calls of :func:`hubtools.train.train`, so they get metrics.jsonl, a progress
bar, checkpoints and exact resume (re-running with the same ``output_dir`` continues). Noise,
timesteps and augmentation are drawn inside ``loss_fn`` (never in a dataset), which is what
keeps that resume exact. The denoiser's EMA copy is a checkpointed object and is what the
pipeline samples with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from hubtools.config import StrictModel
from hubtools.errors import ConfigError
from hubtools.paramgen.collect import CheckpointSet
from hubtools.paramgen.models import (
    ConditionEncoder,
    CondParamDenoiser,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
)
from hubtools.paramgen.pipelines import CondPDiffPipeline, PDiffPipeline
from hubtools.paramgen.spec import ParamSpecError
from hubtools.train import TrainConfig, TrainState, train


class PDiffTrainConfig(StrictModel):
    """Settings of both stages; defaults are the anchor's "medium" preset (spec, sections 2.2-2.4)."""

    output_dir: Path
    seed: int = 0
    fold_rate: int = Field(5, ge=2)
    kernel_size: int = Field(5, ge=1)
    enc_channels: tuple[int, int, int, int] = (4, 4, 4, 4)
    dec_channels: tuple[int, int, int, int] = (4, 256, 256, 8)
    input_noise: float | tuple[float, float] = 0.001
    latent_noise: float | tuple[float, float] = 0.1
    ae_steps: int = Field(30000, ge=1)
    ae_lr: float = Field(1e-3, gt=0)
    ae_weight_decay: float = Field(2e-6, ge=0)
    denoiser_channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    ddpm_steps: int = Field(30000, ge=1)
    ddpm_lr: float = Field(1e-3, gt=0)
    ddpm_weight_decay: float = Field(2e-6, ge=0)
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    batch_size: int | None = Field(None, ge=1, description="None: all K vectors in every step (the anchor)")
    num_train_timesteps: int = Field(1000, ge=2)
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    log_every: int = Field(50, ge=1)
    save_every: int | None = Field(None, ge=1)
    pdiff_normalization: str = Field(
        "none", pattern="^(global|none)$", description="p-diff; the anchor uses none"
    )
    # COND P-DIFF only
    normalization: str = Field("global", pattern="^(global|per_task|none)$")
    cond_embed_dim: int = Field(16, ge=1)
    cond_hidden_dim: int = Field(64, ge=1)
    injection: str = Field("concat", pattern="^(concat|add)$")


def make_scheduler(cfg: PDiffTrainConfig) -> DDPMScheduler:
    """The anchor's DDPM: linear betas, epsilon prediction, sigma_t^2 = beta_t, x0 clipped to [-1, 1]."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
        variance_type="fixed_large",
        clip_sample=True,
        clip_sample_range=1.0,
    )


def _stage_config(cfg: PDiffTrainConfig, stage: str, steps: int, lr: float, wd: float, n: int) -> TrainConfig:
    return TrainConfig(
        output_dir=cfg.output_dir / stage,
        seed=cfg.seed,
        max_steps=steps,
        batch_size=min(cfg.batch_size or n, n),
        lr=lr,
        weight_decay=wd,
        optimizer="adamw",
        log_every=cfg.log_every,
        save_every=cfg.save_every,
        keep_last=1,
    )


def train_autoencoder(
    params: torch.Tensor, cfg: PDiffTrainConfig, param_spec: Mapping[str, Any] | None = None
) -> tuple[ParamAutoencoder, dict[str, float]]:
    """Stage 1: reconstruct [K, d] vectors through noisy latents (mean MSE)."""
    torch.manual_seed(cfg.seed)
    ae = ParamAutoencoder(
        in_dim=params.shape[1],
        fold_rate=cfg.fold_rate,
        kernel_size=cfg.kernel_size,
        enc_channels=cfg.enc_channels,
        dec_channels=cfg.dec_channels,
        input_noise=cfg.input_noise,
        latent_noise=cfg.latent_noise,
        param_spec=dict(param_spec) if param_spec is not None else None,
    )

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(model(batch[0]), batch[0])

    start = time.perf_counter()
    result = train(
        ae,
        TensorDataset(params),
        loss_fn,
        _stage_config(cfg, "autoencoder", cfg.ae_steps, cfg.ae_lr, cfg.ae_weight_decay, len(params)),
    )
    ae = result.model.eval()
    with torch.no_grad():
        recon_mse = float(F.mse_loss(ae.decode(ae.encode(params)), params))
    return ae, {"ae_train_s": time.perf_counter() - start, "ae_recon_mse": recon_mse}


class _CondModel(nn.Module):
    """Condition encoder and denoiser trained jointly as one module (one optimizer, one checkpoint)."""

    def __init__(self, condition_encoder: ConditionEncoder, denoiser: CondParamDenoiser) -> None:
        super().__init__()
        self.condition_encoder = condition_encoder
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, t, self.condition_encoder(cond))


def _train_ddpm(
    model: nn.Module,
    dataset: TensorDataset,
    scheduler: DDPMScheduler,
    cfg: PDiffTrainConfig,
    conditional: bool,
) -> tuple[nn.Module, float]:
    def loss_fn(m: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        z = batch[0]
        noise = torch.randn_like(z)
        # One timestep per sample; the anchor indexed the embedding with sample 0's t for the whole batch.
        t = torch.randint(0, scheduler.config.num_train_timesteps, (z.shape[0],), device=z.device)
        x_t = scheduler.add_noise(z, noise, t)
        eps = m(x_t, t, batch[1]) if conditional else m(x_t, t)
        return F.mse_loss(eps, noise, reduction="none").flatten(1).mean(1).mean()

    ema = EMAModel(model.parameters(), decay=cfg.ema_decay)

    def on_step_end(state: TrainState) -> None:
        ema.step(state.model.parameters())

    start = time.perf_counter()
    stage = _stage_config(cfg, "denoiser", cfg.ddpm_steps, cfg.ddpm_lr, cfg.ddpm_weight_decay, len(dataset))
    result = train(model, dataset, loss_fn, stage, on_step_end=on_step_end, checkpoint_objects=[ema])
    model = result.model
    ema.copy_to(model.parameters())
    return model.eval(), time.perf_counter() - start


def train_pdiff(checkpoints: CheckpointSet, cfg: PDiffTrainConfig) -> tuple[PDiffPipeline, dict[str, float]]:
    """Train the autoencoder on all K vectors, then the DDPM on their (noise-free) latents."""
    if len(checkpoints) < 2:
        raise ConfigError(f"p-diff needs at least 2 checkpoints, got {len(checkpoints)}")
    normalizer = None
    params = checkpoints.params
    if cfg.pdiff_normalization == "global":
        normalizer = ParamNormalizer(dim=params.shape[1], mode="global").fit(params)
        with torch.no_grad():
            params = normalizer.normalize(params)
    ae, stats = train_autoencoder(params, cfg, checkpoints.spec.to_dict())
    with torch.no_grad():
        latents = ae.encode(params).reshape(len(params), 1, -1)
    torch.manual_seed(cfg.seed)
    denoiser = ParamDenoiser(
        latent_dim=latents.shape[-1],
        channels=cfg.denoiser_channels,
        num_train_timesteps=cfg.num_train_timesteps,
    )
    scheduler = make_scheduler(cfg)
    denoiser, seconds = _train_ddpm(denoiser, TensorDataset(latents), scheduler, cfg, conditional=False)
    stats["ddpm_train_s"] = seconds
    return PDiffPipeline(autoencoder=ae, denoiser=denoiser, scheduler=scheduler, normalizer=normalizer), stats


def train_cond_pdiff(
    task_sets: Mapping[str, CheckpointSet],
    conditions: torch.Tensor | None,
    cfg: PDiffTrainConfig,
    text_encoder: nn.Module | None = None,
    tokenizer: Any = None,
) -> tuple[CondPDiffPipeline, dict[str, float]]:
    """COND P-DIFF on the checkpoints of several tasks (same ParamSpec for all).

    ``conditions`` [num_tasks, cond_dim] are the tasks' condition vectors (e.g. MiniLM
    embeddings of their descriptions) in ``task_sets`` order; ``None`` learns one embedding
    per task instead (then only training tasks can be generated).
    """
    names: Sequence[str] = list(task_sets)
    if len(names) < 1:
        raise ConfigError("COND P-DIFF needs at least one task")
    spec = task_sets[names[0]].spec
    for name in names[1:]:
        if task_sets[name].spec != spec:
            raise ParamSpecError(
                f"task {name!r} has a different parameter layout ({task_sets[name].spec}) than "
                f"{names[0]!r} ({spec}): all tasks must share one ParamSpec"
            )
    params = torch.cat([task_sets[n].params for n in names])
    task_ids = torch.cat([torch.full((len(task_sets[n]),), i, dtype=torch.long) for i, n in enumerate(names)])
    normalizer = ParamNormalizer(dim=spec.dim, mode=cfg.normalization, task_names=list(names)).fit(
        params, task_ids
    )
    with torch.no_grad():
        normed = normalizer.normalize(params, task_ids if cfg.normalization == "per_task" else None)
    ae, stats = train_autoencoder(normed, cfg, spec.to_dict())
    with torch.no_grad():
        latents = ae.encode(normed).reshape(len(normed), 1, -1)
    torch.manual_seed(cfg.seed)
    if conditions is None:
        cond_encoder = ConditionEncoder(mode="embedding", embed_dim=cfg.cond_embed_dim, num_tasks=len(names))
        cond_inputs = task_ids
    else:
        if conditions.shape[0] != len(names):
            raise ConfigError(f"{conditions.shape[0]} condition vectors for {len(names)} tasks")
        cond_encoder = ConditionEncoder(
            mode="mlp",
            cond_dim=conditions.shape[1],
            embed_dim=cfg.cond_embed_dim,
            hidden_dim=cfg.cond_hidden_dim,
            num_tasks=len(names),
        )
        cond_encoder.task_conditions.copy_(conditions.float())
        cond_inputs = conditions.float()[task_ids]
    denoiser = CondParamDenoiser(
        latent_dim=latents.shape[-1],
        cond_embed_dim=cfg.cond_embed_dim,
        channels=cfg.denoiser_channels,
        num_train_timesteps=cfg.num_train_timesteps,
        injection=cfg.injection,
    )
    scheduler = make_scheduler(cfg)
    model, seconds = _train_ddpm(
        _CondModel(cond_encoder, denoiser),
        TensorDataset(latents, cond_inputs),
        scheduler,
        cfg,
        conditional=True,
    )
    stats["ddpm_train_s"] = seconds
    pipe = CondPDiffPipeline(
        autoencoder=ae,
        denoiser=model.denoiser,
        condition_encoder=model.condition_encoder,
        normalizer=normalizer,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    return pipe, stats
