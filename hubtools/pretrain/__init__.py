"""DINOv2-style continued self-supervised pretraining (BE-DINORET, DINORET) on the shared trainer.

from hubtools.pretrain import PretrainConfig, pretrain
result = pretrain(expanded_backbone, images, PretrainConfig(output_dir="runs/ssl", max_steps=1000))
result.backbone.save_pretrained("be-dinoret/")   # the EMA teacher, as DINORET exports
"""

from hubtools.pretrain.augment import MultiCropAugmentation
from hubtools.pretrain.losses import DINOHead, DINOLoss, IBOTPatchLoss, cross_entropy, koleo_loss
from hubtools.pretrain.masking import BlockMaskGenerator, sample_masks
from hubtools.pretrain.ssl import (
    PretrainConfig,
    PretrainResult,
    SSLLoss,
    SSLNetwork,
    SSLTeacher,
    build_ssl,
    pretrain,
    teacher_momentum,
    teacher_temperature,
)

__all__ = [
    "BlockMaskGenerator",
    "DINOHead",
    "DINOLoss",
    "IBOTPatchLoss",
    "MultiCropAugmentation",
    "PretrainConfig",
    "PretrainResult",
    "SSLLoss",
    "SSLNetwork",
    "SSLTeacher",
    "build_ssl",
    "cross_entropy",
    "koleo_loss",
    "pretrain",
    "sample_masks",
    "teacher_momentum",
    "teacher_temperature",
]
