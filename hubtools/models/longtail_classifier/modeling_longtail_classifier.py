"""A trained long-tail (MONICA) classifier as a transformers image classifier.

Imports only torch, transformers and the configuration file, so ``register_for_auto_class`` can copy
it into a Hub repo and ``AutoModelForImageClassification`` / ``pipeline("image-classification")``
load the model without hubtools (``trust_remote_code=True``).

The model is ``backbone`` (any ``AutoModel`` vision backbone, built from ``config.encoder_config``)
and ``head`` (one of the long-tail heads below), with the attribute and parameter names of the
trainer's heads, so a trained state dict loads key for key. Only the inference forward of each head
is here: ``de_confound`` always removes the feature-momentum direction (its test-time logits), BBN
mixes the two branches with alpha = 0.5, the experts average their logits, and
``config.logit_offset`` (post-hoc logit adjustment) is added last.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_longtail_classifier import FEATURE_MAP_KINDS, LongTailClassifierConfig


def _backbone_from_dict(data: dict[str, Any]) -> PreTrainedModel:
    options = {k: v for k, v in data.items() if k != "model_type"}
    return AutoModel.from_config(AutoConfig.for_model(data["model_type"], **options))


def _cosine(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=1) @ F.normalize(weight, dim=1).t()


class CosineHead(nn.Module):
    """Cosines of normalised features and class weights (the loss that trained it applied the scale)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _cosine(features, self.weight)


class ScaledLinearHead(nn.Module):
    """``lws`` and ``mislas``: a linear head times learned per-class scales, s_c (w_c . f + b_c)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * self.scales


class TauNormHead(nn.Module):
    """w_c / ||w_c||^tau of a trained linear head, bias dropped (tau was chosen on validation)."""

    def __init__(self, dim: int, num_classes: int, tau: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.tau = tau

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        return features @ (w / w.norm(dim=1, keepdim=True).pow(self.tau)).t()


class DisAlignHead(nn.Module):
    """Distribution alignment: z'_c = (1 + sigma a_c) z_c + sigma b_c with sigma = sigmoid(g(f))."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.confidence = nn.Linear(dim, 1)
        self.scale = nn.Parameter(torch.ones(num_classes))
        self.shift = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(self.confidence(features))
        return (1 + sigma * self.scale) * self.linear(features) + sigma * self.shift


class NearestClassMeanHead(nn.Module):
    """logit_c = -||x^ - mu_c||^2 with x^ = (f - train mean) / ||f - train mean|| and mu_c the class means of x^."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("centroids", torch.zeros(num_classes, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features - self.feature_mean, dim=1)
        return -torch.cdist(x, self.centroids).pow(2)


class DeconfoundHead(nn.Module):
    """Causal-norm cosine classifier over K feature chunks with the feature-momentum direction removed.

    z_c = (tau/K) sum_k w_ck . f^_k / (||w_ck|| + gamma)
          - alpha (tau/K) sum_k cos(f_k, d_k) w_ck . d_k / (||w_ck|| + gamma),  d_k = e_k / ||e_k||,
    with e the moving average of the train features (``embed_mean``).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1.0 / 32.0,
        alpha: float = 1.5,
        momentum: float = 0.9,  # a training setting, kept so the saved options build the head as they are
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.register_buffer("embed_mean", torch.zeros(dim))
        self.num_heads, self.tau, self.gamma, self.alpha = num_heads, tau, gamma, alpha

    def _chunks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        w = self._chunks(self.weight)
        w = w / (w.norm(dim=2, keepdim=True) + self.gamma)  # C x K x D/K
        f = F.normalize(self._chunks(features), dim=2)  # B x K x D/K
        logits = self.tau / self.num_heads * torch.einsum("bkd,ckd->bc", f, w)
        if self.alpha == 0:
            return logits
        d = F.normalize(self._chunks(self.embed_mean), dim=1)  # K x D/K
        cos = (f * d).sum(dim=2)  # B x K
        w_d = torch.einsum("ckd,kd->ck", w, d)  # C x K
        return logits - self.alpha * self.tau / self.num_heads * cos @ w_d.t()


class BBNHead(nn.Module):
    """BBN's classifier W [2 alpha f || 2 (1 - alpha) f] at alpha = 0.5: both branches see the same feature."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([features, features], dim=1))


def _late_branch(stages: nn.ModuleList) -> nn.Sequential:
    return nn.Sequential(*copy.deepcopy(list(stages)), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _late_stages(backbone_config: dict[str, Any], split: int) -> nn.ModuleList:
    stages = _backbone_from_dict(backbone_config).encoder.stages
    return nn.ModuleList(list(stages)[split:])


class BBNBranchesHead(nn.Module):
    """BBN with separate last stages: each branch runs its own copy on the feature map, then W [f_u || f_r]
    at alpha = 0.5."""

    def __init__(self, dim: int, num_classes: int, backbone_config: dict[str, Any], split: int) -> None:
        super().__init__()
        stages = _late_stages(backbone_config, split)
        self.branches = nn.ModuleList(_late_branch(stages) for _ in range(2))
        self.linear = nn.Linear(2 * dim, num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([self.branches[0](feature_map), self.branches[1](feature_map)], dim=1))


class ExpertsHead(nn.Module):
    """SADE/RIDE: K experts (late stages + average pool + cosine classifier scaled by s); logits = their mean."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        backbone_config: dict[str, Any],
        split: int,
        num_experts: int = 3,
        scale: float = 30.0,
    ) -> None:
        super().__init__()
        stages = _late_stages(backbone_config, split)
        self.branches = nn.ModuleList(_late_branch(stages) for _ in range(num_experts))
        self.classifiers = nn.ModuleList(CosineHead(dim, num_classes) for _ in range(num_experts))
        self.scale = scale

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        logits = [
            self.scale * head(branch(feature_map))
            for branch, head in zip(self.branches, self.classifiers, strict=True)
        ]
        return torch.stack(logits).mean(dim=0)


HEADS: dict[str, type[nn.Module]] = {
    "linear": nn.Linear,
    "cosine": CosineHead,
    "lws": ScaledLinearHead,
    "mislas": ScaledLinearHead,
    "tau_norm": TauNormHead,
    "disalign": DisAlignHead,
    "ncm": NearestClassMeanHead,
    "de_confound": DeconfoundHead,
    "bbn": BBNHead,
    "bbn_separate": BBNBranchesHead,
    "experts": ExpertsHead,
}


class LongTailPreTrainedModel(PreTrainedModel):
    config_class = LongTailClassifierConfig
    config: LongTailClassifierConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module: nn.Module) -> None:
        # The nested backbone initialises itself (transformers dispatches to its own _init_weights); heads
        # start as the trainer's do. Late stages inside the expert heads follow the backbone family's init.
        if isinstance(module, CosineHead):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        elif isinstance(module, DeconfoundHead):
            init.normal_(module.weight, 0.0, 0.01)
            init.zeros_(module.embed_mean)
        elif isinstance(module, NearestClassMeanHead):
            init.zeros_(module.feature_mean)
            init.zeros_(module.centroids)
        elif isinstance(module, ScaledLinearHead):
            init.ones_(module.scales)
        elif isinstance(module, DisAlignHead):
            init.constant_(module.confidence.weight, 0.1)
            init.zeros_(module.confidence.bias)
            init.ones_(module.scale)
            init.zeros_(module.shift)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif module is not self and not isinstance(module, PreTrainedModel):
            self.backbone._init_weights(module)


class LongTailForImageClassification(LongTailPreTrainedModel):
    """Backbone features -> long-tail head -> logits (+ ``config.logit_offset``).

    The head sees the backbone's ``pooler_output`` (flattened), or the first token of
    ``last_hidden_state`` for backbones without a pooler; the ``experts`` and ``bbn_separate`` heads see
    the unpooled ``last_hidden_state`` of the shared trunk and run the late stages themselves.
    """

    def __init__(self, config: LongTailClassifierConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = _backbone_from_dict(config.encoder_config)
        self.head = HEADS[config.classifier](
            config.feature_dim, config.num_labels, **config.classifier_options
        )
        self.post_init()

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the head sees: pooled features (B x D), or the trunk's feature map for the late-stage heads."""
        out = self.backbone(pixel_values=pixel_values)
        if self.config.classifier in FEATURE_MAP_KINDS:
            return out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state[:, 0]

    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> ImageClassifierOutput:
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        logits = self.head(self.features(pixel_values))
        if self.config.logit_offset is not None:
            logits = logits + torch.tensor(self.config.logit_offset, dtype=logits.dtype, device=logits.device)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
        return ImageClassifierOutput(loss=loss, logits=logits)


__all__ = ["LongTailForImageClassification", "LongTailPreTrainedModel"]
