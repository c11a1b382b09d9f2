"""The one adapter over mergekit: running a recipe to disk and merging state dicts in memory.

Everything that touches mergekit's execution API (``run_merge``, ``MergeOptions``, ``merge_state_dicts``,
``evaluate_setting``) lives here, so a mergekit API change is fixed in one file. Paths are always absolute and
mergekit's own card writer is off: for a relative path it calls the Hub (``repo_exists``), which fails
offline after the weights are written; hubtools writes ``mergekit_config.yml`` and the card itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hubtools.errors import ConfigError
from hubtools.hub.artifacts import atomic_dir, save_card
from hubtools.merging.cluster import arch_key
from hubtools.merging.recipe import Recipe
from hubtools.merging.similarity import ArchitectureMismatch, read_config

RECIPE_FILENAME = "mergekit_config.yml"
_GLOBAL_ONLY = frozenset({"normalize", "rescale", "lambda", "int8_mask", "t"})


def check_compatible(recipe: Recipe) -> None:
    """Refuse a recipe whose models cannot be merged, before any tensor is read or written.

    Non-passthrough methods need equal architectures and equal shapes of every attention/MLP tensor, and
    equal vocabularies unless the recipe sets ``tokenizer_source``. Passthrough needs equal architectures
    and hidden sizes.
    """
    models = recipe.models
    if recipe.method == "passthrough":
        keys = {
            m: (tuple(read_config(m).get("architectures") or ()), read_config(m).get("hidden_size"))
            for m in models
        }
    else:
        keys = {m: arch_key(m) for m in models}
    if len(set(keys.values())) > 1:
        first = models[0]
        other = next(m for m in models if keys[m] != keys[first])
        raise ArchitectureMismatch(
            f"{recipe.source}: models with different architectures or tensor shapes cannot be merged by "
            f"{recipe.method!r}: {first} ({keys[first][0]}) vs {other} ({keys[other][0]})"
        )
    vocab = {m: read_config(m).get("vocab_size") for m in models}
    if len(set(vocab.values())) > 1 and not recipe.data.get("tokenizer_source"):
        raise ArchitectureMismatch(
            f"{recipe.source}: different vocab sizes {vocab}; set tokenizer_source: base to merge them"
        )


def run_recipe(
    recipe: Recipe | Mapping[str, Any] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    write_card: bool = True,
    random_seed: int = 42,
    card_vars: Mapping[str, Any] | None = None,
    out_shard_size: int = 1_000_000_000,
) -> Path:
    """Run ``recipe`` through mergekit's ``run_merge`` into ``out_dir`` (written atomically).

    Models may be Hub ids (downloaded to pinned snapshots), relative or absolute paths; the stored
    ``mergekit_config.yml`` names Hub models as ``id@commit``. A failed merge leaves no ``out_dir``.

    Raises:
        ConfigError: unknown method, missing model, invalid recipe.
        ArchitectureMismatch: different architectures or vocab sizes in one merge.
    """
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    recipe = Recipe.coerce(recipe)
    local, public = recipe.resolved()
    check_compatible(local)
    out = Path(out_dir).absolute()
    options = MergeOptions(
        device=device,
        random_seed=random_seed,
        write_model_card=False,
        quiet=True,
        out_shard_size=out_shard_size,
    )
    with atomic_dir(out) as tmp:
        run_merge(local.to_mergekit(), out_path=str(tmp), options=options)
        published = local.with_models(public)
        (tmp / RECIPE_FILENAME).write_text(published.to_yaml())
        if write_card:
            save_card(tmp, merged_card(published, **(card_vars or {})))
    return out


def merged_card(recipe: Recipe, *, metrics: Any = None, **template_vars: Any):  # -> ModelCard
    """The ``merged_model`` card: every source model as ``base_model`` and the exact recipe."""
    from hubtools.hub.cards import render_card

    sources = list(recipe.models)
    template_vars.setdefault("merge_method", recipe.method)
    template_vars.setdefault("merge_recipe", recipe.to_yaml())
    card_data = {"base_model": sources, **template_vars.pop("card_data", {})}
    return render_card(
        "merged_model", card_data=card_data, metrics=metrics, source_models=sources, **template_vars
    )


# ---- in memory ---------------------------------------------------------------------------------------


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a model folder (every *.safetensors shard)."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder}: no *.safetensors weights found")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    from mergekit.common import dtype_from_name

    return dtype_from_name(name)


def merge_in_memory(
    recipe: Recipe | Mapping[str, Any],
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    random_seed: int = 42,
) -> dict[str, torch.Tensor]:
    """Merge state dicts with mergekit's ``merge_state_dicts``, as ``run_recipe`` would on disk.

    ``state_dicts`` is keyed by the recipe's model references. Per-tensor parameters (``filter`` lists, as
    layer-group recipes write) are resolved with mergekit's own ``evaluate_setting``, and tensors sharing a
    parameter set are merged in one call. ``slices`` recipes (passthrough) are disk-only.
    """
    from mergekit.config import evaluate_setting
    from mergekit.merge_methods import merge_state_dicts

    recipe = Recipe.coerce(recipe)
    if recipe.data.get("slices"):
        raise ConfigError("merge_in_memory: slice recipes (passthrough) only run on disk; use run_recipe")
    missing = [m for m in recipe.models if m not in state_dicts]
    if missing:
        raise ConfigError(f"merge_in_memory: no state dict for {missing}")
    ids = recipe.models
    # the validated config holds mergekit's ConditionalParameter objects that evaluate_setting expects
    per_input = {
        str(raw["model"]): parsed.parameters or {}
        for raw, parsed in zip(recipe.data["models"], recipe.config.models, strict=True)
    }
    global_params = recipe.config.parameters or {}
    names = list(state_dicts[ids[0]])

    def keep(v: Any) -> Any:
        return v

    groups: dict[str, tuple[dict, list[str]]] = {}
    for name in names:
        params: dict[str, Any] = {}
        for key in {k for p in per_input.values() for k in p}:
            params[key] = {
                m: evaluate_setting(name, p[key], validate=keep) for m, p in per_input.items() if key in p
            }
        for key, setting in global_params.items():
            params[key] = evaluate_setting(name, setting, validate=keep)
        sig = json.dumps(params, sort_keys=True, default=str)
        groups.setdefault(sig, (params, []))[1].append(name)

    torch.manual_seed(random_seed)
    out: dict[str, torch.Tensor] = {}
    dtype = _dtype(recipe.data.get("dtype"))
    out_dtype = _dtype(recipe.data.get("out_dtype"))
    with torch.no_grad():
        for params, tensor_names in groups.values():
            subset = {m: {n: state_dicts[m][n] for n in tensor_names} for m in ids}
            out.update(
                merge_state_dicts(
                    subset,
                    recipe.method,
                    base=recipe.base_model,
                    parameters=params,
                    dtype=dtype,
                    out_dtype=out_dtype,
                )
            )
    return {n: out[n] for n in names}
