"""The long-tail method registry (mergekit-style: one entry per name used in YAML configs).

A :class:`Method` says what a MONICA method changes relative to ERM: its loss, its sampler, its
classifier head and whether it is a second stage on a frozen encoder. :func:`get_loss` builds the
loss of a method from the train class counts::

    from hubtools.longtail.methods import get_loss
    loss = get_loss("ldam_drw", [500, 120, 30, 8], num_epochs=50)
    loss.set_epoch(epoch)
    value = loss(logits, targets)

Names are lower-case. An unknown name (the error lists the valid ones), an unknown or
missing keyword are :class:`~hubtools.errors.ConfigError` before any training starts.

A method's options (``method_options`` in the YAML) are the keyword arguments of its loss plus the
method-level options in :attr:`Method.options` (sampler, augmentation, head, optimiser settings, with
their defaults); :func:`get_loss` and :func:`method_options` check them against that union.

Groups follow MONICA: re-sampling, re-weighting (and logit losses), augmentation
(information augmentation), optimisation, two-stage (module improvement: decoupled heads),
post-hoc, causal and experts (multi-expert / multi-branch).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from hubtools.errors import ConfigError
from hubtools.longtail import losses as L

Group = Literal[
    "baseline",
    "re-sampling",
    "re-weighting",
    "augmentation",
    "two-stage",
    "post-hoc",
    "optimisation",
    "causal",
    "experts",
]


@dataclass(frozen=True)
class Method:
    """One registered method. ``loss`` builds the training loss from (cls_num_list, **kw).

    ``stage`` 2 methods start from a ``start_from`` checkpoint with the encoder frozen;
    ``trained=False`` ones (post-hoc corrections, NCM) fit nothing by gradient descent.
    ``augment`` is ``mixup`` or ``randaugment`` (applied to each batch); ``model`` is ``single``,
    ``bbn`` (two branches fed by a paired sampler), ``experts`` (SADE/RIDE) or ``rsg`` (a feature-level
    sample generator after a middle stage); ``optimizer_step``
    is ``plain`` or ``sam``. ``options`` are the method-level options and their defaults.
    ``epochs_scale`` multiplies the recipe's epochs where the method's paper trains longer (SAM:
    90 epochs where MONICA trains the others 50).
    Every trained method also takes the option ``sampler`` (a sampler name of
    :mod:`hubtools.longtail.samplers`), which replaces its own: the combinations MONICA ships
    (cRT + FlexRS, GCL + FlexRS) are registered under their own names, others are one option away.
    """

    name: str
    group: Group
    loss: Callable[..., L.LongTailLoss]
    sampler: str = "instance"
    classifier: str = "linear"
    stage: int = 1
    start_from: str | None = None
    description: str = ""
    trained: bool = True
    augment: str | None = None
    model: Literal["single", "bbn", "experts", "rsg"] = "single"
    optimizer_step: Literal["plain", "sam"] = "plain"
    options: dict[str, Any] = field(default_factory=dict)
    epochs_scale: float = 1.0


def _ce(cls_num_list: Sequence[int]) -> L.LongTailLoss:
    return L.CrossEntropy(cls_num_list)


def _weighted_ce(cls_num_list: Sequence[int], weight: Sequence[float]) -> L.LongTailLoss:
    return L.CrossEntropy(cls_num_list, weight=weight)


def _rw(cls_num_list: Sequence[int], beta: float = L.CB_BETA) -> L.LongTailLoss:
    return L.CrossEntropy(cls_num_list, weight=L.class_balanced_weights(cls_num_list, beta))


def _weighted_softmax(cls_num_list: Sequence[int]) -> L.LongTailLoss:
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    return L.CrossEntropy(cls_num_list, weight=1.0 + torch.log(counts.max() / counts))


def _disalign(cls_num_list: Sequence[int], rho: float = 1.2) -> L.LongTailLoss:
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    w = (counts / counts.sum()).pow(-rho)
    return L.CrossEntropy(cls_num_list, weight=w / w.sum() * len(counts))


def _balanced_softmax(cls_num_list: Sequence[int]) -> L.LongTailLoss:
    return L.LogitAdjustedCE(cls_num_list, tau=1.0)


def _prior_ce(cls_num_list: Sequence[int]) -> L.LongTailLoss:
    return L.LogitAdjustedCE(cls_num_list, tau=1.0, eps=1e-9)


def _gcl_cb(cls_num_list: Sequence[int], beta: float = L.CB_BETA) -> L.LongTailLoss:
    return L.GCLLoss(cls_num_list, weight=L.class_balanced_weights(cls_num_list, beta))


def _la_loss(cls_num_list: Sequence[int], tau: float = 1.0, legacy_sign: bool = False) -> L.LongTailLoss:
    return L.LogitAdjustedCE(cls_num_list, tau=tau, legacy_sign=legacy_sign)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("erm", "baseline", _ce, description="cross-entropy, uniform shuffle"),
        Method("rs", "re-sampling", _ce, sampler="class_balanced", description="class-balanced re-sampling"),
        Method("sqrt_rs", "re-sampling", _ce, sampler="sqrt", description="square-root re-sampling"),
        Method(
            "progressive_rs",
            "re-sampling",
            _ce,
            sampler="progressive",
            description="instance -> class-balanced, linearly over the epochs",
        ),
        Method(
            "cb_sampler",
            "re-sampling",
            _ce,
            sampler="cb",
            description="instance weight = CB weight of its class",
        ),
        Method(
            "reverse", "re-sampling", _ce, sampler="reverse", description="class mass ~ n_max / n_c (BBN)"
        ),
        Method(
            "flex_rs",
            "re-sampling",
            _ce,
            sampler="flex",
            options={"flex_mode": "instance"},
            description="instance weight ~ 1 / previous validation recall of its class (recall >= 0.01)",
        ),
        Method(
            "weighted_ce", "re-weighting", _weighted_ce, description="CE with user class weights (weight=)"
        ),
        Method("rw", "re-weighting", _rw, description="CE with class-balanced weights, beta 0.9999"),
        Method(
            "weighted_softmax", "re-weighting", _weighted_softmax, description="CE, w_c = 1 + log(n_max/n_c)"
        ),
        Method("focal", "re-weighting", L.FocalLoss, description="(1 - p_y)^gamma CE, gamma 2"),
        Method(
            "cb_softmax",
            "re-weighting",
            L.ClassBalancedSoftmax,
            description="w_y CE (legacy=True: anchor BCE)",
        ),
        Method(
            "cb_focal", "re-weighting", L.ClassBalancedFocal, description="class-balanced sigmoid focal loss"
        ),
        Method(
            "ldam_drw",
            "re-weighting",
            L.LDAMLoss,
            classifier="cosine",
            description="LDAM margins on cosine logits, s 30, deferred CB re-weighting at 0.8 E",
        ),
        Method("balanced_softmax", "re-weighting", _balanced_softmax, description="CE(z + log pi)"),
        Method("prior_ce", "re-weighting", _prior_ce, description="CE(z + log(pi + 1e-9))"),
        Method("lade", "re-weighting", L.LADELoss, description="PriorCE + 0.1 LADE regulariser"),
        Method("la_loss", "re-weighting", _la_loss, description="CE(z + tau log pi), tau 1 (paper sign)"),
        Method(
            "vs", "re-weighting", L.VSLoss, description="vector scaling CE(Delta z + iota), gamma 0.3, tau 1"
        ),
        Method(
            "seql",
            "re-weighting",
            L.SEQLLoss,
            description="softmax equalization, gamma 0.9, lambda just above the largest few-group prior "
            "(the paper's 4.3e-4 masks no class of these splits)",
        ),
        Method(
            "mixup",
            "augmentation",
            _ce,
            augment="mixup",
            options={"mixup_alpha": 1.0},
            description="lambda ~ Beta(1, 1), loss lambda CE(y) + (1 - lambda) CE(y_perm)",
        ),
        Method(
            "randaugment",
            "augmentation",
            _ce,
            augment="randaugment",
            options={"num_ops": 2, "magnitude": 9},
            description="ERM with RandAugment (torchvision defaults: 2 ops, magnitude 9)",
        ),
        Method(
            "mislas",
            "augmentation",
            L.LabelAwareSmoothing,
            sampler="class_balanced",
            classifier="mislas",
            stage=2,
            start_from="mixup",
            options={"shift_bn": True},
            description="stage 2 of a mixup run: copied fc + per-class scales, label-aware smoothing "
            "eps 0.3 head -> 0 tail, shifted BN statistics",
        ),
        Method(
            "rsg",
            "augmentation",
            L.LDAMLoss,
            sampler="deferred_cb",
            classifier="cosine",
            model="rsg",
            options={
                "n_center": 3,
                "contrastive_dim": 128,
                "strength": 1.0,
                "cesc_weight": 0.1,
                "mv_weight": 0.01,
            },
            description="rare-class sample generator: head variation moved onto tail features from floor(0.8 E); "
            "LDAM-DRW + 0.1 CESC + 0.01 MV; cb sampler from 0.8 E",
        ),
        Method(
            "range_loss",
            "augmentation",
            L.RangeLoss,
            description="CE + range loss on the features (k 2, margin 0.1, lambda_R 0.001; 1 collapses training)",
        ),
        Method(
            "center_loss",
            "re-weighting",
            L.CenterLoss,
            description="CE + 0.003 * centre loss on the features, centres moved by the paper's rule "
            "(alpha 0.5); an extra beyond MONICA's list",
        ),
        Method(
            "sam",
            "optimisation",
            L.LDAMLoss,
            classifier="cosine",
            optimizer_step="sam",
            options={"rho": None, "scheduler": "cosine"},
            epochs_scale=1.8,
            description="sharpness-aware minimisation over LDAM-DRW, 1.8 E epochs (90 vs 50), "
            "rho 0.05/0.1/0.5 at 5/90, 60/90 of them, cosine LR",
        ),
        Method(
            "gcl",
            "two-stage",
            L.GCLLoss,
            classifier="cosine",
            augment="mixup",
            options={"mixup_alpha": 1.0},
            description="Gaussian clouded cosine logits, s 30, mixup",
        ),
        Method(
            "gcl_2nd",
            "two-stage",
            L.GCLLoss,
            sampler="class_balanced",
            classifier="cosine",
            stage=2,
            start_from="gcl",
            augment="mixup",
            options={"mixup_alpha": 1.0},
            description="fresh cosine head on the frozen GCL encoder, class-balanced sampling, GCL loss, mixup",
        ),
        Method(
            "gcl_flex_rs",
            "two-stage",
            L.GCLLoss,
            sampler="flex",
            classifier="cosine",
            augment="mixup",
            options={"mixup_alpha": 1.0, "flex_mode": "instance"},
            description="GCL with flexible sampling (instance weight ~ 1 / validation recall of its class)",
        ),
        Method(
            "gcl_2nd_cb",
            "two-stage",
            _gcl_cb,
            classifier="cosine",
            stage=2,
            start_from="gcl",
            augment="mixup",
            options={"mixup_alpha": 1.0},
            description="fresh cosine head on the frozen GCL encoder, GCL loss weighted by class-balanced "
            "weights (beta 0.9999) instead of re-sampling",
        ),
        Method(
            "crt",
            "two-stage",
            _ce,
            sampler="class_balanced",
            stage=2,
            start_from="erm",
            description="fresh linear head on the frozen ERM encoder, class-balanced sampling",
        ),
        Method(
            "crt_flex_rs",
            "two-stage",
            _ce,
            sampler="flex",
            stage=2,
            start_from="erm",
            options={"flex_mode": "instance"},
            description="fresh linear head on the frozen ERM encoder, flexible sampling",
        ),
        Method(
            "lws",
            "two-stage",
            _ce,
            sampler="class_balanced",
            classifier="lws",
            stage=2,
            start_from="crt",
            description="learnable per-class scales of the frozen cRT head",
        ),
        Method(
            "disalign",
            "two-stage",
            _disalign,
            classifier="disalign",
            stage=2,
            start_from="erm",
            description="adaptive calibration, CE weighted pi^-1.2",
        ),
        Method(
            "tau_norm",
            "two-stage",
            _ce,
            stage=2,
            start_from="erm",
            trained=False,
            description="w_c / ||w_c||^tau, bias dropped, tau from {0, 0.1, ..., 2} on validation",
        ),
        Method(
            "knn",
            "two-stage",
            _ce,
            classifier="ncm",
            stage=2,
            start_from="erm",
            trained=False,
            description="nearest class mean on centred, normalised train features",
        ),
        Method(
            "la_posthoc",
            "post-hoc",
            _ce,
            stage=2,
            start_from="erm",
            trained=False,
            description="test logits z - tau log pi, tau from {0, 0.25, ..., 2} on validation",
        ),
        Method(
            "de_confound",
            "causal",
            _ce,
            classifier="de_confound",
            options={"num_heads": 2, "tau": 16.0, "gamma": 1.0 / 32.0, "alpha": 1.5, "momentum": 0.9},
            description="causal-norm classifier, feature-momentum direction removed at test (TDE)",
        ),
        Method(
            "bbn",
            "experts",
            _ce,
            classifier="bbn",
            model="bbn",
            options={"bbn_sampler": "reverse", "bbn_branches": "shared"},
            description="uniform + re-balanced branch, alpha = 1 - (e/E)^2, test alpha 0.5",
        ),
        Method(
            "sade",
            "experts",
            L.SADELoss,
            classifier="experts",
            model="experts",
            description="3 experts: CE, balanced softmax, inverse-prior CE; prediction = mean of experts",
        ),
        Method(
            "ride",
            "experts",
            L.RIDELoss,
            classifier="experts",
            model="experts",
            options={"num_experts": 3},
            description="3 experts, LDAM-DRW each minus 0.2 T^2 KL diversity; prediction = mean",
        ),
    ]
}


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``; unknown names list the valid ones."""
    if name in METHODS:
        return METHODS[name]
    raise ConfigError(f"unknown long-tail method {name!r}; valid: {', '.join(METHODS)}")


def _split_options(name: str, kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loss keyword arguments, method-level options with defaults); unknown or missing ones raise."""
    method = get_method(name)
    params = inspect.signature(method.loss).parameters
    loss_names = [p for p in params if p != "cls_num_list"]
    options = {**method.options, "sampler": method.sampler}
    unknown = [k for k in kw if k not in loss_names and k not in options]
    if unknown:
        allowed = loss_names + list(options)
        raise ConfigError(
            f"method {name!r} takes no option {', '.join(unknown)}; its options: {allowed or 'none'}"
        )
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty and p.name != "cls_num_list" and p.name not in kw
    ]
    if missing:
        raise ConfigError(f"method {name!r} needs {', '.join(missing)}")
    loss_kw = {k: v for k, v in kw.items() if k in loss_names}
    resolved = {**options, **{k: v for k, v in kw.items() if k in options}}
    if resolved["sampler"] != method.sampler:
        from hubtools.longtail.samplers import SAMPLERS

        sampler = {"rs": "class_balanced", "flex_rs": "flex"}.get(resolved["sampler"], resolved["sampler"])
        if sampler not in SAMPLERS:
            raise ConfigError(
                f"method {name!r}: unknown sampler {resolved['sampler']!r}; valid: {', '.join(SAMPLERS)}"
            )
        resolved["sampler"] = sampler
    if resolved["sampler"] == "flex":
        resolved.setdefault("flex_mode", "instance")
    return loss_kw, resolved


def method_options(name: str, **kw) -> dict[str, Any]:
    """The method-level options of ``name`` (its defaults overridden by ``kw``), checked like :func:`get_loss`."""
    return _split_options(name, kw)[1]


def get_loss(name: str, cls_num_list: Sequence[int], **kw) -> L.LongTailLoss:
    """The training loss of method ``name`` for train counts ``cls_num_list``, called as ``loss(logits, targets)``.

    ``kw`` may also hold the method-level options (:attr:`Method.options`), which the loss ignores.
    """
    loss_kw, _ = _split_options(name, kw)
    return get_method(name).loss(cls_num_list, **loss_kw)
