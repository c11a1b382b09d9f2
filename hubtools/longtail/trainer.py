"""Train and evaluate a long-tail method on a built long-tailed set (``hubtools longtail train|eval``).

One run = a ``transformers`` image backbone (any ``AutoModel`` config: ResNet, ConvNeXt, ViT,
Dinov2, ..., random weights from ``backbone.model_type`` + ``backbone.options``, or a local
pretrained folder) + a classifier head from :mod:`hubtools.longtail.classifiers`, trained with the
method's loss and sampler through :func:`hubtools.train.train`. The checkpoint with the best
validation ``selection_metric`` (default ``balanced_acc``) is evaluated on test and written as a
Hub model folder (``OUTPUT/model``)::

    config.json, model.safetensors   LongTailForImageClassification (backbone + head + post-hoc offset):
                                     AutoModelForImageClassification / pipeline("image-classification")
                                     load it, without hubtools through trust_remote_code=True
    configuration_*.py, modeling_*.py its remote code; preprocessor_config.json the image processor
    longtail.json                    method, stage, classifier, cls_num_list, groups, options, image size
    metrics.json                     validation and test lt_report, selected epoch
    README.md                        longtail_classifier card, test metrics as model-index

Two-stage methods (``crt``, ``lws``, ``disalign``, ``mislas``, ``gcl_2nd``) load ``stage1`` (a folder
written by an earlier run), freeze the encoder for real (``requires_grad=False`` and kept in eval
mode, so BN statistics do not move; MiSLAS's ``shift_bn`` lets only the BN running statistics follow
the re-balanced data) and train only the head. ``la_posthoc``, ``tau_norm`` and ``knn`` train
nothing: they choose tau on validation from a grid, or fit class means, and save the corrected model.

Per-batch work happens inside the loss function of the shared loop (so exact resume holds):
RandAugment on the uint8 batch, mixup, BBN's two branches (a :class:`PairedSampler` feeds
uniform and re-balanced examples together), the multi-expert logits of SADE/RIDE, and SAM, whose
two gradient evaluations run there too: :func:`sam_surrogate` returns a loss whose gradient at w is
the gradient at w + eps, so the loop's ordinary backward and Adam step finish the SAM update
without a hook in :mod:`hubtools.train`. ``flex_rs`` gets each validation's per-class recall.
``rsg`` runs the backbone stage by stage to insert its sample generator after the middle stage
(training only: the saved model is the plain backbone and head).

Images are decoded once, resized to ``image_size`` and kept as uint8. The train-time augmentation
(``augmentation``, MONICA's by default: :class:`~hubtools.longtail.augment.RecipeAugment`) acts on each
uint8 batch inside the loss function too; ``recipe`` fills the settings MONICA fixes
(:mod:`hubtools.longtail.recipes`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from hubtools.config import StrictModel
from hubtools.errors import ArtifactError, ConfigError
from hubtools.longtail.augment import RandAugment, RSGModule, mixup_batch, mixup_loss
from hubtools.longtail.classifiers import (
    NCMClassifier,
    TauNormClassifier,
    get_classifier,
    logit_adjust,
    select_tau,
)
from hubtools.longtail.experts import BBNBranchHead, ExpertHeads
from hubtools.longtail.methods import Method, get_loss, get_method, method_options
from hubtools.longtail.metrics import lt_report
from hubtools.longtail.recipes import get_augmentation
from hubtools.longtail.samplers import PairedSampler, get_sampler
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
    """``hubtools longtail train`` settings (YAML under ``configs/longtail/``).

    ``recipe`` (:mod:`hubtools.longtail.recipes`: ``monica``, ``plain``) supplies image size, epochs,
    batch, lr, weight decay and augmentation; any of them given explicitly wins. Without a recipe
    the defaults are MONICA's optimisation at 32 px with MONICA's augmentation.
    """

    recipe: str | None = None
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
    augmentation: str = "monica"
    augmentation_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("recipe") is not None:
            from hubtools.longtail.recipes import recipe_defaults

            data = {
                **recipe_defaults(str(data["recipe"])),
                **{k: v for k, v in data.items() if v is not None},
            }
        return data

    @model_validator(mode="after")
    def _known_augmentation(self) -> LongTailTrainConfig:
        from hubtools.longtail.recipes import AUGMENTATIONS

        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}"
            )
        get_augmentation(self.augmentation, **self.augmentation_options)  # unknown options fail here
        return self


class LongTailModel(nn.Module):
    """Backbone features -> head logits (+ a fixed post-hoc offset).

    ``frozen_encoder`` keeps the backbone in eval mode; with ``shift_bn`` its BatchNorm layers still
    follow the train mode (running statistics move, weights stay frozen: MiSLAS). A head with
    ``feature_map = True`` (the experts) gets the unpooled output of the backbone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen_encoder: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen_encoder = frozen_encoder
        self.shift_bn = False
        self.logit_offset: torch.Tensor | None = None
        self.rsg: RSGModule | None = None  # training only (``rsg``); dropped before saving

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixel_values)
        if getattr(self.head, "feature_map", False):
            return out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state[:, 0]

    def forward(
        self,
        pixel_values: torch.Tensor,
        train_output: bool = False,
        bbn_alpha: float | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits; ``train_output=True``: (training logits, features), where the training logits are
        the K x B x C expert logits of an expert head, or BBN's mix of the two halves of the batch
        (uniform, re-balanced) with ``bbn_alpha``. With an RSG module and ``targets``:
        (logits, targets, CESC, MV) over the batch plus its synthesised tail samples."""
        if train_output and self.rsg is not None:
            return self._rsg_forward(pixel_values, targets)
        features = self.features(pixel_values)
        if not train_output:
            logits = self.head(features)
            return logits if self.logit_offset is None else logits + self.logit_offset.to(logits)
        if isinstance(self.head, ExpertHeads):
            return self.head.expert_logits(features), features
        if bbn_alpha is not None:
            return self.head.mix(*features.chunk(2), bbn_alpha), features
        return self.head(features), features

    def _rsg_forward(self, pixel_values: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stages = self.backbone.encoder.stages
        split = rsg_split(self.backbone)
        hidden = self.backbone.embedder(pixel_values)
        for stage in stages[:split]:
            hidden = stage(hidden)
        hidden, targets, cesc, mv = self.rsg(hidden, targets)
        for stage in stages[split:]:
            hidden = stage(hidden)
        return self.head(self.backbone.pooler(hidden).flatten(1)), targets, cesc, mv

    def train(self, mode: bool = True) -> LongTailModel:
        super().train(mode)
        if self.frozen_encoder:
            self.backbone.eval()
            if self.shift_bn:
                for m in self.backbone.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train(mode)
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


class PairedImages(Dataset):
    """BBN's view of the train images: item (u, r) is (image u, label u, image r, label r)."""

    def __init__(self, data: ImageTensors) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, pair: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        u, r = pair
        return self.data.images[u], self.data.labels[u], self.data.images[r], self.data.labels[r]


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
    """Write the model folder whole or not at all: a ``LongTailForImageClassification`` (config.json with
    ``auto_map``, model.safetensors, its two code files) and a ``ViTImageProcessor`` config of the training
    preprocessing, so ``AutoModelForImageClassification`` and ``pipeline("image-classification")`` load
    it with or without hubtools; plus longtail.json, metrics.json and the card."""
    from hubtools.hub.artifacts import atomic_dir, save_card
    from hubtools.longtail.convert import image_processor, to_transformers

    classifier = to_transformers(model, info)
    with atomic_dir(folder) as tmp:
        classifier.save_pretrained(tmp)
        image_processor(info["image_size"]).save_pretrained(tmp)
        (tmp / LONGTAIL_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        save_card(tmp, card)
    return folder


def load_model(folder: str | Path) -> tuple[LongTailModel, dict[str, Any]]:
    """A model folder written by :func:`train_longtail` and its ``longtail.json``; folders of the earlier
    format (the backbone's own config.json + model.safetensors, and ``head.safetensors``) still load."""
    from transformers import AutoModel

    from hubtools.models.longtail_classifier import LongTailClassifierConfig, LongTailForImageClassification

    folder = Path(folder)
    config_file = folder / "config.json"
    model_type = (
        json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        if config_file.is_file()
        else None
    )
    is_classifier = model_type == LongTailClassifierConfig.model_type
    if not (folder / LONGTAIL_FILE).is_file() or not (is_classifier or (folder / HEAD_FILE).is_file()):
        raise ArtifactError(
            f"{folder}: not a long-tail model folder (needs {LONGTAIL_FILE} and a "
            f"{LongTailClassifierConfig.model_type!r} config.json or {HEAD_FILE}; config.json has {model_type!r})"
        )
    info = json.loads((folder / LONGTAIL_FILE).read_text(encoding="utf-8"))
    if is_classifier:
        classifier = LongTailForImageClassification.from_pretrained(str(folder), local_files_only=True)
        backbone, head_state = classifier.backbone, classifier.head.state_dict()
    else:
        backbone = AutoModel.from_pretrained(str(folder), local_files_only=True)
        head_state = load_file(folder / HEAD_FILE)
    num_classes = len(info["cls_num_list"])
    head = get_classifier(
        info["classifier"], info["feature_dim"], num_classes, **info.get("classifier_options", {})
    )
    head.load_state_dict(head_state)
    model = LongTailModel(backbone, head)
    if info.get("logit_offset") is not None:
        model.logit_offset = torch.tensor(info["logit_offset"], dtype=torch.float32)
    return model.eval(), info


def _zoo_fields(cfg: LongTailTrainConfig) -> dict[str, str]:
    """Catalogue fields of the trained model: modality and anatomy are the training set's (read from its
    card, a local build folder or a Hub dataset repo), so the zoo need not guess them."""
    from huggingface_hub import DatasetCard

    fields = {"task": "image-classification"}
    command = f"hubtools longtail train --dataset {cfg.dataset} --method {cfg.method}"
    if cfg.config:
        command += f" --config {cfg.config}"
    fields["reproduce"] = command
    source = Path(cfg.dataset) / "README.md" if Path(cfg.dataset).is_dir() else cfg.dataset
    try:
        data = DatasetCard.load(source, repo_type="dataset").data.to_dict()
    except Exception as exc:  # a card is optional: the fields are then simply absent
        logging.getLogger(__name__).info(
            "no dataset card for %s (%s): modality/anatomy not set", cfg.dataset, exc
        )
        return fields
    fields.update({k: str(data[k]) for k in ("modality", "anatomy") if data.get(k)})
    return fields


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
        **_zoo_fields(cfg),
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
            "from transformers import AutoModelForImageClassification, pipeline\n\n"
            "# the model's code ships in the folder (trust_remote_code); hubtools is not needed\n"
            'classify = pipeline("image-classification", model="PATH", trust_remote_code=True)\n'
            'print(classify("image.png"))  # class names with softmax scores\n'
            'model = AutoModelForImageClassification.from_pretrained("PATH", trust_remote_code=True)\n'
            '# with hubtools: from hubtools.longtail.trainer import load_model; model, info = load_model("PATH")'
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


def rsg_split(backbone: nn.Module) -> int:
    """RSG sits after the middle stage: ceil(stages / 2) (a 3-stage CIFAR ResNet: after stage 2)."""
    stages = getattr(getattr(backbone, "encoder", None), "stages", None)
    if (
        stages is None
        or not hasattr(backbone, "embedder")
        or not hasattr(backbone, "pooler")
        or len(stages) < 2
    ):
        raise ConfigError(
            f"rsg needs a ResNet-like backbone (embedder, encoder.stages, pooler), got {type(backbone).__name__}"
        )
    return (len(stages) + 1) // 2


def _head_options(method: Method, mopts: dict[str, Any]) -> dict[str, Any]:
    """Method options that configure the classifier head (``de_confound``'s hyper-parameters)."""
    if method.classifier != "de_confound":
        return {}
    return {k: mopts[k] for k in ("num_heads", "tau", "gamma", "alpha", "momentum")}


def _new_model(
    method: Method, cfg: LongTailTrainConfig, mopts: dict[str, Any], lt: LTProfile
) -> tuple[LongTailModel, dict[str, Any]]:
    """A stage-1 model (backbone + the method's head, + RSG); returns it and the head's rebuild options."""
    num_classes = len(lt.cls_num_list)
    backbone = build_backbone(cfg.backbone)
    dim = feature_dim(backbone, cfg.image_size)
    classifier = method.classifier
    if method.model == "experts":
        head, options = ExpertHeads.split_backbone(backbone, dim, num_classes, mopts.get("num_experts", 3))
    elif method.model == "bbn" and mopts["bbn_branches"] != "shared":
        if mopts["bbn_branches"] != "separate":
            raise ConfigError(f"bbn_branches must be 'shared' or 'separate', got {mopts['bbn_branches']!r}")
        head, options = BBNBranchHead.split_backbone(backbone, dim, num_classes)
        classifier = "bbn_separate"
    else:
        options = _head_options(method, mopts)
        head = get_classifier(method.classifier, dim, num_classes, **options)
    model = LongTailModel(backbone, head)
    if method.model == "rsg":
        split = rsg_split(backbone)
        with torch.no_grad():
            probe = backbone.embedder(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
            for stage in backbone.encoder.stages[:split]:
                probe = stage(probe)
        model.rsg = RSGModule(
            probe.shape[1],
            num_classes,
            head_classes=lt.head,
            n_center=mopts["n_center"],
            contrastive_dim=mopts["contrastive_dim"],
            strength=mopts["strength"],
        )
    return model, {"feature_dim": dim, "classifier": classifier, "classifier_options": options}


def _posthoc(
    cfg: LongTailTrainConfig,
    model: LongTailModel,
    stage1: dict[str, Any],
    data: tuple[ImageTensors, ImageTensors],
    lt: LTProfile,
    info: dict[str, Any],
) -> None:
    """``la_posthoc`` / ``tau_norm`` (tau chosen on validation) and ``knn`` (class means of train features)."""
    train_data, val_data = data
    counts = lt.cls_num_list
    if cfg.method != "la_posthoc" and not isinstance(model.head, nn.Linear):
        raise ConfigError(
            f"{cfg.method} needs a linear stage-1 head, {cfg.stage1} has {stage1['classifier']!r}"
        )
    if cfg.method == "la_posthoc":
        val_logits = predict(model, val_data, cfg.eval_batch_size)

        def score(tau: float) -> float:
            return lt_report(logit_adjust(val_logits, counts, tau), val_data.labels, lt)[cfg.selection_metric]

        tau, _ = select_tau(score, TAU_GRID)
        model.logit_offset = -tau * torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
        info.update(logit_offset=model.logit_offset.tolist(), tau=tau)
    elif cfg.method == "tau_norm":
        linear = model.head
        feats = _features(model, val_data, cfg.eval_batch_size)

        def score(tau: float) -> float:
            logits = TauNormClassifier(linear.in_features, len(counts), linear, tau)(feats)
            return lt_report(logits, val_data.labels, lt)[cfg.selection_metric]

        tau, _ = select_tau(score, tuple(round(0.1 * i, 1) for i in range(21)))
        model.head = TauNormClassifier(linear.in_features, len(counts), linear, tau)
        info.update(classifier="tau_norm", classifier_options={"tau": tau}, tau=tau)
    else:  # knn: one pass over train with eval transforms
        feats = _features(model, train_data, cfg.eval_batch_size)
        model.head = NCMClassifier(feats.shape[1], len(counts)).fit(feats, train_data.labels)
        info.update(classifier="ncm")


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
    num_epochs = max(1, round(cfg.num_epochs * method.epochs_scale))
    loss_params = inspect.signature(method.loss).parameters
    if "num_epochs" in loss_params:
        options.setdefault("num_epochs", num_epochs)
    if "medium" in loss_params:  # seql's default lambda masks the few group, which starts at lt.medium
        options.setdefault("medium", lt.medium)
    loss = get_loss(cfg.method, counts, **options)  # bad options fail here, before any image is decoded
    mopts = method_options(cfg.method, **options)
    if method.stage == 2 and cfg.stage1 is None:
        raise ConfigError(
            f"method {cfg.method!r} is a second stage: set stage1 to the folder of a {method.start_from!r} run"
        )

    torch.manual_seed(cfg.seed)
    train_data, val_data, test_data = (
        ImageTensors(ds[s], cfg.image_size) for s in ("train", "validation", "test")
    )
    info: dict[str, Any] = {
        "method": cfg.method,
        "stage": method.stage,
        "start_from": method.start_from,
        "classifier": method.classifier,
        "sampler": mopts["sampler"],
        "method_options": options,
        "resolved_options": mopts,
        "cls_num_list": counts,
        "class_names": lt.class_names,
        "head": lt.head,
        "medium": lt.medium,
        "image_size": cfg.image_size,
        "normalization": "imagenet",
        "recipe": cfg.recipe,
        "augmentation": cfg.augmentation,
        "augmentation_options": cfg.augmentation_options,
        "num_epochs": num_epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "dataset": cfg.dataset,
        "config": cfg.config,
        "classifier_options": {},
        "logit_offset": None,
    }

    def report(model: LongTailModel, data: ImageTensors) -> dict[str, Any]:
        return lt_report(predict(model, data, cfg.eval_batch_size), data.labels, lt)

    if not method.trained:
        model, stage1 = _stage2_model(method, cfg, len(counts))
        info.update(feature_dim=stage1["feature_dim"], classifier="linear", selected_epoch=0)
        _posthoc(cfg, model, stage1, (train_data, val_data), lt, info)
    else:
        if method.stage == 2:
            model, stage1 = _stage2_model(method, cfg, len(counts))
            dim = stage1["feature_dim"]
            if method.classifier in ("lws", "disalign", "mislas"):  # wrap the trained stage-1 head
                if not isinstance(model.head, nn.Linear):
                    raise ConfigError(
                        f"{cfg.method} needs a linear stage-1 head, {cfg.stage1} has {stage1['classifier']!r}"
                    )
                model.head = get_classifier(method.classifier, dim, len(counts), linear=model.head)
            else:  # a fresh head of the method's kind
                model.head = get_classifier(method.classifier, dim, len(counts))
            model.shift_bn = bool(mopts.get("shift_bn", False))
            info["feature_dim"] = dim
        else:
            model, head_info = _new_model(method, cfg, mopts, lt)
            info.update(head_info)
        model, selected_epoch = _fit(
            model,
            loss,
            method,
            mopts,
            train_data,
            val_data,
            lt,
            cfg.model_copy(update={"num_epochs": num_epochs}),
            report,
        )
        model.rsg = None  # a training-time module: the saved model is backbone + head
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


def sam_rho(epoch: int, num_epochs: int, rhos: tuple[float, float, float] = (0.05, 0.1, 0.5)) -> float:
    """SAM's radius: 0.05 while e <= 5/90 E, 0.1 while e <= 60/90 E, then 0.5 (the anchor's 5/60 of 90 epochs)."""
    if 90 * epoch <= 5 * num_epochs:
        return rhos[0]
    if 90 * epoch <= 60 * num_epochs:
        return rhos[1]
    return rhos[2]


def sam_surrogate(model: nn.Module, compute: Callable[[], torch.Tensor], rho: float) -> torch.Tensor:
    """One SAM evaluation (Foret et al.): the value of the loss at w + eps, eps = rho g / ||g||_2, as a
    surrogate whose gradient with respect to the weights w is the gradient at w + eps.

    ``compute()`` evaluates the loss with ``model`` as it is. The weights are perturbed, the second
    gradient taken, and the weights restored before returning, so the caller's ordinary backward and
    base optimiser step (Adam in MONICA) apply the sharpness-aware gradient at w. BatchNorm running
    statistics are updated by the first pass only. Under several processes both gradients are
    all-reduced by hand (the forwards run under DDP's ``no_sync``, so its hooks stay idle), so every
    process perturbs the same way: written for DDP, but only single-process runs are tested.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()

    def gradient(value: torch.Tensor) -> list[torch.Tensor]:
        grads = torch.autograd.grad(value, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        if distributed:
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(torch.distributed.get_world_size())
        return grads

    no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with no_sync():
        grads = gradient(compute())
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).float()
        eps = [rho * g / (norm + 1e-12) for g in grads]
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        try:
            for m in norms:
                m.momentum = 0.0  # running = (1 - 0) running + 0 batch: unchanged
            perturbed = compute()
            grads2 = gradient(perturbed)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            with torch.no_grad():
                for p, e in zip(params, eps, strict=True):
                    p.sub_(e)
    linear = sum((p * g).sum() for p, g in zip(params, grads2, strict=True))
    return perturbed.detach() + linear - linear.detach()


def bbn_alpha(epoch: int, num_epochs: int) -> float:
    """BBN's cumulative-learning weight alpha = 1 - (e/E)^2 (1 at e = 0, close to 0 at the last epoch)."""
    return 1.0 - (epoch / num_epochs) ** 2


def epoch_train_config(cfg: Any, items_per_epoch: int, scheduler: str = "constant") -> Any:
    """Settings of the shared loop for a run that validates (and logs) once per epoch of ``items_per_epoch``.

    ``cfg`` carries output_dir, seed, num_epochs, batch_size, lr, weight_decay and mixed_precision
    (the single- and the multi-label train configs). Under ``accelerate launch`` each of WORLD_SIZE
    processes takes every N-th batch (accelerate evens them out), so an epoch is ceil(batches / N)
    optimiser steps, not ``batches``.
    """
    from hubtools.train import TrainConfig

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = max(1, math.ceil((items_per_epoch // cfg.batch_size) / world_size))
    return TrainConfig(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        num_epochs=cfg.num_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        mixed_precision=cfg.mixed_precision,
        scheduler=scheduler,
        eval_every=steps_per_epoch,
        log_every=steps_per_epoch,
        keep_last=1,
    )


def _fit(
    model: LongTailModel,
    loss: nn.Module,
    method: Method,
    mopts: dict[str, Any],
    train_data: ImageTensors,
    val_data: ImageTensors,
    lt: LTProfile,
    cfg: LongTailTrainConfig,
    report: Any,
) -> tuple[LongTailModel, int]:
    """Train with the shared loop; keep the weights of the epoch with the best validation metric."""
    from hubtools.train import train

    labels = train_data.labels.numpy()
    common = {"num_epochs": cfg.num_epochs, "seed": cfg.seed}
    dataset: Dataset = train_data
    if method.model == "bbn":
        sampler: Any = PairedSampler(
            get_sampler("instance", labels, lt.cls_num_list, **common),
            get_sampler(
                mopts["bbn_sampler"], labels, lt.cls_num_list, num_epochs=cfg.num_epochs, seed=cfg.seed + 1
            ),
        )
        dataset = PairedImages(train_data)
    else:
        extra = {"flex_mode": mopts["flex_mode"]} if mopts["sampler"] == "flex" else {}
        sampler = get_sampler(mopts["sampler"], labels, lt.cls_num_list, **common, **extra)
    train_cfg = epoch_train_config(cfg, len(sampler), mopts.get("scheduler", "constant"))
    best: dict[str, Any] = {"score": -float("inf"), "state": None, "epoch": 0}
    randaugment = (
        RandAugment(mopts["num_ops"], mopts["magnitude"]) if method.augment == "randaugment" else None
    )
    recipe_augment = get_augmentation(cfg.augmentation, **cfg.augmentation_options)

    def augment(images: torch.Tensor) -> torch.Tensor:
        return images if recipe_augment is None else recipe_augment(images)

    feature_kw = getattr(loss, "needs_features", False)

    def batch_loss(m: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = augment(images)
        if randaugment is not None:
            images = randaugment(images)
        x = normalize(images)
        if method.augment == "mixup":
            x, perm, lam = mixup_batch(x, mopts["mixup_alpha"])
        logits, features = m(x, train_output=True)
        kw = {"features": features} if feature_kw else {}
        if method.augment == "mixup":
            return mixup_loss(loss, logits, targets, perm, lam, **kw)
        return loss(logits, targets, **kw)

    def bbn_loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        img_u, y_u, img_r, y_r = batch
        alpha = bbn_alpha(sampler.epoch, cfg.num_epochs)
        pixels = torch.cat([normalize(augment(img_u)), normalize(augment(img_r))])
        logits, _ = m(pixels, train_output=True, bbn_alpha=alpha)
        return alpha * loss(logits, y_u) + (1 - alpha) * loss(logits, y_r)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if loss.counts.device != batch[0].device:
            loss.to(batch[0].device)
        loss.set_epoch(sampler.epoch)  # the loader sets the sampler's epoch at the start of each epoch
        if method.model == "bbn":
            return bbn_loss(m, batch)
        if method.model == "rsg":  # transfer from floor(0.8 E) (the anchor's epoch 160 never comes at E = 50)
            model.rsg.transfer = sampler.epoch >= math.floor(0.8 * cfg.num_epochs)
            logits, targets, cesc, mv = m(normalize(augment(batch[0])), train_output=True, targets=batch[1])
            return loss(logits, targets) + mopts["cesc_weight"] * cesc + mopts["mv_weight"] * mv
        if method.optimizer_step == "sam":
            rho = mopts["rho"] if mopts["rho"] is not None else sam_rho(sampler.epoch, cfg.num_epochs)
            return sam_surrogate(m, lambda: batch_loss(m, *batch), rho)
        return batch_loss(m, *batch)

    def eval_fn(state: Any) -> dict[str, float]:
        r = report(state.model, val_data)
        if mopts["sampler"] == "flex":  # the next epoch re-weights by this validation's recall
            sampler.set_recall([1.0 if math.isnan(v) else v / 100.0 for v in r["per_class_recall"]])
        score = r[cfg.selection_metric]
        if score > best["score"]:
            best.update(score=score, epoch=state.epoch, state=copy.deepcopy(state.model.state_dict()))
        return {f"val_{k}": r[k] for k in ("top1", "balanced_acc", "group_avg_acc", "few_acc")}

    loss.train()
    objects = [sampler] if mopts["sampler"] == "flex" else []
    if getattr(loss, "stateful", False):  # e.g. center_loss's centres: part of an exact resume
        objects.append(loss)
    result = train(
        model, dataset, loss_fn, train_cfg, eval_fn=eval_fn, sampler=sampler, checkpoint_objects=objects
    )
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
