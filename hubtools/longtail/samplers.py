"""Re-sampling for long-tailed training (spec longtail.md 2.4): every epoch draws N indices with replacement.

A sampler is defined by the probability mass q_c it gives each class; within a class every
instance is equally likely (instance weight q_c / n_c):

- ``instance``: q_c ~ n_c (plain ERM data distribution);
- ``class_balanced`` (``rs``): q_c ~ 1;
- ``sqrt``: q_c ~ sqrt(n_c);
- ``progressive``: q = (1 - e/E) q_instance + (e/E) q_class_balanced (Kang et al., decoupling);
- ``cb``: instance weight = class-balanced weight of its class (beta 0.9999), so q_c ~ n_c w_c;
- ``reverse``: q_c ~ n_max / n_c (BBN's reversed sampler).

The draw of epoch e depends on (seed, e) only, so every process draws the same indices; with
``world_size > 1`` each process takes ``indices[rank::world_size]`` (N padded to a multiple of
``world_size``). Under :func:`hubtools.train.train` leave rank/world at 0/1: accelerate shards the batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from hubtools.errors import ConfigError
from hubtools.longtail.losses import CB_BETA, class_balanced_weights

SAMPLERS = ("instance", "class_balanced", "sqrt", "progressive", "cb", "reverse")


def class_probabilities(
    name: str, cls_num_list: Sequence[int], epoch: int = 0, num_epochs: int | None = None
) -> np.ndarray:
    """The probability q_c that one draw of sampler ``name`` is of class c (float64, sums to 1)."""
    n = np.asarray(list(cls_num_list), dtype=np.float64)
    if name == "instance":
        mass = n
    elif name == "class_balanced":
        mass = np.ones_like(n)
    elif name == "sqrt":
        mass = np.sqrt(n)
    elif name == "progressive":
        if not num_epochs:
            raise ConfigError("the progressive sampler needs num_epochs")
        t = min(max(epoch, 0), num_epochs) / num_epochs
        return (1 - t) * n / n.sum() + t / n.size
    elif name == "cb":
        mass = n * class_balanced_weights(cls_num_list, CB_BETA).double().numpy()
    elif name == "reverse":
        mass = n.max() / n
    else:
        raise ConfigError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return mass / mass.sum()


class LongTailSampler(Sampler[int]):
    """Draws ``num_samples`` indices with replacement from per-instance weights, reseeded by (seed, epoch)."""

    def __init__(
        self,
        name: str,
        labels: Sequence[int] | np.ndarray,
        cls_num_list: Sequence[int],
        epoch: int = 0,
        num_epochs: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=len(cls_num_list))
        if len(counts) != len(cls_num_list) or counts.tolist() != [int(c) for c in cls_num_list]:
            raise ConfigError(
                f"cls_num_list {list(cls_num_list)} does not match the class counts of the labels {counts.tolist()}"
            )
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world_size {world_size}")
        class_probabilities(name, cls_num_list, epoch, num_epochs)  # validates name and options early
        self.name, self.labels, self.cls_num_list = name, labels, list(cls_num_list)
        self.num_epochs, self.seed, self.rank, self.world_size = num_epochs, seed, rank, world_size
        self.total = math.ceil((num_samples or labels.size) / world_size) * world_size
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def instance_weights(self) -> np.ndarray:
        """Probability of each instance in one draw this epoch."""
        q = class_probabilities(self.name, self.cls_num_list, self.epoch, self.num_epochs)
        return (q / np.asarray(self.cls_num_list, dtype=np.float64))[self.labels]

    def all_indices(self) -> torch.Tensor:
        """This epoch's draw for every process together (before ``rank::world_size``)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        weights = torch.as_tensor(self.instance_weights(), dtype=torch.float64)
        return torch.multinomial(weights, self.total, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.all_indices()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.total // self.world_size


def get_sampler(
    name: str,
    labels: Sequence[int] | np.ndarray,
    cls_num_list: Sequence[int],
    epoch: int = 0,
    **kw,
) -> LongTailSampler:
    """A :class:`LongTailSampler`; options ``num_epochs``, ``seed``, ``rank``, ``world_size``, ``num_samples``."""
    if name == "rs":
        name = "class_balanced"
    return LongTailSampler(name, labels, cls_num_list, epoch=epoch, **kw)
