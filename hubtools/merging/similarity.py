"""Weight similarity between checkpoints (spec 2.2), streamed tensor by tensor from safetensors.

The reference loads two or three full fp32 models to compare them (about 28 GB each at 7B); here each matched
tensor is read on its own with ``safe_open`` and upcast to fp32, so a pairwise score needs memory for two
tensors and a whole matrix for one tensor per model. In-memory state dicts (a merged search candidate) are
accepted wherever a model is.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubtools.errors import ConfigError, HubtoolsError

DEFAULT_PATTERNS = ("self_attn", "mlp")
# BERT-style encoders (e.g. a MiniLM zoo) name their blocks differently; LayerNorms and the pooler stay out.
ENCODER_PATTERNS = ("attention.self.", "attention.output.dense", "intermediate.dense", "output.dense")
_EPS = 1e-8

ModelLike = str | os.PathLike | Mapping[str, torch.Tensor]


class ArchitectureMismatch(HubtoolsError, ValueError):
    """Two models cannot be compared or merged: different tensor names, shapes or architectures."""


class TensorReader:
    """Reads one tensor at a time from a model folder (sharded safetensors) or an in-memory state dict.

    ``bytes_read`` counts the bytes of every tensor loaded from disk, for the memory/time-vs-bytes report.
    """

    def __init__(self, model: ModelLike) -> None:
        self.bytes_read = 0
        self._files: dict[str, Path] = {}
        self._state: Mapping[str, torch.Tensor] | None = None
        if isinstance(model, Mapping):
            self._state = model
            self.label = "<state dict>"
            return
        folder = Path(model)
        self.label = str(folder)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            raise ConfigError(f"{folder}: no *.safetensors weights found (a model folder is needed)")
        from safetensors import safe_open

        for f in files:
            with safe_open(f, framework="pt") as st:
                for name in st.keys():  # noqa: SIM118  (safe_open has no __iter__)
                    self._files[name] = f
        self._handles: dict[Path, object] = {}

    def names(self) -> list[str]:
        return list(self._state if self._state is not None else self._files)

    def shape(self, name: str) -> tuple[int, ...]:
        if self._state is not None:
            return tuple(self._state[name].shape)
        return tuple(self._handle(name).get_slice(name).get_shape())

    def _handle(self, name: str):
        from safetensors import safe_open

        f = self._files[name]
        if f not in self._handles:
            self._handles[f] = safe_open(f, framework="pt")
        return self._handles[f]

    def get(self, name: str) -> torch.Tensor:
        """The tensor as fp32 (a fresh tensor: callers may modify it)."""
        if self._state is not None:
            return self._state[name].detach().to(torch.float32, copy=True)
        t = self._handle(name).get_tensor(name)
        self.bytes_read += t.numel() * t.element_size()
        return t.to(torch.float32)


def matched_names(names: Sequence[str], patterns: Sequence[str] | None = None) -> list[str]:
    """Tensors that enter similarity: names containing one of ``patterns`` (embeddings/norms/head excluded).

    ``patterns=None`` picks the spec's ``("self_attn", "mlp")`` for decoder LMs and :data:`ENCODER_PATTERNS`
    for BERT-style models that have no ``self_attn`` tensor.
    """
    if patterns is None:
        patterns = DEFAULT_PATTERNS if any("self_attn" in n for n in names) else ENCODER_PATTERNS
    return [n for n in names if any(p in n for p in patterns)]


def tensor_kind(name: str) -> str:
    """'attn' for attention tensors, 'mlp' for the feed-forward ones."""
    return "attn" if "self_attn" in name or "attention" in name else "mlp"


def read_config(model: ModelLike) -> dict:
    """The model's config.json as a dict ({} for an in-memory state dict)."""
    if isinstance(model, Mapping):
        return {}
    path = Path(model) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{Path(model)}: no config.json (not a transformers model folder)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Similarity:
    """Mean per-tensor cosine over attention tensors, MLP tensors and all matched tensors (NaN: undefined)."""

    attn: float
    mlp: float
    all: float


@dataclass
class SimilarityMatrix:
    """Pairwise similarities of ``names`` (symmetric), plus what the pass cost."""

    names: list[str]
    attn: np.ndarray
    mlp: np.ndarray
    all: np.ndarray
    base: str | None = None
    bytes_read: int = 0
    seconds: float = 0.0

    def pair(self, a: str, b: str) -> Similarity:
        i, j = self.names.index(a), self.names.index(b)
        return Similarity(float(self.attn[i, j]), float(self.mlp[i, j]), float(self.all[i, j]))

    def to_json(self) -> dict:
        def clean(m: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else round(float(v), 6) for v in row] for row in m]

        return {
            "names": self.names,
            "base": self.base,
            "attn": clean(self.attn),
            "mlp": clean(self.mlp),
            "all": clean(self.all),
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
        }


def _pairwise_cos(stack: torch.Tensor, per_column: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """stack [m, ...] -> (mean per-column cosine [m, m], column norms [m, cols]); cosine along dim 0 of W."""
    m = stack.shape[0]
    if stack.dim() == 2 or not per_column:
        x = stack.reshape(m, -1, 1)  # a 1-D tensor or a flattened one gives one cosine
    else:
        x = stack.reshape(m, stack.shape[1], -1)  # [m, out, in]
    norms = x.norm(dim=1)  # [m, in]
    xn = x / norms.clamp_min(_EPS).unsqueeze(1)
    cos = torch.einsum("aoi,boi->abi", xn, xn)
    return cos.mean(-1), norms


def similarity_matrix(
    models: Sequence[ModelLike] | Mapping[str, ModelLike],
    *,
    base: ModelLike | None = None,
    per_column: bool = True,
    patterns: Sequence[str] | None = None,
) -> SimilarityMatrix:
    """All pairwise similarities in ONE streamed pass: each tensor is read once per model.

    Delta mode (``base`` given) compares ``W - W_base``; a model equal to the base then has no direction and
    its row is NaN (not the 0 the reference reports).

    Raises:
        ArchitectureMismatch: a matched tensor is missing in a model or has another shape.
    """
    items = list(models.items()) if isinstance(models, Mapping) else [(str(m), m) for m in models]
    if len(items) < 1:
        raise ConfigError("similarity needs at least one model")
    start = time.perf_counter()
    readers = [TensorReader(m) for _, m in items]
    base_reader = TensorReader(base) if base is not None else None
    names = matched_names(readers[0].names(), patterns)
    if not names:
        raise ArchitectureMismatch(
            f"{readers[0].label}: no attention/MLP tensor found (patterns {list(patterns or DEFAULT_PATTERNS)})"
        )
    for r, (label, _) in zip(readers[1:], items[1:], strict=True):
        missing = set(names) - set(r.names())
        if missing:
            raise ArchitectureMismatch(
                f"{label}: missing tensors {sorted(missing)[:5]} that {items[0][0]} has"
            )
    m = len(items)
    sums = {"attn": torch.zeros(m, m, dtype=torch.float64), "mlp": torch.zeros(m, m, dtype=torch.float64)}
    counts = {"attn": 0, "mlp": 0}
    total = torch.zeros(m, m, dtype=torch.float64)
    moved = torch.zeros(m, dtype=torch.bool)  # delta mode: does the model differ from the base at all?
    for name in names:
        shapes = {r.shape(name) for r in readers}
        if len(shapes) > 1:
            raise ArchitectureMismatch(
                f"tensor {name!r} has different shapes across models: "
                + ", ".join(f"{label}={r.shape(name)}" for (label, _), r in zip(items, readers, strict=True))
            )
        stack = torch.stack([r.get(name) for r in readers])
        if base_reader is not None:
            if base_reader.shape(name) != stack.shape[1:]:
                raise ArchitectureMismatch(f"base: tensor {name!r} has shape {base_reader.shape(name)}")
            stack -= base_reader.get(name)
        cos, norms = _pairwise_cos(stack, per_column)
        moved |= (norms > 0).any(-1)
        total += cos.double()
        kind = tensor_kind(name)
        sums[kind] += cos.double()
        counts[kind] += 1
        del stack

    def finish(s: torch.Tensor, n: int) -> np.ndarray:
        out = (s / n).numpy() if n else np.full((m, m), np.nan)
        if base_reader is not None:
            dead = ~moved.numpy()
            out[dead, :] = np.nan
            out[:, dead] = np.nan
        return out

    return SimilarityMatrix(
        names=[label for label, _ in items],
        attn=finish(sums["attn"], counts["attn"]),
        mlp=finish(sums["mlp"], counts["mlp"]),
        all=finish(total, len(names)),
        base=base_reader.label if base_reader else None,
        bytes_read=sum(r.bytes_read for r in readers) + (base_reader.bytes_read if base_reader else 0),
        seconds=time.perf_counter() - start,
    )


def similarity(
    a: ModelLike,
    b: ModelLike,
    *,
    base: ModelLike | None = None,
    per_column: bool = True,
    patterns: Sequence[str] | None = None,
) -> Similarity:
    """Similarity of two models (spec 2.2): mean over matched tensors of the per-column cosine."""
    mat = similarity_matrix({"a": a, "b": b}, base=base, per_column=per_column, patterns=patterns)
    return mat.pair("a", "b")
