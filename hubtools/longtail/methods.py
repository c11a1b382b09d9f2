"""The long-tail method registry (mergekit-style: one entry per name used in YAML configs).

A :class:`Method` says what a MONICA method changes relative to ERM: its loss, its sampler, its
classifier head and whether it is a second stage on a frozen encoder. :func:`get_loss` builds the
loss of a method from the train class counts::

    from hubtools.longtail.methods import get_loss
    loss = get_loss("ldam_drw", [500, 120, 30, 8], num_epochs=50)
    loss.set_epoch(epoch)
    value = loss(logits, targets)

Names are lower-case as in the spec. An unknown name, a spec method not implemented yet, an unknown
or missing keyword are :class:`~hubtools.errors.ConfigError` before any training starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

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
    "experts",
]


@dataclass(frozen=True)
class Method:
    """One registered method. ``loss`` builds the training loss from (cls_num_list, **kw)."""

    name: str
    group: Group
    loss: Callable[..., L.LongTailLoss]
    sampler: str = "instance"
    classifier: str = "linear"
    stage: int = 1
    start_from: str | None = None
    description: str = ""


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
            "seql", "re-weighting", L.SEQLLoss, description="softmax equalization, lambda 4.3e-4, gamma 0.9"
        ),
        Method(
            "gcl",
            "re-weighting",
            L.GCLLoss,
            classifier="cosine",
            description="Gaussian clouded cosine logits, s 30",
        ),
        Method(
            "mislas",
            "two-stage",
            L.LabelAwareSmoothing,
            sampler="class_balanced",
            classifier="lws",
            stage=2,
            start_from="mixup",
            description="label-aware smoothing, eps 0.3 head -> 0 tail",
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
        Method("tau_norm", "post-hoc", _ce, start_from="erm", description="w_c / ||w_c||^tau, bias dropped"),
        Method("la_posthoc", "post-hoc", _ce, start_from="erm", description="test logits z - tau log pi"),
    ]
}

# In the spec but not implemented yet: named in the error so nobody mistakes them for typos.
NOT_YET_IMPLEMENTED = (
    "flex_rs",
    "mixup",
    "randaugment",
    "rsg",
    "sam",
    "range_loss",
    "knn",
    "de_confound",
    "gcl_2nd",
    "bbn",
    "sade",
    "ride",
)


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``; unknown names list the valid ones."""
    if name in METHODS:
        return METHODS[name]
    if name in NOT_YET_IMPLEMENTED:
        raise ConfigError(
            f"long-tail method {name!r} is in the spec but not implemented yet; valid: {', '.join(METHODS)}"
        )
    raise ConfigError(f"unknown long-tail method {name!r}; valid: {', '.join(METHODS)}")


def get_loss(name: str, cls_num_list: Sequence[int], **kw) -> L.LongTailLoss:
    """The training loss of method ``name`` for train counts ``cls_num_list``, called as ``loss(logits, targets)``."""
    builder = get_method(name).loss
    params = inspect.signature(builder).parameters
    unknown = [k for k in kw if k not in params or k == "cls_num_list"]
    if unknown:
        allowed = [p for p in params if p != "cls_num_list"]
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
    return builder(cls_num_list, **kw)
