"""Train and evaluate a long-tail method on a built long-tailed set (``hubtools longtail train|eval``).

One run = a ``transformers`` image backbone (any ``AutoModel`` config: ResNet, ConvNeXt, ViT,
Dinov2, ..., random weights from ``backbone.model_type`` + ``backbone.options``, or a local
pretrained folder) + a classifier head from :mod:`hubtools.longtail.classifiers`, trained with the
method's loss and sampler through :func:`hubtools.train.train`. The checkpoint with the best
validation ``selection_metric`` (default ``balanced_acc``) is evaluated on test and written as a
Hub model folder (``OUTPUT/model``)::

    config.json, model.safetensors   the backbone (save_pretrained; AutoModel.from_pretrained loads it)
    head.safetensors                 the classifier head
    longtail.json                    method, stage, classifier, cls_num_list, groups, options, image size
    metrics.json                     validation and test lt_report, selected epoch
    README.md                        longtail_classifier card, test metrics as model-index

Two-stage methods (``crt``, ``lws``, ``disalign``, ``mislas``) load ``stage1`` (a folder written by
an earlier run), freeze the encoder for real (``requires_grad=False`` and kept in eval mode, so BN
statistics do not move) and train only the head. Post-hoc methods (``la_posthoc``, ``tau_norm``)
train nothing: they choose tau on validation from a grid and save the corrected model.

Images are decoded once, resized to ``image_size`` and kept as uint8; no augmentation in v1.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from hubtools.config import StrictModel
from hubtools.errors import ArtifactError, ConfigError
from hubtools.longtail.classifiers import TauNormClassifier, get_classifier, logit_adjust, select_tau
from hubtools.longtail.methods import get_loss, get_method
from hubtools.longtail.metrics import lt_report
from hubtools.longtail.samplers import get_sampler
from hubtools.longtail.splits import LTProfile, groups_by_threshold

LONGTAIL_FILE = "longtail.json"
HEAD_FILE = "head.safetensors"
METRICS_JSON = "metrics.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TAU_GRID = tuple(round(0.25 * i, 2) for i in range(9))  # 0, 0.25, ..., 2


class BackboneSpec(StrictModel):
    """A local pretrained folder (``path``), or a ``transformers`` config built from ``model_type`` + ``options``."""

    path: Path | None = None
    model_type: str = "resnet"
    options: dict[str, Any] = Field(default_factory=dict)


class LongTailTrainConfig(StrictModel):
    """``hubtools longtail train`` settings (YAML under ``configs/longtail/``)."""

    dataset: str
    config: str | None = None
    method: str = "erm"
    method_options: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    stage1: Path | None = None
    output_dir: Path = Path("longtail-runs/run")
    image_size: int = Field(32, ge=8)
    num_epochs: int = Field(50, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 1
    mixed_precision: str = "no"
    selection_metric: str = "balanced_acc"
    eval_batch_size: int = Field(256, ge=1)


class LongTailModel(nn.Module):
    """Backbone features -> head logits (+ a fixed post-hoc offset). ``frozen_encoder`` keeps the backbone in eval mode."""

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen_encoder: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen_encoder = frozen_encoder
        self.logit_offset: torch.Tensor | None = None

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state[:, 0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(pixel_values))
        return logits if self.logit_offset is None else logits + self.logit_offset.to(logits)

    def train(self, mode: bool = True) -> LongTailModel:
        super().train(mode)
        if self.frozen_encoder:
            self.backbone.eval()
        return self


class ImageTensors(Dataset):
    """A split's images as uint8 N x 3 x S x S and int64 labels; items are (image, label)."""

    def __init__(self, split: Any, image_size: int) -> None:
        images = [np.asarray(im.convert("RGB").resize((image_size, image_size))) for im in split["image"]]
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(split["label"], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> ImageNet-normalised float pixels."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None]
    return (images.float() / 255.0 - mean) / std


def build_backbone(spec: BackboneSpec) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    if spec.path is not None:
        if not Path(spec.path).is_dir():
            raise ConfigError(f"backbone.path {spec.path}: not a folder (backbones are loaded offline)")
        return AutoModel.from_pretrained(str(spec.path), local_files_only=True)
    try:
        config = AutoConfig.for_model(spec.model_type, **spec.options)
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"backbone model_type {spec.model_type!r} / options {spec.options}: {err}"
        ) from None
    return AutoModel.from_config(config)


def feature_dim(backbone: nn.Module, image_size: int) -> int:
    probe = LongTailModel(backbone, nn.Identity())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = probe.features(torch.zeros(1, 3, image_size, image_size)).shape[1]
    backbone.train(was_training)
    return int(dim)


@torch.no_grad()
def predict(model: LongTailModel, data: ImageTensors, batch_size: int = 256) -> torch.Tensor:
    """Logits of every image of ``data`` (eval mode, on the model's device, returned on CPU)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(normalize(data.images[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(data), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def dataset_profile(ds: Any, profile: LTProfile | None) -> LTProfile:
    """The set's profile, checked against the train labels (counts by class id, never by rank)."""
    labels = np.asarray(ds["train"]["label"], dtype=np.int64)
    feature = ds["train"].features["label"]
    names = list(getattr(feature, "names", None) or [str(i) for i in range(int(labels.max()) + 1)])
    counts = np.bincount(labels, minlength=len(names)).tolist()
    if profile is None:
        head, medium = groups_by_threshold(counts)
        return LTProfile(
            names, counts, counts[0] / max(1, counts[-1]), head, medium, test_distribution="natural"
        )
    if profile.cls_num_list != counts:
        raise ConfigError(
            f"the profile's cls_num_list {profile.cls_num_list} differs from the train labels' {counts}"
        )
    return profile


def save_model(
    folder: Path, model: LongTailModel, info: dict[str, Any], metrics: dict[str, Any], card: Any
) -> Path:
    """Write the model folder whole or not at all."""
    from hubtools.hub.artifacts import atomic_dir, save_card

    with atomic_dir(folder) as tmp:
        model.backbone.save_pretrained(tmp)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, tmp / HEAD_FILE
        )
        (tmp / LONGTAIL_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        save_card(tmp, card)
    return folder


def load_model(folder: str | Path) -> tuple[LongTailModel, dict[str, Any]]:
    """A model folder written by :func:`train_longtail` and its ``longtail.json``."""
    from transformers import AutoModel

    folder = Path(folder)
    if not (folder / LONGTAIL_FILE).is_file() or not (folder / HEAD_FILE).is_file():
        raise ArtifactError(f"{folder}: not a long-tail model folder (needs {LONGTAIL_FILE} and {HEAD_FILE})")
    info = json.loads((folder / LONGTAIL_FILE).read_text(encoding="utf-8"))
    backbone = AutoModel.from_pretrained(str(folder), local_files_only=True)
    num_classes = len(info["cls_num_list"])
    head = get_classifier(
        info["classifier"], info["feature_dim"], num_classes, **info.get("classifier_options", {})
    )
    head.load_state_dict(load_file(folder / HEAD_FILE))
    model = LongTailModel(backbone, head)
    if info.get("logit_offset") is not None:
        model.logit_offset = torch.tensor(info["logit_offset"], dtype=torch.float32)
    return model.eval(), info


def _card(cfg: LongTailTrainConfig, lt: LTProfile, info: dict[str, Any], test: dict[str, Any]) -> Any:
    from hubtools.hub.cards import render_card

    values = {
        k: round(float(test[k]), 4)
        for k in (
            "top1",
            "balanced_acc",
            "group_avg_acc",
            "many_acc",
            "medium_acc",
            "few_acc",
            "macro_f1",
            "macro_auroc",
        )
        if test[k] == test[k]  # nan: a group or metric undefined on this test set
    }
    return render_card(
        "longtail_classifier",
        card_data={"datasets": [cfg.dataset], "tags": [cfg.method]},
        metrics={
            "task_type": "image-classification",
            "dataset": {
                "type": cfg.dataset,
                "name": cfg.dataset,
                "split": "test",
                **({"config": cfg.config} if cfg.config else {}),
            },
            "values": values,
        },
        model_name=f"{Path(cfg.dataset).name}-{cfg.method}",
        method=cfg.method,
        backbone=str(cfg.backbone.path or cfg.backbone.model_type),
        class_names=lt.class_names,
        imbalance_ratio=round(lt.imbalance_ratio, 2),
        head_cutoff=lt.head,
        medium_cutoff=lt.medium,
        group_metrics={"Many": "many_acc", "Medium": "medium_acc", "Few": "few_acc"},
        selection_rule=f"best validation {cfg.selection_metric} (epoch {info['selected_epoch']}); test reported at that epoch",
        hyperparameters={
            k: info[k] for k in ("stage", "classifier", "num_epochs", "batch_size", "lr", "image_size")
        },
        usage_code=(
            "from hubtools.longtail.trainer import load_model\n"
            'model, info = load_model("PATH")   # backbone: transformers.AutoModel.from_pretrained("PATH")'
        ),
    )


def _stage2_model(
    method: Any, cfg: LongTailTrainConfig, num_classes: int
) -> tuple[LongTailModel, dict[str, Any]]:
    if cfg.stage1 is None:
        raise ConfigError(
            f"method {cfg.method!r} is a second stage: set stage1 to the folder of a {method.start_from!r} run"
        )
    model, stage1_info = load_model(cfg.stage1)
    if len(stage1_info["cls_num_list"]) != num_classes:
        raise ConfigError(
            f"stage1 {cfg.stage1} has {len(stage1_info['cls_num_list'])} classes, the dataset {num_classes}"
        )
    if stage1_info["image_size"] != cfg.image_size:
        raise ConfigError(
            f"stage1 {cfg.stage1} was trained at image_size {stage1_info['image_size']}, this run uses {cfg.image_size}"
        )
    model.backbone.requires_grad_(False)
    model.frozen_encoder = True
    return model, stage1_info


def train_longtail(cfg: LongTailTrainConfig) -> Path:
    """Run ``cfg`` end to end; returns the model folder ``OUTPUT/model``."""
    from hubtools.longtail.datasets import load

    method = get_method(cfg.method)
    ds, profile = load(cfg.dataset, cfg.config)
    for split in ("train", "validation", "test"):
        if split not in ds:
            raise ConfigError(f"dataset {cfg.dataset}: no {split!r} split (has {list(ds)})")
    lt = dataset_profile(ds, profile)
    counts = lt.cls_num_list
    options = dict(cfg.method_options)
    if cfg.method == "ldam_drw":
        options.setdefault("num_epochs", cfg.num_epochs)
    loss = get_loss(cfg.method, counts, **options)  # bad options fail here, before any image is decoded

    torch.manual_seed(cfg.seed)
    train_data, val_data, test_data = (
        ImageTensors(ds[s], cfg.image_size) for s in ("train", "validation", "test")
    )
    info: dict[str, Any] = {
        "method": cfg.method,
        "stage": method.stage,
        "start_from": method.start_from,
        "classifier": method.classifier,
        "sampler": method.sampler,
        "method_options": options,
        "cls_num_list": counts,
        "class_names": lt.class_names,
        "head": lt.head,
        "medium": lt.medium,
        "image_size": cfg.image_size,
        "normalization": "imagenet",
        "num_epochs": cfg.num_epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "dataset": cfg.dataset,
        "config": cfg.config,
        "classifier_options": {},
        "logit_offset": None,
    }

    def report(model: LongTailModel, data: ImageTensors) -> dict[str, Any]:
        return lt_report(predict(model, data, cfg.eval_batch_size), data.labels, lt)

    if method.group == "post-hoc":
        model, stage1 = _stage2_model(method, cfg, len(counts))
        info.update(feature_dim=stage1["feature_dim"], stage=2, classifier="linear", selected_epoch=0)
        val_logits = predict(model, val_data, cfg.eval_batch_size)
        if cfg.method == "la_posthoc":

            def score(tau: float) -> float:
                return lt_report(logit_adjust(val_logits, counts, tau), val_data.labels, lt)[
                    cfg.selection_metric
                ]

            tau, _ = select_tau(score, TAU_GRID)
            model.logit_offset = (
                -tau * torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
            )
            info["logit_offset"] = model.logit_offset.tolist()
        else:
            if not isinstance(model.head, nn.Linear):
                raise ConfigError(
                    f"tau_norm needs a linear stage-1 head, {cfg.stage1} has {stage1['classifier']!r}"
                )
            linear = model.head
            feats = _features(model, val_data, cfg.eval_batch_size)

            def score(tau: float) -> float:
                logits = TauNormClassifier(linear.in_features, len(counts), linear, tau)(feats)
                return lt_report(logits, val_data.labels, lt)[cfg.selection_metric]

            tau, _ = select_tau(score, tuple(round(0.1 * i, 1) for i in range(21)))
            model.head = TauNormClassifier(linear.in_features, len(counts), linear, tau)
            info.update(classifier="tau_norm", classifier_options={"tau": tau})
        info["tau"] = tau
    else:
        if method.stage == 2:
            model, stage1 = _stage2_model(method, cfg, len(counts))
            dim = stage1["feature_dim"]
            if method.classifier == "linear":
                model.head = get_classifier("linear", dim, len(counts))
            else:
                if not isinstance(model.head, nn.Linear):
                    raise ConfigError(
                        f"{cfg.method} needs a linear stage-1 head, {cfg.stage1} has {stage1['classifier']!r}"
                    )
                model.head = get_classifier(method.classifier, dim, len(counts), linear=model.head)
        else:
            backbone = build_backbone(cfg.backbone)
            dim = feature_dim(backbone, cfg.image_size)
            model = LongTailModel(backbone, get_classifier(method.classifier, dim, len(counts)))
        info["feature_dim"] = dim
        model, selected_epoch = _fit(model, loss, method.sampler, train_data, val_data, lt, cfg, report)
        info["selected_epoch"] = selected_epoch

    model.eval()
    metrics = {
        "validation": report(model, val_data),
        "test": report(model, test_data),
        "selected_epoch": info["selected_epoch"],
        "selection_metric": cfg.selection_metric,
    }
    folder = Path(cfg.output_dir) / "model"
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun only rank 0 writes
        save_model(folder, model, info, metrics, _card(cfg, lt, info, metrics["test"]))
    return folder


@torch.no_grad()
def _features(model: LongTailModel, data: ImageTensors, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model.features(normalize(data.images[i : i + batch_size])) for i in range(0, len(data), batch_size)]
    )


def _fit(
    model: LongTailModel,
    loss: nn.Module,
    sampler_name: str,
    train_data: ImageTensors,
    val_data: ImageTensors,
    lt: LTProfile,
    cfg: LongTailTrainConfig,
    report: Any,
) -> tuple[LongTailModel, int]:
    """Train with the shared loop; keep the weights of the epoch with the best validation metric."""
    from hubtools.train import TrainConfig, train

    sampler = get_sampler(
        sampler_name, train_data.labels.numpy(), lt.cls_num_list, num_epochs=cfg.num_epochs, seed=cfg.seed
    )
    steps_per_epoch = max(1, len(sampler) // cfg.batch_size)
    train_cfg = TrainConfig(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        num_epochs=cfg.num_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        mixed_precision=cfg.mixed_precision,
        eval_every=steps_per_epoch,
        log_every=steps_per_epoch,
        keep_last=1,
    )
    best: dict[str, Any] = {"score": -float("inf"), "state": None, "epoch": 0}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        if loss.counts.device != images.device:
            loss.to(images.device)
        loss.set_epoch(sampler.epoch)  # the loader sets the sampler's epoch at the start of each epoch
        return loss(m(normalize(images)), labels)

    def eval_fn(state: Any) -> dict[str, float]:
        r = report(state.model, val_data)
        score = r[cfg.selection_metric]
        if score > best["score"]:
            best.update(score=score, epoch=state.epoch, state=copy.deepcopy(state.model.state_dict()))
        return {f"val_{k}": r[k] for k in ("top1", "balanced_acc", "group_avg_acc", "few_acc")}

    loss.train()
    result = train(model, train_data, loss_fn, train_cfg, eval_fn=eval_fn, sampler=sampler)
    model = result.model
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return model, int(best["epoch"])


def evaluate_model(
    folder: str | Path, dataset: str, config: str | None = None, split: str = "test", batch_size: int = 256
) -> dict[str, Any]:
    """``lt_report`` of a saved model on ``split`` of a long-tailed set."""
    from hubtools.longtail.datasets import load

    model, info = load_model(folder)
    ds, profile = load(dataset, config)
    if split not in ds:
        raise ConfigError(f"dataset {dataset}: no {split!r} split (has {list(ds)})")
    lt = dataset_profile(ds, profile)
    if lt.cls_num_list != info["cls_num_list"]:
        raise ConfigError(
            f"model {folder} was trained on counts {info['cls_num_list']}, {dataset} has {lt.cls_num_list}"
        )
    data = ImageTensors(ds[split], info["image_size"])
    return lt_report(predict(model, data, batch_size), data.labels, lt)
