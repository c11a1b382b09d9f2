"""DINOv2-style continued self-supervised pretraining (BE-DINORET / DINORET) on the shared trainer.

What ``hubtools.train.train`` optimises is the student :class:`SSLNetwork` (backbone + shared DINO/iBOT
head). The teacher (:class:`SSLTeacher`: an EMA copy of the student plus the losses' running centres)
lives outside it: it is updated in ``on_step_end`` and saved in every checkpoint as a
``checkpoint_objects`` entry, so a resumed run continues with the same teacher, centres and schedules.

BE-DINORET (``train_mode="expanded"``) trains only the inserted blocks and the head; DINORET
(``"full"``) the whole student. The teacher's frozen tensors are never touched by the EMA (m·a + (1-m)·a
is not bitwise a), so the original blocks stay bitwise equal to the base. The export is the teacher
backbone, as DINORET does.

Not applied (``train()`` builds one AdamW group over the trainable tensors): DINOv2's layer-wise lr decay,
patch-embedding lr x0.2 and weight-decay schedule; for BE training only the new blocks and the head train.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from hubtools.errors import ConfigError
from hubtools.models.be_dinov2.expand import freeze_original_layers
from hubtools.pretrain.augment import MultiCropAugmentation
from hubtools.pretrain.losses import DINOHead, DINOLoss, IBOTPatchLoss, koleo_loss
from hubtools.pretrain.masking import sample_masks
from hubtools.train import TrainConfig, TrainResult, TrainState, train


class PretrainConfig(TrainConfig):
    """Shared trainer settings plus the SSL recipe (defaults: DINOv2 ``ssl_default_config.yaml``)."""

    train_mode: Literal["expanded", "full"] = "expanded"
    train_final_layernorm: bool = False
    global_crop_size: int = Field(224, ge=8)
    local_crop_size: int = Field(98, ge=4)
    n_local_crops: int = Field(8, ge=0)
    global_crop_scale: tuple[float, float] = (0.32, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.32)
    head_out_dim: int = Field(65536, ge=2)
    head_hidden_dim: int = Field(2048, ge=1)
    head_bottleneck_dim: int = Field(256, ge=1)
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0)
    warmup_teacher_temp: float = Field(0.04, gt=0)
    teacher_temp_warmup_fraction: float = Field(0.3, ge=0, le=1, description="30 of 100 epochs")
    freeze_prototypes_fraction: float = Field(0.01, ge=0, le=1, description="1 of 100 epochs")
    momentum_teacher: float = Field(0.992, ge=0, le=1)
    centering: Literal["centering", "sinkhorn_knopp"] = "centering"
    mask_probability: float = Field(0.5, ge=0, le=1)
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    dino_weight: float = Field(1.0, ge=0)
    ibot_weight: float = Field(1.0, ge=0)
    koleo_weight: float = Field(0.1, ge=0)


class SSLNetwork(nn.Module):
    """Backbone + DINO/iBOT head (shared, ``separate_head=False``); one forward returns every student output."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        global_crops: torch.Tensor,
        masks: torch.Tensor | None = None,
        local_crops: torch.Tensor | None = None,
        mask_inputs: bool = True,
    ) -> dict[str, torch.Tensor]:
        """``masks`` (2B, N) select the patches scored by iBOT; with ``mask_inputs`` they are also replaced
        by the mask token in the input (student), without it (teacher) the network sees every patch."""
        tokens = self.backbone(global_crops, bool_masked_pos=masks if mask_inputs else None).last_hidden_state
        cls = tokens[:, 0]
        out = {"cls": cls, "cls_logits": self.head(cls)}
        if masks is not None:
            out["masked_patch_logits"] = self.head(tokens[:, 1:][masks])
        if local_crops is not None:
            out["local_cls_logits"] = self.head(self.backbone(local_crops).last_hidden_state[:, 0])
        return out


class SSLTeacher(nn.Module):
    """The EMA teacher and everything else that must survive a resume: the DINO and iBOT centres and
    the step counter that drives the momentum, temperature and prototype-freeze schedules."""

    def __init__(self, student: SSLNetwork, config: PretrainConfig) -> None:
        super().__init__()
        self.network = copy.deepcopy(student).eval().requires_grad_(False)
        self.dino_loss = DINOLoss(config.head_out_dim, config.student_temp)
        self.ibot_loss = IBOTPatchLoss(config.head_out_dim, config.student_temp)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> SSLTeacher:
        # The teacher never trains: no drop path, no dropout, whatever the caller asks.
        return super().train(False)

    @torch.no_grad()
    def update(self, student: SSLNetwork, momentum: float) -> None:
        """``θt <- m·θt + (1 - m)·θs`` for the student's trainable tensors only."""
        for ps, pt in zip(student.parameters(), self.network.parameters(), strict=True):
            if ps.requires_grad:
                pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
        self.step += 1


def teacher_momentum(step: int, total_steps: int, base: float = 0.992) -> float:
    """Cosine schedule from ``base`` to 1.0 over the run."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)) + 1) / 2


def teacher_temperature(step: int, total_steps: int, config: PretrainConfig) -> float:
    """Linear warm-up ``warmup_teacher_temp -> teacher_temp`` over the first fraction of the run."""
    warmup = int(config.teacher_temp_warmup_fraction * total_steps)
    if step >= warmup:
        return config.teacher_temp
    return config.warmup_teacher_temp + (config.teacher_temp - config.warmup_teacher_temp) * step / warmup


@dataclass
class SSLLoss:
    """``loss_fn(student, batch)`` for ``train``: multi-crop, masks, teacher targets, the three losses."""

    teacher: SSLTeacher
    config: PretrainConfig
    total_steps: int
    patch_size: int

    def __post_init__(self) -> None:
        c = self.config
        self.augment = MultiCropAugmentation(
            global_size=c.global_crop_size,
            local_size=c.local_crop_size,
            n_local=c.n_local_crops,
            global_scale=c.global_crop_scale,
            local_scale=c.local_crop_scale,
        )

    def __call__(self, student: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        c, teacher = self.config, self.teacher
        images = batch["pixel_values"]
        b = images.shape[0]
        if teacher.step.device != images.device:
            teacher.to(images.device)
        crops = self.augment(images)
        grid = c.global_crop_size // self.patch_size
        masks = sample_masks(2 * b, grid, c.mask_probability, c.mask_ratio).to(images.device)
        step = int(teacher.step)
        temp = teacher_temperature(step, self.total_steps, c)

        with torch.no_grad():
            t_out = teacher.network(crops.global_crops, masks, mask_inputs=False)
            t_cls, t_patch = t_out["cls_logits"], t_out["masked_patch_logits"]
            if c.centering == "sinkhorn_knopp":
                t_cls_probs = teacher.dino_loss.sinkhorn_knopp_teacher(t_cls, temp)
                t_patch_probs = teacher.ibot_loss.sinkhorn_knopp_teacher(t_patch, temp)
            else:
                t_cls_probs = teacher.dino_loss.softmax_center_teacher(t_cls, temp)
                t_patch_probs = teacher.ibot_loss.softmax_center_teacher(t_patch, temp)

        _unwrap(student).head.freeze_prototypes = step < int(c.freeze_prototypes_fraction * self.total_steps)
        s_out = student(crops.global_crops, masks, crops.local_crops)
        k = s_out["cls_logits"].shape[-1]
        local = s_out["local_cls_logits"].view(-1, b, k) if crops.local_crops is not None else None
        dino = teacher.dino_loss(s_out["cls_logits"].view(2, b, k), local, t_cls_probs.view(2, b, k))
        ibot = teacher.ibot_loss(s_out["masked_patch_logits"], t_patch_probs, masks)
        koleo = sum(koleo_loss(view) for view in s_out["cls"].view(2, b, -1))
        loss = c.dino_weight * dino + c.ibot_weight * ibot + c.koleo_weight * koleo

        if c.centering == "centering":
            teacher.dino_loss.update_center(t_cls)
            if t_patch.shape[0]:
                teacher.ibot_loss.update_center(t_patch)
        with torch.no_grad():
            stats = {
                "dino_loss": dino.detach(),
                "ibot_loss": ibot.detach(),
                "koleo_loss": koleo.detach(),
                "teacher_temp": temp,
                "teacher_cls_std": t_out["cls"].std(dim=0).mean(),
                "distinct_prototypes": float(t_cls.argmax(dim=-1).unique().numel()),
            }
        return loss, stats


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


@dataclass
class PretrainResult:
    """The exported teacher backbone, the trained student network, the teacher and the trainer's result."""

    backbone: nn.Module
    student: SSLNetwork
    teacher: SSLTeacher
    train: TrainResult


def build_ssl(backbone: nn.Module, config: PretrainConfig) -> tuple[SSLNetwork, SSLTeacher]:
    """Student (with the trainable set of ``train_mode``) and its teacher copy."""
    torch.manual_seed(config.seed)  # the head's initial weights are part of the run
    head = DINOHead(
        backbone.config.hidden_size, config.head_out_dim, config.head_hidden_dim, config.head_bottleneck_dim
    )
    student = SSLNetwork(backbone, head)
    if config.train_mode == "expanded":
        if not getattr(backbone.config, "expanded_layer_indices", None):
            raise ConfigError(
                "train_mode 'expanded' needs a block-expanded backbone (run `be-dinov2 expand` first)"
            )
        freeze_original_layers(student, train_final_layernorm=config.train_final_layernorm)
    else:
        student.requires_grad_(True)
    if getattr(backbone.config, "drop_path_rate", 0.0):
        raise ConfigError(
            "set drop_path_rate=0 for continued pretraining: drop path randomises frozen blocks too"
        )
    return student, SSLTeacher(student, config)


def pretrain(
    backbone: nn.Module,
    dataset: Dataset,
    config: PretrainConfig,
    *,
    eval_fn: Callable[[TrainState], Mapping[str, float]] | None = None,
) -> PretrainResult:
    """Continue self-supervised pretraining of ``backbone`` on ``dataset`` (items ``{"pixel_values": uint8
    (3, H, W)}``) and return the teacher backbone (the export). Resumes from ``config.output_dir``'s newest
    checkpoint with ``resume: auto``; runs unchanged under ``accelerate launch``."""
    patch = backbone.config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    if config.global_crop_size % patch or config.local_crop_size % patch:
        raise ConfigError(
            f"crop sizes {config.global_crop_size}/{config.local_crop_size} must be multiples of "
            f"the patch size {patch}"
        )
    student, teacher = build_ssl(backbone, config)
    n_batches = (
        len(dataset) // config.batch_size if config.drop_last else math.ceil(len(dataset) / config.batch_size)
    )
    total_steps = config.max_steps or config.num_epochs * math.ceil(
        max(n_batches, 1) / config.gradient_accumulation_steps
    )
    loss_fn = SSLLoss(teacher, config, total_steps, patch)

    def on_step_end(state: TrainState) -> None:
        teacher.update(state.model, teacher_momentum(state.step - 1, total_steps, config.momentum_teacher))

    result = train(
        student,
        dataset,
        loss_fn,
        config,
        eval_fn=eval_fn,
        on_step_end=on_step_end,
        checkpoint_objects=[teacher],
    )
    return PretrainResult(
        backbone=teacher.network.backbone, student=result.model, teacher=teacher, train=result
    )


def summary_metrics(result: PretrainResult) -> dict[str, Any]:
    """The last logged training metrics, rounded, for cards and reports."""
    return {k: round(float(v), 5) for k, v in result.train.metrics.items() if isinstance(v, (int, float))}
