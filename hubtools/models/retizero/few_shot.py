"""Few-shot / linear fine-tuning head of the anchor's ``Finetuning.py`` (spec §2.5): ``Linear(D, C)`` on the frozen
LoRA-ViT CLS feature (D = 1024 for RETFound), trained with Adam for 100 epochs.

The encoder stays frozen here, so features are computed once (:func:`~hubtools.models.retizero.zero_shot.
image_features` with ``kind="cls"``) and only the head trains: seconds on CPU, and the same features serve every
``--shots`` setting. The spec gives neither learning rate nor batch size; hubtools uses Adam's default lr 1e-3 and
full-batch steps (few-shot sets are small), both configurable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_EPOCHS = 100
DEFAULT_LR = 1e-3


@dataclass
class FewShotResult:
    """The trained head (on CPU, eval mode), the per-epoch mean training loss, and accuracy on the training set."""

    head: torch.nn.Linear
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def sample_shots(labels: Sequence[int], shots: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``shots`` items per class, drawn without replacement with a seeded generator; a class
    with fewer items is an error (a silent smaller class would change the task)."""
    labels = np.asarray(labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < shots:
            raise ValueError(f"class {c} has {len(members)} items, fewer than {shots} shots")
        chosen.append(rng.choice(members, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


def train_few_shot_head(
    features: np.ndarray | torch.Tensor,
    labels: Sequence[int],
    n_classes: int | None = None,
    *,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    seed: int = 0,
) -> FewShotResult:
    """Train ``Linear(D, n_classes)`` with Adam and cross-entropy on frozen ``features`` (n, D).

    Initialisation (``nn.Linear``'s: kaiming-uniform a = √5, bias U(±1/√D)) and the batch order come from a
    generator seeded by ``seed``, so the result does not depend on (or change) torch's global RNG.
    ``batch_size=None`` = one full-batch step per epoch. ``n_classes`` defaults to ``max(labels) + 1``.
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"features of shape {tuple(x.shape)} for {len(y)} labels")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.utils.skip_init(torch.nn.Linear, x.shape[1], n_classes)  # no draw from the global RNG
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(head.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(x.shape[1])
        torch.nn.init.uniform_(head.bias, -bound, bound, generator=generator)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    step = len(x) if batch_size is None else batch_size
    losses = []
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator) if step < len(x) else torch.arange(len(x))
        total = 0.0
        for start in range(0, len(x), step):
            batch = order[start : start + step]
            loss = F.cross_entropy(head(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(x))
    head.eval()
    with torch.no_grad():
        train_accuracy = float((head(x).argmax(dim=1) == y).float().mean())
    return FewShotResult(head, losses, {"train_accuracy": train_accuracy, "final_loss": losses[-1]})


@torch.no_grad()
def head_logits(head: torch.nn.Linear, features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Logits (n, C) of a trained head on float32 features."""
    return head(torch.as_tensor(np.asarray(features), dtype=torch.float32))


__all__ = ["FewShotResult", "head_logits", "sample_shots", "train_few_shot_head"]
