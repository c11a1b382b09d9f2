"""Architecture grouping and mergeability clustering (spec 2.1, 2.3).

Groups are keyed by (``architectures``, name -> shape of every matched tensor), not by ``architectures``
alone as the reference does: a shape mismatch inside a group would crash the similarity pass. Vocabulary
size is not part of the key (Llama-2 and CodeLlama share a group); a group that mixes vocabularies is
flagged so its recipes use ``tokenizer_source: base``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hubtools.errors import ConfigError
from hubtools.merging.similarity import (
    ModelLike,
    SimilarityMatrix,
    TensorReader,
    matched_names,
    read_config,
    similarity_matrix,
)

DEFAULT_THRESHOLD = 0.95


@dataclass
class ArchGroup:
    """Models that share architecture and matched tensor shapes."""

    architectures: tuple[str, ...]
    members: list[str]
    vocab_sizes: dict[str, int | None]

    @property
    def mixed_vocab(self) -> bool:
        return len(set(self.vocab_sizes.values())) > 1


@dataclass
class Clustering:
    """Architecture groups, families (lists of model names, in input order) and the raw sim_all matrix."""

    arch_groups: list[ArchGroup]
    families: list[list[str]]
    matrix: SimilarityMatrix | None
    threshold: float
    largest_gap: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "arch_groups": [
                {"architectures": list(g.architectures), "members": g.members, "vocab_sizes": g.vocab_sizes}
                for g in self.arch_groups
            ],
            "families": self.families,
            "largest_gap": self.largest_gap,
            "similarity": self.matrix.to_json() if self.matrix is not None else None,
        }


def arch_key(model: ModelLike, patterns: Sequence[str] | None = None) -> tuple:
    """(architectures, sorted (name, shape) of matched tensors): equal keys can be compared and merged."""
    reader = TensorReader(model)
    cfg = read_config(model)
    shapes = tuple(sorted((n, reader.shape(n)) for n in matched_names(reader.names(), patterns)))
    return tuple(cfg.get("architectures") or ()), shapes


def group_by_architecture(models: Mapping[str, ModelLike]) -> list[ArchGroup]:
    """Partition models by :func:`arch_key`, keeping input order inside and across groups."""
    groups: dict[tuple, ArchGroup] = {}
    for name, model in models.items():
        key = arch_key(model)
        cfg = read_config(model)
        group = groups.setdefault(key, ArchGroup(key[0], [], {}))
        group.members.append(name)
        group.vocab_sizes[name] = cfg.get("vocab_size")
    return list(groups.values())


def largest_gap(matrix: np.ndarray) -> dict:
    """The widest gap between consecutive sorted off-diagonal similarities; a threshold belongs inside it."""
    iu = np.triu_indices(matrix.shape[0], 1)
    vals = np.sort(matrix[iu][~np.isnan(matrix[iu])])
    if len(vals) < 2:
        return {}
    diffs = np.diff(vals)
    i = int(np.argmax(diffs))
    return {"low": float(vals[i]), "high": float(vals[i + 1]), "midpoint": float((vals[i] + vals[i + 1]) / 2)}


def leader_clusters(names: Sequence[str], sim: np.ndarray, threshold: float) -> list[list[str]]:
    """Greedy leader clustering in input order: join the first family whose first member has sim > threshold."""
    families: list[list[int]] = []
    for i in range(len(names)):
        for fam in families:
            if sim[fam[0], i] > threshold:  # strict, as the reference
                fam.append(i)
                break
        else:
            families.append([i])
    return [[names[i] for i in fam] for fam in families]


def cluster_models(
    models: Mapping[str, ModelLike] | Sequence[ModelLike],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    base: ModelLike | None = None,
) -> Clustering:
    """Group by architecture, then cluster each group by ``sim_all`` (raw weights unless ``base``).

    The result depends on input order (as in the reference); the full pairwise matrix over all models
    (NaN across architecture groups) and the largest gap in its sorted values are returned with it.
    """
    if not isinstance(models, Mapping):
        models = {str(m): m for m in models}
    if not models:
        raise ConfigError("cluster_models: no models given")
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ConfigError(f"cluster_models: threshold must be in [0, 1], got {threshold}")
    groups = group_by_architecture(models)
    names = list(models)
    full = {k: np.full((len(names), len(names)), np.nan) for k in ("attn", "mlp", "all")}
    families: list[list[str]] = []
    bytes_read, seconds = 0, 0.0
    for g in groups:
        mat = similarity_matrix({n: models[n] for n in g.members}, base=base)
        bytes_read += mat.bytes_read
        seconds += mat.seconds
        idx = [names.index(n) for n in g.members]
        for k in full:
            full[k][np.ix_(idx, idx)] = getattr(mat, k)
        families.extend(leader_clusters(g.members, mat.all, threshold))
    matrix = SimilarityMatrix(
        names, full["attn"], full["mlp"], full["all"], bytes_read=bytes_read, seconds=seconds
    )
    return Clustering(groups, families, matrix, threshold, largest_gap(full["all"]))


def purity(families: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Cluster purity: fraction of models whose family's majority truth label is their own."""
    label = {m: i for i, fam in enumerate(truth) for m in fam}
    total = sum(len(f) for f in families)
    if not total:
        return math.nan
    hits = 0
    for fam in families:
        counts = np.bincount([label.get(m, -1) + 1 for m in fam])
        hits += int(counts[1:].max()) if len(counts) > 1 else 0
    return hits / total
