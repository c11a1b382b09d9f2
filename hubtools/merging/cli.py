"""``hubtools merge``: Model-GLUE steps and the whole pipeline, every merge as a mergekit recipe.

hubtools merge similarity A B [--base M]
hubtools merge cluster M1 M2 ... [--threshold 0.95] -o clusters.json [--png sim.png]
hubtools merge search heuristic|cmaes --model M1 --model M2 ... --tasks R,S,I,P -o recipe.yml [--log L --resume]
hubtools merge run recipe.yml OUT [--device cpu] [--no-card]
hubtools merge mixture --dense D --expert E1 --expert E2 --prompts prompts.yml -o OUT [--level model]
hubtools merge zoo synthetic ./zoo [--scale 1.0]        # build a test zoo and its zoo.yml
hubtools merge glue ./zoo/zoo.yml -o OUT [--resume] [--push ORG/NAME]
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
import yaml
from pydantic import Field

from hubtools.config import StrictModel, validate_config
from hubtools.errors import ConfigError, HubtoolsError

EVALUATORS = {"synthetic": "hubtools.merging.zoos.synthetic:SyntheticTaskEvaluator"}


class ZooFile(StrictModel):
    """``hubtools merge glue ZOO.yaml``: the models (name -> local folder or Hub id[@revision]) and options."""

    name: str = "zoo"
    models: dict[str, str] | list[str]
    evaluator: str = "synthetic"
    evaluator_args: dict[str, Any] = Field(default_factory=dict)
    truth_families: list[list[str]] | None = None
    threshold: float = Field(0.95, ge=0, le=1)
    search: Literal["heuristic", "cmaes"] = "heuristic"
    strategy: Literal["average", "coefficient"] = "coefficient"
    order: Literal["acc", "sim", "dissim"] = "acc"
    n_trials: int = Field(200, ge=1)
    seed: int = 42
    mixture: bool = True
    mixture_level: Literal["model", "block", "ffn"] = "model"
    io: Literal["auto", "dense", "expert"] = "auto"
    prompts_per_task: int = Field(8, ge=1)


def make_evaluator(spec: str, split: str, **kwargs: Any):
    """An evaluator from a name (``synthetic``) or ``package.module:factory``; ``factory(split=..., **kw)``."""
    target = EVALUATORS.get(spec, spec)
    module, _, attr = target.partition(":")
    if not attr:
        raise ConfigError(f"evaluator {spec!r}: use a built-in name {sorted(EVALUATORS)} or 'module:factory'")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"evaluator {spec!r}: cannot import {target}: {err}") from None
    return factory(split=split, **kwargs)


def _errors(fn: Callable) -> Callable:
    """Bad input ends as one clear line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HubtoolsError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def _tasks_kwargs(tasks: str | None) -> dict[str, Any]:
    return {"tasks": [t.strip() for t in tasks.split(",") if t.strip()]} if tasks else {}


@click.group("merge")
def merge() -> None:
    """Model-GLUE: similarity, clustering, selective merging, mixtures; every merge a mergekit recipe."""


@merge.command("similarity")
@click.argument("a")
@click.argument("b")
@click.option("--base", default=None, help="Compare task vectors (A-base vs B-base) instead of raw weights.")
@click.option("--flat", is_flag=True, help="Cosine of flattened tensors instead of per input column.")
@_errors
def similarity_cmd(a: str, b: str, base: str | None, flat: bool) -> None:
    """Weight similarity of two models (attention, MLP, all)."""
    from hubtools.merging.recipe import resolve_model
    from hubtools.merging.similarity import similarity

    s = similarity(
        resolve_model(a), resolve_model(b), base=resolve_model(base) if base else None, per_column=not flat
    )
    click.echo(json.dumps({"attn": s.attn, "mlp": s.mlp, "all": s.all}))


@merge.command("cluster")
@click.argument("models", nargs=-1, required=True)
@click.option("--threshold", type=float, default=0.95, show_default=True)
@click.option("--base", default=None, help="Cluster on task vectors relative to this model.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="clusters.json")
@click.option(
    "--png", type=click.Path(path_type=Path), default=None, help="Also draw the similarity heat-map."
)
@_errors
def cluster_cmd(
    models: tuple[str, ...], threshold: float, base: str | None, output: Path, png: Path | None
) -> None:
    """Group models by architecture, then by weight similarity (greedy leader clustering)."""
    from hubtools.merging.cluster import cluster_models
    from hubtools.merging.plots import plot_similarity
    from hubtools.merging.recipe import resolve_model

    named = {Path(m).name: resolve_model(m) for m in models}
    c = cluster_models(named, threshold=threshold, base=resolve_model(base) if base else None)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(c.to_json(), indent=1))
    if png:
        plot_similarity(c.matrix.names, c.matrix.all, png, families=c.families)
    click.echo(json.dumps({"families": c.families, "largest_gap": c.largest_gap}))


@merge.command("search")
@click.argument("kind", type=click.Choice(["heuristic", "cmaes"]))
@click.option("--model", "models", multiple=True, required=True, help="A zoo member (repeat).")
@click.option("--evaluator", default="synthetic", show_default=True, help="Built-in name or module:factory.")
@click.option("--tasks", default=None, help="Comma-separated task names for the evaluator.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="recipe.yml")
@click.option(
    "--strategy", type=click.Choice(["average", "coefficient"]), default="coefficient", show_default=True
)
@click.option("--order", type=click.Choice(["acc", "sim", "dissim"]), default="acc", show_default=True)
@click.option("--method", type=click.Choice(["linear", "ties", "dare_ties", "dare_linear"]), default="linear")
@click.option("--base-model", default=None, help="Common ancestor (ties/dare, or --order sim deltas).")
@click.option("--n-trials", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--log", type=click.Path(path_type=Path), default=None, help="JSON-lines evaluation log.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search from --log.")
@_errors
def search_cmd(
    kind: str,
    models: tuple[str, ...],
    evaluator: str,
    tasks: str | None,
    output: Path,
    strategy: str,
    order: str,
    method: str,
    base_model: str | None,
    n_trials: int,
    seed: int,
    log: Path | None,
    resume: bool,
) -> None:
    """Select models and coefficients on the evaluator's search split; write the best recipe."""
    from hubtools.merging.search import evolutionary_merge, heuristic_merge

    if resume and log is None:
        raise ConfigError("--resume needs --log (the evaluation log to continue from)")
    ev = make_evaluator(evaluator, "search", **_tasks_kwargs(tasks))
    named = {Path(m).name: m for m in models}
    if kind == "heuristic":
        result = heuristic_merge(
            named, ev, strategy=strategy, order=order, sim_base=base_model, log=log, resume=resume
        )
    else:
        result = evolutionary_merge(
            named,
            ev,
            method=method,
            base_model=base_model,
            n_trials=n_trials,
            seed=seed,
            log=log,
            resume=resume,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(result.recipe.to_yaml())
    click.echo(
        json.dumps(
            {
                "fitness": result.fitness,
                "weights": result.weights,
                "rejected": result.rejected,
                "evaluations": result.evaluations,
            }
        )
    )


@merge.command("run")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-card", is_flag=True, help="Do not write README.md.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed (DARE masks).")
@_errors
def run_cmd(recipe: Path, out: Path, device: str, no_card: bool, seed: int) -> None:
    """Run a mergekit recipe into OUT (atomic; Hub ids pinned; card and mergekit_config.yml written)."""
    from hubtools.merging.mk import run_recipe

    click.echo(str(run_recipe(recipe, out, device=device, write_card=not no_card, random_seed=seed)))


@merge.command("mixture")
@click.option("--dense", required=True, help="The dense model.")
@click.option("--expert", "experts", multiple=True, required=True, help="An expert model (repeat).")
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="YAML/JSON list of prompt lists, one per expert.",
)
@click.option("--level", type=click.Choice(["model", "block", "ffn"]), default="model", show_default=True)
@click.option("--num-dense-layers", type=int, default=0, show_default=True)
@click.option("--io", type=click.Choice(["auto", "dense", "expert"]), default="auto", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@_errors
def mixture_cmd(
    dense: str,
    experts: tuple[str, ...],
    prompts: Path,
    level: str,
    num_dense_layers: int,
    io: str,
    output: Path,
) -> None:
    """Build a mixture of experts around a dense model (gates from prompts)."""
    from hubtools.merging.mixture import build_mixture

    lists = yaml.safe_load(prompts.read_text())
    if not isinstance(lists, list) or not all(isinstance(p, list) for p in lists):
        raise ConfigError(f"{prompts}: expected a list of prompt lists, one per expert")
    click.echo(
        str(
            build_mixture(
                dense,
                list(experts),
                output,
                level=level,
                num_dense_layers=num_dense_layers,
                prompts=lists,
                io=io,
            )
        )
    )


@merge.command("glue")
@click.argument("zoo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Final model folder.")
@click.option(
    "--work-dir", type=click.Path(path_type=Path), default=None, help="Intermediate models and logs."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from the work folder's logs.")
@click.option("--push", "push_to", default=None, help="Publish the result as ORG/NAME.")
@click.option("--threshold", type=float, default=None, help="Override the zoo file's threshold.")
@click.option("--search", type=click.Choice(["heuristic", "cmaes"]), default=None)
@click.option("--n-trials", type=int, default=None)
@_errors
def glue_cmd(
    zoo: Path,
    output: Path,
    work_dir: Path | None,
    resume: bool,
    push_to: str | None,
    threshold: float | None,
    search: str | None,
    n_trials: int | None,
) -> None:
    """Whole pipeline: cluster → select/merge per family → mix → evaluate → model folder + report."""
    from hubtools.merging.glue import glue, load_zoo_yaml, push

    cfg = validate_config(load_zoo_yaml(zoo), ZooFile, str(zoo))
    overrides = {
        k: v
        for k, v in {"threshold": threshold, "search": search, "n_trials": n_trials}.items()
        if v is not None
    }
    cfg = cfg.model_copy(update=overrides)
    result = glue(
        cfg.models,
        make_evaluator(cfg.evaluator, "search", **cfg.evaluator_args),
        output,
        report_evaluator=make_evaluator(cfg.evaluator, "report", **cfg.evaluator_args),
        threshold=cfg.threshold,
        search=cfg.search,
        strategy=cfg.strategy,
        order=cfg.order,
        n_trials=cfg.n_trials,
        seed=cfg.seed,
        mixture=cfg.mixture,
        mixture_level=cfg.mixture_level,
        io=cfg.io,
        prompts_per_task=cfg.prompts_per_task,
        work_dir=work_dir,
        resume=resume,
        truth_families=cfg.truth_families,
        zoo_name=cfg.name,
    )
    click.echo((output / "glue_report.md").read_text())
    if push_to:
        commit = push(result, push_to)
        click.echo(f"pushed {output} to {commit.repo_url}")


ZOO_BUILDERS = {"synthetic": "hubtools.merging.zoos.synthetic:build_synthetic_zoo"}


@merge.command("zoo")
@click.argument("kind", type=click.Choice(sorted(ZOO_BUILDERS)))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", type=float, default=1.0, show_default=True, help="Fraction of the training steps.")
@_errors
def zoo_cmd(kind: str, out: Path, scale: float) -> None:
    """Build a zoo with a known answer (trained offline, cached in OUT) and write OUT/zoo.yml for `merge glue`."""
    module, _, attr = ZOO_BUILDERS[kind].partition(":")
    zoo = getattr(importlib.import_module(module), attr)(out, scale=scale)
    path = out / "zoo.yml"
    data = {"name": zoo.name, "models": {k: str(v) for k, v in zoo.models.items()}, "evaluator": kind}
    if zoo.truth_families:
        data["truth_families"] = zoo.truth_families
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    click.echo(str(path))
