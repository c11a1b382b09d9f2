"""Conversions into and out of the transformers formats of long-tail models.

- :func:`to_transformers`: a trained :class:`~hubtools.longtail.trainer.LongTailModel` and its
  ``longtail.json`` info as a :class:`LongTailForImageClassification` (same weights, key for key), so
  the saved folder loads with ``AutoModelForImageClassification`` and ``pipeline("image-classification")``;
  :func:`image_processor` is the matching preprocessing (resize to the training size, ImageNet
  normalisation).
- :func:`convert_resnet50`: a torchvision/timm ResNet-50 state dict (``conv1.weight``, ``bn1.*``,
  ``layer1.0.conv1.weight``, ..., ``fc.*``; ``.pth`` or ``.safetensors``) as a transformers
  ``ResNetModel`` folder that ``backbone.path`` accepts, so MONICA's ImageNet-initialised recipe runs
  offline from weights a user already has. Both layouts are ResNet v1.5 (stride in the 3x3 conv of a
  bottleneck), so the conversion is a renaming; the ``fc`` classifier is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hubtools.errors import ArtifactError

if TYPE_CHECKING:
    from transformers import ResNetModel, ViTImageProcessorPil

    from hubtools.longtail.trainer import LongTailModel
    from hubtools.models.longtail_classifier import LongTailForImageClassification

RESNET50_DEPTHS = (3, 4, 6, 3)
RESNET50_HIDDEN_SIZES = (256, 512, 1024, 2048)
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def to_transformers(model: LongTailModel, info: dict[str, Any]) -> LongTailForImageClassification:
    """``model`` (backbone + head, + post-hoc offset) as a transformers image classifier with the same weights.

    ``info`` is the run's ``longtail.json``: it names the head kind and options, the feature size, the
    class names (the labels of ``id2label``) and the counts.
    """
    from hubtools.models.longtail_classifier import LongTailClassifierConfig, LongTailForImageClassification

    names = list(info["class_names"])
    offset = info.get("logit_offset")
    config = LongTailClassifierConfig(
        encoder_config=model.backbone.config.to_dict(),
        classifier=info["classifier"],
        classifier_options=dict(info.get("classifier_options") or {}),
        feature_dim=int(info["feature_dim"]),
        cls_num_list=list(info["cls_num_list"]),
        method=info.get("method"),
        logit_offset=None if offset is None else [float(v) for v in offset],
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    classifier = LongTailForImageClassification(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        classifier.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ArtifactError(
            f"{info['classifier']!r} model does not map onto LongTailForImageClassification: {err}"
        ) from None
    return classifier.eval()


def image_processor(image_size: int) -> ViTImageProcessorPil:
    """The trainer's evaluation preprocessing as a standard processor (saved as ``ViTImageProcessor``):
    RGB, Pillow bicubic resize to ``image_size`` squared (``Image.resize``'s default), /255, ImageNet mean/std."""
    from transformers import ViTImageProcessorPil
    from transformers.image_utils import PILImageResampling

    from hubtools.longtail.trainer import IMAGENET_MEAN, IMAGENET_STD

    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a weights-only ``.pth``/``.pt``/``.bin`` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
            raise ArtifactError(f"{path}: cannot read as safetensors: {err}") from None
    from hubtools.models.be_dinov2.convert import load_torch_hub_checkpoint

    return load_torch_hub_checkpoint(path)


def _resnet50_key(key: str) -> str:
    """The transformers ``ResNetModel`` name of a torchvision/timm ResNet-50 key."""
    if key == "conv1.weight":
        return "embedder.embedder.convolution.weight"
    if key.startswith("bn1."):
        return f"embedder.embedder.normalization.{key[4:]}"
    block = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)", key)
    if block:
        stage, layer, kind, index, name = block.groups()
        part = "convolution" if kind == "conv" else "normalization"
        return f"encoder.stages.{int(stage) - 1}.layers.{layer}.layer.{int(index) - 1}.{part}.{name}"
    stage, layer, index, name = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", key).groups()
    part = "convolution" if index == "0" else "normalization"
    return f"encoder.stages.{int(stage) - 1}.layers.{layer}.shortcut.{part}.{name}"


def resnet50_torchvision_keys() -> list[str]:
    """Every tensor name of a torchvision/timm ResNet-50 except the ``fc`` classifier."""
    keys = ["conv1.weight", *(f"bn1.{n}" for n in _BN_KEYS)]
    for stage, depth in enumerate(RESNET50_DEPTHS, start=1):
        for block in range(depth):
            prefix = f"layer{stage}.{block}"
            for k in (1, 2, 3):
                keys += [f"{prefix}.conv{k}.weight", *(f"{prefix}.bn{k}.{n}" for n in _BN_KEYS)]
            if block == 0:  # every first block changes the width (and stages 2-4 the stride)
                keys += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{n}" for n in _BN_KEYS)]
    return keys


def resnet50_model() -> ResNetModel:
    """A randomly initialised transformers ResNet-50 (bottleneck, depths 3/4/6/3, widths 256..2048)."""
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(
        layer_type="bottleneck",
        depths=list(RESNET50_DEPTHS),
        hidden_sizes=list(RESNET50_HIDDEN_SIZES),
        embedding_size=64,
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,  # stride in the 3x3 conv, as torchvision's and timm's ResNet-50
    )
    return ResNetModel(config)


def resnet50_state_dict(state: dict[str, torch.Tensor], source: str | Path) -> dict[str, torch.Tensor]:
    """Rename a torchvision/timm ResNet-50 state dict to ``ResNetModel`` keys, checked against its shapes.

    ``fc.*`` is dropped (a long-tail head replaces it); BatchNorm ``num_batches_tracked`` counters may be
    absent (timm omits them; eval never reads them).

    Raises:
        ArtifactError: keys that are not ResNet-50's, ResNet-50 keys the file lacks, or wrong shapes,
            each named in the torchvision layout.
    """
    with torch.device("meta"):  # shapes only: no memory, no random init
        expected = resnet50_model().state_dict()
    names = resnet50_torchvision_keys()
    unknown = sorted(set(state) - set(names) - {k for k in state if k.startswith("fc.")})
    if unknown:
        raise ArtifactError(
            f"{source}: {len(unknown)} keys are not torchvision/timm ResNet-50 keys: {', '.join(unknown[:10])}"
        )
    missing = [k for k in names if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ArtifactError(f"{source}: {len(missing)} ResNet-50 tensors missing: {', '.join(missing[:10])}")
    out = {}
    wrong = []
    for name in names:
        target = _resnet50_key(name)
        value = state.get(name, torch.zeros((), dtype=torch.int64))  # an absent num_batches_tracked
        if value.shape != expected[target].shape:
            wrong.append(f"{name} {tuple(value.shape)} != {tuple(expected[target].shape)}")
        out[target] = value
    if wrong:
        raise ArtifactError(f"{source}: not a ResNet-50, shapes differ: {'; '.join(wrong[:5])}")
    return out


def convert_resnet50(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint`` (a torchvision/timm ResNet-50) as a ``ResNetModel`` folder at ``out``, whole or
    not at all; ``AutoModel.from_pretrained(out)`` and the trainer's ``backbone.path`` load it."""
    from hubtools.hub.artifacts import atomic_dir

    state = resnet50_state_dict(read_state_dict(checkpoint), checkpoint)
    model = resnet50_model()
    model.load_state_dict(state, strict=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
    return Path(out)
