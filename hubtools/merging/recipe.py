"""Merge recipes: a thin typed wrapper over mergekit's ``MergeConfiguration`` (spec 2.7).

A :class:`Recipe` is the YAML mapping mergekit reads, validated by mergekit itself on construction, so every
recipe hubtools writes runs unchanged with ``mergekit-yaml``. hubtools never re-implements merge arithmetic;
the constructors only spell out each method's parameters and the checks the reference code missed (a base for
task-vector methods, no duplicated inputs, known method names).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hubtools.errors import ConfigError

# Methods that merge task vectors against a common ancestor and so need `base_model` (the reference crashed
# on task_arithmetic without one).
NEEDS_BASE = frozenset(
    {
        "task_arithmetic",
        "ties",
        "dare_ties",
        "dare_linear",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
        "della_linear",
        "model_stock",
        "slerp",
    }
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")

# Local snapshot folder -> "repo_id@commit" for every Hub model resolved in this process, so recipes written
# next to a merged model name the Hub revision instead of a cache path.
HUB_REFS: dict[str, str] = {}

ModelRef = str | os.PathLike


def resolve_model(ref: ModelRef) -> Path:
    """A local folder (made absolute) or a Hub id / ``id@revision`` downloaded to a pinned snapshot.

    Raises:
        ConfigError: neither an existing folder nor a model the Hub serves.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        return path.absolute()
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise ConfigError(f"model {text!r}: no such folder")
    repo_id, _, revision = text.partition("@")
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(repo_id, revision=revision or None))
    except Exception as err:  # offline mode, 404, auth: all mean "this model is not available"
        raise ConfigError(
            f"model {text!r}: not a local folder and not available from the Hub ({err})"
        ) from None
    HUB_REFS[str(local)] = f"{repo_id}@{local.name}"
    return local


def _model_entry(model: ModelRef, params: Mapping[str, Any] | None = None) -> dict:
    entry: dict[str, Any] = {"model": str(model)}
    params = {k: v for k, v in (params or {}).items() if v is not None}
    if params:
        entry["parameters"] = params
    return entry


def _per_model(values: float | Sequence[float] | None, n: int, name: str) -> list[float | None]:
    if values is None or isinstance(values, (int, float)):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ConfigError(f"{name}: expected {n} values (one per model), got {len(values)}")
    return values


class Recipe:
    """A validated mergekit recipe. ``data`` is the plain YAML mapping (never mutated after construction)."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "<recipe>") -> None:
        self.data = copy.deepcopy(dict(data))
        self.source = source
        self._validate()

    def _validate(self) -> None:
        from mergekit import merge_methods
        from mergekit.config import MergeConfiguration

        method = self.data.get("merge_method")
        if not isinstance(method, str):
            raise ConfigError(f"{self.source}: merge_method is missing")
        try:
            merge_methods.get(method)
        except RuntimeError:
            known = sorted(m.spec.name for m in merge_methods.registered_methods())
            raise ConfigError(
                f"{self.source}: unknown merge_method {method!r}; mergekit knows {known}"
            ) from None
        try:
            self.config = MergeConfiguration.model_validate(self.data)
        except Exception as err:  # pydantic ValidationError or mergekit's RuntimeError from its validators
            raise ConfigError(f"{self.source}: not a valid mergekit recipe: {err}") from None
        if method in NEEDS_BASE and not self.data.get("base_model"):
            raise ConfigError(
                f"{self.source}: merge_method {method!r} needs base_model (the common ancestor)"
            )
        entries = [str(m["model"]) for m in self.data.get("models") or []]
        dupes = sorted({m for m in entries if entries.count(m) > 1})
        if dupes:
            raise ConfigError(f"{self.source}: model(s) listed twice {dupes}; mergekit would collapse them")

    # ---- serialisation -------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike) -> Recipe:
        """Parse a recipe from YAML text or a ``.yml``/``.yaml`` file."""
        source = "<recipe>"
        text = str(text_or_path)
        if isinstance(text_or_path, os.PathLike) or (
            "\n" not in text and text.endswith((".yml", ".yaml")) and Path(text).exists()
        ):
            source = str(text_or_path)
            text = Path(text_or_path).read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: malformed YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a recipe must be a YAML mapping")
        return cls(data, source=source)

    @classmethod
    def coerce(cls, recipe: Recipe | Mapping[str, Any] | str | os.PathLike) -> Recipe:
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, Mapping):
            return cls(recipe)
        return cls.from_yaml(recipe)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False)

    def to_mergekit(self):  # -> MergeConfiguration
        from mergekit.config import MergeConfiguration

        return MergeConfiguration.model_validate(self.data)

    def digest(self) -> str:
        """sha256 of the sorted-key YAML: the cache key of an evaluation."""
        return hashlib.sha256(yaml.safe_dump(self.data, sort_keys=True).encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.data == other.data

    def __repr__(self) -> str:
        return f"Recipe({self.method}, {len(self.models)} model(s), digest={self.digest()[:10]})"

    # ---- inspection ----------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.data["merge_method"]

    @property
    def base_model(self) -> str | None:
        base = self.data.get("base_model")
        return None if base is None else str(base)

    @property
    def models(self) -> list[str]:
        """Every referenced model, in order of first appearance (base first when set)."""
        refs = [self.base_model] if self.base_model else []
        refs += [str(m["model"]) for m in self.data.get("models") or []]
        refs += [str(s["model"]) for sl in self.data.get("slices") or [] for s in sl["sources"]]
        return list(dict.fromkeys(refs))

    def weights(self) -> dict[str, Any]:
        """model -> its ``weight`` parameter as written (scalars for plain recipes)."""
        return {
            str(m["model"]): (m.get("parameters") or {}).get("weight") for m in self.data.get("models") or []
        }

    def with_models(self, mapping: Mapping[str, str]) -> Recipe:
        """The same recipe with model references replaced (absolute paths in, Hub ids out)."""

        def sub(ref: Any) -> Any:
            return mapping.get(str(ref), ref)

        data = copy.deepcopy(self.data)
        if data.get("base_model"):
            data["base_model"] = sub(data["base_model"])
        if isinstance(data.get("tokenizer_source"), str) and data["tokenizer_source"] not in (
            "base",
            "union",
        ):
            data["tokenizer_source"] = sub(data["tokenizer_source"])
        for m in data.get("models") or []:
            m["model"] = sub(m["model"])
        for sl in data.get("slices") or []:
            for s in sl["sources"]:
                s["model"] = sub(s["model"])
        return Recipe(data, source=self.source)

    def resolved(self) -> tuple[Recipe, dict[str, str]]:
        """(recipe with every model as an absolute local folder, local path -> public reference).

        The public reference is ``hub_id@commit`` for Hub models and the absolute path for local ones.
        """
        local = {ref: str(resolve_model(ref)) for ref in self.models}
        public = {path: HUB_REFS.get(path, path) for path in local.values()}
        return self.with_models(local), public

    # ---- constructors (one per method family) --------------------------------------------------------
    @classmethod
    def _build(
        cls,
        method: str,
        models: Sequence[ModelRef],
        per_model: Mapping[str, float | Sequence[float] | None],
        *,
        base: ModelRef | None = None,
        parameters: Mapping[str, Any] | None = None,
        dtype: str = "float32",
        tokenizer_source: str | None = None,
    ) -> Recipe:
        models = [str(m) for m in models]
        if not models:
            raise ConfigError(f"{method}: no models given")
        # each per-model parameter: a scalar broadcast to every model, or one value per model
        values = {k: _per_model(v, len(models), k) for k, v in per_model.items()}
        entries = [_model_entry(m, {k: v[i] for k, v in values.items()}) for i, m in enumerate(models)]
        data: dict[str, Any] = {"merge_method": method}
        if base is not None:
            data["base_model"] = str(base)
            entries = [e for e in entries if e["model"] != str(base)]  # the base enters once, as base
        data["models"] = entries
        params = {k: v for k, v in (parameters or {}).items() if v is not None}
        if params:
            data["parameters"] = params
        data["dtype"] = dtype
        if tokenizer_source:
            data["tokenizer_source"] = tokenizer_source
        return cls(data)

    @classmethod
    def linear(
        cls,
        models: Sequence[ModelRef],
        weights: Sequence[float] | None = None,
        *,
        normalize: bool = True,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        """θ = Σ w_i θ_i / Σ w_i (uniform weights by default). A model listed twice gets its weights summed."""
        w = _per_model(1.0 if weights is None else weights, len(models), "weights")
        summed: dict[str, float] = {}
        for m, wi in zip(models, w, strict=True):
            summed[str(m)] = summed.get(str(m), 0.0) + float(wi)
        return cls._build(
            "linear",
            list(summed),
            {"weight": list(summed.values())},
            parameters={"normalize": normalize},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def task_arithmetic(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        *,
        lambda_: float = 1.0,
        normalize: bool | None = None,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        return cls._build(
            "task_arithmetic",
            models,
            {"weight": weights},
            base=base,
            parameters={"lambda": lambda_, "normalize": normalize},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def ties(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        density: Sequence[float] | float = 0.5,
        *,
        lambda_: float = 1.0,
        normalize: bool = True,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        return cls._build(
            "ties",
            models,
            {"weight": weights, "density": density},
            base=base,
            parameters={"lambda": lambda_, "normalize": normalize},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def dare_ties(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        density: Sequence[float] | float = 0.5,
        *,
        lambda_: float = 1.0,
        rescale: bool = True,
        linear: bool = False,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        """DARE (random drop + L1 rescale) with TIES sign consensus, or without it (``linear=True``)."""
        return cls._build(
            "dare_linear" if linear else "dare_ties",
            models,
            {"weight": weights, "density": density},
            base=base,
            parameters={"lambda": lambda_, "rescale": rescale},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def dare_linear(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        density: Sequence[float] | float = 0.5,
        **kw: Any,
    ) -> Recipe:
        return cls.dare_ties(models, base, weights, density, linear=True, **kw)

    @classmethod
    def breadcrumbs(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        density: float = 0.9,
        gamma: float = 0.01,
        *,
        ties: bool = False,
        lambda_: float = 1.0,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        """Model breadcrumbs: drop the largest ``gamma`` and smallest ``1-density-gamma`` of each task vector."""
        return cls._build(
            "breadcrumbs_ties" if ties else "breadcrumbs",
            models,
            {"weight": weights, "density": density, "gamma": gamma},
            base=base,
            parameters={"lambda": lambda_},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def della(
        cls,
        models: Sequence[ModelRef],
        base: ModelRef,
        weights: Sequence[float] | float = 1.0,
        density: float = 0.5,
        epsilon: float = 0.1,
        *,
        linear: bool = False,
        lambda_: float = 1.0,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        """DELLA: magnitude-ranked drop probabilities in density ± epsilon, then rescale."""
        return cls._build(
            "della_linear" if linear else "della",
            models,
            {"weight": weights, "density": density, "epsilon": epsilon},
            base=base,
            parameters={"lambda": lambda_},
            dtype=dtype,
            **kw,
        )

    @classmethod
    def slerp(cls, a: ModelRef, b: ModelRef, t: float = 0.5, *, dtype: str = "float32", **kw: Any) -> Recipe:
        """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1)."""
        return cls._build("slerp", [a, b], {}, base=a, parameters={"t": t}, dtype=dtype, **kw)

    @classmethod
    def model_stock(
        cls, models: Sequence[ModelRef], base: ModelRef, *, dtype: str = "float32", **kw: Any
    ) -> Recipe:
        return cls._build("model_stock", models, {}, base=base, dtype=dtype, **kw)

    @classmethod
    def layer_groups(
        cls,
        models: Sequence[ModelRef],
        weights: Sequence[Sequence[float]],
        num_layers: int,
        *,
        dtype: str = "float32",
        **kw: Any,
    ) -> Recipe:
        """Linear merge with one weight per model and layer group (spec 2.6).

        ``weights[i]`` has G+1 values: groups 0..G-1 own layers [⌊gL/G⌋, ⌊(g+1)L/G⌋), the last value covers
        everything else (embeddings, final norm, lm_head). Each weight is a list of ``filter: "layers.{l}."``
        entries (trailing dot: ``layers.1.`` must not match ``layers.10.``) and a bare fallback.
        """
        rows = [list(w) for w in weights]
        if len(rows) != len(models) or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
            raise ConfigError("layer_groups: weights must be one row of G+1 values (G >= 1) per model")
        groups = len(rows[0]) - 1
        if groups > num_layers:
            raise ConfigError(f"layer_groups: {groups} groups for {num_layers} layers")
        weight_lists = []
        for row in rows:
            entries = [
                {"filter": f"layers.{layer}.", "value": float(row[g])}
                for g in range(groups)
                for layer in range(g * num_layers // groups, (g + 1) * num_layers // groups)
            ]
            weight_lists.append([*entries, {"value": float(row[-1])}])
        return cls._build(
            "linear", models, {"weight": weight_lists}, parameters={"normalize": True}, dtype=dtype, **kw
        )

    @classmethod
    def passthrough(
        cls,
        slices: Iterable[tuple[ModelRef, int, int] | tuple[ModelRef, int, int, float]],
        *,
        dtype: str = "float32",
    ) -> Recipe:
        """Stack layer ranges [start, end) of models (one source per slice); mergekit renumbers the layers."""
        out = []
        for sl in slices:
            model, start, end, *scale = sl
            if not 0 <= start < end:
                raise ConfigError(f"passthrough: bad layer_range [{start}, {end}) for {model}")
            src: dict[str, Any] = {"model": str(model), "layer_range": [int(start), int(end)]}
            if scale:
                src["parameters"] = {"scale": float(scale[0])}
            out.append({"sources": [src]})
        if not out:
            raise ConfigError("passthrough: no slices given")
        return cls({"merge_method": "passthrough", "slices": out, "dtype": dtype})


def stack(
    slices: Iterable[tuple[ModelRef, int, int] | tuple[ModelRef, int, int, float]], **kw: Any
) -> Recipe:
    """Stacking (spec 2.9): a passthrough recipe over layer slices."""
    return Recipe.passthrough(slices, **kw)


def product_weights(coefficients: Sequence[float]) -> list[float]:
    """Weights of the N-way linear recipe equal to a chain of 2-model merges (spec 2.5).

    With c_1..c_m the accepted coefficients of ``c·current + (1-c)·cand``: w(m_0) = Π c_j and
    w(m_i) = (1-c_i)·Π_{j>i} c_j. They sum to 1.
    """
    c = [float(x) for x in coefficients]
    return [math.prod(c)] + [(1.0 - c[i]) * math.prod(c[i + 1 :]) for i in range(len(c))]
