"""The semi-supervised segmentation U-Net: a 2D/3D U-Net plus the threshold head of Bayesian pseudo labels.

Imports only torch, transformers and the configuration file, so ``register_for_auto_class`` can
copy it into a Hub repo. The whole forward pass is in :meth:`UNetForSemiSeg.forward`.

The threshold head phi maps the (detached) last decoder feature map to the posterior
``q(T | x) = N(mu, sigma^2)`` of the pseudo-label threshold: global average pool ->
Linear -> PReLU -> Linear -> ``mu = sigmoid(a0)``, ``log sigma^2 = clamp(a1, -10, 2)``. A sigmoid
(not the anchor's ReLU/softplus) keeps mu in (0, 1), where a threshold of probabilities makes
sense. The head is only used in training; inference binarises ``sigmoid(logits / tau)`` at 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_semiseg_unet import UNetSegConfig

LOGVAR_MIN, LOGVAR_MAX = -10.0, 2.0


@dataclass
class SemiSegOutput(ModelOutput):
    """``logits`` (B, out_channels, *spatial) at the input size; ``threshold_mu`` and
    ``threshold_logvar`` (B, out_channels): the posterior of the pseudo-label threshold."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    threshold_mu: torch.Tensor | None = None
    threshold_logvar: torch.Tensor | None = None


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    if spatial_dims == 2:
        return nn.Conv2d, nn.InstanceNorm2d
    return nn.Conv3d, nn.InstanceNorm3d


class DoubleConv(nn.Sequential):
    """2 x [conv 3, padding 1 -> InstanceNorm (affine, no running stats) -> PReLU]."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        conv, norm = _layers(spatial_dims)
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1),
            norm(out_channels, affine=True),
            nn.PReLU(),
            conv(out_channels, out_channels, 3, padding=1),
            norm(out_channels, affine=True),
            nn.PReLU(),
        )


class ThresholdOutput(nn.Linear):
    """The head's last layer: (mu logits, log-variances) of every output channel."""


class ThresholdHead(nn.Module):
    """phi: pooled decoder features -> (mu, log-variance) of the threshold, one per output channel."""

    def __init__(self, width: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.PReLU()
        self.fc2 = ThresholdOutput(hidden, 2 * out_channels)
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = features.flatten(2).mean(-1)
        a = self.fc2(self.act(self.fc1(pooled))).view(-1, 2, self.out_channels)
        return torch.sigmoid(a[:, 0]), a[:, 1].clamp(LOGVAR_MIN, LOGVAR_MAX)


class UNetSegPreTrainedModel(PreTrainedModel):
    config_class = UNetSegConfig
    config: UNetSegConfig
    base_model_prefix = "unet"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own defaults (kaiming-uniform), not transformers' N(0, initializer_range).
        if isinstance(module, ThresholdOutput):
            # Every image's q(T) starts at (threshold_init_mu, threshold_init_sigma^2), i.e. at the prior.
            init.zeros_(module.weight)
            mu, sigma = self.config.threshold_init_mu, self.config.threshold_init_sigma
            channels = module.out_features // 2
            init.copy_(
                module.bias,
                torch.tensor([math.log(mu / (1 - mu))] * channels + [2 * math.log(sigma)] * channels),
            )
        elif isinstance(module, nn.Conv2d | nn.Conv3d | nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.InstanceNorm2d | nn.InstanceNorm3d) and module.affine:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)


class UNetForSemiSeg(UNetSegPreTrainedModel):
    """U-Net (``spatial_dims`` 2 or 3) returning per-class sigmoid logits and the threshold posterior."""

    def __init__(self, config: UNetSegConfig) -> None:
        super().__init__(config)
        d, w = config.spatial_dims, config.width
        conv, _ = _layers(d)
        widths = [w * 2**i for i in range(config.depth + 1)]
        self.encoder = nn.ModuleList(
            [
                DoubleConv(d, config.in_channels if i == 0 else widths[i - 1], widths[i])
                for i in range(len(widths))
            ]
        )
        self.decoder = nn.ModuleList(
            [DoubleConv(d, widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.depth))]
        )
        self.head = conv(w, config.out_channels, 1)
        self.threshold_head = ThresholdHead(w, config.threshold_hidden or w, config.out_channels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> SemiSegOutput:
        d = self.config.spatial_dims
        if pixel_values.dim() != d + 2:
            raise ValueError(
                f"pixel_values must have shape (batch, channels, {'D, ' if d == 3 else ''}H, W) for a "
                f"{d}D U-Net, got {tuple(pixel_values.shape)}"
            )
        size = pixel_values.shape[2:]
        multiple = 2**self.config.depth
        pad = []
        for s in reversed(size):  # F.pad lists the last dimension first
            pad += [0, (-s) % multiple]
        x = F.pad(pixel_values, pad)

        pool = F.max_pool2d if d == 2 else F.max_pool3d
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else pool(x, 2))
            skips.append(x)
        x = skips.pop()
        mode = "bilinear" if d == 2 else "trilinear"
        for stage in self.decoder:
            x = F.interpolate(x, scale_factor=2, mode=mode, align_corners=False)
            x = stage(torch.cat([x, skips.pop()], dim=1))
        logits = self.head(x)[(slice(None), slice(None), *(slice(0, s) for s in size))]

        features = x.detach() if self.config.threshold_detach else x
        mu, logvar = self.threshold_head(features)
        if self.config.threshold_reduce == "batch":
            mu, logvar = (
                mu.mean(0, keepdim=True).expand_as(mu),
                logvar.mean(0, keepdim=True).expand_as(logvar),
            )
        return SemiSegOutput(logits=logits, threshold_mu=mu, threshold_logvar=logvar)

    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``sigmoid(logits / tau)``: what evaluation binarises at 0.5."""
        return torch.sigmoid(self(pixel_values).logits / self.config.logit_temperature)

    def threshold_confidence(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel foreground probability under the threshold's uncertainty, and its confidence.

        With ``T ~ q(T | x) = N(mu, sigma^2)`` from the threshold head, a pixel of probability ``p`` is
        foreground with probability ``P(T < p) = Phi((p - mu) / sigma)``; the confidence is
        ``max(Phi, 1 - Phi)`` (0.5: the label flips with the threshold, 1: it never does). Both have
        the logits' shape. ``config.threshold_learned`` says whether q(T) was learned or is the prior.
        """
        out = self(pixel_values)
        prob = torch.sigmoid(out.logits / self.config.logit_temperature)
        mu = out.threshold_mu.reshape(*out.threshold_mu.shape, *([1] * (prob.dim() - 2)))
        sigma = torch.exp(0.5 * out.threshold_logvar).reshape(mu.shape)
        foreground = torch.distributions.Normal(mu, sigma).cdf(prob)
        return foreground, torch.maximum(foreground, 1 - foreground)


__all__ = ["SemiSegOutput", "UNetForSemiSeg", "UNetSegPreTrainedModel"]
