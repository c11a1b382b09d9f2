"""``PDiffPipeline`` and ``CondPDiffPipeline``: diffusers pipelines whose "images" are parameter vectors.

Sampling is plain ancestral DDPM on the autoencoder's latent (any diffusers scheduler with the
same config works, e.g. ``DDIMScheduler.from_config(pipe.scheduler.config)`` for a 50-step
path), with one p-diff detail diffusers' schedulers do not do: the latent is clamped to
[-1, 1] after every step, because the autoencoder's latents live in tanh's range.

A saved pipeline folder carries byte-for-byte copies of this file, ``models.py`` and ``spec.py``,
so that ``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`` loads it
where hubtools is not installed. That is why these three files import only torch, diffusers,
huggingface_hub and each other, and only relatively: diffusers copies a shipped file's relative
imports next to it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .models import (
    ConditionEncoder,
    CondParamDenoiser,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
)
from .spec import ArtifactError, ParamSpec, ParamSpecError

Condition = int | str | Sequence[int] | Sequence[str] | torch.Tensor

# Components a saved folder ships the code of, by the class name model_index.json records.
_OWN_COMPONENTS = {
    cls.__name__: cls
    for cls in (ParamAutoencoder, ParamDenoiser, CondParamDenoiser, ConditionEncoder, ParamNormalizer)
}
# Libraries whose classes a plain diffusers install loads without shipped code.
_LIBRARIES = ("diffusers", "transformers")
# The shipped files, as module names: model_index.json refers to them by these names.
_PIPELINE_MODULE, _MODELS_MODULE, _SPEC_MODULE = "pipelines", "models", "spec"


@dataclass
class ParamGenOutput(BaseOutput):
    """``params`` [N, d]: generated vectors, de-normalised, in the order of the pipeline's ParamSpec."""

    params: torch.Tensor


class _ParamGenMixin:
    """What both pipelines share: the self-contained folder layout, the latent sampling loop and
    writing vectors into host copies."""

    # The components' classes are named here, on the class, and not in the pipelines' __init__
    # signatures (which say ModelMixin): diffusers checks what it loaded against the __init__
    # annotations with isinstance, and as remote code it re-executes models.py for every component
    # it loads, so their classes are never the ones this module imported.
    autoencoder: ParamAutoencoder
    scheduler: SchedulerMixin

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any):
        """Load a saved folder or a Hub repo id (snapshot first), old layout or self-contained.

        Components are built here from model_index.json rather than by diffusers: diffusers sends
        a folder whose ``_class_name`` names a shipped file to that file as remote code (and asks
        for ``trust_remote_code``) even when called on this class, and it resolves the older
        layout's ``["hubtools.paramgen.models", ...]`` entries only among imported modules (on the
        Hub not at all). Our own components load with this module's classes, ``diffusers`` and
        ``transformers`` ones (scheduler, text encoder, tokenizer) with theirs; no shipped code runs.
        Components passed as keyword arguments are used as given (``None`` drops an optional one).
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            hub_keys = ("revision", "token", "cache_dir", "local_files_only", "force_download")
            hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
            path = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
        expected, _ = cls._get_signature_keys(cls)
        passed = {k: kwargs.pop(k) for k in expected if k in kwargs}
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unexpected keyword arguments {sorted(kwargs)}"
            )
        index = _read_index(path)
        saved = index.get("_class_name")
        saved_name = saved[-1] if isinstance(saved, list) else saved
        if saved_name not in {c.__name__ for c in cls.__mro__}:
            raise ArtifactError(f"{path} holds a {saved_name} pipeline, not a {cls.__name__}")
        components = {}
        for name in expected:
            if name in passed:
                components[name] = passed[name]
                continue
            library, class_name = index.get(name) or (None, None)
            if class_name is None:
                if name not in cls._optional_components:
                    raise ArtifactError(f"{path}/model_index.json names no {name!r} component")
                components[name] = None
            else:
                components[name] = _component_class(path, name, library, class_name).from_pretrained(
                    path / name
                )
        pipe = cls(**components)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], *args: Any, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """diffusers' save, then make the folder carry its own code (pushed afterwards if asked).

        diffusers records a component under the module defining its class
        (``hubtools.paramgen.models``, or ``diffusers_modules.local.models`` when this pipeline was
        itself loaded as remote code), which no process without that module can import. The index
        is rewritten to name the shipped files instead, ``["pipelines", "PDiffPipeline"]`` and
        ``["models", "<class>"]``, and the files are copied from this module's own folder (which,
        for remote code, holds the copies diffusers made). diffusers' own ``push_to_hub=True``
        would upload before the rewrite, so the push is done here, after it; ``push_to_hub()``
        calls this method, so pushed repos get the same layout.
        """
        push_keys = ("repo_id", "commit_message", "private", "token", "create_pr")
        push_kwargs = {k: kwargs.pop(k) for k in push_keys if k in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        code = Path(__file__).parent
        index = _read_index(folder)
        pipeline_cls = next(c for c in type(self).__mro__ if c.__module__ == __name__)
        index["_class_name"] = [_PIPELINE_MODULE, pipeline_cls.__name__]
        # Where this pipeline was loaded from (a local or cache path) says nothing about the saved
        # folder, and would make a re-saved folder differ from the original and leak into pushed repos.
        index.pop("_name_or_path", None)
        for name, entry in index.items():
            if isinstance(entry, list) and entry[-1] in _OWN_COMPONENTS and entry[0] not in _LIBRARIES:
                index[name] = [_MODELS_MODULE, entry[-1]]
                shutil.copyfile(code / f"{_MODELS_MODULE}.py", folder / name / f"{_MODELS_MODULE}.py")
        for module in (_PIPELINE_MODULE, _MODELS_MODULE, _SPEC_MODULE):
            shutil.copyfile(code / f"{module}.py", folder / f"{module}.py")
        # diffusers' own format for model_index.json
        (folder / "model_index.json").write_text(
            json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if push_to_hub:
            save_kwargs = {k: kwargs[k] for k in ("safe_serialization", "variant") if k in kwargs}
            self.push_to_hub(push_kwargs.pop("repo_id", folder.name), **push_kwargs, **save_kwargs)

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


def _read_index(folder: Path) -> dict[str, Any]:
    """model_index.json of a saved pipeline folder, or an ArtifactError that names the folder."""
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"{folder}: cannot read the model_index.json of a saved pipeline: {err}"
        ) from None


def _component_class(folder: Path, name: str, library: str | None, class_name: str) -> type:
    """The class that loads one model_index.json entry: ours (whatever module was recorded) or a library's."""
    if class_name in _OWN_COMPONENTS and library not in _LIBRARIES:
        return _OWN_COMPONENTS[class_name]
    found = getattr(importlib.import_module(library), class_name, None) if library in _LIBRARIES else None
    if found is None:
        raise ArtifactError(
            f"{folder}/model_index.json: component {name!r} is [{library!r}, {class_name!r}], which this "
            "pipeline cannot load"
        )
    return found


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
    denoiser: ParamDenoiser
    normalizer: ParamNormalizer | None

    def __init__(
        self,
        autoencoder: ModelMixin,
        denoiser: ModelMixin,
        scheduler: SchedulerMixin,
        normalizer: ModelMixin | None = None,
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

    denoiser: CondParamDenoiser
    condition_encoder: ConditionEncoder
    normalizer: ParamNormalizer

    def __init__(
        self,
        autoencoder: ModelMixin,
        denoiser: ModelMixin,
        condition_encoder: ModelMixin,
        normalizer: ModelMixin,
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
