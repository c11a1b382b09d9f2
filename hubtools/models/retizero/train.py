"""RetiZero contrastive training on a `datasets` dataset of image–text pairs, through `hubtools.train`, and the
Hub-ready artifact (model + processor + card, LoRA merged by default)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

from hubtools.errors import HubtoolsError
from hubtools.hub.artifacts import atomic_dir, save_card
from hubtools.hub.cards import render_card
from hubtools.models.retizero.modeling_retizero import RetiZeroModel, kl_anneal_weight
from hubtools.models.retizero.processing_retizero import RetiZeroProcessor
from hubtools.models.retizero.zero_shot import DEFAULT_TEMPLATE
from hubtools.train import TrainConfig, TrainResult, train


class PairsDataError(HubtoolsError, ValueError):
    """The image–text dataset lacks a column, or is too small for one batch."""


class _EpochCounter:
    """Completed epochs at the next step, for the KL annealing; checkpointed so a resume anneals exactly."""

    def __init__(self) -> None:
        self.epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])


def open_split(dataset: str, split: str = "train"):
    """A split of a ``save_to_disk`` folder, a data folder (Parquet/CSV/JSON...) or a Hub dataset repo."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(dataset)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
            loaded = load_from_disk(str(path))
        else:
            loaded = load_dataset(str(path) if path.is_dir() else dataset, split=split)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise PairsDataError(f"{dataset}: cannot open split {split!r}: {err}") from None
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise PairsDataError(f"{dataset}: no split {split!r} (splits: {sorted(loaded)})")
        loaded = loaded[split]
    return loaded


def pairs_collate(processor: RetiZeroProcessor, image_column: str = "image", text_column: str = "text"):
    """Batch of dataset rows -> processor output (``pixel_values``, ``input_ids``, ``attention_mask``, ...)."""

    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        images = [row[image_column].convert("RGB") for row in rows]
        return dict(processor(images=images, text=[row[text_column] for row in rows]))

    return collate


def train_retizero(
    model: RetiZeroModel,
    processor: RetiZeroProcessor,
    dataset,
    config: TrainConfig,
    *,
    image_column: str = "image",
    text_column: str = "text",
    sampler: Sampler | None = None,
) -> TrainResult:
    """CLIP (+ evidential) training: LoRA, text tower, projections and temperature are trained (the frozen vision
    base is skipped by the shared loop's optimizer); the temperature is clamped in place after every step.
    ``sampler`` replaces the shuffle (e.g. at most one caption per class in a batch)."""
    processor.check_towers(model.config)
    missing = [c for c in (image_column, text_column) if c not in dataset.column_names]
    if missing:
        raise PairsDataError(f"dataset has no column(s) {missing}; its columns are {dataset.column_names}")
    if len(dataset) < config.batch_size:
        raise PairsDataError(f"dataset has {len(dataset)} rows, fewer than one batch of {config.batch_size}")
    counter = _EpochCounter()
    anneal_epochs = model.config.uncertainty_anneal_epochs

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]):
        out = m(**batch, return_loss=True, kl_anneal=kl_anneal_weight(counter.epoch, anneal_epochs))
        metrics = {"loss_clip": out.loss_clip.detach()}
        if out.loss_uncertainty is not None:
            metrics["loss_uncertainty"] = out.loss_uncertainty.detach()
        return out.loss, metrics

    def on_step_end(state) -> None:
        state.model.clamp_logit_scale_()
        batches = len(sampler if sampler is not None else dataset) // (
            config.batch_size * state.accelerator.num_processes
        )
        steps_per_epoch = max(1, math.ceil(batches / config.gradient_accumulation_steps))
        counter.epoch = state.step // steps_per_epoch

    return train(
        model,
        dataset.with_format(None),
        loss_fn,
        config,
        collate_fn=pairs_collate(processor, image_column, text_column),
        on_step_end=on_step_end,
        checkpoint_objects=[counter],
        sampler=sampler,
    )


def save_retizero(
    model: RetiZeroModel,
    processor: RetiZeroProcessor,
    out_dir: str | Path,
    *,
    merge_lora: bool = True,
    base_model: list[str] | None = None,
    metrics: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    training_data: str | None = None,
    training_procedure: str | None = None,
    candidate_labels: list[str] | None = None,
    repo_id: str | None = None,
    zoo_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write model + processor + card to ``out_dir`` atomically; LoRA is folded in (on a copy) unless
    ``merge_lora=False``, so Hub users need neither peft nor hubtools. ``zoo_fields`` (modality, anatomy,
    task, reproduce) go to the card's catalogue metadata."""
    out_dir = Path(out_dir)
    processor.check_towers(model.config)
    if merge_lora and model.config.vision_lora is not None:
        model = copy.deepcopy(model).merge_vision_lora()
    card_data: dict[str, Any] = {"license": "apache-2.0", "tags": ["zero-shot-image-classification"]}
    if base_model:
        card_data["base_model"] = base_model
    card = render_card(
        "vision_language",
        card_data=card_data,
        metrics=metrics,
        model_name=(repo_id or out_dir.name).split("/")[-1],
        repo_id=repo_id,
        candidate_labels=candidate_labels,
        hypothesis_template=DEFAULT_TEMPLATE,
        vision_tower=model.config.vision_config.model_type,
        text_tower=model.config.text_config.model_type,
        training_data=training_data,
        training_procedure=training_procedure,
        **(zoo_fields or {}),
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        save_card(tmp, card)
    return out_dir


__all__ = ["PairsDataError", "open_split", "pairs_collate", "save_retizero", "train_retizero"]
