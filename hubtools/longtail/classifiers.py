"""Classifier heads and post-hoc corrections for long-tailed training.

Heads map features f (B x D) to logits (B x C):

- ``linear``: ``nn.Linear``;
- ``cosine``: cosines between normalised f and normalised class weights (``ldam_drw``, ``gcl``; the
  loss applies the scale s);
- ``lws``: a frozen linear head times learnable per-class scales s_c (init 1);
- ``tau_norm``: w_c / ||w_c||^tau, bias dropped (tau = 0: the weights without bias);
- ``disalign``: z'_c = (1 + sigma a_c) z_c + sigma b_c with sigma = sigmoid(g(f)) over a frozen linear head;
- ``mislas``: the stage-1 linear head, still trained, times learnable per-class scales (MiSLAS stage 2);
- ``ncm`` (``knn``): nearest class mean on centred, normalised features, logit_c = -||x^ - mu_c||^2;
- ``de_confound``: causal-norm multi-head cosine classifier with test-time removal of the feature
  momentum direction (total direct effect);
- ``bbn``: BBN's classifier on [2 alpha f_u || 2 (1 - alpha) f_r] (alpha 0.5 and f_u = f_r at test);
- ``bbn_separate``: the same with separate last stages per branch, and ``experts``: SADE/RIDE expert
  branches (both in :mod:`hubtools.longtail.experts`).

Post-hoc: :func:`logit_adjust` (z - tau log pi) and :func:`select_tau` (a grid searched on validation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hubtools.errors import ConfigError

CLASSIFIERS = (
    "linear",
    "cosine",
    "lws",
    "tau_norm",
    "disalign",
    "mislas",
    "ncm",
    "de_confound",
    "bbn",
    "experts",
)


class CosineClassifier(nn.Module):
    """Cosine similarity of normalised features and class weights, in [-1, 1]."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).t()


def _frozen_linear(dim: int, num_classes: int, linear: nn.Linear | None) -> nn.Linear:
    if linear is None:
        linear = nn.Linear(dim, num_classes)
    if (linear.in_features, linear.out_features) != (dim, num_classes):
        raise ConfigError(
            f"head of shape {linear.out_features} x {linear.in_features}, expected {num_classes} x {dim}"
        )
    linear.requires_grad_(False)
    return linear


class LWSClassifier(nn.Module):
    """Learnable weight scaling: logits s_c (w_c . f + b_c) with the linear head frozen, only s trained.

    ``train_linear=True`` (MiSLAS stage 2) keeps training the copied head together with the scales.
    """

    def __init__(
        self, dim: int, num_classes: int, linear: nn.Linear | None = None, train_linear: bool = False
    ) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.linear.requires_grad_(train_linear)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * self.scales


class TauNormClassifier(nn.Module):
    """Tau-normalised weights w_c / ||w_c||^tau of a trained linear head; the bias is dropped."""

    def __init__(self, dim: int, num_classes: int, linear: nn.Linear | None = None, tau: float = 1.0) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.tau = tau

    def normalized_weight(self) -> torch.Tensor:
        w = self.linear.weight
        return w / w.norm(dim=1, keepdim=True).pow(self.tau)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.normalized_weight().t()


class DisAlignClassifier(nn.Module):
    """Distribution alignment: z'_c = (1 + sigma a_c) z_c + sigma b_c, sigma = sigmoid(g(f)), g: D -> 1."""

    def __init__(self, dim: int, num_classes: int, linear: nn.Linear | None = None) -> None:
        super().__init__()
        self.linear = _frozen_linear(dim, num_classes, linear)
        self.confidence = nn.Linear(dim, 1)
        nn.init.constant_(self.confidence.weight, 0.1)
        nn.init.zeros_(self.confidence.bias)
        self.scale = nn.Parameter(torch.ones(num_classes))
        self.shift = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(self.confidence(features))
        return (1 + sigma * self.scale) * self.linear(features) + sigma * self.shift


class NCMClassifier(nn.Module):
    """Nearest class mean (MONICA's ``knn``): x^ = (f - f_mean)/||f - f_mean||, logit_c = -||x^ - mu_c||^2.

    ``f_mean`` is the train feature mean and ``mu_c`` the mean of x^ over the train images of class c,
    both set once by :meth:`fit` (buffers, saved with the head).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("centroids", torch.zeros(num_classes, dim))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features - self.feature_mean, dim=1)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> NCMClassifier:
        """Set the mean and class centroids from the train features (every class must be present)."""
        num_classes = self.centroids.shape[0]
        counts = torch.bincount(labels, minlength=num_classes)
        if len(counts) != num_classes or (counts == 0).any():
            raise ConfigError(
                f"ncm needs every one of {num_classes} classes in train, counts {counts.tolist()}"
            )
        self.feature_mean.copy_(features.mean(dim=0))
        x = self.normalize(features)
        self.centroids.zero_().index_add_(0, labels, x).div_(counts[:, None].to(x))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(self.normalize(features), self.centroids).pow(2)


class DeconfoundClassifier(nn.Module):
    """De-confound (Tang et al.): causal-norm cosine classifier over K feature chunks, TDE at test.

    Training: z_c = (tau/K) sum_k w_ck . f_k / ((||w_ck|| + gamma) ||f_k||), and the batch-mean feature
    enters an EMA e (momentum mu; only its direction is used). Eval: z_c minus
    alpha (tau/K) sum_k cos(f_k, d_k) w_ck . d_k / (||w_ck|| + gamma) with d_k = e_k / ||e_k||.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1.0 / 32.0,
        alpha: float = 1.5,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"de_confound needs num_heads dividing the feature dim {dim}, got {num_heads}")
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, 0, 0.01)
        self.register_buffer("embed_mean", torch.zeros(dim))
        self.num_heads, self.tau, self.gamma, self.alpha, self.momentum = (
            num_heads,
            tau,
            gamma,
            alpha,
            momentum,
        )

    def _chunks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def _normed_weight(self) -> torch.Tensor:
        w = self._chunks(self.weight)  # C x K x D/K
        return w / (w.norm(dim=2, keepdim=True) + self.gamma)

    def causal_logits(self, features: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self._chunks(features), dim=2)  # B x K x D/K
        return self.tau / self.num_heads * torch.einsum("bkd,ckd->bc", f, self._normed_weight())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.causal_logits(features)
        if self.training:
            with torch.no_grad():
                self.embed_mean.mul_(self.momentum).add_((1 - self.momentum) * features.detach().mean(0))
            return logits
        if self.alpha == 0:
            return logits
        d = F.normalize(self._chunks(self.embed_mean), dim=1)  # K x D/K
        cos = (F.normalize(self._chunks(features), dim=2) * d).sum(dim=2)  # B x K
        w_d = torch.einsum("ckd,kd->ck", self._normed_weight(), d)  # C x K
        return logits - self.alpha * self.tau / self.num_heads * cos @ w_d.t()


class BBNClassifier(nn.Module):
    """BBN's classifier W [2 alpha f_u || 2 (1 - alpha) f_r]; at test alpha = 0.5 with f_u = f_r = f."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim, num_classes)

    def mix(self, f_uniform: torch.Tensor, f_reversed: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.linear(torch.cat([2 * alpha * f_uniform, 2 * (1 - alpha) * f_reversed], dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mix(features, features, 0.5)


def _mislas_head(dim: int, num_classes: int, linear: nn.Linear | None = None) -> LWSClassifier:
    return LWSClassifier(dim, num_classes, linear, train_linear=True)


def _expert_heads(dim: int, num_classes: int, **kw) -> nn.Module:
    from hubtools.longtail.experts import ExpertHeads

    return ExpertHeads.from_backbone_config(dim, num_classes, **kw)


def _bbn_branches(dim: int, num_classes: int, **kw) -> nn.Module:
    from hubtools.longtail.experts import BBNBranchHead

    return BBNBranchHead.from_backbone_config(dim, num_classes, **kw)


def get_classifier(name: str, dim: int, num_classes: int, **kw) -> nn.Module:
    """Head ``name`` for ``dim``-dimensional features and ``num_classes`` classes.

    ``lws``, ``tau_norm``, ``disalign`` and ``mislas`` take ``linear=`` (the trained stage-1 head; frozen
    in place except for ``mislas``); ``tau_norm`` also ``tau=``; ``de_confound`` its hyper-parameters;
    ``experts`` the backbone config and split (see :class:`hubtools.longtail.experts.ExpertHeads`).
    """
    builders: dict[str, Callable[..., nn.Module]] = {
        "linear": nn.Linear,
        "cosine": CosineClassifier,
        "lws": LWSClassifier,
        "tau_norm": TauNormClassifier,
        "disalign": DisAlignClassifier,
        "mislas": _mislas_head,
        "ncm": NCMClassifier,
        "de_confound": DeconfoundClassifier,
        "bbn": BBNClassifier,
        "experts": _expert_heads,
        "bbn_separate": _bbn_branches,
    }
    if name not in builders:
        raise ConfigError(f"unknown classifier {name!r}; valid: {', '.join(CLASSIFIERS)}")
    if dim < 1 or num_classes < 2:
        raise ConfigError(f"need dim >= 1 and num_classes >= 2, got {dim}, {num_classes}")
    try:
        return builders[name](dim, num_classes, **kw)
    except TypeError as e:
        raise ConfigError(f"classifier {name!r}: {e}") from None


def logit_adjust(logits: torch.Tensor, cls_num_list: Sequence[int], tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment z - tau log pi (Menon et al.) for an ERM model."""
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    if logits.shape[-1] != counts.numel():
        raise ConfigError(f"logits with {logits.shape[-1]} classes for {counts.numel()} class counts")
    return logits - (tau * torch.log(counts / counts.sum())).to(logits)


def select_tau(
    score: Callable[[float], float], grid: Sequence[float] = tuple(np.round(np.arange(0, 2.01, 0.25), 2))
) -> tuple[float, float]:
    """The (tau, score) of ``grid`` with the highest ``score(tau)`` on validation (the first on ties)."""
    best = max(((float(t), float(score(float(t)))) for t in grid), key=lambda ts: ts[1])
    return best
