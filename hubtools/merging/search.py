"""Selective merging: the heuristic greedy search and CMA-ES over merge coefficients (spec 2.5, 2.6).

Candidates are merged in memory with mergekit (:func:`hubtools.merging.mk.merge_in_memory`), loaded into one
resident model and scored by a pluggable :class:`~hubtools.merging.types.Evaluator`. Every score is cached by
``recipe.digest()`` and appended to an optional JSON-lines log; a search started again with that log (the
CLI's ``--resume``) replays the same seeded proposals and takes their scores from the log instead of
re-evaluating, so an interrupted search continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hubtools.errors import ConfigError
from hubtools.merging.mk import load_state_dict, merge_in_memory
from hubtools.merging.recipe import ModelRef, Recipe, product_weights, resolve_model
from hubtools.merging.similarity import read_config, similarity
from hubtools.merging.types import Evaluator, fitness

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TASK_VECTOR_SEARCH = ("ties", "dare_ties", "dare_linear")


@dataclass
class SearchResult:
    """The best recipe found, its search-split fitness/scores, which models it kept, and every evaluation."""

    recipe: Recipe
    fitness: float
    scores: dict[str, float]
    accepted: list[str]
    rejected: list[str]
    history: list[dict] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe.data,
            "digest": self.recipe.digest(),
            "fitness": self.fitness,
            "scores": self.scores,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "weights": self.weights,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "history": self.history,
        }


class CandidateScorer:
    """Scores recipes over a fixed set of models: merge in memory, load into a resident model, evaluate.

    Keeps one state dict per input model and one model object, so a search over n models holds n+1 copies of
    the weights (fine for the small zoos this runs on; 7B zoos would need mergekit's planner instead).
    """

    def __init__(
        self,
        models: Sequence[Path],
        evaluator: Evaluator,
        *,
        log: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> None:
        import transformers

        self.evaluator = evaluator
        self.state_dicts = {str(m): load_state_dict(m) for m in models}
        # the class named in config.json (causal LMs, but also e.g. BertForSequenceClassification zoos)
        arch = (read_config(models[0]).get("architectures") or ["AutoModelForCausalLM"])[0]
        model_cls = getattr(transformers, arch, transformers.AutoModelForCausalLM)
        self.model = model_cls.from_pretrained(models[0], dtype=torch.float32)
        self.model.eval()
        self.cache: dict[str, dict[str, float]] = {}
        self.evaluations = 0
        self.replayed = 0
        self.log = Path(log) if log else None
        if self.log:
            if resume and self.log.is_file():
                for line in self.log.read_text().splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        self.cache[entry["digest"]] = entry["scores"]
            elif self.log.exists():
                self.log.unlink()
            self.log.parent.mkdir(parents=True, exist_ok=True)

    def add_model(self, path: Path) -> None:
        self.state_dicts.setdefault(str(path), load_state_dict(path))

    def merged(self, recipe: Recipe) -> dict[str, torch.Tensor]:
        refs = recipe.models
        if len(refs) == 1:
            return self.state_dicts[refs[0]]
        return merge_in_memory(recipe, self.state_dicts)

    def __call__(self, recipe: Recipe) -> dict[str, float]:
        key = recipe.digest()
        if key in self.cache:
            self.replayed += 1
            return self.cache[key]
        self.model.load_state_dict(self.merged(recipe), strict=True)
        scores = {k: float(v) for k, v in self.evaluator(self.model).items()}
        self.evaluations += 1
        self.cache[key] = scores
        if self.log:
            with self.log.open("a") as f:
                f.write(json.dumps({"digest": key, "scores": scores, "recipe": recipe.data}) + "\n")
        return scores


def _named(models: Sequence[ModelRef] | Mapping[str, ModelRef]) -> dict[str, Path]:
    """name -> resolved absolute folder; duplicates removed (a self-merge returns the model unchanged)."""
    items = models.items() if isinstance(models, Mapping) else ((str(m), m) for m in models)
    out: dict[str, Path] = {}
    seen: set[Path] = set()
    for name, ref in items:
        path = resolve_model(ref)
        if path not in seen:
            out[name] = path
            seen.add(path)
    return out


def heuristic_merge(
    models: Sequence[ModelRef] | Mapping[str, ModelRef],
    evaluator: Evaluator,
    *,
    strategy: Literal["average", "coefficient"] = "average",
    order: Literal["acc", "sim", "dissim"] = "acc",
    init: str | None = None,
    grid: Sequence[float] = GRID,
    sim_base: ModelRef | None = None,
    log: str | os.PathLike | None = None,
    resume: bool = False,
    single_scores: Mapping[str, Mapping[str, float]] | None = None,
) -> SearchResult:
    """Greedy selective merging (spec 2.5, with the reference's bugs fixed).

    Start from the best single model (or ``init``), removed from the pool; each round proposes
    ``c·current + (1-c)·cand`` (average: c=(k+1)/(k+2); coefficient: the first c of ``grid`` reaching the max
    fitness) and keeps it iff the fitness does not drop. The best c is carried forward, and the result is
    the single N-way linear recipe with product weights, equal to the chained 2-model merges.
    """
    start = time.perf_counter()
    if strategy not in ("average", "coefficient"):
        raise ConfigError(f"strategy must be 'average' or 'coefficient', not {strategy!r}")
    if order not in ("acc", "sim", "dissim"):
        raise ConfigError(f"order must be 'acc', 'sim' or 'dissim', not {order!r}")
    named = _named(models)
    if len(named) < 2:
        raise ConfigError(f"heuristic_merge needs at least 2 distinct models, got {list(named)}")
    if init is not None and init not in named:
        raise ConfigError(f"init {init!r} is not one of the models {list(named)}")
    ref = {name: str(p) for name, p in named.items()}
    score = CandidateScorer(list(named.values()), evaluator, log=log, resume=resume)
    base = resolve_model(sim_base) if sim_base is not None else None

    singles = {n: dict(single_scores[n]) for n in named if single_scores and n in single_scores}
    history: list[dict] = []
    for name in named:
        if name not in singles and (init is None or order == "acc"):
            singles[name] = score(Recipe.linear([ref[name]]))
    single_fit = {n: fitness(s) for n, s in singles.items()}
    current = init or max(named, key=lambda n: (single_fit[n], -list(named).index(n)))
    if current not in singles:
        singles[current] = score(Recipe.linear([ref[current]]))
        single_fit[current] = fitness(singles[current])
    pool = [n for n in named if n != current]
    if order == "acc":
        pool.sort(key=lambda n: -single_fit[n])  # stable: ties keep input order
    chain, coeffs = [current], []
    best_fit, best_scores = single_fit[current], singles[current]
    history.append({"step": 0, "init": current, "fitness": best_fit, "scores": best_scores})
    rejected: list[str] = []
    while pool:
        if order == "acc":
            cand = pool.pop(0)
        else:
            merged = score.merged(Recipe.linear([ref[m] for m in chain], product_weights(coeffs)))
            sims = {n: similarity(merged, named[n], base=base).mlp for n in pool}
            pick = max if order == "sim" else min
            cand = pick(pool, key=lambda n: sims[n])
            pool.remove(cand)
        k = len(coeffs)
        cs = [(k + 1) / (k + 2)] if strategy == "average" else list(grid)
        trials = []
        for c in cs:
            recipe = Recipe.linear([ref[m] for m in [*chain, cand]], product_weights([*coeffs, c]))
            s = score(recipe)
            trials.append((c, fitness(s), s))
        c_best, f_best, s_best = max(trials, key=lambda t: t[1])  # max() keeps the first of equal maxima
        accepted = f_best >= best_fit
        history.append(
            {
                "step": len(history),
                "candidate": cand,
                "coefficients": [t[0] for t in trials],
                "fitness": [t[1] for t in trials],
                "best_c": c_best,
                "best_fitness": f_best,
                "accepted": accepted,
            }
        )
        if accepted:
            chain.append(cand)
            coeffs.append(c_best)
            best_fit, best_scores = f_best, s_best
        else:
            rejected.append(cand)
    weights = product_weights(coeffs)
    recipe = Recipe.linear([ref[m] for m in chain], weights)
    return SearchResult(
        recipe=recipe,
        fitness=best_fit,
        scores=best_scores,
        accepted=chain[1:],
        rejected=rejected,
        history=history,
        weights={**{n: 0.0 for n in named}, **dict(zip(chain, weights, strict=True))},
        evaluations=score.evaluations,
        seconds=time.perf_counter() - start,
    )


def default_popsize(d: int) -> int:
    """CMA-ES population round(4 + 3 ln d): 8, 9, 10, 12 for d = 4, 5, 8, 16."""
    return int(round(4 + 3 * math.log(d)))


def evolutionary_merge(
    models: Sequence[ModelRef] | Mapping[str, ModelRef],
    evaluator: Evaluator,
    *,
    method: Literal["linear", "ties", "dare_ties", "dare_linear"] = "linear",
    base_model: ModelRef | None = None,
    num_groups: int = 1,
    n_trials: int = 200,
    popsize: int | None = None,
    seed: int = 42,
    backend: Literal["optuna", "cmaes"] = "optuna",
    log: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """CMA-ES over merge coefficients in [0,1]^d (spec 2.6), maximising the search-split fitness.

    d = n (linear), n·(G+1) (linear with ``num_groups`` = G > 1 layer groups) or 2n (one weight and one
    density per model for ties/dare). σ0 = 1/6, mean = box centre, seed 42. All-zero weights score 0 without
    merging (normalisation would divide by ~0).
    """
    start = time.perf_counter()
    named = _named(models)
    n = len(named)
    if n < 2:
        raise ConfigError(f"evolutionary_merge needs at least 2 distinct models, got {list(named)}")
    if method not in ("linear", *TASK_VECTOR_SEARCH):
        raise ConfigError(
            f"evolutionary_merge: method must be linear, ties, dare_ties or dare_linear, not {method!r}"
        )
    if method != "linear" and base_model is None:
        raise ConfigError(f"evolutionary_merge: method {method!r} needs base_model (the common ancestor)")
    if num_groups > 1 and method != "linear":
        raise ConfigError("evolutionary_merge: layer groups are implemented for method='linear' only")
    if backend not in ("optuna", "cmaes"):
        raise ConfigError(f"backend must be 'optuna' or 'cmaes', not {backend!r}")
    names = list(named)
    refs = [str(named[m]) for m in names]
    base = str(resolve_model(base_model)) if base_model is not None else None
    num_layers = int(read_config(refs[0]).get("num_hidden_layers", 0))
    d = n * (num_groups + 1) if num_groups > 1 else (n if method == "linear" else 2 * n)
    popsize = popsize or default_popsize(d)
    score = CandidateScorer([Path(r) for r in refs], evaluator, log=log, resume=resume)
    if base:
        score.add_model(Path(base))

    def recipe_of(x: np.ndarray) -> Recipe | None:
        x = [round(float(v), 12) for v in x]  # stable digests across the resumed replay
        if num_groups > 1:
            rows = [x[i * (num_groups + 1) : (i + 1) * (num_groups + 1)] for i in range(n)]
            if any(sum(r[g] for r in rows) < 1e-6 for g in range(num_groups + 1)):
                return None
            return Recipe.layer_groups(refs, rows, num_layers)
        if sum(x[:n]) < 1e-6:
            return None
        if method == "linear":
            return Recipe.linear(refs, x)
        if method == "ties":
            return Recipe.ties(refs, base, x[:n], x[n:])
        return Recipe.dare_ties(refs, base, x[:n], x[n:], linear=method == "dare_linear")

    history: list[dict] = []
    best: dict[str, Any] = {"fitness": -math.inf}

    def objective(x: np.ndarray) -> float:
        recipe = recipe_of(x)
        scores = score(recipe) if recipe is not None else {}
        f = fitness(scores) if scores else 0.0
        history.append({"trial": len(history), "x": [float(v) for v in x], "fitness": f})
        if f > best["fitness"]:
            best.update(fitness=f, scores=scores, recipe=recipe, x=list(map(float, x)))
        if progress:
            progress(len(history), best["fitness"])
        return f

    if backend == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.CmaEsSampler(popsize=popsize, seed=seed)
        )
        study.optimize(
            lambda t: objective(np.array([t.suggest_float(f"x{i}", 0.0, 1.0) for i in range(d)])),
            n_trials=n_trials,
        )
    else:
        from cmaes import CMA

        opt = CMA(
            mean=np.full(d, 0.5),
            sigma=1 / 6,
            bounds=np.array([[0.0, 1.0]] * d),
            population_size=popsize,
            seed=seed,
        )
        while len(history) < n_trials:
            told = []
            for _ in range(opt.population_size):
                x = opt.ask()
                told.append((x, -objective(x)))  # cmaes minimises
            opt.tell(told)
    if best.get("recipe") is None:
        raise ConfigError("evolutionary_merge: every trial had all-zero weights; nothing to merge")
    x = best["x"]
    raw = x[:n] if num_groups == 1 else [x[i * (num_groups + 1) + num_groups] for i in range(n)]
    total = sum(raw)
    weights = {m: w / total for m, w in zip(names, raw, strict=True)}
    kept = [m for m in names if weights[m] > 0.05]
    return SearchResult(
        recipe=best["recipe"],
        fitness=best["fitness"],
        scores=best["scores"],
        accepted=kept,
        rejected=[m for m in names if m not in kept],
        history=history,
        weights=weights,
        evaluations=score.evaluations,
        seconds=time.perf_counter() - start,
    )
