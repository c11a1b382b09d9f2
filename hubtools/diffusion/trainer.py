"""DDPM training of a diffusers ``UNet2DModel`` with a SpeeD (or uniform) timestep sampler.

One optimiser step (spec 2.7): x0 in [-1, 1]; eps ~ N(0, I); (t, w) = sampler.sample(B);
x_t = scheduler.add_noise(x0, eps, t); loss = mean_b(w_b * mean_CHW((unet(x_t, t) - eps)^2)).
Everything else (accumulation, clipping, AdamW, warm-up, checkpoints with exact resume,
metrics.jsonl, several processes) is the shared loop :func:`hubtools.train.train`; the EMA
of the weights is updated after every step and is what gets saved, as a ``DDPMPipeline``.

Randomness: eps and t of every micro-batch come from a CPU generator seeded by
(seed, process index, micro-batch counter), and the counter is checkpointed, so a resumed
run draws exactly what an uninterrupted one would, and every process draws its own t.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from pydantic import Field, field_validator, model_validator
from torch.utils.data import Dataset

from hubtools.diffusion.speed import SAMPLER_NAMES, make_timestep_sampler
from hubtools.hub.artifacts import atomic_dir
from hubtools.hub.cards import render_card
from hubtools.train import METRICS_FILE, TrainConfig, TrainState, train

PIPELINE_DIR = "pipeline"
SAMPLES_FILE = "samples.png"
# Held-out denoising loss on a fixed grid t = 10, 30, ..., 990 (spec section 4).
_EVAL_GRID_START, _EVAL_GRID_STEP = 10, 20
_EVAL_NOISE_SEED = 4321
_EVAL_BATCH = 512


class DDPMTrainConfig(TrainConfig):
    """``hubtools diffusion train`` settings: the shared :class:`TrainConfig` plus data, UNet, schedule,
    sampler and EMA. Defaults follow the spec's small-data setting (AdamW 2e-4, constant LR after
    500 warm-up steps so that "steps to a quality" does not depend on the budget, clip 1.0)."""

    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(500, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)

    dataset: str = "digits"
    split: str = "train"
    image_column: str = "image"
    limit: int | None = Field(None, ge=1, description="use only the first N images")
    image_size: int = Field(16, ge=4)
    channels: Literal[1, 3] = 1

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    attention_blocks: tuple[int, ...] = Field(
        (1,), description="indices of the UNet levels with self-attention"
    )
    layers_per_block: int = Field(1, ge=1)
    norm_num_groups: int = Field(16, ge=1)

    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0)

    sampler: str = "speed"
    k: float = 5.0
    tau: int | None = None
    lam: float = 0.6
    weight_mode: Literal["paper", "official"] = "paper"
    normalize_weights: bool = False

    ema_decay: float = Field(0.999, gt=0, lt=1)
    eval_examples: int = Field(256, ge=1, description="images for the held-out denoising loss")
    num_samples: int = Field(16, ge=1, description="images in the saved sample grid")
    sample_steps: int = Field(1000, ge=1, description="DDPM steps when drawing the sample grid")
    push_to_hub: str | None = None
    private: bool = False

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLER_NAMES:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}")
        return value

    @model_validator(mode="after")
    def _check_model(self) -> DDPMTrainConfig:
        levels = len(self.block_out_channels)
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"every block_out_channels value must be a multiple of norm_num_groups={self.norm_num_groups}, "
                f"got {self.block_out_channels}"
            )
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2^{levels - 1} for {levels} levels"
            )
        if any(not 0 <= i < levels for i in self.attention_blocks):
            raise ValueError(f"attention_blocks {self.attention_blocks} must index the {levels} UNet levels")
        return self

    def sampler_kwargs(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "tau": self.tau,
            "lam": self.lam,
            "weight_mode": self.weight_mode,
            "normalize_weights": self.normalize_weights,
        }


def build_unet(config: DDPMTrainConfig) -> UNet2DModel:
    """A small unconditional ``UNet2DModel``; diffusers' default widths (224..896) are far too big for CPU."""
    attn = set(config.attention_blocks)
    levels = range(len(config.block_out_channels))
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=config.channels,
        out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=config.block_out_channels,
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(levels)),
        norm_num_groups=config.norm_num_groups,
    )


def build_scheduler(config: DDPMTrainConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
    )


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run a small CPU model on one torch thread, then restore the setting.

    A UNet this small gains little from a second intra-op thread, and on a shared machine
    OpenMP threads that spin-wait for each other make a step up to 10x slower; two runs
    with one thread each use 2 cores better than one run with two.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _ImageTensorDataset(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class DrawCounter:
    """Counts micro-batches so that each one's noise and timesteps have their own seed; checkpointed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0

    def next_generator(self) -> torch.Generator:
        key = np.random.SeedSequence([self.seed, PartialState().process_index, self.count])
        self.count += 1
        return torch.Generator().manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> 1))

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.count = int(state["count"])


def ddpm_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    timesteps: torch.Tensor,
    weights: torch.Tensor,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SpeeD's loss (spec 2.5): mean_b(w_b * L_b), L_b = per-sample mean of (eps_hat - eps)^2, in float32.

    Returns (weighted loss, per-sample L) so a caller can log the unweighted MSE too.
    """
    x_t = scheduler.add_noise(x0, noise, timesteps)
    pred = model(x_t, timesteps).sample.float()
    per_sample = (pred - noise.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
    return (weights.float() * per_sample).mean(), per_sample


@torch.no_grad()
def heldout_mse(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    tau: int,
    grid_step: int = _EVAL_GRID_STEP,
) -> dict[str, float]:
    """Denoising loss with *uniform* t weighting on a fixed t grid and fixed noise: mean, t<tau, t>=tau, deciles.

    It is the uniform arm's own objective, so it favours the baseline; use it as a
    diagnostic split by t, not as the quality criterion (spec 3).
    """
    T = scheduler.config.num_train_timesteps
    grid = torch.arange(min(_EVAL_GRID_START, T - 1), T, max(1, grid_step * T // 1000))
    device = next(unet.parameters()).device
    n = images.shape[0]
    # Every (t, image) pair once, with noise fixed by a seed, in batches of whole t values.
    x0 = images.repeat(len(grid), *([1] * (images.ndim - 1)))
    timesteps = grid.repeat_interleave(n)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(_EVAL_NOISE_SEED))
    per_sample = []
    chunk = max(n, (_EVAL_BATCH // n) * n)
    for i in range(0, x0.shape[0], chunk):
        t = timesteps[i : i + chunk].to(device)
        _, mse = ddpm_loss(
            unet,
            scheduler,
            x0[i : i + chunk].to(device),
            t,
            torch.ones(t.shape, device=device),
            noise[i : i + chunk].to(device),
        )
        per_sample.append(mse.cpu())
    per_t = torch.cat(per_sample).view(len(grid), n).mean(1).tolist()
    per_t_arr, grid_np = np.array(per_t), grid.numpy()
    out = {
        "heldout_mse": float(per_t_arr.mean()),
        "heldout_mse_lt_tau": float(per_t_arr[grid_np < tau].mean())
        if (grid_np < tau).any()
        else float("nan"),
        "heldout_mse_ge_tau": float(per_t_arr[grid_np >= tau].mean())
        if (grid_np >= tau).any()
        else float("nan"),
    }
    deciles = np.minimum(grid_np * 10 // T, 9)
    for d in range(10):
        if (deciles == d).any():
            out[f"heldout_mse_d{d}"] = float(per_t_arr[deciles == d].mean())
    return out


@dataclass
class DDPMTrainOutput:
    """The EMA UNet, its scheduler, the saved pipeline folder and the last metrics of the run."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    pipeline_dir: Path
    metrics: dict[str, float]
    step: int


def train_ddpm(
    config: DDPMTrainConfig,
    images: torch.Tensor,
    *,
    eval_images: torch.Tensor | None = None,
    quality_fn: Callable[[UNet2DModel, DDPMScheduler], Mapping[str, float]] | None = None,
    save: bool = True,
    zoo_fields: Mapping[str, str] | None = None,
) -> DDPMTrainOutput:
    """Train on ``images`` ([N, C, S, S] in [-1, 1]) and save ``OUTPUT/pipeline`` (the pushable repo folder).

    Every evaluation (``eval_every`` steps and at the end) scores the EMA weights: the
    held-out denoising loss on ``eval_images`` (default: the first ``eval_examples`` training
    images) and, if given, ``quality_fn(ema_unet, scheduler)`` (e.g. the benchmark's FID).
    ``save=False`` skips the pipeline folder (the benchmark keeps only curves). ``zoo_fields``
    (modality, anatomy, task, reproduce) go to the card for the model zoo.
    """
    set_seed(config.seed)  # the initial weights: the same for every sampler under one seed (paired design)
    unet = build_unet(config)
    scheduler = build_scheduler(config)
    sampler = make_timestep_sampler(config.sampler, scheduler, **config.sampler_kwargs())
    tau = getattr(getattr(sampler, "config", None), "tau", None) or round(0.7 * config.num_train_timesteps)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    counter = DrawCounter(config.seed)
    held_out = (eval_images if eval_images is not None else images[: config.eval_examples]).clone()

    def loss_fn(model: torch.nn.Module, x0: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen = counter.next_generator()
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        timesteps, weights = sampler.sample(x0.shape[0], device=x0.device, generator=gen)
        loss, per_sample = ddpm_loss(model, scheduler, x0, timesteps, weights, noise)
        return loss, {"mse": per_sample.detach().mean()}

    def on_step_end(state: TrainState) -> None:
        if ema.shadow_params[0].device != state.accelerator.device:
            ema.to(state.accelerator.device)
        ema.step(state.model.parameters())

    def eval_fn(state: TrainState) -> dict[str, float]:
        ema_unet.to(state.accelerator.device)
        ema.copy_to(ema_unet.parameters())
        metrics = heldout_mse(ema_unet, scheduler, held_out, tau)
        if quality_fn is not None:
            metrics.update(quality_fn(ema_unet, scheduler))
        return metrics

    result = train(
        unet,
        _ImageTensorDataset(images),
        loss_fn,
        config,
        eval_fn=eval_fn,
        on_step_end=on_step_end,
        checkpoint_objects=[ema, counter],
    )
    ema_unet.to("cpu")
    ema.copy_to(ema_unet.parameters())
    pipeline_dir = Path(config.output_dir) / PIPELINE_DIR
    if save and PartialState().is_main_process:
        save_pipeline(
            config, ema_unet, scheduler, sampler, result.metrics, result.step, pipeline_dir, zoo_fields
        )
        if config.push_to_hub:
            from hubtools.hub.publish import push_artifact

            push_artifact(pipeline_dir, config.push_to_hub, private=config.private)
    return DDPMTrainOutput(ema_unet, scheduler, pipeline_dir, result.metrics, result.step)


def save_pipeline(
    config: DDPMTrainConfig,
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    sampler: Any,
    metrics: Mapping[str, float],
    step: int,
    folder: Path,
    zoo_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write the repo folder whole or not at all: DDPMPipeline, sampler config, metrics, sample grid, card."""
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    with atomic_dir(folder) as tmp:
        pipe.save_pretrained(tmp)
        sampler.save_config(tmp)
        metrics_src = Path(config.output_dir) / METRICS_FILE
        if metrics_src.is_file():
            shutil.copyfile(metrics_src, tmp / METRICS_FILE)
        save_sample_grid(pipe, tmp / SAMPLES_FILE, config.num_samples, config.sample_steps, seed=config.seed)
        scores = {
            k: round(float(v), 6)
            for k, v in metrics.items()
            if k.startswith("heldout_mse") and np.isfinite(v)
        }
        speed = {
            k: v
            for k, v in sampler.config.items()
            if not k.startswith("_") and k not in ("betas", "alphas_cumprod")
        }
        card = render_card(
            "diffusion_model",
            card_data={"license": "apache-2.0"},
            metrics={
                "task_type": "unconditional-image-generation",
                "dataset": {"type": config.dataset, "name": config.dataset, "split": config.split},
                "values": scores,
            }
            if scores
            else None,
            model_name=f"DDPM on {config.dataset} ({config.sampler} timestep sampler)",
            repo_id=config.push_to_hub,
            speed={"sampler": config.sampler, **speed},
            image_size=f"{config.image_size}x{config.image_size}, {config.channels} channel(s)",
            num_train_timesteps=config.num_train_timesteps,
            train_steps=step,
            training_data=f"`{config.dataset}` (split `{config.split}`, column `{config.image_column}`), "
            f"resized to {config.image_size}x{config.image_size}, scaled to [-1, 1].",
            hyperparameters={
                "batch_size": config.batch_size,
                "lr": config.lr,
                "warmup_steps": config.warmup_steps,
                "max_grad_norm": config.max_grad_norm,
                "ema_decay": config.ema_decay,
                "block_out_channels": list(config.block_out_channels),
                "seed": config.seed,
            },
            evaluation_notes="`heldout_mse*`: noise-prediction MSE of the EMA weights on a fixed t grid "
            "(10, 30, ..., 990) with fixed noise, uniform over t. `samples.png`: a grid of samples.",
            **(zoo_fields or {}),
        )
        card.save(tmp / "README.md")
        (tmp / "training_config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return folder


@torch.no_grad()
def save_sample_grid(pipe: DDPMPipeline, path: Path, num_samples: int, steps: int, seed: int = 0) -> Path:
    """Sample with the pipeline (fixed seed) and save the images as one PNG grid, upscaled to be seen."""
    from diffusers.utils import make_image_grid

    images = pipe(
        batch_size=num_samples, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps
    ).images
    cols = int(np.ceil(np.sqrt(num_samples)))
    rows = int(np.ceil(num_samples / cols))
    images = images + [images[0].copy().point(lambda _: 0)] * (rows * cols - num_samples)
    scale = max(1, 64 // images[0].width)
    grid = make_image_grid([im.resize((im.width * scale, im.height * scale), 0) for im in images], rows, cols)
    grid.save(path)
    return path
