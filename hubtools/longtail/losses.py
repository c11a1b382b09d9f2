"""Long-tail losses (MONICA), each an ``nn.Module`` called as ``loss(logits, targets)``.

``logits`` is a float tensor B x C, ``targets`` int64 class ids of length B. Every loss is built
from the train class counts ``cls_num_list`` (class 0 = largest) and checks that the logits have
that many columns. Where the anchor implementation is wrong the paper's method is the default
and the anchor's behaviour is a ``legacy``/``legacy_sign`` option:

- ``la_loss``: CE(z + tau log pi) (the anchor subtracts the prior: ``legacy_sign=True``);
- ``ldam_drw``: the DRW switch is at e >= max(1, floor(0.8 E)) (the anchor divides by zero at E = 1),
  and the loss expects cosine logits of a normalised classifier (``get_classifier("cosine", ...)``);
- ``cb_softmax``: w_y * CE (the anchor's BCE on softmax outputs: ``legacy=True``);
- ``seql``: warns when no class is rare enough for the mask to act (the anchor's silent no-op).

Losses that change during training (``ldam_drw``) have ``set_epoch(epoch)``; the trainer calls it
for every loss at the start of each epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hubtools.errors import ConfigError

CB_BETA = 0.9999


def class_balanced_weights(cls_num_list: Sequence[int], beta: float = CB_BETA) -> torch.Tensor:
    """Class-balanced weights w_c = (1 - beta) / (1 - beta^n_c), scaled to sum to C (Cui et al.)."""
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    effective = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)
    w = (1.0 - beta) / effective
    return (w / w.sum() * len(counts)).float()


def _counts(cls_num_list: Sequence[int]) -> torch.Tensor:
    counts = torch.as_tensor(list(cls_num_list), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ConfigError(f"cls_num_list needs at least 2 class counts, got {list(cls_num_list)!r}")
    if (counts <= 0).any():
        raise ConfigError(f"cls_num_list must hold positive train counts, got {list(cls_num_list)!r}")
    return counts


class LongTailLoss(nn.Module):
    """Base: holds the class counts and priors, checks the logits' shape against them."""

    def __init__(self, cls_num_list: Sequence[int]) -> None:
        super().__init__()
        counts = _counts(cls_num_list)
        self.num_classes = counts.numel()
        self.register_buffer("counts", counts.float(), persistent=False)
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).float(), persistent=False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"{type(self).__name__} was built for {self.num_classes} classes (cls_num_list) but got "
                f"logits of shape {tuple(logits.shape)}"
            )
        if targets.shape != logits.shape[:1]:
            raise ConfigError(f"targets of shape {tuple(targets.shape)} for logits {tuple(logits.shape)}")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check(logits, targets)
        return self.compute(logits, targets)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(LongTailLoss):
    """Softmax cross-entropy, optionally class-weighted with PyTorch semantics sum w_y l / sum w_y."""

    def __init__(
        self, cls_num_list: Sequence[int], weight: Sequence[float] | torch.Tensor | None = None
    ) -> None:
        super().__init__(cls_num_list)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
            if weight.shape != (self.num_classes,):
                raise ConfigError(f"weight has shape {tuple(weight.shape)} for {self.num_classes} classes")
        self.register_buffer("weight", weight, persistent=False)

    def compute(self, logits, targets):
        return F.cross_entropy(logits, targets, weight=self.weight)


class LogitAdjustedCE(LongTailLoss):
    """CE(z + tau * log(pi + eps)): balanced softmax / PriorCE (tau 1) and the logit-adjusted loss.

    ``legacy_sign=True`` reproduces the anchor's ``la_loss``, which subtracts the prior (wrong sign).
    """

    def __init__(
        self, cls_num_list: Sequence[int], tau: float = 1.0, eps: float = 0.0, legacy_sign: bool = False
    ) -> None:
        super().__init__(cls_num_list)
        counts = self.counts.double()
        adjust = tau * torch.log(counts / counts.sum() + eps)
        self.register_buffer("adjust", (-adjust if legacy_sign else adjust).float(), persistent=False)

    def compute(self, logits, targets):
        return F.cross_entropy(logits + self.adjust.to(logits.dtype), targets)


class FocalLoss(LongTailLoss):
    """mean over the batch of (1 - p_y)^gamma * CE."""

    def __init__(self, cls_num_list: Sequence[int], gamma: float = 2.0) -> None:
        super().__init__(cls_num_list)
        self.gamma = gamma

    def compute(self, logits, targets):
        logp_y = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return ((1.0 - logp_y.exp()).pow(self.gamma) * -logp_y).mean()


class ClassBalancedSoftmax(LongTailLoss):
    """Class-balanced softmax loss: mean over the batch of w_y * CE, w the CB weights.

    ``legacy=True``: the anchor's port, binary cross-entropy of softmax(z) against the one-hot
    target with weight w_y on all C outputs, averaged over B x C.
    """

    def __init__(self, cls_num_list: Sequence[int], beta: float = CB_BETA, legacy: bool = False) -> None:
        super().__init__(cls_num_list)
        self.register_buffer("weight", class_balanced_weights(cls_num_list, beta), persistent=False)
        self.legacy = legacy

    def compute(self, logits, targets):
        w_y = self.weight[targets]
        if self.legacy:
            one_hot = F.one_hot(targets, self.num_classes).float()
            weight = w_y[:, None].expand_as(one_hot)
            return F.binary_cross_entropy(logits.float().softmax(dim=1), one_hot, weight=weight)
        return (w_y * F.cross_entropy(logits.float(), targets, reduction="none")).mean()


class ClassBalancedFocal(LongTailLoss):
    """CB focal loss on per-class sigmoids: w_y * sum_c (1 - p^t_c)^gamma * (-log p^t_c), summed, / B."""

    def __init__(self, cls_num_list: Sequence[int], beta: float = CB_BETA, gamma: float = 2.0) -> None:
        super().__init__(cls_num_list)
        self.register_buffer("weight", class_balanced_weights(cls_num_list, beta), persistent=False)
        self.gamma = gamma

    def compute(self, logits, targets):
        z = logits.float()
        one_hot = F.one_hot(targets, self.num_classes).float()
        # log p^t = log sigmoid(z) on the target column, log sigmoid(-z) elsewhere (stable form)
        log_pt = F.logsigmoid(torch.where(one_hot > 0, z, -z))
        per_sample = ((1.0 - log_pt.exp()).pow(self.gamma) * -log_pt).sum(dim=1)
        return (self.weight[targets] * per_sample).sum() / z.shape[0]


class LDAMLoss(LongTailLoss):
    """LDAM with deferred re-weighting: CE(s * (c - m_y e_y)) with DRW class weights.

    m_c = max_m * n_c^(-1/4) / max_k n_k^(-1/4) (the rarest class gets ``max_m``); ``logits`` are the
    cosines of a normalised classifier. DRW: weights 1 (CB with beta 0) while
    epoch < max(1, floor(0.8 E)), then CB weights with beta = 0.9999; ``drw=False`` keeps weights 1.
    """

    def __init__(
        self,
        cls_num_list: Sequence[int],
        num_epochs: int | None = None,
        max_m: float = 0.5,
        s: float = 30.0,
        drw: bool = True,
        drw_fraction: float = 0.8,
        beta: float = CB_BETA,
    ) -> None:
        super().__init__(cls_num_list)
        if drw and num_epochs is None:
            raise ConfigError("ldam_drw needs num_epochs (the DRW switch is at floor(0.8 * num_epochs))")
        quarter = self.counts.double().pow(-0.25)
        self.register_buffer("margins", (max_m * quarter / quarter.max()).float(), persistent=False)
        self.register_buffer("drw_weight", class_balanced_weights(cls_num_list, beta), persistent=False)
        self.s = s
        self.drw_epoch = max(1, math.floor(drw_fraction * num_epochs)) if drw else None

    @property
    def weight(self) -> torch.Tensor | None:
        """The class weights in force this epoch (``None``: unweighted)."""
        if self.drw_epoch is None or self.epoch < self.drw_epoch:
            return None
        return self.drw_weight

    def compute(self, logits, targets):
        margin = F.one_hot(targets, self.num_classes).to(logits.dtype) * self.margins[targets, None].to(
            logits.dtype
        )
        return F.cross_entropy(self.s * (logits - margin), targets, weight=self.weight)


class VSLoss(LongTailLoss):
    """Vector-scaling loss: CE(Delta_c z_c + iota_c), Delta_c = (n_c/n_max)^gamma, iota_c = tau log pi_c."""

    def __init__(self, cls_num_list: Sequence[int], gamma: float = 0.3, tau: float = 1.0) -> None:
        super().__init__(cls_num_list)
        counts = self.counts.double()
        self.register_buffer("scale", (counts / counts.max()).pow(gamma).float(), persistent=False)
        self.register_buffer("offset", (tau * torch.log(counts / counts.sum())).float(), persistent=False)

    def compute(self, logits, targets):
        return F.cross_entropy(logits * self.scale.to(logits.dtype) + self.offset.to(logits.dtype), targets)


class LADELoss(LongTailLoss):
    """PriorCE + alpha * L_LADE (Hong et al.), with L_LADE = -sum_c pi_c (F_c - T_c - lambda T_c^2).

    Over a batch of size B: T_c = LSE_i(z_ic - log pi_c - log C) - log B and
    F_c = sum_{i: y_i = c} z_ic / (n_c^batch + 1e-8), so a class absent from the batch has F_c = 0.
    """

    def __init__(self, cls_num_list: Sequence[int], alpha: float = 0.1, remine_lambda: float = 0.1) -> None:
        super().__init__(cls_num_list)
        self.alpha = alpha
        self.remine_lambda = remine_lambda
        self.prior_ce = LogitAdjustedCE(cls_num_list, tau=1.0, eps=1e-9)

    def lade_term(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        batch = z.shape[0]
        log_prior = self.log_prior
        spread = z - log_prior - math.log(self.num_classes)
        t = torch.logsumexp(spread, dim=0) - math.log(batch)
        one_hot = F.one_hot(targets, self.num_classes).float()
        f = (z * one_hot).sum(dim=0) / (one_hot.sum(dim=0) + 1e-8)
        return -(log_prior.exp() * (f - t - self.remine_lambda * t.pow(2))).sum()

    def compute(self, logits, targets):
        loss = self.prior_ce(logits, targets)
        if self.alpha:
            loss = loss + self.alpha * self.lade_term(logits, targets)
        return loss


class SEQLLoss(LongTailLoss):
    """Softmax equalization loss: drop rare negative classes (pi_j < lambda) from the softmax with probability gamma.

    For j != y, w_j = 1 - b_j * [pi_j < lambda], b_j ~ Bernoulli(gamma) per (sample, class), and
    p_y = e^{z_y} / sum_j w_j e^{z_j}; a dropped entry gets a large negative finite logit (fp16-safe).
    ``lambda_="few"`` (the default) with ``medium=`` (the few-group start index) sets lambda just
    above the largest prior of the few group, so the few group is always masked. The paper's
    lambda 4.3e-4 was tuned for LVIS's thousand-class tail; every MONICA split and Fashion-MNIST-LT
    has its smallest prior above it, where the loss would silently be plain cross-entropy.
    A number still selects a fixed lambda (and warns when it masks no class).
    """

    def __init__(
        self,
        cls_num_list: Sequence[int],
        lambda_: float | str = "few",
        gamma: float = 0.9,
        medium: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(cls_num_list)
        priors = self.log_prior.double().exp()
        if lambda_ == "few":
            if medium is None or not 0 <= medium < self.num_classes:
                raise ConfigError(
                    "seql with lambda_='few' needs medium= (the index where the few group starts)"
                )
            lambda_ = math.nextafter(float(priors[medium:].max()), math.inf)
        if not isinstance(lambda_, (int, float)):
            raise ConfigError(f"seql lambda_ must be a number or 'few', got {lambda_!r}")
        self.lambda_ = float(lambda_)
        self.gamma = gamma
        self.generator = generator
        self.register_buffer("rare", priors < self.lambda_, persistent=False)
        if not bool(self.rare.any()):
            warnings.warn(
                f"seql: no class has a prior below lambda={self.lambda_:g} (smallest {float(priors.min()):.3g}), "
                "so the loss is plain cross-entropy; pass lambda_='few' to act on the few group",
                stacklevel=3,
            )

    def drop_mask(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Boolean B x C: entries removed from the softmax denominator."""
        draw = torch.rand(logits.shape, generator=self.generator, device="cpu").to(logits.device) < self.gamma
        eligible = self.rare[None, :] & ~F.one_hot(targets, self.num_classes).bool()
        return draw & eligible

    def compute(self, logits, targets):
        z = logits.float()
        masked = z.masked_fill(self.drop_mask(z, targets), torch.finfo(torch.float16).min / 2)
        return F.cross_entropy(masked, targets)


class GCLLoss(LongTailLoss):
    """Gaussian clouded logits: CE(s * cos'), cos'_ic = cos_ic - 0.5 |eps_ic| (log n_max - log n_c) / max_k(...).

    eps ~ N(0, noise_std^2) clamped to [-1, 1], drawn only while training (``self.training``); ``logits``
    are cosines of a normalised classifier. The head class has no noise. ``weight`` (per class)
    turns the CE into the weighted CE (GCL's second stage with class-balanced weights).
    """

    def __init__(
        self,
        cls_num_list: Sequence[int],
        s: float = 30.0,
        noise_mul: float = 0.5,
        noise_std: float = 1.0 / 3.0,
        generator: torch.Generator | None = None,
        weight: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__(cls_num_list)
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32), persistent=False
        )
        gap = torch.log(self.counts.double().max()) - torch.log(self.counts.double())
        self.register_buffer("noise_scale", (gap / gap.max()).float(), persistent=False)
        self.s, self.noise_mul, self.noise_std = s, noise_mul, noise_std
        self.generator = generator

    def noisy_cosines(self, logits: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(logits.shape, generator=self.generator).to(logits.device) * self.noise_std
        eps = eps.clamp(-1.0, 1.0).abs()
        return logits - self.noise_mul * eps * self.noise_scale.to(logits.dtype)

    def compute(self, logits, targets):
        cos = self.noisy_cosines(logits) if self.training else logits
        weight = None if self.weight is None else self.weight.to(cos.device)
        return F.cross_entropy(self.s * cos, targets, weight=weight)


class LabelAwareSmoothing(LongTailLoss):
    """MiSLAS label-aware smoothing: eps_c = eps_max * sin(pi/2 * (n_c - n_min)/(n_max - n_min)),

    target 1 - eps_y on y and eps_y / (C - 1) elsewhere; loss the mean cross-entropy to that target.
    """

    def __init__(self, cls_num_list: Sequence[int], eps_max: float = 0.3) -> None:
        super().__init__(cls_num_list)
        counts = self.counts.double()
        span = counts.max() - counts.min()
        frac = (counts - counts.min()) / span if span > 0 else torch.zeros_like(counts)
        self.register_buffer("smoothing", (eps_max * torch.sin(math.pi / 2 * frac)).float(), persistent=False)

    def compute(self, logits, targets):
        eps = self.smoothing[targets][:, None]
        one_hot = F.one_hot(targets, self.num_classes).float()
        target = one_hot * (1.0 - eps) + (1.0 - one_hot) * eps / (self.num_classes - 1)
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class RangeLoss(LongTailLoss):
    """CE + lambda_R * L_R on features f (Zhang et al., Range Loss), the anchor's legacy form without CE.

    L_R = a L_intra + b L_inter with, per class c present at least twice in the batch,
    L_intra = sum_c k / sum_{j<=k} 1/D_{c,j} (D_{c,j} the j-th largest Euclidean distance between two
    features of class c; fewer pairs than k: all of them) and
    L_inter = max(0, m - min_{c != c'} ||mu_c - mu_c'||^2) over the class means of the batch.
    ``legacy=True`` reproduces the anchor: L_R applied to the logits and no CE term.

    lambda_R defaults to 0.001. L_intra is a sum over the classes of the batch, so its size grows
    with the number of classes: with lambda_R = 1 it starts about 40x larger than the cross-entropy,
    the features shrink to zero and training collapses (balanced accuracy 1 % on the 116-class MRI
    patches, 17 % on Fashion-MNIST-LT); 0.01 still costs a third of ERM's accuracy on the MRI
    patches and a quarter on Fashion-MNIST-LT (one seed, 4 epochs, 16 px); 0.001 stays within a
    point of ERM on both.
    """

    needs_features = True

    def __init__(
        self,
        cls_num_list: Sequence[int],
        k: int = 2,
        margin: float = 0.1,
        lambda_r: float = 0.001,
        intra_weight: float = 0.5,
        inter_weight: float = 0.5,
        legacy: bool = False,
    ) -> None:
        super().__init__(cls_num_list)
        if k < 1:
            raise ConfigError(f"range_loss k must be >= 1, got {k}")
        self.k, self.margin, self.lambda_r, self.legacy = k, margin, lambda_r, legacy
        self.intra_weight, self.inter_weight = intra_weight, inter_weight

    def range_term(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        f = features.float()
        intra = f.new_zeros(())
        centres = []
        for c in targets.unique().tolist():
            fc = f[targets == c]
            centres.append(fc.mean(dim=0))
            if fc.shape[0] < 2:
                continue
            i, j = torch.triu_indices(fc.shape[0], fc.shape[0], offset=1)
            dist = (fc[i] - fc[j]).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()
            top = dist.topk(min(self.k, dist.numel())).values
            intra = intra + top.numel() / (1.0 / top).sum()
        inter = f.new_zeros(())
        if len(centres) > 1:
            mu = torch.stack(centres)
            i, j = torch.triu_indices(len(centres), len(centres), offset=1)
            inter = (self.margin - (mu[i] - mu[j]).pow(2).sum(dim=1).min()).clamp_min(0.0)
        return self.intra_weight * intra + self.inter_weight * inter

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check(logits, targets)
        if self.legacy:
            return self.range_term(logits, targets)
        if features is None or features.shape[0] != logits.shape[0]:
            raise ConfigError("range_loss needs the batch features: loss(logits, targets, features=f)")
        return F.cross_entropy(logits.float(), targets) + self.lambda_r * self.range_term(features, targets)


class CenterLoss(LongTailLoss):
    """CE + lambda_c * L_C on features f (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep
    Face Recognition"), an extra beyond MONICA's list.

    L_C = 1/2 * mean_i ||f_i - c_{y_i}||^2 (the paper sums over the batch; hubtools averages, as its CE does).
    The centres are not trained by the optimiser but by the paper's rule after each training forward:
    c_j <- c_j - alpha * Delta c_j, Delta c_j = sum_{i: y_i = j} (c_j - f_i) / (1 + n_j), with the features
    detached; under several processes the sums are all-reduced so every rank keeps the same centres. The
    centres are a persistent buffer (checkpointed with the loss for exact resume), zero until the first batch
    fixes the feature size. Defaults lambda_c 0.003 and alpha 0.5 are the paper's.
    """

    needs_features = True
    stateful = True

    def __init__(self, cls_num_list: Sequence[int], lambda_c: float = 0.003, alpha: float = 0.5) -> None:
        super().__init__(cls_num_list)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"center_loss alpha must be in (0, 1], got {alpha}")
        self.lambda_c, self.alpha = lambda_c, alpha
        self.register_buffer("centers", torch.zeros(0))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "centers")
        if saved is not None and saved.shape != self.centers.shape:  # sized lazily: take the saved size
            self.centers = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check(logits, targets)
        if features is None or features.shape[0] != logits.shape[0]:
            raise ConfigError("center_loss needs the batch features: loss(logits, targets, features=f)")
        f = features.float().flatten(1)
        if self.centers.numel() == 0:
            self.centers = f.new_zeros(self.num_classes, f.shape[1])
        elif self.centers.device != f.device:  # restored from a checkpoint on the CPU
            self.centers = self.centers.to(f.device)
        centre_term = 0.5 * (f - self.centers[targets]).pow(2).sum(dim=1).mean()
        if self.training:
            self._update_centres(f.detach(), targets)
        return F.cross_entropy(logits.float(), targets) + self.lambda_c * centre_term

    @torch.no_grad()
    def _update_centres(self, f: torch.Tensor, targets: torch.Tensor) -> None:
        one_hot = F.one_hot(targets, self.num_classes).to(f.dtype)  # [B, C]
        counts = one_hot.sum(dim=0)  # n_j
        feature_sums = one_hot.T @ f  # sum of f_i of class j
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(feature_sums)
        delta = (counts[:, None] * self.centers - feature_sums) / (1.0 + counts[:, None])
        self.centers -= self.alpha * delta


def reversed_prior(cls_num_list: Sequence[int]) -> torch.Tensor:
    """pi with its values reversed by rank: the most frequent class gets the smallest prior (SADE)."""
    counts = _counts(cls_num_list)
    prior = counts / counts.sum()
    order = torch.argsort(prior, stable=True)
    out = torch.empty_like(prior)
    out[order] = prior[order.flip(0)]
    return out.float()


class ExpertLoss(LongTailLoss):
    """Base of multi-expert losses: ``logits`` are K x B x C, one slice per expert."""

    num_experts = 3

    def check(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.ndim != 3 or logits.shape[2] != self.num_classes:
            raise ConfigError(
                f"{type(self).__name__} takes expert logits K x B x {self.num_classes}, got {tuple(logits.shape)}"
            )
        if targets.shape != logits.shape[1:2]:
            raise ConfigError(f"targets of shape {tuple(targets.shape)} for logits {tuple(logits.shape)}")


class SADELoss(ExpertLoss):
    """SADE's three experts: CE(z1) + CE(z2 + log pi) + CE(z3 + log pi - tau log pi~), tau 2.

    Expert 1 fits the long-tailed train distribution, expert 2 the balanced one (balanced softmax),
    expert 3 the inversely long-tailed one (pi~ = :func:`reversed_prior`).
    """

    def __init__(self, cls_num_list: Sequence[int], tau: float = 2.0) -> None:
        super().__init__(cls_num_list)
        inverse = torch.log(reversed_prior(cls_num_list))
        self.register_buffer("inverse_log_prior", inverse, persistent=False)
        self.tau = tau

    def compute(self, logits, targets):
        if logits.shape[0] != 3:
            raise ConfigError(f"sade has exactly 3 experts, got {logits.shape[0]}")
        z = logits.float()
        prior = self.log_prior
        return (
            F.cross_entropy(z[0], targets)
            + F.cross_entropy(z[1] + prior, targets)
            + F.cross_entropy(z[2] + prior - self.tau * self.inverse_log_prior, targets)
        )


class RIDELoss(ExpertLoss):
    """RIDE: sum over experts k of LDAM-DRW(z^k) - lambda_div T_mean^2 KL(softmax(z_mean/T) || softmax(z^k/T)).

    ``logits`` are s * cosines (the expert heads apply s = 30), so LDAM sees z^k / s. The mean of the
    expert logits is detached (a target). T = 1 before the DRW epoch, then T_c = w_c / max w with
    w_c = 0.05 C pi_c + 0.95 (frank-xwang/RIDE-LongTailRecognition defaults).
    """

    def __init__(
        self,
        cls_num_list: Sequence[int],
        num_epochs: int | None = None,
        max_m: float = 0.5,
        s: float = 30.0,
        lambda_div: float = 0.2,
        reweight_factor: float = 0.05,
        drw_fraction: float = 0.8,
        beta: float = CB_BETA,
    ) -> None:
        super().__init__(cls_num_list)
        self.ldam = LDAMLoss(cls_num_list, num_epochs, max_m=max_m, s=s, drw_fraction=drw_fraction, beta=beta)
        self.lambda_div, self.s = lambda_div, s
        w = reweight_factor * self.num_classes * self.log_prior.double().exp() + 1.0 - reweight_factor
        self.register_buffer("drw_temperature", (w / w.max()).float(), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.ldam.set_epoch(epoch)

    @property
    def temperature(self) -> torch.Tensor:
        """Per-class diversity temperature T_c in force this epoch."""
        if self.ldam.weight is None:
            return torch.ones_like(self.drw_temperature)
        return self.drw_temperature

    def compute(self, logits, targets):
        z = logits.float()
        temp = self.temperature
        target = F.softmax(z.mean(dim=0).detach() / temp, dim=1)
        loss = z.new_zeros(())
        for zk in z:
            loss = loss + self.ldam(zk / self.s, targets)
            if self.lambda_div:
                kl = F.kl_div(F.log_softmax(zk / temp, dim=1), target, reduction="batchmean")
                loss = loss - self.lambda_div * temp.mean() ** 2 * kl
        return loss
