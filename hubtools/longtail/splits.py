"""Long-tail profiles and seeded split drawing (MONICA, spec longtail.md 2.3).

A long-tailed train set keeps n_i = n_max * r^(-i/(C-1)) images of class i (class 0 the
largest), capped by what the source holds; validation/test quotas are drawn first so the
held-out images never depend on the ratio's train draw. Everything here is a pure
function of (labels, seed): record order is fixed by the caller (builders sort their file
lists), so a split is reproducible whatever order the file system listed the files in.

:class:`LTProfile` is the JSON record published next to a dataset (``longtail/<config>.json``)
and read by the long-tail methods (class priors, many/medium/few groups).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Rounding = Literal["round", "floor_plus_one"]
GROUP_NAMES = ("many", "medium", "few")


def profile(
    n_max: int,
    num_classes: int,
    ratio: float,
    rounding: Rounding = "round",
    available: Sequence[int] | None = None,
) -> list[int]:
    """Per-class train counts of the exponential profile, class 0 = ``n_max``.

    ``rounding="round"`` gives n_max * r^(-i/(C-1)) rounded half up (NCT, Kvasir, MedMNIST in the
    anchor's lists); ``"floor_plus_one"`` gives int(n_max / f^i) + 1 with f = r^(1/(C-1)) in
    float64, which is what the ISIC lists hold. ``available`` caps each class at what the
    source holds (MedMNIST: n_i = min(available_i, profile_i)).
    """
    if num_classes < 1 or n_max < 1 or ratio < 1:
        raise ValueError(
            f"need num_classes >= 1, n_max >= 1, ratio >= 1; got {num_classes}, {n_max}, {ratio}"
        )
    if available is not None and len(available) != num_classes:
        raise ValueError(f"available has {len(available)} entries for {num_classes} classes")
    counts = [n_max]
    if num_classes > 1:
        f = float(ratio) ** (1.0 / (num_classes - 1))
        for i in range(1, num_classes):
            if rounding == "round":
                # half up, not Python's half-to-even: PathMNIST's class 4 is exactly 1288.5 -> 1289 in the anchor
                counts.append(int(math.floor(n_max * float(ratio) ** (-i / (num_classes - 1)) + 0.5)))
            elif rounding == "floor_plus_one":
                counts.append(int(n_max / f**i) + 1)
            else:
                raise ValueError(f"rounding must be 'round' or 'floor_plus_one', got {rounding!r}")
    if available is not None:
        counts = [min(int(a), c) for a, c in zip(available, counts, strict=True)]
    return counts


def lt_order(counts: Sequence[int]) -> np.ndarray:
    """Class ids sorted by count descending, ties by id ascending: ``order[k]`` is the source class of LT class k."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.lexsort((np.arange(len(counts)), -counts))


def groups_by_threshold(cls_num_list: Sequence[int], many: int = 100, few: int = 20) -> tuple[int, int]:
    """(head, medium) index cut-offs for a set without published ones: many > ``many``, few < ``few`` images.

    The usual long-tail convention (many-shot > 100, few-shot < 20); assumes non-increasing counts.
    """
    counts = list(cls_num_list)
    head = sum(1 for n in counts if n > many)
    medium = sum(1 for n in counts if n >= few)
    return head, max(head, medium)


@dataclass
class LTProfile:
    """What a long-tailed split is: class order, train counts, groups, provenance (published as JSON).

    Groups are index cut-offs: many = [0, head), medium = [head, medium), few = [medium, C).
    """

    class_names: list[str]
    cls_num_list: list[int]
    imbalance_ratio: float
    head: int
    medium: int
    test_distribution: Literal["balanced", "natural"] = "balanced"
    split_provenance: Literal["monica-lists", "seeded-redraw", "natural"] = "seeded-redraw"
    license: str = "unknown"
    seed: int | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.cls_num_list):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.cls_num_list)} counts")
        if not 0 <= self.head <= self.medium <= len(self.class_names):
            raise ValueError(
                f"need 0 <= head <= medium <= C, got {self.head}, {self.medium}, {len(self.class_names)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def group_of(self, class_id: int) -> str:
        """'many', 'medium' or 'few' for LT class ``class_id``."""
        return GROUP_NAMES[0 if class_id < self.head else 1 if class_id < self.medium else 2]

    def groups(self) -> np.ndarray:
        """Group index (0 many, 1 medium, 2 few) of every class, as an int64 array of length C."""
        ids = np.arange(self.num_classes)
        return np.where(ids < self.head, 0, np.where(ids < self.medium, 1, 2)).astype(np.int64)

    def priors(self) -> np.ndarray:
        """Train class frequencies pi_c = n_c / N (float64)."""
        counts = np.asarray(self.cls_num_list, dtype=np.float64)
        return counts / counts.sum()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The profile as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> LTProfile:
        """Read a profile from JSON text or a ``.json`` file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        return cls(**json.loads(text))


def draw_splits(
    labels: Sequence[int] | np.ndarray,
    train_counts: Sequence[int],
    val_per_class: int | Sequence[int] = 0,
    test_per_class: int | Sequence[int] = 0,
    seed: int = 1,
    strict: bool = True,
) -> dict[str, np.ndarray]:
    """Seeded re-draw: per class, first the validation quota, then test, then train from the rest.

    ``labels`` are class ids of records in a fixed (sorted) order; returns sorted record
    indices per split ("train", "validation", "test"; empty splits omitted). One
    ``numpy.random.default_rng(seed)`` permutes each class in class order, so the draw
    depends only on (labels, quotas, seed). ``strict`` raises :class:`ValueError` naming the
    class when it holds fewer records than its quotas; otherwise train is capped.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(train_counts)
    quotas = {}
    for name, q in (("validation", val_per_class), ("test", test_per_class), ("train", train_counts)):
        q = [int(q)] * num_classes if np.isscalar(q) else [int(x) for x in q]
        if len(q) != num_classes:
            raise ValueError(f"{name} quotas have {len(q)} entries for {num_classes} classes")
        quotas[name] = q
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        need = quotas["validation"][c] + quotas["test"][c] + quotas["train"][c]
        if strict and members.size < need:
            raise ValueError(
                f"class {c} has {members.size} records, fewer than its quotas "
                f"(validation {quotas['validation'][c]}, test {quotas['test'][c]}, "
                f"train {quotas['train'][c]})"
            )
        start = 0
        for name in ("validation", "test", "train"):
            take = members[start : start + quotas[name][c]]
            out[name].append(take)
            start += take.size
    return {
        name: np.sort(np.concatenate(parts)) for name, parts in out.items() if sum(p.size for p in parts) > 0
    }


def stratified_holdout(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int = 1, minimum: int = 1
) -> list[np.ndarray]:
    """Per-class fractions of the records (at least ``minimum`` each while the class allows), natural distribution.

    For sets without published quotas (the real MRI patches, multi-label sources): returns
    one sorted index array per fraction, then the rest. Deterministic in (labels, seed).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, frac in enumerate(fractions):
            n = max(minimum, int(math.floor(frac * members.size)))
            n = min(n, max(0, members.size - start - 1))  # keep at least one record for training
            parts[k].append(members[start : start + n])
            start += n
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def long_tail_subset(
    dataset: Any,
    ratio: float,
    label_column: str = "label",
    seed: int = 1,
    n_max: int | None = None,
    rounding: Rounding = "round",
) -> tuple[Any, LTProfile]:
    """Long-tailed subset of any ``datasets.Dataset`` with a ``ClassLabel`` or integer label column.

    Classes are re-indexed by frequency (0 = largest, ties by original id), the train
    counts follow :func:`profile` capped by availability, and the label column is rewritten
    (a ``ClassLabel`` keeps its names in the new order; the original id goes to ``orig_label_id``).
    """
    from datasets import ClassLabel

    labels = np.asarray(dataset[label_column], dtype=np.int64)
    feature = dataset.features[label_column]
    num_source = feature.num_classes if isinstance(feature, ClassLabel) else int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_source)
    order = lt_order(counts)
    order = order[counts[order] > 0]
    rank = np.full(num_source, -1, dtype=np.int64)
    rank[order] = np.arange(order.size)
    lt_labels = rank[labels]
    available = counts[order].tolist()
    train_counts = profile(n_max or available[0], order.size, ratio, rounding, available=available)
    picked = draw_splits(lt_labels, train_counts, seed=seed)["train"]
    names = [feature.names[i] if isinstance(feature, ClassLabel) else str(i) for i in order]
    subset = dataset.select(picked)
    subset = subset.add_column("orig_label_id", labels[picked].tolist())
    subset = subset.remove_columns(label_column).add_column(label_column, lt_labels[picked].tolist())
    subset = subset.cast_column(label_column, ClassLabel(names=names))
    head, medium = groups_by_threshold(train_counts)
    lt = LTProfile(
        class_names=names,
        cls_num_list=train_counts,
        imbalance_ratio=train_counts[0] / train_counts[-1],
        head=head,
        medium=medium,
        test_distribution="natural",
        seed=seed,
        split_sizes={"train": int(picked.size)},
    )
    return subset, lt
