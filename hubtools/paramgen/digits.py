"""The fast real case: a small CNN on scikit-learn's digits (real 8x8 scans, shipped in the wheel).

Its last BatchNorm's affine parameters (2 x 64 = 128 floats) are the generated subset, as
p-diff does with ResNet-18's last BN layers. Everything here is small enough for tests, the
quickstart demo and the ``--smoke`` benchmark on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from hubtools.train import TrainConfig, train

if TYPE_CHECKING:  # collect imports torch-heavy helpers; the runtime import stays local
    from hubtools.paramgen.collect import CheckpointSet

SUBSET_PATTERN = r"^bn3\.(weight|bias)$"


class DigitsCNN(nn.Module):
    """conv16-BN-ReLU, conv32-BN-ReLU, maxpool, conv64-BN-ReLU, global average pool, linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


@dataclass
class DigitsSplits:
    """Stratified 60/15/25 train/validation/test split of the 1797 images, standardised with train statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_splits(seed: int = 0) -> DigitsSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32) / 16.0
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=0.2, stratify=y_tr, random_state=seed)
    mean, std = x_tr.mean(), x_tr.std()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a - mean) / std).unsqueeze(1)

    return DigitsSplits(
        t(x_tr), torch.from_numpy(y_tr), t(x_va), torch.from_numpy(y_va), t(x_te), torch.from_numpy(y_te)
    )


def classification_loss(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean()) * 100.0


def train_host(splits: DigitsSplits, output_dir: Path, epochs: int = 15, seed: int = 0) -> DigitsCNN:
    """Train the whole CNN normally (SGD lr 0.1, momentum 0.9, wd 5e-4, batch 64, cosine), the p-diff step 1."""
    torch.manual_seed(seed)
    cfg = TrainConfig(
        output_dir=output_dir,
        seed=seed,
        num_epochs=epochs,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        scheduler="cosine",
        log_every=50,
        keep_last=1,
    )
    model = train(DigitsCNN(), TensorDataset(splits.x_train, splits.y_train), classification_loss, cfg).model
    return model.eval()


@dataclass
class DigitsRun:
    """Everything one digits p-diff run produced (used by the benchmark, the demo and tests)."""

    splits: DigitsSplits
    host: DigitsCNN
    checkpoints: object  # CheckpointSet
    pipeline: object  # PDiffPipeline
    stats: dict


def collect_digits_checkpoints(
    host: DigitsCNN,
    splits: DigitsSplits,
    output_dir: Path,
    *,
    seed: int = 0,
    num_checkpoints: int = 100,
    save_every: int = 5,
) -> CheckpointSet:
    """Continue training the host's last BN only (SGD, the p-diff recipe) and snapshot it every ``save_every`` steps."""
    from hubtools.paramgen.collect import collect_checkpoints
    from hubtools.paramgen.spec import ParamSpec

    cfg = TrainConfig(
        output_dir=output_dir,
        seed=seed,
        max_steps=1,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        log_every=1000,
        keep_last=1,
    )
    return collect_checkpoints(
        host,
        ParamSpec.from_model(host, SUBSET_PATTERN),
        TensorDataset(splits.x_train, splits.y_train),
        classification_loss,
        cfg,
        num_checkpoints=num_checkpoints,
        save_every=save_every,
    )


def run_digits_pdiff(
    work_dir: Path,
    *,
    seed: int = 0,
    host_epochs: int = 15,
    num_checkpoints: int = 100,
    save_every: int = 5,
    ae_steps: int = 600,
    ddpm_steps: int = 1200,
    normalization: str = "none",
) -> DigitsRun:
    """Train the host, collect last-BN checkpoints (host frozen), train AE + DDPM: the p-diff recipe on digits."""
    import time

    from hubtools.paramgen.cli import PRESETS
    from hubtools.paramgen.training import PDiffTrainConfig, train_pdiff

    splits = load_digits_splits(seed)
    start = time.perf_counter()
    host = train_host(splits, work_dir / "host", epochs=host_epochs, seed=seed)
    ckpts = collect_digits_checkpoints(
        host, splits, work_dir / "collect", seed=seed, num_checkpoints=num_checkpoints, save_every=save_every
    )
    ckpts.info.update({"host": "digits-cnn", "pattern": SUBSET_PATTERN, "seed": seed})
    collect_s = time.perf_counter() - start
    pcfg = PDiffTrainConfig(
        output_dir=work_dir / "pdiff",
        seed=seed,
        ae_steps=ae_steps,
        ddpm_steps=ddpm_steps,
        log_every=100,
        pdiff_normalization=normalization,
        **PRESETS["digits"],
    )
    pipe, stats = train_pdiff(ckpts, pcfg)
    pipe.set_progress_bar_config(disable=True)
    return DigitsRun(splits, ckpts.host(DigitsCNN()), ckpts, pipe, {"host_and_collect_s": collect_s, **stats})
