"""The whole Model-GLUE pipeline (spec 2.10): cluster → select and merge per family → mix → evaluate → publish.

``glue()`` writes one pushable model folder: the weights (a merged family or a model-level mixture of them),
``README.md`` (every source model, every recipe, the scores), ``glue_report.json``/``glue_report.md``, the
similarity heat-map and score chart PNGs, and ``recipes/*.yml`` (each family merge as a mergekit recipe that
``mergekit-yaml`` reproduces). Intermediate family models and search logs live in a work folder next to the
output, which is what ``resume=True`` continues from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hubtools.errors import ConfigError
from hubtools.hub.artifacts import atomic_dir, save_card
from hubtools.merging.cluster import DEFAULT_THRESHOLD, cluster_models, purity
from hubtools.merging.mk import RECIPE_FILENAME, run_recipe
from hubtools.merging.recipe import HUB_REFS, ModelRef, Recipe, resolve_model
from hubtools.merging.search import SearchResult, evolutionary_merge, heuristic_merge
from hubtools.merging.types import Evaluator, fitness

REPORT_JSON = "glue_report.json"
REPORT_MD = "glue_report.md"


@dataclass
class GlueResult:
    """What ``glue()`` built: the output folder, the final scores on both splits and the full report."""

    out_dir: Path
    final_search: dict[str, float]
    final_report: dict[str, float]
    report: dict[str, Any]
    recipes: dict[str, Path] = field(default_factory=dict)

    @property
    def fitness(self) -> float:
        return fitness(self.final_report)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("hubtools", "mergekit", "torch", "transformers", "optuna", "cmaes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _round(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in scores.items()}


def glue(
    models: Mapping[str, ModelRef] | Sequence[ModelRef],
    evaluator: Evaluator,
    out_dir: str | os.PathLike,
    *,
    report_evaluator: Evaluator | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    search: Literal["heuristic", "cmaes"] = "heuristic",
    strategy: Literal["average", "coefficient"] = "coefficient",
    order: Literal["acc", "sim", "dissim"] = "acc",
    n_trials: int = 200,
    seed: int = 42,
    mixture: bool = True,
    mixture_level: Literal["model", "block", "ffn"] = "model",
    io: Literal["auto", "dense", "expert"] = "auto",
    prompts_per_task: int = 8,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    truth_families: Sequence[Sequence[str]] | None = None,
    zoo_name: str = "zoo",
    mixture_guard: bool = True,
) -> GlueResult:
    """Run Model-GLUE on ``models`` and write the final model folder ``out_dir`` (atomically).

    1. Group by architecture, cluster by ``sim_all`` at ``threshold``.
    2. Per family of 2+ models: heuristic ``coefficient`` search (or CMA-ES) on the search split, then run
       the family recipe with mergekit. A family of one is used as is.
    3. With 2+ families and ``mixture``: a model-level mixture (top-1 sequence routing, no dense layers);
       each task's ``prompts_per_task`` search prompts go to the family model best on that task.
    4. Keep the mixture only if its search-split fitness is not below the best family model's
       (``mixture_guard``); score the final model on the report split (``report_evaluator``, default: the
       search evaluator).

    Raises:
        ConfigError: fewer than 2 distinct models, missing models, bad options (before anything is written).
    """
    start = time.perf_counter()
    if search not in ("heuristic", "cmaes"):
        raise ConfigError(f"search must be 'heuristic' or 'cmaes', not {search!r}")
    items = list(models.items()) if isinstance(models, Mapping) else [(Path(str(m)).name, m) for m in models]
    if len({n for n, _ in items}) != len(items):
        raise ConfigError(f"model names must be unique: {[n for n, _ in items]}")
    named = {name: resolve_model(ref) for name, ref in items}
    if len(set(named.values())) < 2:
        raise ConfigError(f"a zoo needs at least 2 distinct models to glue, got {list(named)}")
    public = {name: HUB_REFS.get(str(p), str(p)) for name, p in named.items()}
    report_eval = report_evaluator or evaluator
    out = Path(out_dir).absolute()
    work = Path(work_dir).absolute() if work_dir else out.parent / f".{out.name}.glue-work"
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. clusters
    t = time.perf_counter()
    clustering = cluster_models(named, threshold=threshold)
    timings["cluster_s"] = time.perf_counter() - t

    # per-model scores on both splits (the search split is reused by the selective search)
    t = time.perf_counter()
    singles = _cached_scores(work / "single_scores.json", named, {"search": evaluator, "report": report_eval})
    timings["single_eval_s"] = time.perf_counter() - t

    # 2. per family: select and merge
    fam_models: dict[str, Path] = {}
    fam_info: dict[str, dict[str, Any]] = {}
    recipes: dict[str, Recipe] = {}
    for i, members in enumerate(clustering.families):
        fname = f"family_{i}"
        if len(members) == 1:
            fam_models[fname] = named[members[0]]
            fam_info[fname] = {"members": members, "model": members[0], "search": None}
            continue
        t = time.perf_counter()
        result = _search_family(
            {m: named[m] for m in members},
            evaluator,
            search=search,
            strategy=strategy,
            order=order,
            n_trials=n_trials,
            seed=seed,
            log=work / f"{fname}.search.jsonl",
            resume=resume,
            singles={m: singles[m]["search"] for m in members},
        )
        recipes[fname] = result.recipe
        target = work / fname
        if not (resume and _same_recipe(target, result.recipe, public, named)):
            run_recipe(result.recipe, target, write_card=False, random_seed=seed)
        fam_models[fname] = target
        fam_info[fname] = {
            "members": members,
            "search": {**result.to_json(), "seconds": round(time.perf_counter() - t, 3)},
        }
    fam_scores = _cached_scores(
        work / "family_scores.json", fam_models, {"search": evaluator, "report": report_eval}
    )
    for fname in fam_models:
        fam_info[fname]["scores"] = {k: _round(v) for k, v in fam_scores[fname].items()}

    # 3. mixture of the family models
    final_dir, mixture_info, final_family = _mix(
        fam_models,
        fam_scores,
        {f: len(i["members"]) for f, i in fam_info.items()},
        evaluator,
        work,
        enabled=mixture,
        level=mixture_level,
        io=io,
        prompts_per_task=prompts_per_task,
    )

    # 4. final scores; the mixture is kept only if it does not score below the best family model on the
    # search split (the same keep-if-no-drop rule as the selective merge)
    t = time.perf_counter()
    if mixture_info:
        final_search, final_report = dict(evaluator(final_dir)), dict(report_eval(final_dir))
        mixture_info["search_scores"], mixture_info["report_scores"] = (
            _round(final_search),
            _round(final_report),
        )
        best_family = max(fam_models, key=lambda f: fitness(fam_scores[f]["search"]))
        mixture_info["kept"] = not mixture_guard or fitness(final_search) >= fitness(
            fam_scores[best_family]["search"]
        )
        if not mixture_info["kept"]:
            final_family, final_dir = best_family, fam_models[best_family]
    if final_family is not None:
        final_search, final_report = fam_scores[final_family]["search"], fam_scores[final_family]["report"]
    timings["final_eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start

    best_single = max(named, key=lambda n: fitness(singles[n]["search"]))
    report: dict[str, Any] = {
        "zoo": zoo_name,
        "models": public,
        "clustering": clustering.to_json(),
        "purity": purity(clustering.families, truth_families) if truth_families else None,
        "single_scores": {n: {k: _round(v) for k, v in s.items()} for n, s in singles.items()},
        "best_single": {
            "model": best_single,
            "search": fitness(singles[best_single]["search"]),
            "report": fitness(singles[best_single]["report"]),
        },
        "families": fam_info,
        "mixture": mixture_info,
        "final_family": final_family,
        "final": {
            "search": _round(final_search),
            "report": _round(final_report),
            "search_fitness": fitness(final_search),
            "report_fitness": fitness(final_report),
        },
        "settings": {
            "threshold": threshold,
            "search": search,
            "strategy": strategy,
            "order": order,
            "n_trials": n_trials,
            "seed": seed,
            "mixture": mixture,
            "mixture_level": mixture_level,
            "io": io,
            "prompts_per_task": prompts_per_task,
        },
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
    }
    gain = report["final"]["report_fitness"] - report["best_single"]["report"]
    report["improvement_over_best_single_pct"] = (
        100.0 * gain / report["best_single"]["report"] if report["best_single"]["report"] > 0 else None
    )
    _write_output(
        out,
        final_dir,
        report,
        {k: r.with_models({str(p): public[n] for n, p in named.items()}) for k, r in recipes.items()},
        clustering,
        singles,
    )
    return GlueResult(
        out, final_search, final_report, report, {k: out / "recipes" / f"{k}.yml" for k in recipes}
    )


def _cached_scores(path: Path, models: Mapping[str, Path], evaluators: Mapping[str, Evaluator]) -> dict:
    """Scores of each model on each split, cached in ``path`` keyed by the folder (so resume skips them)."""
    cache = json.loads(path.read_text()) if path.is_file() else {}
    out = {}
    for name, folder in models.items():
        key = f"{name}:{folder}"
        if key not in cache:
            cache[key] = {split: dict(ev(folder)) for split, ev in evaluators.items()}
            path.write_text(json.dumps(cache, indent=1))
        out[name] = cache[key]
    return out


def _same_recipe(target: Path, recipe: Recipe, public: Mapping[str, str], named: Mapping[str, Path]) -> bool:
    """On resume: is ``target`` a finished merge of exactly this recipe?"""
    stored = target / RECIPE_FILENAME
    if not stored.is_file():
        return False
    mapping = {str(p): public[n] for n, p in named.items()}
    return Recipe.from_yaml(stored) == recipe.with_models(mapping)


def _search_family(
    members: dict[str, Path],
    evaluator: Evaluator,
    *,
    search: str,
    strategy: str,
    order: str,
    n_trials: int,
    seed: int,
    log: Path,
    resume: bool,
    singles: Mapping,
) -> SearchResult:
    if search == "cmaes":
        return evolutionary_merge(members, evaluator, n_trials=n_trials, seed=seed, log=log, resume=resume)
    return heuristic_merge(
        members, evaluator, strategy=strategy, order=order, log=log, resume=resume, single_scores=singles
    )


def gate_prompts(
    family_scores: Mapping[str, Mapping[str, float]], evaluator: Evaluator, n: int
) -> dict[str, list[str]]:
    """Each task's ``n`` search prompts go to the family model that scores best on it (spec 2.10 step 3)."""
    out: dict[str, list[str]] = {f: [] for f in family_scores}
    for task in evaluator.tasks:
        best = max(family_scores, key=lambda f: family_scores[f].get(task, -math.inf))
        out[best].extend(evaluator.prompts(task, n=n, seed=0))
    return out


def _mix(
    fam_models: dict[str, Path],
    fam_scores: dict,
    sizes: Mapping[str, int],
    evaluator: Evaluator,
    work: Path,
    *,
    enabled: bool,
    level: str,
    io: str,
    prompts_per_task: int,
) -> tuple[Path, dict | None, str | None]:
    """(final model folder, mixture info or None, the family used as final when there is no mixture)."""

    def best() -> str:
        return max(fam_models, key=lambda f: fitness(fam_scores[f]["search"]))

    if not enabled or len(fam_models) < 2:
        final = best()
        return fam_models[final], None, final
    prompts = gate_prompts({f: s["search"] for f, s in fam_scores.items()}, evaluator, prompts_per_task)
    experts = [f for f in fam_models if prompts[f]]  # a family best at no task gets no gate: it is left out
    if len(experts) < 2:
        final = experts[0] if experts else best()
        return fam_models[final], None, final
    from hubtools.merging.mixture import build_mixture

    # dense = the merged model of the largest family (ties: the better one on the search split)
    dense = max(experts, key=lambda f: (sizes[f], fitness(fam_scores[f]["search"])))
    target = work / "mixture"
    t = time.perf_counter()
    build_mixture(
        fam_models[dense],
        [fam_models[f] for f in experts],
        target,
        level=level,
        prompts=[prompts[f] for f in experts],
        io=io,
    )
    info = {
        "level": level,
        "io": io,
        "dense": dense,
        "experts": experts,
        "prompts": {f: prompts[f] for f in experts},
        "seconds": round(time.perf_counter() - t, 3),
        "left_out": [f for f in fam_models if f not in experts],
    }
    return target, info, None


def _write_output(
    out: Path, final_dir: Path, report: dict, recipes: dict[str, Recipe], clustering: Any, singles: dict
) -> None:
    from hubtools.merging.plots import plot_scores, plot_similarity

    with atomic_dir(out) as tmp:
        shutil.copytree(final_dir, tmp, dirs_exist_ok=True)
        (tmp / "README.md").unlink(missing_ok=True)
        (tmp / "recipes").mkdir(exist_ok=True)
        for name, recipe in recipes.items():
            (tmp / "recipes" / f"{name}.yml").write_text(recipe.to_yaml())
        # the folder's own recipe: only when the final model IS one family merge
        (tmp / RECIPE_FILENAME).unlink(missing_ok=True)
        if report["final_family"] in recipes:
            (tmp / RECIPE_FILENAME).write_text(recipes[report["final_family"]].to_yaml())
        m = clustering.matrix
        plot_similarity(m.names, m.all, tmp / "similarity.png", families=clustering.families)
        rows = {n: s["report"] for n, s in singles.items()}
        rows.update({f: i["scores"]["report"] for f, i in report["families"].items() if i.get("search")})
        rows["final"] = report["final"]["report"]
        plot_scores(rows, tmp / "glue_scores.png", title="report split scores")
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=1, default=str))
        (tmp / REPORT_MD).write_text(report_markdown(report))
        sources = list(report["models"].values())
        if _mixed(report):
            method = f"Model-GLUE: per-family merges + {report['mixture']['level']}-level mixture"
        elif report["final_family"] in recipes:
            method = f"Model-GLUE: {recipes[report['final_family']].method} merge of one family"
        else:
            method = "Model-GLUE"
        card = render_glue_card(report, recipes, sources, method)
        save_card(tmp, card)


def _mixed(report: dict) -> bool:
    """Is the final model the mixture (built and kept)?"""
    return bool(report["mixture"] and report["mixture"]["kept"])


def render_glue_card(report: dict, recipes: Mapping[str, Recipe], sources: list[str], method: str):
    """The ``merged_model`` card of a glue output: sources, each family recipe, both splits' scores."""
    from hubtools.hub.cards import render_card

    metrics = [
        {
            "task_type": "text-generation",
            "dataset": {"type": report["zoo"], "name": f"{report['zoo']} ({split})", "split": split},
            "values": {
                **{f"{k}": v for k, v in report["final"][split].items()},
                "mean": round(report["final"][f"{split}_fitness"], 6),
            },
        }
        for split in ("search", "report")
    ]
    # The Hub's base_model metadata takes repo ids; the pinned "id@commit" stays in the text and recipes.
    base_models = [s.split("@", 1)[0] if not s.startswith("/") else s for s in sources]
    return render_card(
        "merged_model",
        card_data={"base_model": base_models, "model_name": f"{report['zoo']}-glue"},
        modality="text",
        task="text-generation",
        metrics=metrics,
        source_models=sources,
        merge_method=method,
        recipes=[{"name": k, "yaml": r.to_yaml()} for k, r in recipes.items()],
        training_procedure=report_markdown(report, heading_level=3),
        summary=(
            f"Built with Model-GLUE (hubtools) from {len(sources)} models of the zoo "
            f"`{report['zoo']}` without training: clustering, selective merging per family"
            + (", and a mixture of the family models." if _mixed(report) else ".")
        ),
    )


def report_markdown(report: dict, heading_level: int = 1) -> str:
    """The human-readable report: clusters, per-model and per-step scores on both splits."""
    h = "#" * heading_level
    lines = [f"{h} Model-GLUE report: {report['zoo']}", ""]
    fams = report["clustering"]["families"]
    clusters = f"Clusters at threshold {report['clustering']['threshold']}: " + "; ".join(
        "{" + ", ".join(f) + "}" for f in fams
    )
    if report.get("purity") is not None:
        clusters += f" (purity vs ground truth {report['purity']:.3f})"
    gap = report["clustering"].get("largest_gap") or {}
    if gap:
        clusters += f"; largest gap in pairwise sim_all: {gap['low']:.3f} → {gap['high']:.3f}"
    lines.append(clusters + ".")
    lines += ["", "| step | search mean | report mean | report per task |", "|---|---|---|---|"]

    def row(label: str, s: Mapping[str, Mapping[str, float]]) -> str:
        per = ", ".join(f"{k} {v:.3f}" for k, v in s["report"].items())
        return f"| {label} | {fitness(s['search']):.3f} | {fitness(s['report']):.3f} | {per} |"

    for n, s in report["single_scores"].items():
        lines.append(row(f"single `{n}`", s))
    for f, info in report["families"].items():
        if info.get("search"):
            kept = info["search"]["accepted"]
            lines.append(row(f"{f} merge (kept {', '.join(kept) or 'init only'})", info["scores"]))
    mix = report["mixture"]
    if mix and not mix["kept"]:
        lines.append(
            row(
                f"{mix['level']}-level mixture (not kept: below the best family on the search split)",
                {"search": mix["search_scores"], "report": mix["report_scores"]},
            )
        )
    final = report["final"]
    lines.append(
        row(
            "**final**"
            + (
                f" ({report['mixture']['level']}-level mixture)"
                if _mixed(report)
                else f" ({report['final_family']})"
            ),
            final,
        )
    )
    imp = report.get("improvement_over_best_single_pct")
    lines += [
        "",
        f"Best single model: `{report['best_single']['model']}` (report mean "
        f"{report['best_single']['report']:.3f}); improvement of the final model: "
        + (f"{imp:+.1f}%." if imp is not None else "n/a."),
        "",
    ]
    for f, info in report["families"].items():
        if info.get("search"):
            w = ", ".join(f"{k} {v:.3f}" for k, v in info["search"]["weights"].items())
            lines.append(
                f"- {f}: weights {w}; rejected {info['search']['rejected'] or 'none'}; "
                f"{info['search']['evaluations']} evaluations"
            )
    return "\n".join(lines) + "\n"


def push(result: GlueResult | str | os.PathLike, repo_id: str, **kw: Any):
    """Publish a glue output folder (card, weights, recipes, report) with ``hubtools.hub.publish``."""
    from hubtools.hub.publish import push_artifact

    folder = result.out_dir if isinstance(result, GlueResult) else Path(result)
    return push_artifact(folder, repo_id, **kw)


def load_zoo_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a zoo file: ``models`` (name: path-or-hub-id, or a list) and an optional ``evaluator`` / options."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read zoo YAML: {err}") from None
    if not isinstance(data, dict) or "models" not in data:
        raise ConfigError(f"{path}: a zoo file is a mapping with a 'models' key")
    models = data["models"]
    if isinstance(models, list):
        models = {Path(str(m)).name.split("@")[0]: m for m in models}
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{path}: 'models' must be a non-empty mapping or list")
    base = path.parent.absolute()
    data["models"] = {
        str(k): str(base / v) if not Path(str(v)).is_absolute() and (base / str(v)).exists() else str(v)
        for k, v in models.items()
    }
    return data
