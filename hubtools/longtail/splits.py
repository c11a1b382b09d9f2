"""Long-tail profiles and seeded split drawing (MONICA).

A long-tailed train set keeps n_i = n_max * r^(-i/(C-1)) images of class i (class 0 the
largest), capped by what the source holds; validation/test quotas are drawn first so the
held-out images never depend on the ratio's train draw. Everything here is a pure
function of (labels, groups, seed): record order is fixed by the caller (builders sort their
file lists), so a split is reproducible whatever order the file system listed the files in.

Images of one lesion or one patient are near-copies of each other: when a ``groups`` array
is given, every group lands whole in one split, so a model is never tested on a lesion it
trained on (see :func:`draw_splits` for how quotas are met with whole groups).

:class:`LTProfile` is the JSON record published next to a dataset (``longtail/<config>.json``)
and read by the long-tail methods (class priors, many/medium/few groups).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
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
    # the record column every group of which lies whole in one split ("lesion_id"); "" when none
    disjoint_by: str = ""

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


GroupIds = Sequence[Any] | np.ndarray


def group_codes(groups: GroupIds, n: int) -> np.ndarray:
    """One int64 code per record, equal for the records of one group.

    A missing id (None, "" or a float NaN, as pandas reads an empty cell) makes the record
    its own group: an image whose lesion or patient is unknown cannot be shown to share one.
    """
    keys = []
    for g in groups:
        missing = g is None or (isinstance(g, float) and math.isnan(g)) or str(g) == ""
        keys.append("" if missing else str(g))
    if len(keys) != n:
        raise ValueError(f"groups has {len(keys)} entries for {n} records")
    if not keys:
        return np.zeros(0, np.int64)
    arr = np.asarray(keys, dtype=str)
    _, codes = np.unique(arr, return_inverse=True)
    codes = codes.astype(np.int64).reshape(-1)
    empty = arr == ""
    codes[empty] = codes.max() + 1 + np.arange(int(empty.sum()))
    return codes


def _fill_with_groups(
    labels: np.ndarray,
    codes: np.ndarray,
    perms: Sequence[tuple[int, np.ndarray]],
    quotas: np.ndarray,
    passes: Sequence[Sequence[int]],
) -> np.ndarray:
    """Split index of every record (-1: unused), moving whole groups and never exceeding a quota.

    ``quotas[s, c]`` is the number of class-c records split s takes. In each pass, classes
    are visited in ``perms`` order and each class's records in their seeded order; a record
    whose group is still free sends the whole group to the first split of the pass where
    every class of the group stays within quota. A group that fits nowhere is skipped and
    stays free for later passes (so it may land in train after missing validation).
    """
    num_classes = quotas.shape[1]
    pairs, sizes = np.unique(codes * num_classes + labels, return_counts=True)
    members: dict[int, list[tuple[int, int]]] = {}
    for key, size in zip(pairs.tolist(), sizes.tolist(), strict=True):
        members.setdefault(key // num_classes, []).append((key % num_classes, size))
    counts = np.zeros_like(quotas).tolist()
    limit = quotas.tolist()
    owner = np.full(int(codes.max()) + 1 if codes.size else 0, -1, dtype=np.int64)
    for splits in passes:
        for c, perm in perms:
            for i in perm.tolist():
                if all(counts[s][c] >= limit[s][c] for s in splits):
                    break
                g = int(codes[i])
                if owner[g] >= 0:
                    continue
                for s in splits:
                    if all(counts[s][k] + m <= limit[s][k] for k, m in members[g]):
                        for k, m in members[g]:
                            counts[s][k] += m
                        owner[g] = s
                        break
    return owner[codes] if codes.size else np.zeros(0, np.int64)


def draw_splits(
    labels: Sequence[int] | np.ndarray,
    train_counts: Sequence[int],
    val_per_class: int | Sequence[int] = 0,
    test_per_class: int | Sequence[int] = 0,
    seed: int = 1,
    strict: bool = True,
    groups: GroupIds | None = None,
) -> dict[str, np.ndarray]:
    """Seeded re-draw: per class, first the validation quota, then test, then train from the rest.

    ``labels`` are class ids of records in a fixed (sorted) order; returns sorted record
    indices per split ("train", "validation", "test"; empty splits omitted). One
    ``numpy.random.default_rng(seed)`` permutes each class in class order, so the draw
    depends only on (labels, groups, quotas, seed). ``strict`` raises :class:`ValueError`
    naming the class when its quotas cannot be met; otherwise a split takes what there is.

    ``groups`` (one id per record: lesion, patient; None/"" = its own group) makes the splits
    group-disjoint: every group lies whole in one split. Quotas stay exact: a group counts
    toward the class of each of its images (a group with several labels fills several
    classes' quotas at once), and a group that would push any class of a split over its
    quota is skipped for that split and offered to the next. Validation and test are filled
    for all classes before train, so the held-out sets do not depend on the train quotas.
    With groups of one record this is the ungrouped draw, record for record.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(train_counts)
    names = ("validation", "test", "train")
    quotas = []
    for name, q in zip(names, (val_per_class, test_per_class, train_counts), strict=True):
        q = [int(q)] * num_classes if np.isscalar(q) else [int(x) for x in q]
        if len(q) != num_classes:
            raise ValueError(f"{name} quotas have {len(q)} entries for {num_classes} classes")
        quotas.append(q)
    quota = np.asarray(quotas, dtype=np.int64).reshape(3, num_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    perms = [(c, rng.permutation(np.flatnonzero(labels == c))) for c in range(num_classes)]
    for c, members in perms:
        if strict and members.size < quota[:, c].sum():
            raise ValueError(
                f"class {c} has {members.size} records, fewer than its quotas "
                f"(validation {quota[0, c]}, test {quota[1, c]}, train {quota[2, c]})"
            )
    if groups is None:
        split_of = np.full(labels.size, -1, dtype=np.int64)
        for c, members in perms:
            bounds = np.minimum(np.cumsum(quota[:, c]), members.size)
            for s, (a, b) in enumerate(zip(np.r_[0, bounds[:-1]], bounds, strict=True)):
                split_of[members[a:b]] = s
    else:
        codes = group_codes(groups, labels.size)
        split_of = _fill_with_groups(labels, codes, perms, quota, passes=((0, 1), (2,)))
    out = {name: np.flatnonzero(split_of == s) for s, name in enumerate(names) if (split_of == s).any()}
    if groups is not None and strict:
        short = quota_shortfall(labels, out, dict(zip(names, quota.tolist(), strict=True)))
        if short:
            raise ValueError(short)
    return out


def quota_shortfall(
    labels: Sequence[int] | np.ndarray,
    split_idx: Mapping[str, np.ndarray],
    quotas: Mapping[str, Sequence[int]],
) -> str:
    """A sentence listing every (class, split) holding fewer records than its quota; "" when all are met.

    Whole groups cannot always add up to a quota (a lesion of 3 images against a quota of 2):
    callers either refuse the draw or report it, and this names what is missing.
    """
    labels = np.asarray(labels, dtype=np.int64)
    short = []
    for name, quota in quotas.items():
        got = np.bincount(labels[split_idx.get(name, np.zeros(0, np.int64))], minlength=len(quota))
        short += [f"class {c} {name} {got[c]}/{q}" for c, q in enumerate(quota) if got[c] < q]
    if not short:
        return ""
    return (
        "whole groups cannot fill the quotas exactly (" + ", ".join(short) + "): "
        "the groups left are too large or mix labels"
    )


def stratified_holdout(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float],
    seed: int = 1,
    minimum: int = 1,
    groups: GroupIds | None = None,
) -> list[np.ndarray]:
    """Per-class fractions of the records (at least ``minimum`` each while the class allows), natural distribution.

    For sets without published quotas (the real MRI patches, multi-label sources): returns
    one sorted index array per fraction, then the rest. Deterministic in (labels, groups,
    seed). With ``groups`` every group lies whole in one part; the per-class sizes become
    upper bounds filled with whole groups as in :func:`draw_splits`, so a class whose
    records share few groups may hold out fewer than its fraction (never its last group).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    num_classes = int(present.max()) + 1 if present.size else 0
    quota = np.zeros((len(fractions), num_classes), dtype=np.int64)
    perms = []
    for c in present.tolist():
        members = rng.permutation(np.flatnonzero(labels == c))
        perms.append((c, members))
        start = 0
        for k, frac in enumerate(fractions):
            n = max(minimum, int(math.floor(frac * members.size)))
            n = min(n, max(0, members.size - start - 1))  # keep at least one record for training
            quota[k, c] = n
            start += n
    if groups is None:
        split_of = np.full(labels.size, -1, dtype=np.int64)
        for c, members in perms:
            bounds = np.cumsum(quota[:, c])
            for k, (a, b) in enumerate(zip(np.r_[0, bounds[:-1]], bounds, strict=True)):
                split_of[members[a:b]] = k
    else:
        split_of = _fill_with_groups(
            labels, group_codes(groups, labels.size), perms, quota, passes=(tuple(range(len(fractions))),)
        )
    return [np.flatnonzero(split_of == k) for k in range(len(fractions))] + [np.flatnonzero(split_of < 0)]


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
