"""Downstream protocols (DINORET ``main_finetune.py``): linear probe, full and expanded-block fine-tuning,
few-shot over folds, with the retinal metrics; checkpoint selection by validation quadratic kappa.

Every mode is one :func:`hubtools.train.train` call on a ``BeDinov2ForImageClassification``:

- ``linear``: backbone frozen, head only (the anchor's default ``fix_backbone=True``);
- ``full``: everything trains;
- ``expanded``: the inserted blocks + head (BE-DINORET). The anchor gives the blocks their own lr
  (``block_expansion_lr_scaler``); the shared trainer has one parameter group, so here they share the
  head's lr.

Loss: cross-entropy with inverse-frequency class weights + ``ordinal_weight`` x the differentiable
expected squared grade distance ``Σ_c softmax(ŷ)_c (c - y)²``. ``ordinal_penalty="argmax"`` adds the
anchor's ``mean((y - argmax ŷ)²)`` instead, which has no gradient (it only changes the logged value).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.model_selection import train_test_split
from torch import nn

from hubtools.errors import ConfigError
from hubtools.models.be_dinov2.configuration_be_dinov2 import BeDinov2Config
from hubtools.models.be_dinov2.expand import freeze_original_layers
from hubtools.models.be_dinov2.metrics import classification_metrics, mean_ci
from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2ForImageClassification, BeDinov2Model
from hubtools.pretrain.data import LabelledImages
from hubtools.train import TrainConfig, TrainState, train


class FinetuneConfig(TrainConfig):
    """Shared trainer settings plus the downstream protocol."""

    mode: Literal["linear", "full", "expanded"] = "linear"
    head_pooling: Literal["cls", "mean_patch", "cls_mean"] = "cls"
    classifier_num_layers: int = Field(1, ge=1)
    class_weighting: bool = True
    ordinal_weight: float = Field(0.1, ge=0)
    ordinal_penalty: Literal["expected", "argmax"] = "expected"
    flips: bool = Field(True, description="random horizontal and vertical flips (p 0.5 each) in the loss_fn")
    eval_batch_size: int = Field(128, ge=1)


def as_be_backbone(model: nn.Module) -> BeDinov2Model:
    """A ``BeDinov2Model`` view of any DINOv2 backbone: a plain ``Dinov2Model`` becomes an unexpanded one
    (same weights, strict load) so every protocol runs on one model class."""
    if isinstance(model, BeDinov2Model):
        return model
    fields = {
        k: v
        for k, v in model.config.to_dict().items()
        if k in BeDinov2Config.__dataclass_fields__
        and k not in {"transformers_version", "architectures", "_out_features", "_out_indices", "dtype"}
    }
    wrapped = BeDinov2Model(BeDinov2Config(**fields))
    wrapped.load_state_dict(model.state_dict(), strict=True)
    return wrapped


def build_classifier(
    backbone: nn.Module, num_labels: int, config: FinetuneConfig
) -> BeDinov2ForImageClassification:
    """Classifier on a copy of ``backbone`` with the trainable set of ``config.mode``."""
    backbone = as_be_backbone(backbone)
    fields = {k: v for k, v in backbone.config.to_dict().items() if k not in ("id2label", "label2id")}
    head_config = BeDinov2Config.from_dict(
        {
            **fields,
            "num_labels": num_labels,
            "head_pooling": config.head_pooling,
            "classifier_num_layers": config.classifier_num_layers,
        }
    )
    torch.manual_seed(config.seed)
    model = BeDinov2ForImageClassification(head_config)
    model.dinov2.load_state_dict(backbone.state_dict(), strict=True)
    if config.mode == "linear":
        model.dinov2.requires_grad_(False)
    elif config.mode == "expanded":
        freeze_original_layers(model)
    return model


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | None,
    ordinal_weight: float,
    penalty: str = "expected",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Weighted CE + ordinal distance term (see the module docstring)."""
    ce = F.cross_entropy(logits.float(), labels, weight=class_weights)
    grades = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    if penalty == "expected":
        ordinal = (
            (logits.float().softmax(-1) * (grades.view(1, -1) - labels.view(-1, 1).float()) ** 2)
            .sum(-1)
            .mean()
        )
    else:
        ordinal = ((labels.float() - logits.argmax(-1).float()) ** 2).mean()
    return ce + ordinal_weight * ordinal, {"ce": ce.detach(), "ordinal": ordinal.detach()}


def inverse_frequency_weights(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``n / (C · count_c)``; a class without training examples gets weight 0."""
    counts = torch.bincount(labels, minlength=num_labels).float()
    return torch.where(counts > 0, len(labels) / (num_labels * counts.clamp(min=1)), torch.zeros_like(counts))


@torch.no_grad()
def predict_proba(model: nn.Module, dataset: LabelledImages, batch_size: int = 128) -> np.ndarray:
    """Class probabilities (N, C) in dataset order, model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(pixel_values=dataset.pixel_values[i : i + batch_size].to(device))
        .logits.float()
        .softmax(-1)
        .cpu()
        for i in range(0, len(dataset), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).numpy()


class _BestState:
    """The best-validation-kappa weights so far; a checkpoint object, so a resumed run keeps its best."""

    def __init__(self) -> None:
        self.score = -float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.metrics: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "state": self.state, "metrics": self.metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.state, self.metrics = state["score"], state["state"], state["metrics"]


@dataclass
class FinetuneResult:
    """The classifier with the best validation weights, its validation metrics and (if given) test metrics."""

    model: BeDinov2ForImageClassification
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] = field(default_factory=dict)


def finetune(
    backbone: nn.Module,
    train_set: LabelledImages,
    val_set: LabelledImages,
    config: FinetuneConfig,
    test_set: LabelledImages | None = None,
    num_labels: int | None = None,
) -> FinetuneResult:
    """Train a classifier head (and per ``mode`` some of the backbone); select by validation quadratic kappa."""
    num_labels = num_labels or len(train_set.class_names)
    model = build_classifier(backbone, num_labels, config)
    weights = inverse_frequency_weights(train_set.labels, num_labels) if config.class_weighting else None
    best = _BestState()

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = batch["pixel_values"]
        if config.flips:
            n = x.shape[0]
            h = (torch.rand(n, device=x.device) < 0.5).view(n, 1, 1, 1)
            v = (torch.rand(n, device=x.device) < 0.5).view(n, 1, 1, 1)
            x = torch.where(h, x.flip(-1), x)
            x = torch.where(v, x.flip(-2), x)
        logits = m(pixel_values=x).logits
        w = weights.to(logits.device) if weights is not None else None
        return classification_loss(logits, batch["labels"], w, config.ordinal_weight, config.ordinal_penalty)

    def eval_fn(state: TrainState) -> dict[str, float]:
        metrics = classification_metrics(
            val_set.labels.numpy(), predict_proba(state.model, val_set, config.eval_batch_size), num_labels
        )
        if metrics["kappa_quadratic"] > best.score:
            best.score = metrics["kappa_quadratic"]
            best.state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
            best.metrics = metrics
        return {"val_kappa_quadratic": metrics["kappa_quadratic"], "val_accuracy": metrics["accuracy"]}

    result = train(model, train_set, loss_fn, config, eval_fn=eval_fn, checkpoint_objects=[best])
    trained = result.model
    if best.state is not None:
        trained.load_state_dict(best.state)
    trained.eval()
    test_metrics = {}
    if test_set is not None:
        test_metrics = classification_metrics(
            test_set.labels.numpy(), predict_proba(trained, test_set, config.eval_batch_size), num_labels
        )
    return FinetuneResult(model=trained, val_metrics=best.metrics, test_metrics=test_metrics)


def stratified_split(
    labels: Sequence[int], val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 99
) -> dict[str, list[int]]:
    """Stratified train/val/test indices (DINORET: seed 99); written with the run so it can be reproduced."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    train_idx, rest = train_test_split(
        idx, test_size=val_fraction + test_fraction, stratify=labels, random_state=seed
    )
    if val_fraction == 0:
        return {"train": sorted(train_idx.tolist()), "val": [], "test": sorted(rest.tolist())}
    val_idx, test_idx = train_test_split(
        rest,
        test_size=test_fraction / (val_fraction + test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    return {
        "train": sorted(train_idx.tolist()),
        "val": sorted(val_idx.tolist()),
        "test": sorted(test_idx.tolist()),
    }


def few_shot_indices(labels: Sequence[int], shots: int, fold: int, seed: int = 42) -> list[int]:
    """``shots`` examples per class after a seeded shuffle (seed 42 + fold); shots must not exceed the
    smallest class."""
    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min())
    if shots > smallest:
        raise ConfigError(
            f"{shots}-shot needs at least {shots} images per class; the smallest class has {smallest}"
        )
    order = np.random.default_rng(seed + fold).permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        chosen += order[labels[order] == c][:shots].tolist()
    return sorted(chosen)


def few_shot(
    backbone: nn.Module,
    train_set: LabelledImages,
    val_set: LabelledImages,
    test_set: LabelledImages,
    config: FinetuneConfig,
    shots: Sequence[int] = (5, 10, 20),
    folds: int = 3,
) -> dict[str, Any]:
    """For each N in ``shots``: fine-tune on N images per class for each fold; mean ± sd and 95% CI of the
    test metrics over folds."""
    report: dict[str, Any] = {}
    for n in shots:
        runs = []
        for fold in range(folds):
            subset = train_set.subset(few_shot_indices(train_set.labels.numpy(), n, fold))
            fold_config = config.model_copy(
                update={
                    "output_dir": config.output_dir / f"{n}shot" / f"fold{fold}",
                    "batch_size": min(config.batch_size, len(subset)),
                    "seed": config.seed + fold,
                }
            )
            runs.append(
                finetune(
                    copy.deepcopy(backbone), subset, val_set, fold_config, test_set=test_set
                ).test_metrics
            )
        report[f"{n}-shot"] = {
            key: mean_ci([r[key] for r in runs])
            for key in ("accuracy", "auroc_macro", "aupr_macro", "kappa_quadratic", "f1_macro", "mcc")
        }
    return report
