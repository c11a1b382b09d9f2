"""Re-sampling for long-tailed training: every epoch draws N indices.

``instance`` (ERM and every method that does not re-sample) visits each image once per epoch in a
fresh random order (a permutation: without replacement, as the MONICA code's shuffled loader does;
drawing with replacement would show only ~63 % of the distinct images each epoch). The re-balancing
samplers draw with replacement, since their class masses cannot be met by visiting every image once.
A sampler is defined by the probability mass q_c it gives each class; within a class every
instance is equally likely (instance weight q_c / n_c):

- ``instance``: q_c ~ n_c (plain ERM data distribution);
- ``class_balanced`` (``rs``): q_c ~ 1;
- ``sqrt``: q_c ~ sqrt(n_c);
- ``progressive``: q = (1 - e/E) q_instance + (e/E) q_class_balanced (Kang et al., decoupling);
- ``cb``: instance weight = class-balanced weight of its class (beta 0.9999), so q_c ~ n_c w_c;
- ``reverse``: q_c ~ n_max / n_c (BBN's reversed sampler);
- ``deferred_cb`` (RSG): ``instance`` for e < floor(0.8 E), then ``cb``;
- ``flex`` (``flex_rs``, "Flexible Sampling"): instance weight ~ 1 / recall_{y_i} of the previous
  validation, so q_c ~ n_c / recall_c (``flex_mode="class"``: q_c ~ 1 / recall_c); recall is
  clamped to >= 0.01 (the anchor divides by zero) and is 1 before the first validation.

:class:`PairedSampler` draws BBN's two batches at once: each item is an index pair (uniform, re-balanced).

The draw of epoch e depends on (seed, e) only, so every process draws the same indices; with
``world_size > 1`` each process takes ``indices[rank::world_size]`` (N padded to a multiple of
``world_size``). Under :func:`hubtools.train.train` leave rank/world at 0/1: accelerate shards the batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from hubtools.errors import ConfigError
from hubtools.longtail.losses import CB_BETA, class_balanced_weights

SAMPLERS = ("instance", "class_balanced", "sqrt", "progressive", "cb", "reverse", "flex", "deferred_cb")
FLEX_MIN_RECALL = 0.01


def class_probabilities(
    name: str,
    cls_num_list: Sequence[int],
    epoch: int = 0,
    num_epochs: int | None = None,
    recall: Sequence[float] | np.ndarray | None = None,
    flex_mode: str = "instance",
) -> np.ndarray:
    """The probability q_c that one draw of sampler ``name`` is of class c (float64, sums to 1).

    ``recall`` (fractions in [0, 1], by class) and ``flex_mode`` are for ``flex`` only.
    """
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
    elif name == "deferred_cb":
        if not num_epochs:
            raise ConfigError("the deferred_cb sampler needs num_epochs")
        if epoch < math.floor(0.8 * num_epochs):
            mass = n
        else:
            mass = n * class_balanced_weights(cls_num_list, CB_BETA).double().numpy()
    elif name == "flex":
        if flex_mode not in ("instance", "class"):
            raise ConfigError(f"flex_mode must be 'instance' or 'class', got {flex_mode!r}")
        r = np.ones_like(n) if recall is None else np.asarray(recall, dtype=np.float64)
        if r.shape != n.shape:
            raise ConfigError(f"flex sampler: {r.size} recalls for {n.size} classes")
        inverse = 1.0 / np.maximum(r, FLEX_MIN_RECALL)
        mass = n * inverse if flex_mode == "instance" else inverse
    else:
        raise ConfigError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return mass / mass.sum()


class LongTailSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch, reseeded by (seed, epoch).

    ``instance``: a random permutation (repeated when ``num_samples`` exceeds the set, the last
    permutation cut); every other sampler: with replacement from its per-instance weights.
    """

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
        flex_mode: str = "instance",
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=len(cls_num_list))
        if len(counts) != len(cls_num_list) or counts.tolist() != [int(c) for c in cls_num_list]:
            raise ConfigError(
                f"cls_num_list {list(cls_num_list)} does not match the class counts of the labels {counts.tolist()}"
            )
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world_size {world_size}")
        class_probabilities(name, cls_num_list, epoch, num_epochs, flex_mode=flex_mode)  # validates early
        self.name, self.labels, self.cls_num_list = name, labels, list(cls_num_list)
        self.flex_mode = flex_mode
        self.recall: np.ndarray | None = None
        self.num_epochs, self.seed, self.rank, self.world_size = num_epochs, seed, rank, world_size
        self.total = math.ceil((num_samples or labels.size) / world_size) * world_size
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_recall(self, recall: Sequence[float] | np.ndarray) -> None:
        """Per-class validation recall (fractions) that the ``flex`` sampler uses from the next epoch."""
        self.recall = np.asarray(recall, dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        """The recall of the last validation (so a resumed ``flex`` run draws the same indices)."""
        return {"recall": None if self.recall is None else self.recall.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recall = None if state["recall"] is None else np.asarray(state["recall"], dtype=np.float64)

    def instance_weights(self) -> np.ndarray:
        """Probability of each instance in one draw this epoch."""
        q = class_probabilities(
            self.name, self.cls_num_list, self.epoch, self.num_epochs, self.recall, self.flex_mode
        )
        return (q / np.asarray(self.cls_num_list, dtype=np.float64))[self.labels]

    def all_indices(self) -> torch.Tensor:
        """This epoch's draw for every process together (before ``rank::world_size``)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.name == "instance":
            rounds = math.ceil(self.total / self.labels.size)
            perms = [torch.randperm(self.labels.size, generator=generator) for _ in range(rounds)]
            return torch.cat(perms)[: self.total]
        weights = torch.as_tensor(self.instance_weights(), dtype=torch.float64)
        return torch.multinomial(weights, self.total, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.all_indices()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.total // self.world_size


class PairedSampler(Sampler[tuple[int, int]]):
    """BBN's two samplers in step: item i is (i-th uniform index, i-th re-balanced index).

    Both draw N indices per epoch (the re-balanced one with seed + 1), so a batch holds the
    uniform-branch and the re-balancing-branch examples of one BBN step.
    """

    def __init__(self, uniform: LongTailSampler, rebalanced: LongTailSampler) -> None:
        if len(uniform) != len(rebalanced):
            raise ConfigError("paired samplers must draw the same number of indices")
        self.uniform, self.rebalanced = uniform, rebalanced

    @property
    def epoch(self) -> int:
        return self.uniform.epoch

    def set_epoch(self, epoch: int) -> None:
        self.uniform.set_epoch(epoch)
        self.rebalanced.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(iter(self.uniform), iter(self.rebalanced), strict=True)

    def __len__(self) -> int:
        return len(self.uniform)


def get_sampler(
    name: str,
    labels: Sequence[int] | np.ndarray,
    cls_num_list: Sequence[int],
    epoch: int = 0,
    **kw,
) -> LongTailSampler:
    """A :class:`LongTailSampler`; options ``num_epochs``, ``seed``, ``rank``, ``world_size``, ``num_samples``,
    ``flex_mode``. ``name`` may be a sampler or its method name (``rs``, ``flex_rs``)."""
    name = {"rs": "class_balanced", "flex_rs": "flex"}.get(name, name)
    return LongTailSampler(name, labels, cls_num_list, epoch=epoch, **kw)
