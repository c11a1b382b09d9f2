"""Multi-label long tail: losses, the per-group mAP report and a trainer (``hubtools longtail train-multilabel``).

A multi-label image carries a *set* of findings (CheXpert, ODIR-5K, RFMiD, the MRI patches labelled
with every AAL region they overlap). Targets are multi-hot float tensors ``B x C``; label index
order is descending train frequency (label 0 is positive in the most train images), so the
many/medium/few groups are index cut-offs ``[0, head)``, ``[head, medium)``, ``[medium, C)`` as
in the single-label :class:`~hubtools.longtail.splits.LTProfile`.

Losses (all return the sum over labels averaged over the batch, so they are on one scale):

- ``bce``: binary cross-entropy with logits;
- ``asl``: Asymmetric Loss (Ridnik et al., ICCV 2021);
- ``distribution_balanced``: Distribution-Balanced Loss (Wu et al., ECCV 2020): re-balanced
  weighting + negative-tolerant regularisation.

:func:`multilabel_report` gives per-label average precision, mAP, many/medium/few mAP, micro and
macro F1 at probability 0.5, and macro AUROC, in percent. :func:`train_multilabel` trains a
``transformers`` backbone with a linear head through :func:`hubtools.train.train`, keeps the
epoch with the best validation mAP, and writes a model folder with ``metrics.json``.
:class:`MultiLabelSheetBuilder` gives the CheXpert, ODIR-5K and RFMiD builders their multi-label
configs (every image with its finding set, patient-disjoint splits by :func:`group_split`).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hubtools.config import StrictModel
from hubtools.errors import ConfigError
from hubtools.longtail.datasets import (
    AnnotationError,
    LongTailConfig,
    MissingSourceFile,
    Plan,
    Record,
    require_file,
)
from hubtools.longtail.sources import SingleLabelSheetBuilder
from hubtools.longtail.trainer import (
    BackboneSpec,
    LongTailModel,
    build_backbone,
    epoch_train_config,
    feature_dim,
    normalize,
    predict,
    save_model,
)

GROUP_NAMES = ("many", "medium", "few")


# --------------------------------------------------------------------------- losses


def _per_sample_sum(elementwise: torch.Tensor) -> torch.Tensor:
    """Sum over labels, mean over the batch: the same reduction for every loss here."""
    return elementwise.sum(dim=1).mean()


class BCELoss(nn.Module):
    """Plain binary cross-entropy on logits z and multi-hot targets y.

    L = (1/B) sum_b sum_c -[y log sigma(z) + (1 - y) log(1 - sigma(z))]. The baseline every
    re-balanced loss is compared with.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _per_sample_sum(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))


class AsymmetricLoss(nn.Module):
    """Asymmetric Loss (Ridnik et al. 2021): focus harder on negatives, and discard easy ones.

    With p = sigma(z) and the shifted probability p_m = max(p - m, 0) for negatives:
    L+ = (1 - p)^gamma_pos * log(p), L- = p_m^gamma_neg * log(1 - p_m),
    L = (1/B) sum_b sum_c -[y L+ + (1 - y) L-]. Defaults gamma_neg = 4, gamma_pos = 0, m = 0.05:
    in a long-tailed multi-label set almost every entry is an easy negative, and the asymmetric
    focusing plus the probability margin stop them from drowning the rare positives. With
    gamma_neg = gamma_pos = 0 and m = 0 it is exactly :class:`BCELoss`.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        if gamma_neg < 0 or gamma_pos < 0 or not 0 <= clip < 1:
            raise ConfigError(
                f"asl needs gamma_neg >= 0, gamma_pos >= 0, 0 <= clip < 1; got {gamma_neg}, {gamma_pos}, {clip}"
            )
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        log_p = F.logsigmoid(logits)
        if self.clip > 0:
            # 1 - p_m = min(1 - p + m, 1) >= m: its log is finite without the logsigmoid trick
            one_minus_pm = (1 - p + self.clip).clamp(max=1)
            log_neg = torch.log(one_minus_pm.clamp(min=self.eps))
            p_m = 1 - one_minus_pm
        else:
            log_neg, p_m = F.logsigmoid(-logits), p
        pos = (1 - p).pow(self.gamma_pos) * log_p if self.gamma_pos else log_p
        neg = p_m.pow(self.gamma_neg) * log_neg if self.gamma_neg else log_neg
        return _per_sample_sum(-(targets * pos + (1 - targets) * neg))


class DistributionBalancedLoss(nn.Module):
    """Distribution-Balanced Loss (Wu et al. 2020): re-balanced weighting + negative-tolerant regularisation.

    *Re-balanced weighting.* Class-aware re-sampling would draw an image k with the labels
    y^k at frequency P^I(k) = (1/C) sum_{j: y^k_j = 1} 1/n_j while each class c is meant to
    get P^C_c = (1/C) (1/n_c); the loss weight of entry (k, c) is their ratio
    r^k_c = (1/n_c) / sum_{j: y^k_j = 1} (1/n_j), smoothed to r_hat = alpha + sigmoid(beta (r - mu))
    (alpha 0.1, beta 10, mu 0.3), so an image of one rare label keeps a high weight and an
    image that co-occurs with rare labels does not over-weight its frequent ones. An image with
    no positive label has no sampling frequency; its weights are 1.

    *Negative-tolerant regularisation.* The logits are shifted by a class-specific bias
    nu_c = kappa * b_c with b_c = -log(1/p_c - 1), p_c = n_c / N (N train images, kappa 0.05), which
    starts each label near its prior, and negatives are scaled by lambda = 5:
    L_NTR = y log(1 + exp(-(z + nu))) + (1/lambda) (1 - y) log(1 + exp(lambda (z + nu))),
    so the many negatives of a rare label stop pushing its logit down once it is low.

    L = (1/B) sum_b sum_c r_hat^b_c L_NTR(b, c). ``ntr=False`` is plain BCE with the weights;
    ``smoothing=False`` uses r itself (with uniform counts and one positive per image r = 1,
    which makes ``distribution_balanced(ntr=False, smoothing=False)`` exactly :class:`BCELoss`).
    """

    def __init__(
        self,
        label_counts: Sequence[int],
        num_samples: int,
        alpha: float = 0.1,
        beta: float = 10.0,
        mu: float = 0.3,
        neg_scale: float = 5.0,
        kappa: float = 0.05,
        ntr: bool = True,
        smoothing: bool = True,
    ) -> None:
        super().__init__()
        counts = np.asarray(label_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or (counts < 1).any():
            raise ConfigError(
                f"distribution_balanced needs a positive train count for every label, got label_counts {list(label_counts)}"
            )
        if ntr and (counts >= num_samples).any():
            raise ConfigError(
                f"distribution_balanced's bias -log(N/n_c - 1) needs every label count below num_samples "
                f"{num_samples}; label_counts {counts.astype(int).tolist()}"
            )
        if neg_scale <= 0:
            raise ConfigError(f"distribution_balanced: neg_scale must be > 0, got {neg_scale}")
        self.alpha, self.beta, self.mu = alpha, beta, mu
        self.neg_scale, self.ntr, self.smoothing = neg_scale, ntr, smoothing
        self.register_buffer("inv_freq", torch.tensor(1.0 / counts, dtype=torch.float32))
        bias = kappa * -np.log(num_samples / counts - 1) if ntr else np.zeros_like(counts)
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))

    def weights(self, targets: torch.Tensor) -> torch.Tensor:
        """r_hat (or r) for every entry of the batch: B x C."""
        inv = self.inv_freq.to(targets)
        instance = (targets * inv).sum(dim=1, keepdim=True)
        r = torch.where(instance > 0, inv / instance.clamp(min=1e-12), torch.ones_like(instance))
        if not self.smoothing:
            return r
        smoothed = self.alpha + torch.sigmoid(self.beta * (r - self.mu))
        return torch.where(instance > 0, smoothed, torch.ones_like(smoothed))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = self.weights(targets)
        z = logits + self.bias.to(logits)
        lam = self.neg_scale if self.ntr else 1.0
        pos = F.softplus(-z)  # log(1 + e^{-z})
        neg = F.softplus(lam * z) / lam  # (1/lambda) log(1 + e^{lambda z})
        return _per_sample_sum(w * (targets * pos + (1 - targets) * neg))


def _bce(label_counts: Sequence[int], num_samples: int) -> nn.Module:
    return BCELoss()


def _asl(
    label_counts: Sequence[int],
    num_samples: int,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
) -> nn.Module:
    return AsymmetricLoss(gamma_neg, gamma_pos, clip)


def _db(label_counts: Sequence[int], num_samples: int, **kw: Any) -> nn.Module:
    return DistributionBalancedLoss(label_counts, num_samples, **kw)


MULTILABEL_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": _bce,
    "asl": _asl,
    "distribution_balanced": _db,
}
_DB_OPTIONS = tuple(inspect.signature(DistributionBalancedLoss.__init__).parameters)[3:]


def _options(name: str) -> tuple[str, ...]:
    if name == "distribution_balanced":
        return _DB_OPTIONS
    return tuple(inspect.signature(MULTILABEL_LOSSES[name]).parameters)[2:]


def get_multilabel_loss(name: str, label_counts: Sequence[int], num_samples: int, **kw: Any) -> nn.Module:
    """The multi-label loss ``name`` for train label counts (positives per label) over ``num_samples`` images.

    Raises :class:`ConfigError` for an unknown name or an option the loss does not take.
    """
    if name not in MULTILABEL_LOSSES:
        raise ConfigError(f"unknown multi-label loss {name!r}; available: {', '.join(MULTILABEL_LOSSES)}")
    unknown = sorted(set(kw) - set(_options(name)))
    if unknown:
        raise ConfigError(
            f"multi-label loss {name!r} has no option(s) {unknown}; it takes {list(_options(name)) or 'none'}"
        )
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    return MULTILABEL_LOSSES[name](label_counts, num_samples, **kw)


# --------------------------------------------------------------------------- report


def multi_hot(label_lists: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Lists of positive label ids -> an N x C uint8 multi-hot matrix."""
    out = np.zeros((len(label_lists), num_labels), dtype=np.uint8)
    for i, ids in enumerate(label_lists):
        out[i, list(ids)] = 1
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def multilabel_report(
    scores: Any, targets: Any, label_counts: Sequence[int], head: int, medium: int
) -> dict[str, Any]:
    """Per-label AP, mAP, many/medium/few mAP, micro/macro F1 at 0.5 and macro AUROC, in percent.

    ``scores`` are logits (N x C; probability sigma(z) >= 0.5 is z >= 0), ``targets`` multi-hot
    (N x C). ``label_counts`` are the train positives per label (in label order, non-increasing)
    and ``head``/``medium`` the group cut-offs. A label with no positive in ``targets`` has no
    average precision: it is NaN in ``per_class_ap`` and left out of every mean (its AUROC too).
    Macro F1 averages over the labels that are positive in the targets or the predictions, as
    scikit-learn does with ``zero_division=0``.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    z, y = _to_numpy(scores), _to_numpy(targets)
    num_labels = len(label_counts)
    if z.ndim != 2 or z.shape[1] != num_labels or y.shape != z.shape:
        raise ConfigError(
            f"scores {z.shape} and targets {y.shape} must both be N x {num_labels} (the label_counts' length)"
        )
    if not 0 <= head <= medium <= num_labels:
        raise ConfigError(f"need 0 <= head <= medium <= {num_labels}, got head {head}, medium {medium}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ConfigError("targets must be multi-hot (0/1)")
    y = y.astype(np.int64)
    ap, auroc = np.full(num_labels, np.nan), np.full(num_labels, np.nan)
    for c in range(num_labels):
        n_pos = int(y[:, c].sum())
        if n_pos == 0:
            continue
        ap[c] = average_precision_score(y[:, c], z[:, c])
        if n_pos < len(y):
            auroc[c] = roc_auc_score(y[:, c], z[:, c])
    pred = (z >= 0).astype(np.int64)
    ids = np.arange(num_labels)
    groups = np.where(ids < head, 0, np.where(ids < medium, 1, 2))
    report: dict[str, Any] = {"map": 100.0 * _nanmean(ap)}
    for g, name in enumerate(GROUP_NAMES):
        report[f"{name}_map"] = 100.0 * _nanmean(np.where(groups == g, ap, np.nan))
    report["micro_f1"] = 100.0 * float(f1_score(y, pred, average="micro", zero_division=0))
    seen = (y.sum(0) > 0) | (pred.sum(0) > 0)
    report["macro_f1"] = (
        100.0 * float(f1_score(y[:, seen], pred[:, seen], average="macro", zero_division=0))
        if seen.any()
        else float("nan")
    )
    report["macro_auroc"] = 100.0 * _nanmean(auroc)
    report["per_class_ap"] = (100.0 * ap).tolist()
    report["per_class_auroc"] = (100.0 * auroc).tolist()
    report["num_evaluated_labels"] = int((~np.isnan(ap)).sum())
    report["num_samples"] = int(len(y))
    return report


# --------------------------------------------------------------------------- trainer

SELECTION_METRIC = "map"
CARD_METRICS = ("map", "many_map", "medium_map", "few_map", "micro_f1", "macro_f1", "macro_auroc")


class MultiLabelTrainConfig(StrictModel):
    """``hubtools longtail train-multilabel`` settings: a multi-label set, a loss, a backbone, the recipe.

    ``dataset`` is a folder in the ``longtail build`` layout (``data/`` + ``longtail/*.json``) or a Hub
    dataset repo whose splits have a ``labels`` column of positive label ids (``List(ClassLabel)``).
    """

    dataset: str
    config: str | None = None
    loss: str = "bce"
    loss_options: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    output_dir: Path = Path("longtail-runs/multilabel")
    image_size: int = Field(32, ge=8)
    num_epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 1
    mixed_precision: str = "no"
    eval_batch_size: int = Field(256, ge=1)


class MultiLabelImages(torch.utils.data.Dataset):
    """A split's images as uint8 N x 3 x S x S and multi-hot float targets N x C; items are (image, targets)."""

    def __init__(self, split: Any, image_size: int, num_labels: int) -> None:
        images = [np.asarray(im.convert("RGB").resize((image_size, image_size))) for im in split["image"]]
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.from_numpy(multi_hot(split["labels"], num_labels)).float()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i]


def multilabel_profile(ds: Any, profile: Any) -> Any:
    """The set's profile, its label counts checked against the train split (positives per label)."""
    from hubtools.longtail.splits import LTProfile, groups_by_threshold

    feature = ds["train"].features.get("labels")
    names = getattr(getattr(feature, "feature", None), "names", None)
    if names is None:
        raise ConfigError(
            f"the train split has no 'labels' column of List(ClassLabel) (features: {dict(ds['train'].features)})"
        )
    counts = multi_hot(ds["train"]["labels"], len(names)).sum(axis=0).astype(int).tolist()
    if profile is None:
        head, medium = groups_by_threshold(counts)
        nonzero = [n for n in counts if n > 0]
        return LTProfile(
            list(names), counts, nonzero[0] / nonzero[-1], head, medium, test_distribution="natural"
        )
    if list(profile.cls_num_list) != counts:
        raise ConfigError(
            f"the profile's label counts {profile.cls_num_list} differ from the train labels' {counts}"
        )
    return profile


def _multilabel_card(cfg: MultiLabelTrainConfig, lt: Any, info: dict[str, Any], test: dict[str, Any]) -> Any:
    from hubtools.hub.cards import render_card

    return render_card(
        "longtail_classifier",
        card_data={"datasets": [cfg.dataset], "tags": [cfg.loss, "multi-label"]},
        task="image-classification",
        reproduce=f"hubtools longtail train-multilabel --dataset {cfg.dataset} --loss {cfg.loss}",
        metrics={
            "task_type": "image-classification",
            "dataset": {"type": cfg.dataset, "name": cfg.dataset, "split": "test"},
            "values": {k: round(float(test[k]), 4) for k in CARD_METRICS if test[k] == test[k]},
        },
        model_name=f"{Path(cfg.dataset).name}-{cfg.loss}",
        method=cfg.loss,
        backbone=str(cfg.backbone.path or cfg.backbone.model_type),
        class_names=lt.class_names,
        imbalance_ratio=round(lt.imbalance_ratio, 2),
        head_cutoff=lt.head,
        medium_cutoff=lt.medium,
        group_metrics={"Many": "many_map", "Medium": "medium_map", "Few": "few_map"},
        selection_rule=f"best validation mAP (epoch {info['selected_epoch']}); test reported at that epoch",
        evaluation_notes="Multi-label: sigmoid outputs, one per label; mAP = mean per-label average precision "
        "over the labels with a test positive; groups by train positives per label.",
        hyperparameters={k: info[k] for k in ("loss", "num_epochs", "batch_size", "lr", "image_size")},
        usage_code=(
            "from hubtools.longtail.trainer import load_model\n"
            'model, info = load_model("PATH")   # logits; torch.sigmoid(logits) are the label probabilities'
        ),
    )


def train_multilabel(cfg: MultiLabelTrainConfig) -> Path:
    """Train ``cfg`` end to end; returns the model folder ``OUTPUT/model``.

    The folder is the one :func:`hubtools.longtail.trainer.load_model` reads (backbone, linear head,
    ``longtail.json`` with ``task: multi-label``) plus ``metrics.json``: the validation and test
    :func:`multilabel_report` at the epoch with the best validation mAP.
    """
    from hubtools.longtail.datasets import load
    from hubtools.train import train

    ds, profile = load(cfg.dataset, cfg.config)
    for split in ("train", "validation", "test"):
        if split not in ds:
            raise ConfigError(f"dataset {cfg.dataset}: no {split!r} split (has {list(ds)})")
    lt = multilabel_profile(ds, profile)
    counts = lt.cls_num_list
    num_labels = len(counts)
    # bad loss names and options fail here, before any image is decoded
    loss = get_multilabel_loss(cfg.loss, counts, ds["train"].num_rows, **cfg.loss_options)

    torch.manual_seed(cfg.seed)
    train_data, val_data, test_data = (
        MultiLabelImages(ds[s], cfg.image_size, num_labels) for s in ("train", "validation", "test")
    )
    backbone = build_backbone(cfg.backbone)
    dim = feature_dim(backbone, cfg.image_size)
    model = LongTailModel(backbone, nn.Linear(dim, num_labels))

    def report(m: nn.Module, data: MultiLabelImages) -> dict[str, Any]:
        return multilabel_report(
            predict(m, data, cfg.eval_batch_size), data.targets, counts, lt.head, lt.medium
        )

    train_cfg = epoch_train_config(cfg, len(train_data))
    best: dict[str, Any] = {"score": -float("inf"), "state": None, "epoch": 0}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, targets = batch
        loss.to(images.device)  # a no-op once the buffers are there
        return loss(m(normalize(images)), targets)

    def eval_fn(state: Any) -> dict[str, float]:
        r = report(state.model, val_data)
        score = r[SELECTION_METRIC]
        if score > best["score"]:  # a NaN mAP (no validation positive at all) never wins
            best.update(score=score, epoch=state.epoch, state=copy.deepcopy(state.model.state_dict()))
        return {f"val_{k}": r[k] for k in ("map", "many_map", "medium_map", "few_map")}

    model = train(model, train_data, loss_fn, train_cfg, eval_fn=eval_fn).model
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    info: dict[str, Any] = {
        "task": "multi-label",
        "loss": cfg.loss,
        "loss_options": cfg.loss_options,
        "classifier": "linear",
        "classifier_options": {},
        "feature_dim": dim,
        "cls_num_list": counts,
        "num_samples": ds["train"].num_rows,
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
        "logit_offset": None,
        "selected_epoch": int(best["epoch"]),
    }
    metrics = {
        "validation": report(model, val_data),
        "test": report(model, test_data),
        "selected_epoch": info["selected_epoch"],
        "selection_metric": SELECTION_METRIC,
    }
    folder = Path(cfg.output_dir) / "model"
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun only rank 0 writes
        save_model(folder, model, info, metrics, _multilabel_card(cfg, lt, info, metrics["test"]))
    return folder


# --------------------------------------------------------------------------- builders of multi-label sheets


def group_split(
    groups: Sequence[Any], fractions: Sequence[float] = (0.1, 0.2), seed: int = 1
) -> list[np.ndarray]:
    """Seeded group-disjoint split: sorted record indices of each fraction's part, then the rest.

    Groups (patients; a missing id is its own group) are visited in a seeded random order and
    each goes whole to the first part still below its share of the records, the rest to the
    last part (train), so no patient is in two splits. Multi-label sets have no single class to
    stratify by; with thousands of patients the label mix of each part follows the whole set.
    """
    from hubtools.longtail.splits import group_codes

    codes = group_codes(groups, len(groups))
    if not codes.size:
        return [np.zeros(0, np.int64) for _ in range(len(fractions) + 1)]
    sizes = np.bincount(codes)
    targets = [f * len(codes) for f in fractions]
    filled = [0] * len(fractions)
    part_of = np.full(sizes.size, len(fractions), dtype=np.int64)
    for g in np.random.default_rng(seed).permutation(sizes.size).tolist():
        for k, target in enumerate(targets):
            if filled[k] + sizes[g] <= max(target, 1) and filled[k] < target:
                part_of[g] = k
                filled[k] += int(sizes[g])
                break
    split = part_of[codes]
    return [np.flatnonzero(split == k) for k in range(len(fractions) + 1)]


class MultiLabelSheetBuilder(SingleLabelSheetBuilder):
    """A multi-label sheet builder: the single-label subset, or every image with its full finding set.

    A config with ``multilabel=True`` (:class:`MultiLabelConfig`) keeps every image; its
    ``labels`` feature is ``List(ClassLabel)``, the ids of its positive findings (ascending;
    possibly empty), chosen over a multi-hot ``List(int8)`` because it is the ``datasets``
    idiom for label sets, keeps the names in the schema and stays small when findings are
    sparse. Labels are ordered by train frequency (label 0 is positive in the most train
    images); a label with no train positive is dropped. Splits (validation 10 %, test 20 % of
    the images by default) are patient-disjoint where the source names a patient
    (:meth:`group_id`, with ``GROUP_NAME`` set). Subclasses name the official download page in ``DOWNLOAD_PAGE``.
    """

    DOWNLOAD_PAGE = ""
    GROUP_FEATURE = "patient_id"

    def finding_positive(self, value: str, where: str, column: str) -> bool:
        """Positive finding: 1, or -1 (uncertain) when the config's ``uncertain`` policy is "positive"."""
        if self.positive(value, where, column):
            return True
        return self.config.uncertain == "positive" and value not in ("", "nan") and float(value) == -1.0

    @property
    def data_dir(self) -> Path:
        try:
            return super().data_dir
        except MissingSourceFile as err:
            raise MissingSourceFile(f"{err} (download it from {self.DOWNLOAD_PAGE})") from None

    def scan(self, data_dir: Path) -> list[Record]:
        try:
            if not getattr(self.config, "multilabel", False):
                return super().scan(data_dir)
            return self._scan_multilabel(data_dir)
        except MissingSourceFile as err:
            if self.DOWNLOAD_PAGE in str(err):
                raise
            raise MissingSourceFile(f"{err} (download it from {self.DOWNLOAD_PAGE})") from None

    def _scan_multilabel(self, data_dir: Path) -> list[Record]:
        if self.config.uncertain not in ("negative", "positive"):
            raise ConfigError(
                f"config {self.config.name}: uncertain must be 'negative' (U-Zeros) or 'positive' (U-Ones), "
                f"got {self.config.uncertain!r}"
            )
        records = []
        for where, path, source_id, row in self.sheet_rows(data_dir):
            findings = [c for c in self.LABEL_COLUMNS if self.finding_positive(row.get(c, ""), where, c)]
            require_file(path, f"image named at {where}")
            records.append(
                Record(
                    source_id=source_id,
                    orig_label="|".join(findings),
                    where=where,
                    path=path,
                    extra={"findings": findings},
                    group=self.group_id(source_id, row),
                )
            )
        if not records:
            raise AnnotationError(f"{data_dir}: the label sheet lists no image")
        return sorted(records, key=lambda r: r.source_id)

    def plan(self) -> Plan:
        if not getattr(self.config, "multilabel", False):
            return super().plan()
        if self._plan is not None:
            return self._plan
        from hubtools.longtail.splits import LTProfile, groups_by_threshold

        cfg = self.config
        records = self.scan(self.data_dir)
        val, test, train = group_split(
            [r.group for r in records], (cfg.val_fraction, cfg.test_fraction), cfg.seed
        )
        parts = {"train": train, "validation": val, "test": test}
        train_counts: dict[str, int] = {}
        for i in train.tolist():
            for f in records[i].extra["findings"]:
                train_counts[f] = train_counts.get(f, 0) + 1
        names = sorted(train_counts, key=lambda f: (-train_counts[f], self.LABEL_COLUMNS.index(f)))
        index = {n: i for i, n in enumerate(names)}
        for r in records:
            r.extra["labels"] = sorted(index[f] for f in r.extra["findings"] if f in index)
        splits = {s: [records[i] for i in idx.tolist()] for s, idx in parts.items() if idx.size}
        counts = [train_counts[n] for n in names]
        if not counts:
            raise AnnotationError(f"{self.data_dir}: no train image has a positive finding")
        head, medium = groups_by_threshold(counts)
        lt = LTProfile(
            class_names=names,
            cls_num_list=counts,
            imbalance_ratio=round(counts[0] / counts[-1], 4),
            head=head,
            medium=medium,
            test_distribution="natural",
            split_provenance="seeded-redraw",
            disjoint_by=self.GROUP_NAME,
            license=self.LICENSE,
            seed=cfg.seed,
            split_sizes={s: len(r) for s, r in splits.items()},
            notes=f"Multi-label: every image with its full finding set; cls_num_list counts train positives; "
            f"splits disjoint by {self.GROUP_NAME or 'image'}; uncertain findings counted as {cfg.uncertain}.",
        )
        self._plan = Plan(splits=splits, profile=lt)
        return self._plan

    def _info(self) -> datasets.DatasetInfo:
        if not getattr(self.config, "multilabel", False):
            return super()._info()
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "labels": datasets.List(datasets.ClassLabel(names=self.plan().profile.class_names)),
                "findings": datasets.List(datasets.Value("string")),
                "source_id": datasets.Value("string"),
                self.GROUP_FEATURE: datasets.Value("string"),
            }
        )
        return datasets.DatasetInfo(
            description=self.DESCRIPTION, features=features, license=self.LICENSE, homepage=self.SOURCE
        )

    def _generate_examples(self, chunks: list[list[Record]]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not getattr(self.config, "multilabel", False):
            yield from super()._generate_examples(chunks)
            return
        for rec, image in (pair for chunk in chunks for pair in self.iter_images(chunk)):
            yield (
                rec.source_id,
                {
                    "image": image,
                    "labels": rec.extra["labels"],
                    "findings": rec.extra["findings"],
                    "source_id": rec.source_id,
                    self.GROUP_FEATURE: rec.group or "",
                },
            )


@dataclass
class MultiLabelConfig(LongTailConfig):
    """A multi-label config: every image with its findings; ``uncertain`` is CheXpert's -1 policy.

    ``uncertain="negative"`` (U-Zeros, default) counts -1 as absent, ``"positive"`` (U-Ones) as present.
    """

    multilabel: bool = True
    uncertain: str = "negative"
    ratio: float | None = None
