"""Downstream protocols (DINORET ``main_finetune.py``): linear probe, full and expanded-block fine-tuning,
few-shot over folds, with the retinal metrics; the best validation epoch is kept; class-per-subfolder data
in an explicit class order, preprocessed by the ``FundusImageProcessor`` that is exported with the model.

Every mode is one :func:`hubtools.train.train` call on a ``BeDinov2ForImageClassification``:

- ``linear``: backbone frozen, head only (the anchor's default ``fix_backbone=True``);
- ``full``: everything trains;
- ``expanded``: the inserted blocks + head (BE-DINORET). The anchor gives the blocks their own lr
  (``block_expansion_lr_scaler``); the shared trainer has one parameter group, so here they share the
  head's lr.

Checkpoint selection: ``eval_fn`` of the shared trainer scores the validation split every
``eval_every_epochs`` epochs (the trainer's ``eval_every`` in optimizer steps is set to that many epochs'
steps); the weights of the best row by ``select`` (quadratic kappa for more than 2 classes, AUROC for 2)
are kept in a checkpoint object (so a resumed run keeps them), restored at the end, and the test split is
scored once, on them.

Loss: cross-entropy with inverse-frequency class weights + ``ordinal_weight`` x the differentiable
expected squared grade distance ``Σ_c softmax(ŷ)_c (c - y)²``. ``ordinal_penalty="argmax"`` adds the
anchor's ``mean((y - argmax ŷ)²)`` instead, which has no gradient (it only changes the logged value).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from pydantic import Field
from sklearn.model_selection import train_test_split
from torch import nn

from hubtools.errors import ArtifactError, ConfigError
from hubtools.models.be_dinov2.configuration_be_dinov2 import BeDinov2Config
from hubtools.models.be_dinov2.expand import freeze_original_layers
from hubtools.models.be_dinov2.metrics import (
    balanced_accuracy,
    classification_metrics,
    mean_ci,
    referable_metrics,
)
from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2ForImageClassification, BeDinov2Model
from hubtools.models.be_dinov2.processing_fundus import FundusImageProcessor
from hubtools.pretrain.data import LabelledImages, image_folder, keep_indices
from hubtools.train import TrainConfig, TrainState, train

# ``--select`` name -> key of the metrics dict.
SELECTION_METRICS = {
    "qwk": "kappa_quadratic",
    "auroc": "auroc_macro",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
}
# The five international DR grades, in order, as data sets name them.
DR_GRADE_NAMES = (
    ("0", "1", "2", "3", "4"),
    ("no_dr", "mild", "moderate", "severe", "proliferative"),
    ("no dr", "mild", "moderate", "severe", "proliferative dr"),
    ("no_dr", "mild", "moderate", "severe", "proliferative_dr"),
)
CLASSES_FILE = "classes.txt"


def class_order(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[str], str]:
    """The class order of a class-per-subfolder folder and where it came from: ``classes`` (``--classes``),
    else ``classes.txt`` in the folder (one name a line), else alphabetical. Ordinal grades need the
    explicit order: alphabetical puts "mild" before "moderate" before "no_dr"."""
    root = Path(root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes:
        names, source = [str(c).strip() for c in classes], "--classes"
    elif (root / CLASSES_FILE).is_file():
        names = [line.strip() for line in (root / CLASSES_FILE).read_text(encoding="utf-8").splitlines()]
        names, source = [n for n in names if n], CLASSES_FILE
    else:
        names, source = folders, "alphabetical"
    if not names:
        raise ConfigError(f"{root}: expected one subfolder per class")
    if len(set(names)) != len(names):
        raise ConfigError(f"{root}: class order ({source}) repeats a name: {names}")
    missing = [n for n in names if n not in folders]
    extra = [f for f in folders if f not in names]
    if missing or extra:
        raise ConfigError(
            f"{root}: class order ({source}) {names} does not match the subfolders {folders}"
            + (f"; no folder for {missing}" if missing else "")
            + (f"; not listed: {extra}" if extra else "")
        )
    return names, source


def class_folder_images(
    root: str | Path,
    processor: FundusImageProcessor,
    classes: Sequence[str] | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[LabelledImages, str]:
    """A class-per-subfolder folder preprocessed by ``processor`` (the one exported with the model, so
    training, evaluation and ``pipeline()`` see the same pixels); returns the data and the order's source."""
    names, source = class_order(root, classes)
    files = [
        (f, c)
        for c, name in enumerate(names)
        for f in sorted(image_folder(Path(root) / name, processor.size).names)
    ]
    files = [files[i] for i in keep_indices(len(files), max_samples, seed)]
    pixels = []
    for f, _ in files:
        try:
            with Image.open(f) as image:
                pixels.append(torch.from_numpy(processor.process_one(image)))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ArtifactError(f"{f}: cannot read image: {err}") from None
    return LabelledImages(torch.stack(pixels), torch.tensor([c for _, c in files]), names), source


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
    # Replaces the trainer's step-based ``eval_every`` (set to this many epochs' steps).
    eval_every_epochs: int = Field(
        1, ge=1, description="validation (and selection) every N epochs and at the end"
    )
    select: Literal["qwk", "auroc", "accuracy", "balanced_accuracy"] | None = Field(
        None,
        description="selection metric on the validation split [default: qwk for > 2 classes, auroc for 2]",
    )
    referable_threshold: int | None = Field(
        None,
        ge=1,
        description="also report grades >= K vs < K [default: 2 when the classes are the 5 DR grades]",
    )


def selection_metric(config: FinetuneConfig, num_labels: int) -> str:
    """The ``--select`` name in force: quadratic kappa is meaningless for 2 classes (it equals plain kappa)."""
    return config.select or ("qwk" if num_labels > 2 else "auroc")


def referable_threshold(class_names: Sequence[str], explicit: int | None = None) -> int | None:
    """``explicit``, else 2 when the classes are the five DR grades (by name, in order), else None."""
    if explicit is not None:
        return explicit
    names = tuple(str(c).strip().lower() for c in class_names)
    return 2 if names in DR_GRADE_NAMES else None


def evaluate(
    model: nn.Module,
    dataset: LabelledImages,
    num_labels: int,
    batch_size: int = 128,
    referable: int | None = None,
) -> dict[str, Any]:
    """:func:`classification_metrics` + balanced accuracy (+ ``referable`` metrics for grades >= K)."""
    probs = predict_proba(model, dataset, batch_size)
    y = dataset.labels.numpy()
    metrics = classification_metrics(y, probs, num_labels)
    metrics["balanced_accuracy"] = balanced_accuracy(y, probs.argmax(1), num_labels)
    if referable is not None:
        metrics["referable"] = referable_metrics(y, probs, referable)
    return metrics


def steps_per_epoch(n_examples: int, config: TrainConfig) -> int:
    """Optimizer steps per epoch as the shared trainer counts them (accelerate gives each of the
    ``WORLD_SIZE`` processes ``ceil(batches / processes)`` batches)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    batches = (
        n_examples // config.batch_size if config.drop_last else math.ceil(n_examples / config.batch_size)
    )
    return max(1, math.ceil(math.ceil(batches / processes) / config.gradient_accumulation_steps))


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
    """Every validation row and the weights of the best one so far; a checkpoint object, so a resumed run
    keeps both."""

    def __init__(self) -> None:
        self.score = -float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.metrics: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.selected: dict[str, Any] = {}

    def update(self, row: dict[str, Any], score: float, model: nn.Module) -> None:
        """Record ``row``; keep ``model``'s weights if ``score`` beats every earlier row (ties keep the
        earlier epoch; NaN never wins)."""
        self.rows.append(row)
        if not math.isnan(score) and score > self.score:
            self.score = score
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.metrics = row["metrics"]
            self.selected = {"epoch": row["epoch"], "step": row["step"], "row": len(self.rows) - 1}

    def state_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "state": self.state,
            "metrics": self.metrics,
            "rows": self.rows,
            "selected": self.selected,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.state, self.metrics = state["score"], state["state"], state["metrics"]
        self.rows, self.selected = state["rows"], state["selected"]


@dataclass
class FinetuneResult:
    """The classifier with the selected validation weights, the validation metrics of that epoch, every
    validation row (``{"epoch", "step", "metrics"}``), the selection and (if given) the test metrics."""

    model: BeDinov2ForImageClassification
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] = field(default_factory=dict)
    val_history: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)


def finetune(
    backbone: nn.Module,
    train_set: LabelledImages,
    val_set: LabelledImages,
    config: FinetuneConfig,
    test_set: LabelledImages | None = None,
    num_labels: int | None = None,
) -> FinetuneResult:
    """Train a classifier head (and per ``mode`` some of the backbone); keep the epoch with the best
    validation ``select`` metric; score the test split once on those weights."""
    num_labels = num_labels or len(train_set.class_names)
    select = selection_metric(config, num_labels)
    key = SELECTION_METRICS[select]
    referable = referable_threshold(train_set.class_names, config.referable_threshold)
    if referable is not None and not 0 < referable < num_labels:
        raise ConfigError(f"referable_threshold {referable} must split the {num_labels} classes in two")
    per_epoch = steps_per_epoch(len(train_set), config)
    config = config.model_copy(update={"eval_every": per_epoch * config.eval_every_epochs})
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
        metrics = evaluate(state.model, val_set, num_labels, config.eval_batch_size, referable)
        epoch = state.step / per_epoch  # epochs completed (the trainer logs the 0-based current epoch)
        row = {
            "epoch": int(epoch) if epoch.is_integer() else round(epoch, 4),
            "step": state.step,
            "metrics": metrics,
        }
        best.update(row, float(metrics[key]), state.model)
        return {
            "val_kappa_quadratic": metrics["kappa_quadratic"],
            "val_accuracy": metrics["accuracy"],
            f"val_{key}": metrics[key],
        }

    has_val = len(val_set) > 0
    result = train(
        model, train_set, loss_fn, config, eval_fn=eval_fn if has_val else None, checkpoint_objects=[best]
    )
    trained = result.model
    if best.state is not None:
        trained.load_state_dict(best.state)
    trained.eval()
    test_metrics = {}
    if test_set is not None:
        test_metrics = evaluate(trained, test_set, num_labels, config.eval_batch_size, referable)
    selection = {
        "metric": select,
        "key": key,
        "value": best.score if has_val else None,
        **best.selected,
        "eval_every_epochs": config.eval_every_epochs,
        "steps_per_epoch": per_epoch,
    }
    return FinetuneResult(
        model=trained,
        val_metrics=best.metrics,
        test_metrics=test_metrics,
        val_history=best.rows,
        selection=selection,
    )


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
            runs.append(finetune(copy.deepcopy(backbone), subset, val_set, fold_config, test_set=test_set))
        keys = [
            "accuracy",
            "auroc_macro",
            "aupr_macro",
            "kappa_quadratic",
            "f1_macro",
            "mcc",
            "balanced_accuracy",
        ]
        summary: dict[str, Any] = {k: mean_ci([r.test_metrics[k] for r in runs]) for k in keys}
        if "referable" in runs[0].test_metrics:
            summary["referable_auroc"] = mean_ci([r.test_metrics["referable"]["auroc"] for r in runs])
        summary["folds"] = [
            {"fold": fold, "selection": r.selection, "val_history": r.val_history, "test": r.test_metrics}
            for fold, r in enumerate(runs)
        ]
        report[f"{n}-shot"] = summary
    return report
