"""``PDiffPipeline`` and ``CondPDiffPipeline``: diffusers pipelines whose "images" are parameter vectors.

Sampling is plain ancestral DDPM on the autoencoder's latent (any diffusers scheduler with the
same config works, e.g. ``DDIMScheduler.from_config(pipe.scheduler.config)`` for a 50-step
path), with one p-diff detail diffusers' schedulers do not do: the latent is clamped to
[-1, 1] after every step, because the autoencoder's latents live in tanh's range.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from hubtools.paramgen.models import (
    ConditionEncoder,
    CondParamDenoiser,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
)
from hubtools.paramgen.spec import ParamSpec, ParamSpecError

Condition = int | str | Sequence[int] | Sequence[str] | torch.Tensor


@dataclass
class ParamGenOutput(BaseOutput):
    """``params`` [N, d]: generated vectors, de-normalised, in the order of the pipeline's ParamSpec."""

    params: torch.Tensor


class _ParamGenMixin:
    """What both pipelines share: the latent sampling loop and writing vectors into host copies."""

    autoencoder: ParamAutoencoder
    scheduler: SchedulerMixin

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any):
        """Load from a folder or a Hub repo id (snapshot first).

        diffusers' Hub code path refuses a component whose library is neither diffusers,
        transformers nor a ``.py`` file in the repo (``hubtools.paramgen.models`` is an
        installed module), while its local-folder path resolves imported modules fine; so a
        repo is downloaded with ``snapshot_download`` and loaded as a folder.
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            hub_keys = ("revision", "token", "cache_dir", "local_files_only", "force_download")
            hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
            path = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
        return super().from_pretrained(path, **kwargs)

    @property
    def param_spec(self) -> ParamSpec:
        data = self.autoencoder.config.param_spec
        if data is None:
            raise ParamSpecError("this pipeline's autoencoder carries no param_spec")
        return ParamSpec.from_dict(data)

    @torch.no_grad()
    def reconstruct(self, params: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Autoencoder round trip of vectors [N, d] (normalised and de-normalised like sampling): the AE's ceiling."""
        normalizer = getattr(self, "normalizer", None)
        x = normalizer.normalize(params, task_ids) if normalizer is not None else params
        x = self.autoencoder.decode(self.autoencoder.encode(x))
        return (normalizer.denormalize(x, task_ids) if normalizer is not None else x).float().cpu()

    def models_with(self, host: nn.Module, params: torch.Tensor) -> list[nn.Module]:
        """One deep copy of ``host`` per generated vector, each holding that vector (eval mode)."""
        spec = self.param_spec
        if params.dim() != 2 or params.shape[1] != spec.dim:
            raise ParamSpecError(
                f"generated params have shape {tuple(params.shape)}; the host subset needs [N, {spec.dim}]"
            )
        return [spec.model_with(host, p) for p in params]

    def _sample_latents(
        self, num: int, denoise, generator: torch.Generator | None, num_inference_steps: int, eta: float
    ) -> torch.Tensor:
        channels, length = self.autoencoder.latent_shape
        device = self.autoencoder.device
        x = randn_tensor((num, 1, channels * length), generator=generator, device=device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        extra = {"eta": eta} if "eta" in inspect.signature(self.scheduler.step).parameters else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            eps = denoise(x, t)
            x = self.scheduler.step(eps, t, x, generator=generator, **extra).prev_sample
            x = x.clamp(-1.0, 1.0)
        return x.reshape(num, channels, length)


def _check_num(num_models: int | None, num_samples: int | None) -> int:
    if num_models is not None and num_samples is not None and num_models != num_samples:
        raise ValueError("give num_models or num_samples (the same thing), not both")
    n = num_models if num_models is not None else (num_samples if num_samples is not None else 100)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_models must be a positive int, got {n!r}")
    return n


class PDiffPipeline(_ParamGenMixin, DiffusionPipeline):
    """p-diff: unconditional latent DDPM over a network's parameter subset.

    ``normalizer`` is optional: the anchor applies none, which works for tightly clustered
    checkpoints; a global z-score helps when coordinates differ in scale by orders of magnitude.
    """

    _optional_components = ["normalizer"]
    model_cpu_offload_seq = "denoiser->autoencoder"

    def __init__(
        self,
        autoencoder: ParamAutoencoder,
        denoiser: ParamDenoiser,
        scheduler: SchedulerMixin,
        normalizer: ParamNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            autoencoder=autoencoder, denoiser=denoiser, scheduler=scheduler, normalizer=normalizer
        )

    @torch.no_grad()
    def __call__(
        self,
        num_models: int | None = None,
        *,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 1000,
        eta: float = 0.0,
        return_dict: bool = True,
    ) -> ParamGenOutput | tuple[torch.Tensor]:
        """Generate ``num_models`` parameter vectors (``num_samples`` is the spec's name for the same)."""
        n = _check_num(num_models, num_samples)
        z = self._sample_latents(n, lambda x, t: self.denoiser(x, t), generator, num_inference_steps, eta)
        params = self.autoencoder.decode(z)
        if self.normalizer is not None:
            params = self.normalizer.denormalize(params)
        params = params.float().cpu()
        return ParamGenOutput(params=params) if return_dict else (params,)


class CondPDiffPipeline(_ParamGenMixin, DiffusionPipeline):
    """COND P-DIFF: latent DDPM over LoRA adapters, conditioned on a task.

    ``condition`` may be a training task's index or name, a task description (embedded by
    the optional ``text_encoder``/``tokenizer``: mean-pooled last hidden state), or condition
    vectors [1 or N, cond_dim] computed elsewhere.
    """

    _optional_components = ["text_encoder", "tokenizer"]
    model_cpu_offload_seq = "text_encoder->condition_encoder->denoiser->autoencoder"

    def __init__(
        self,
        autoencoder: ParamAutoencoder,
        denoiser: CondParamDenoiser,
        condition_encoder: ConditionEncoder,
        normalizer: ParamNormalizer,
        scheduler: SchedulerMixin,
        text_encoder: nn.Module | None = None,
        tokenizer=None,
    ) -> None:
        super().__init__()
        self.register_modules(
            autoencoder=autoencoder,
            denoiser=denoiser,
            condition_encoder=condition_encoder,
            normalizer=normalizer,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )

    @property
    def task_names(self) -> list[str]:
        return list(self.normalizer.config.task_names)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled text-encoder features [len(texts), hidden] (the COND P-DIFF task condition)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "a text condition needs the pipeline's text_encoder and tokenizer; this pipeline has "
                "none: pass a task index/name or condition vectors"
            )
        return embed_texts(self.text_encoder, self.tokenizer, texts)

    def _resolve(self, condition: Condition, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(condition-encoder input for n samples, task index for de-normalisation or None)."""
        names = self.task_names
        if isinstance(condition, torch.Tensor) and condition.is_floating_point():
            cond = condition.to(self.condition_encoder.device)
            if cond.dim() == 1:
                cond = cond.unsqueeze(0)
            if cond.shape[0] not in (1, n):
                raise ValueError(f"got {cond.shape[0]} condition vectors for {n} samples")
            return cond.expand(n, -1), None
        items = [condition] if isinstance(condition, (int, str)) else list(condition)
        if isinstance(condition, torch.Tensor):
            items = condition.reshape(-1).tolist()
        if len(items) not in (1, n):
            raise ValueError(f"got {len(items)} conditions for {n} samples")
        items = items * n if len(items) == 1 else items
        if all(isinstance(c, int) or (isinstance(c, str) and c in names) for c in items):
            ids = torch.tensor([c if isinstance(c, int) else names.index(c) for c in items])
            return self.condition_encoder.condition_for_tasks(ids.to(self.condition_encoder.device)), ids
        if all(isinstance(c, str) for c in items):
            return self.embed_text(items).to(self.condition_encoder.device), None
        raise ValueError(
            f"condition must be task indices, task names, descriptions or float vectors, got {condition!r}"
        )

    @torch.no_grad()
    def __call__(
        self,
        condition: Condition,
        num_models: int | None = None,
        *,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 1000,
        eta: float = 0.0,
        return_dict: bool = True,
    ) -> ParamGenOutput | tuple[torch.Tensor]:
        n = _check_num(num_models, num_samples)
        cond_input, task_ids = self._resolve(condition, n)
        cond_emb = self.condition_encoder(cond_input)
        z = self._sample_latents(
            n, lambda x, t: self.denoiser(x, t, cond_emb), generator, num_inference_steps, eta
        )
        params = self.normalizer.denormalize(self.autoencoder.decode(z), task_ids).float().cpu()
        return ParamGenOutput(params=params) if return_dict else (params,)


@torch.no_grad()
def embed_texts(
    text_encoder: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 128
) -> torch.Tensor:
    """Mean-pooled (attention-masked) last hidden states: the sentence embedding all-MiniLM-L6-v2 was trained for."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {k: v.to(text_encoder.device) for k, v in batch.items()}
    hidden = text_encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def ddim_copy(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """The same pipeline with a DDIM scheduler built from its DDPM config (the fast sampling path)."""
    from diffusers import DDIMScheduler

    components = {**pipe.components, "scheduler": DDIMScheduler.from_config(pipe.scheduler.config)}
    return type(pipe)(**components)
