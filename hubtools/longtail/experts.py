"""Multi-expert heads for SADE and RIDE, and BBN's separate-branch head.

The backbone is split at the middle of its stages: the stem and the first half of the stages are
shared (for a 4-stage ResNet: layers 1-2), and each of K = 3 experts owns a copy of the remaining
stages, a global average pool and a cosine classifier with scale s = 30. The copies start from the
backbone's own weights, so a pretrained backbone initialises the experts too (the anchor trains
SADE from scratch). Training sees the K x B x C expert logits (:meth:`ExpertHeads.expert_logits`);
prediction is their mean.

Deviation, stated: the reference experts are narrower (widths 192/384 on CIFAR ResNet-32); here an
expert is a full-width copy of the backbone's late stages. Needs a ``transformers`` backbone with
``encoder.stages`` (ResNet, RegNet-like); others are a :class:`~hubtools.errors.ConfigError`.

:class:`BBNBranchHead` (``bbn`` with ``bbn_branches: separate``) splits before the last stage: the
conventional and re-balancing branches each own a copy of it, as in the BBN paper.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hubtools.errors import ConfigError
from hubtools.longtail.classifiers import CosineClassifier


def _stages(backbone: nn.Module) -> nn.ModuleList:
    stages = getattr(getattr(backbone, "encoder", None), "stages", None)
    if not isinstance(stages, nn.ModuleList) or len(stages) < 2:
        raise ConfigError(
            f"multi-expert methods need a backbone with encoder.stages (>= 2 stages), got {type(backbone).__name__}"
        )
    return stages


def _truncated_config(full_config: dict[str, Any], split: int) -> Any:
    """The backbone config with only the first ``split`` stages (stage names re-derived), so that
    ``save_pretrained``/``from_pretrained`` round-trip the shared trunk."""
    from transformers import AutoConfig

    config = {k: v for k, v in full_config.items() if k not in ("stage_names", "out_features", "out_indices")}
    for key in ("hidden_sizes", "depths"):
        if key in config:
            config[key] = list(config[key])[:split]
    return AutoConfig.for_model(config.pop("model_type"), **config)


def truncate_backbone(backbone: nn.Module, split: int) -> tuple[nn.ModuleList, dict[str, Any]]:
    """Cut ``backbone`` in place after stage ``split``; returns the stages cut off and the options
    (``backbone_config``, ``split``) that :func:`late_stages` rebuilds them from."""
    stages = _stages(backbone)
    full_config = backbone.config.to_dict()
    backbone.encoder.stages = nn.ModuleList(list(stages)[:split])
    backbone.config = _truncated_config(full_config, split)
    return nn.ModuleList(list(stages)[split:]), {"backbone_config": full_config, "split": split}


def late_stages(backbone_config: dict[str, Any], split: int) -> nn.ModuleList:
    """Freshly initialised stages ``split:`` of the backbone described by ``backbone_config``."""
    from transformers import AutoConfig, AutoModel

    config = {k: v for k, v in backbone_config.items() if k != "model_type"}
    full = AutoModel.from_config(AutoConfig.for_model(backbone_config["model_type"], **config))
    return nn.ModuleList(list(_stages(full))[split:])


class ExpertHeads(nn.Module):
    """K experts, each the late stages of the backbone + average pool + cosine classifier scaled by s."""

    feature_map = True  # LongTailModel passes the unpooled output of the shared trunk

    def __init__(
        self, stages: nn.ModuleList, dim: int, num_classes: int, num_experts: int = 3, scale: float = 30.0
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ConfigError(f"num_experts must be >= 1, got {num_experts}")
        self.branches = nn.ModuleList(
            nn.Sequential(*copy.deepcopy(list(stages)), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            for _ in range(num_experts)
        )
        self.classifiers = nn.ModuleList(CosineClassifier(dim, num_classes) for _ in range(num_experts))
        self.scale = scale

    @classmethod
    def split_backbone(
        cls, backbone: nn.Module, dim: int, num_classes: int, num_experts: int = 3, scale: float = 30.0
    ) -> tuple[ExpertHeads, dict[str, Any]]:
        """Truncate ``backbone`` in place to its shared trunk (the first half of the stages); returns
        the heads and their rebuild options."""
        split = len(_stages(backbone)) // 2
        late, options = truncate_backbone(backbone, split)
        options.update(num_experts=num_experts, scale=scale)
        return cls(late, dim, num_classes, num_experts, scale), options

    @classmethod
    def from_backbone_config(
        cls,
        dim: int,
        num_classes: int,
        backbone_config: dict[str, Any],
        split: int,
        num_experts: int = 3,
        scale: float = 30.0,
    ) -> ExpertHeads:
        """Same architecture as :meth:`split_backbone` built from the saved config (weights loaded after)."""
        return cls(late_stages(backbone_config, split), dim, num_classes, num_experts, scale)

    def expert_logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        """K x B x C: s times the cosine logits of each expert."""
        return torch.stack(
            [
                self.scale * head(branch(feature_map))
                for branch, head in zip(self.branches, self.classifiers, strict=True)
            ]
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.expert_logits(feature_map).mean(dim=0)


class BBNBranchHead(nn.Module):
    """BBN with separate last stages (the paper): a conventional and a re-balancing branch, each its own
    copy of the backbone's last stage + average pool, then W [2 alpha f_u || 2 (1 - alpha) f_r]."""

    feature_map = True

    def __init__(self, stages: nn.ModuleList, dim: int, num_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*copy.deepcopy(list(stages)), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            for _ in range(2)
        )
        self.linear = nn.Linear(2 * dim, num_classes)

    @classmethod
    def split_backbone(
        cls, backbone: nn.Module, dim: int, num_classes: int
    ) -> tuple[BBNBranchHead, dict[str, Any]]:
        """Truncate ``backbone`` before its last stage; returns the head and its rebuild options."""
        late, options = truncate_backbone(backbone, len(_stages(backbone)) - 1)
        return cls(late, dim, num_classes), options

    @classmethod
    def from_backbone_config(
        cls, dim: int, num_classes: int, backbone_config: dict[str, Any], split: int
    ) -> BBNBranchHead:
        return cls(late_stages(backbone_config, split), dim, num_classes)

    def mix(self, map_uniform: torch.Tensor, map_reversed: torch.Tensor, alpha: float) -> torch.Tensor:
        f_u, f_r = self.branches[0](map_uniform), self.branches[1](map_reversed)
        return self.linear(torch.cat([2 * alpha * f_u, 2 * (1 - alpha) * f_r], dim=1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.mix(feature_map, feature_map, 0.5)
