"""Write a BE-DINOv2 backbone as a Hub repo folder: config (with ``auto_map``), safetensors, the two
modeling files, ``preprocessor_config.json`` and a ``vision_backbone`` card recording base checkpoint,
expansion, pretraining data and metrics. Written through ``atomic_dir``: whole or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from transformers import BitImageProcessorPil

from hubtools.hub.artifacts import atomic_dir, save_card
from hubtools.hub.cards import render_card
from hubtools.models.be_dinov2.processing_fundus import FundusImageProcessor
from hubtools.pretrain.augment import IMAGENET_MEAN, IMAGENET_STD

RETINA_TAGS = ["fundus", "retina", "ophthalmology"]
# save_pretrained copies processing_fundus.py and writes its auto_map, so the folder loads without hubtools.
FundusImageProcessor.register_for_auto_class("AutoImageProcessor")


def image_processor(image_size: int) -> BitImageProcessorPil:
    """DINORET's evaluation preprocessing: bicubic resize to a square, no centre crop, ImageNet mean/std.
    The PIL backend is pinned: the torchvision one differs slightly and is not a dependency."""
    return BitImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        resample=3,  # PIL bicubic
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


def expansion_summary(model: nn.Module) -> dict[str, Any]:
    """The card's "Block expansion" table."""
    config = model.config
    trainable = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(tuple(f"encoder.layer.{k}." for k in config.expanded_layer_indices or []))
    )
    return {
        "positions": getattr(config, "expansion_positions", None),
        "expanded_layer_indices": getattr(config, "expanded_layer_indices", None),
        "init": getattr(config, "expansion_init", None),
        "original_depth": getattr(config, "original_num_hidden_layers", config.num_hidden_layers),
        "expanded_depth": config.num_hidden_layers,
        "expanded_block_parameters": trainable,
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }


def save_backbone(
    model: nn.Module,
    out_dir: str | Path,
    *,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    training_data: str | None = None,
    training_procedure: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    summary: str | None = None,
    zoo_fields: Mapping[str, str] | None = None,
    processor: FundusImageProcessor | BitImageProcessorPil | None = None,
) -> Path:
    """Save ``model`` (a ``BeDinov2Model`` or classifier) with processor and card; returns the folder.

    ``zoo_fields`` (modality, anatomy, task, reproduce) go to the card for the model zoo. ``processor``
    defaults to :func:`image_processor` at the config's ``image_size``.
    """
    out_dir = Path(out_dir)
    # Converted weights carry their source's licence (RETFound: cc-by-nc-4.0); hubtools' own default otherwise.
    card_data: dict[str, Any] = {
        "license": getattr(model.config, "weights_license", None) or "apache-2.0",
        "tags": RETINA_TAGS,
    }
    if base_model:
        card_data["base_model"] = base_model
    if datasets:
        card_data["datasets"] = datasets
    card = render_card(
        "vision_backbone",
        card_data=card_data,
        metrics=metrics,
        model_name=model_name or (repo_id or out_dir.name).split("/")[-1],
        summary=summary,
        repo_id=repo_id,
        expansion=expansion_summary(getattr(model, "dinov2", model)),
        model_class="AutoModel" if not hasattr(model, "classifier") else "AutoModelForImageClassification",
        training_data=training_data,
        training_procedure=training_procedure,
        hyperparameters=dict(hyperparameters) if hyperparameters else None,
        **(zoo_fields or {}),
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        (processor or image_processor(int(model.config.image_size))).save_pretrained(tmp)
        save_card(tmp, card)
    return out_dir


def save_classifier(
    model: nn.Module,
    out_dir: str | Path,
    class_names: Sequence[str],
    processor: FundusImageProcessor,
    **card: Any,
) -> Path:
    """Save a fine-tuned classifier as a folder that ``pipeline("image-classification", folder,
    trust_remote_code=True)`` uses as it was trained: ``id2label``/``label2id`` from ``class_names`` (in
    the label order of the data) and the training ``processor`` (its size, not the backbone config's
    ``image_size``, which only sizes the position embeddings). ``card`` goes to :func:`save_backbone`."""
    if len(class_names) != model.config.num_labels:
        raise ValueError(f"{len(class_names)} class names for {model.config.num_labels} labels")
    model.config.id2label = {i: str(name) for i, name in enumerate(class_names)}
    model.config.label2id = {str(name): i for i, name in enumerate(class_names)}
    return save_backbone(model, out_dir, processor=processor, **card)
