"""RetiZero: a CLIP-style dual encoder (frozen vision tower + LoRA, trainable BERT-family text tower).

This file imports only torch, transformers and ``configuration_retizero`` so that ``register_for_auto_class``
can copy it into a Hub repo (peft is imported lazily, only when a config enables LoRA).

``get_image_features``/``get_text_features`` return a ``BaseModelOutputWithPooling`` as transformers 5's CLIP
does, but its ``pooler_output`` is the FINAL embedding: projected and L2-normalised.
"""

from __future__ import annotations

import inspect
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_retizero import RetiZeroConfig


def clip_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """½[CE(text→image) + CE(image→text)] with the diagonal as targets."""
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return 0.5 * (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.t(), targets))


def dirichlet_uncertainty_loss(logits: torch.Tensor, kl_anneal: float) -> torch.Tensor:
    """Evidential loss on a square logits matrix whose rows are queries and whose targets are the diagonal.

    Evidence ``softplus(logits)``, ``α = e + 1``; per row ``Σ_c y_c(ψ(S) − ψ(α_c)) + λ·KL(Dir(α̃) ‖ Dir(1))`` with
    ``α̃ = (α − 1)(1 − y) + 1`` (the target's evidence removed). Always computed in float32 (digamma/lgamma).
    """
    logits = logits.float()
    n_rows, n_classes = logits.shape
    y = F.one_hot(torch.arange(n_rows, device=logits.device), n_classes).float()
    alpha = F.softplus(logits) + 1.0
    strength = alpha.sum(dim=1, keepdim=True)
    fit = (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(dim=1)
    alpha_tilde = (alpha - 1.0) * (1.0 - y) + 1.0
    s_tilde = alpha_tilde.sum(dim=1)
    kl = (
        torch.lgamma(s_tilde)
        - math.lgamma(n_classes)
        - torch.lgamma(alpha_tilde).sum(dim=1)
        + ((alpha_tilde - 1.0) * (torch.digamma(alpha_tilde) - torch.digamma(s_tilde)[:, None])).sum(dim=1)
    )
    return (fit + kl_anneal * kl).mean()


def kl_anneal_weight(epoch: int, anneal_epochs: int = 15) -> float:
    """λ_t = min(1, epoch / anneal_epochs), epochs counted from 0 (KL off during the first epoch)."""
    return min(1.0, epoch / anneal_epochs)


@dataclass
class RetiZeroOutput(ModelOutput):
    """Loss terms (when ``return_loss``), both logits matrices and the final (normalised) embeddings."""

    loss: torch.Tensor | None = None
    loss_clip: torch.Tensor | None = None
    loss_uncertainty: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


def _build_tower(config) -> PreTrainedModel:
    # ViT/BERT poolers are randomly initialised heads RetiZero never uses; other towers have no such flag.
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


class RetiZeroPreTrainedModel(PreTrainedModel):
    config_class = RetiZeroConfig
    base_model_prefix = "retizero"
    input_modalities = ("image", "text")
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, RetiZeroModel):
            with torch.no_grad():
                module.logit_scale.fill_(self.config.logit_scale_init_value)
        elif isinstance(module, nn.Linear) and module in (
            getattr(self, "visual_projection", None),
            getattr(self, "text_projection", None),
        ):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)


class RetiZeroModel(RetiZeroPreTrainedModel):
    def __init__(self, config: RetiZeroConfig):
        super().__init__(config)
        self.vision_model = _build_tower(config.vision_config)
        self.text_model = _build_tower(config.text_config)
        self.visual_projection = nn.Linear(
            config.vision_config.hidden_size, config.projection_dim, bias=False
        )
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()
        # After post_init, which would otherwise re-initialise lora_A AND lora_B (tower != pretrained at init).
        if config.vision_lora is not None:
            self._inject_vision_lora(config.vision_lora)
        self._freeze_vision_base()

    @classmethod
    def from_towers(
        cls,
        vision_model: PreTrainedModel,
        text_model: PreTrainedModel,
        vision_lora: dict | None = None,
        **config_kwargs,
    ) -> RetiZeroModel:
        """A dual encoder around two pretrained towers (their weights are copied); LoRA is added AFTER loading,
        so the pretrained q/v weights become LoRA base layers instead of being replaced by random ones."""
        config = RetiZeroConfig(
            vision_config=vision_model.config.to_dict(),
            text_config=text_model.config.to_dict(),
            **config_kwargs,
        )
        model = cls(config)
        for tower, pretrained in ((model.vision_model, vision_model), (model.text_model, text_model)):
            missing, unexpected = tower.load_state_dict(pretrained.state_dict(), strict=False)
            bad = [k for k in missing if "pooler" not in k] + [k for k in unexpected if "pooler" not in k]
            if bad:
                raise ValueError(f"tower {type(pretrained).__name__} does not match its config: {bad[:5]}")
        if vision_lora is not None:
            model.add_vision_lora(**vision_lora)
        return model

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` that refuses a LoRA config over a LoRA-free file: the file's
        ``q_proj.weight`` would be unexpected and ``q_proj.base_layer.weight`` missing, i.e. the pretrained q/v
        weights silently replaced by random ones."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        stale = sorted(k for k in info["missing_keys"] if "base_layer" in k or "lora_" in k)
        if stale:
            raise ValueError(
                f"config.vision_lora is set but the checkpoint has no LoRA weights (missing {stale[:3]}...): "
                "build with RetiZeroModel.from_towers(..., vision_lora=...) or load without vision_lora and call "
                "add_vision_lora()"
            )
        model._freeze_vision_base()  # loading re-enables gradients on every parameter
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # A class holds one `_auto_class` (the zero-shot one, for the pipeline): map AutoModel to it as well.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault(
                "AutoModel", f"{type(self).__module__.rpartition('.')[2]}.{type(self).__name__}"
            )
            self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None and (kwargs.get("is_main_process", True)):
            self._save_tower_code(Path(save_directory))
        return result

    def _save_tower_code(self, folder: Path) -> None:
        """Ship the code of towers whose family transformers does not know (e.g. a remote-code ``be-dinov2``
        vision tower): their module files are copied beside ``configuration_retizero.py``, whose saved copy then
        registers them, so ``trust_remote_code=True`` resolves the sub-config before building the towers."""
        lines = []
        for tower in (self.vision_model, self.text_model):
            model_cls, config_cls = type(tower), type(tower.config)
            if model_cls.__module__.startswith("transformers.models."):
                continue
            model_file = Path(inspect.getsourcefile(model_cls))
            config_file = Path(inspect.getsourcefile(config_cls))
            files = {model_file, *map(Path, get_relative_import_files(str(model_file)))}
            if config_file not in files:
                raise ValueError(f"{model_file.name} does not import its config module {config_file.name}")
            for path in sorted(files):
                source = path.read_text(encoding="utf-8")
                if re.search(r"^\s*(from|import)\s+hubtools\b", source, flags=re.MULTILINE):
                    raise ValueError(f"{path.name} imports hubtools: it cannot travel as remote code")
                shutil.copyfile(path, folder / path.name)
            lines += [
                f"from .{config_file.stem} import {config_cls.__name__}  # noqa: E402",
                f"from .{model_file.stem} import {model_cls.__name__}  # noqa: E402",
                f"AutoConfig.register({config_cls.model_type!r}, {config_cls.__name__}, exist_ok=True)",
                f"AutoModel.register({config_cls.__name__}, {model_cls.__name__}, exist_ok=True)",
            ]
        target = folder / "configuration_retizero.py"
        marker = "# Tower families shipped with this repo (written by RetiZeroModel.save_pretrained)."
        source = target.read_text(encoding="utf-8")
        if lines and marker not in source:  # a repo loaded with remote code and saved again has them already
            header = f"\n\n{marker}\nfrom transformers import AutoModel  # noqa: E402\n"
            target.write_text(source + header + "\n".join(lines) + "\n")

    # --- LoRA ---------------------------------------------------------------------------------------------
    def _inject_vision_lora(self, spec: dict) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora_config = LoraConfig(
            r=spec["r"],
            lora_alpha=spec.get("alpha", spec["r"]),
            lora_dropout=spec.get("dropout", 0.0),
            target_modules=spec.get("target_modules", ["q_proj", "v_proj"]),
        )
        # Vision tower only: a whole-model match would silently adapt the text tower too.
        inject_adapter_in_model(lora_config, self.vision_model)

    def add_vision_lora(
        self,
        r: int = 8,
        alpha: float | None = None,
        dropout: float = 0.0,
        target_modules: list[str] | None = None,
    ) -> RetiZeroModel:
        """Inject LoRA (A kaiming-uniform, B = 0: features unchanged) and record it in the config."""
        if self.config.vision_lora is not None:
            raise ValueError(f"the vision tower already has LoRA {self.config.vision_lora}")
        spec = {"r": r, "alpha": alpha if alpha is not None else r, "dropout": dropout}
        spec["target_modules"] = list(target_modules or ["q_proj", "v_proj"])
        self._inject_vision_lora(spec)
        self.config.vision_lora = spec
        self._freeze_vision_base()
        return self

    def merge_vision_lora(self) -> RetiZeroModel:
        """Fold ``W ← W + (α/r)·B·A`` into the base weights and drop LoRA (the default Hub export needs no peft)."""
        if self.config.vision_lora is None:
            return self
        for name, module in list(self.vision_model.named_modules()):
            if hasattr(module, "merge") and hasattr(module, "base_layer"):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.vision_model.get_submodule(parent_name) if parent_name else self.vision_model
                setattr(parent, child, module.get_base_layer())
        self.config.vision_lora = None
        self._freeze_vision_base()
        return self

    def _freeze_vision_base(self) -> None:
        if not self.config.freeze_vision_base:
            return
        for name, param in self.vision_model.named_parameters():
            param.requires_grad_("lora_" in name)

    def clamp_logit_scale_(self) -> None:
        """Clamp the stored temperature in place (call after each optimiser step: checkpoints stay in range)."""
        with torch.no_grad():
            self.logit_scale.clamp_(self.config.logit_scale_min, self.config.logit_scale_max)

    def effective_logit_scale(self) -> torch.Tensor:
        s = self.logit_scale.float().clamp(self.config.logit_scale_min, self.config.logit_scale_max)
        return s.exp()

    # --- features -----------------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Vision tower output; ``pooler_output`` = normalised projection of the normalised CLS token."""
        out = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        cls_token = out.last_hidden_state[:, 0]
        embeds = F.normalize(self.visual_projection(F.normalize(cls_token, dim=-1)), dim=-1)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=embeds,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    def pool_text(
        self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean over tokens of each of ``text_pool_layers``, then the mean of those vectors."""
        layers = torch.stack([hidden_states[i] for i in self.config.text_pool_layers])  # L, B, T, D
        if attention_mask is None or not self.config.text_pool_masked:
            per_layer = layers.mean(dim=2)
        else:
            mask = attention_mask.to(layers.dtype)[None, :, :, None]
            per_layer = (layers * mask).sum(dim=2) / mask.sum(dim=2).clamp_min(1.0)
        return per_layer.mean(dim=0)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Text tower output; ``pooler_output`` = normalised projection of the normalised pooled text."""
        out = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_hidden_states=True,
            return_dict=True,
            **kwargs,
        )
        pooled = self.pool_text(out.hidden_states, attention_mask)
        embeds = F.normalize(self.text_projection(F.normalize(pooled, dim=-1)), dim=-1)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state, pooler_output=embeds, hidden_states=out.hidden_states
        )

    def get_retrieval_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image-to-image retrieval feature: mean of the patch tokens (CLS dropped) of the last block's output
        BEFORE the final LayerNorm (hidden size, not normalised)."""
        out = self.vision_model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        return out.hidden_states[-1][:, 1:].mean(dim=1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        kl_anneal: float = 1.0,
        **kwargs,
    ) -> RetiZeroOutput:
        """``logits_per_text = exp(clamp(s))·T·Iᵀ``; with ``return_loss`` (square batch of pairs) the CLIP loss plus,
        if ``config.uncertainty_loss``, the evidential term in both directions weighted by ``kl_anneal``."""
        image_embeds = self.get_image_features(pixel_values).pooler_output
        text_embeds = self.get_text_features(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
        ).pooler_output
        logits_per_text = self.effective_logit_scale() * text_embeds @ image_embeds.t()
        logits_per_image = logits_per_text.t()
        loss = loss_clip = loss_uncertainty = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    f"return_loss needs one text per image, got {logits_per_text.shape[0]} texts and "
                    f"{logits_per_text.shape[1]} images"
                )
            loss_clip = clip_loss(logits_per_text)
            loss = loss_clip
            if self.config.uncertainty_loss:
                loss_uncertainty = dirichlet_uncertainty_loss(
                    logits_per_text, kl_anneal
                ) + dirichlet_uncertainty_loss(logits_per_image, kl_anneal)
                loss = loss_clip + loss_uncertainty
        return RetiZeroOutput(
            loss=loss,
            loss_clip=loss_clip,
            loss_uncertainty=loss_uncertainty,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


__all__ = [
    "RetiZeroModel",
    "RetiZeroOutput",
    "RetiZeroPreTrainedModel",
    "clip_loss",
    "dirichlet_uncertainty_loss",
    "kl_anneal_weight",
]
