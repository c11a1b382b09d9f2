"""Model-GLUE on mergekit: similarity, clustering, recipes, selective/evolutionary search, mixture, glue.

Importing this package registers the ``hubtools_glue_mixture`` model type with transformers' Auto classes,
so mixture checkpoints load with ``AutoModelForCausalLM.from_pretrained``. Heavy submodules (mergekit,
optuna) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from hubtools.merging import mixture_model  # noqa: F401  (registers model_type hubtools_glue_mixture)
from hubtools.merging.types import Evaluator, Zoo, fitness

_LAZY = {
    "similarity": "hubtools.merging.similarity",
    "similarity_matrix": "hubtools.merging.similarity",
    "Similarity": "hubtools.merging.similarity",
    "SimilarityMatrix": "hubtools.merging.similarity",
    "ArchitectureMismatch": "hubtools.merging.similarity",
    "cluster_models": "hubtools.merging.cluster",
    "Clustering": "hubtools.merging.cluster",
    "purity": "hubtools.merging.cluster",
    "Recipe": "hubtools.merging.recipe",
    "stack": "hubtools.merging.recipe",
    "resolve_model": "hubtools.merging.recipe",
    "run_recipe": "hubtools.merging.mk",
    "merge_in_memory": "hubtools.merging.mk",
    "heuristic_merge": "hubtools.merging.search",
    "evolutionary_merge": "hubtools.merging.search",
    "SearchResult": "hubtools.merging.search",
    "build_mixture": "hubtools.merging.mixture",
    "glue": "hubtools.merging.glue",
    "GlueResult": "hubtools.merging.glue",
    "push": "hubtools.merging.glue",
    "SyntheticTaskEvaluator": "hubtools.merging.zoos.synthetic",
    "build_synthetic_zoo": "hubtools.merging.zoos.synthetic",
}

__all__ = ["Evaluator", "Zoo", "fitness", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubtools.merging' has no attribute {name!r}")
