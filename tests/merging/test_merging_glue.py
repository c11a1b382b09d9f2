"""glue() end to end on a reduced synthetic zoo (scale 0.08): outputs, card, resume, CLI, Hub, mergekit-yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from hubtools.errors import ConfigError
from hubtools.merging.glue import glue, push
from hubtools.merging.mk import load_state_dict
from hubtools.merging.recipe import Recipe
from hubtools.merging.zoos.synthetic import (
    ZOO_TASKS,
    SyntheticTaskEvaluator,
    build_synthetic_zoo,
    split_examples,
)

SCALE = 0.08
LIMIT = 20
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory) -> Path:
    """``<work>/zoos``: where the benchmark, given ``--work <work>``, looks for its zoos."""
    path = tmp_path_factory.mktemp("glue-bench-work") / "zoos"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def zoo(zoo_cache):
    torch.set_num_threads(1)
    return build_synthetic_zoo(zoo_cache, scale=SCALE)


@pytest.fixture(scope="module")
def evaluators():
    return SyntheticTaskEvaluator(ZOO_TASKS, "search", limit=LIMIT), SyntheticTaskEvaluator(
        ZOO_TASKS, "report", limit=LIMIT
    )


@pytest.fixture(scope="module")
def glued(zoo, evaluators, tmp_path_factory):
    root = tmp_path_factory.mktemp("glued")
    search, report = evaluators
    result = glue(
        zoo.models,
        search,
        root / "out",
        report_evaluator=report,
        strategy="average",
        work_dir=root / "work",
        truth_families=zoo.truth_families,
        zoo_name=zoo.name,
    )
    return result, root


def test_zoo_is_cached_by_settings(zoo, zoo_cache):
    again = build_synthetic_zoo(zoo_cache, scale=SCALE)
    assert again.models == zoo.models
    assert {p.name for p in zoo.models.values()} == {
        "ft_R",
        "ft_S",
        "ft_I",
        "ft_P",
        "ft_noise",
        "ft_N",
        "ft_T",
    }
    ev = SyntheticTaskEvaluator(("R", "N"), "search")
    assert [p.split()[0] for p in ev.prompts("N", 3)] == ["N", "N", "N"]
    assert split_examples("R", "search")[:10] != split_examples("R", "report")[:10]  # different seeds
    assert len(split_examples("R", "search")) == 100 and len(split_examples("R", "report")) == 200
    exact = SyntheticTaskEvaluator(("R", "N"), "search", limit=LIMIT)(zoo.models["ft_R"])
    token = SyntheticTaskEvaluator(("R", "N"), "search", limit=LIMIT, metric="token")(zoo.models["ft_R"])
    assert all(token[t] >= exact[t] for t in token) and token["R"] > 0


def test_glue_output_folder_card_and_report(glued, zoo, evaluators):
    from transformers import AutoModelForCausalLM

    result, _ = glued
    out = result.out_dir
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "README.md",
        "glue_report.json",
        "glue_report.md",
        "similarity.png",
        "glue_scores.png",
        "recipes",
    } <= names
    assert any(n.endswith(".safetensors") for n in names)
    report = json.loads((out / "glue_report.json").read_text())
    assert sorted(map(sorted, report["clustering"]["families"])) == sorted(map(sorted, zoo.truth_families))
    assert report["purity"] == 1.0
    assert report["versions"]["mergekit"].startswith("0.1.")
    recipes = sorted(p.name for p in (out / "recipes").iterdir())
    assert recipes == ["family_0.yml", "family_1.yml"]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert sorted(meta["base_model"]) == sorted(str(p) for p in zoo.models.values())
    assert meta["base_model_relation"] == "merge" and "model-glue" in meta["tags"]
    for r in recipes:
        assert Recipe.from_yaml(out / "recipes" / r).to_yaml().strip().splitlines()[0] in card
    assert "model-index" in card and "report" in card
    # the final folder loads on its own (a registered mixture) and scores what the report says
    model = AutoModelForCausalLM.from_pretrained(out)
    assert evaluators[1](model) == pytest.approx(result.final_report)
    assert report["final"]["report"] == pytest.approx(result.final_report, abs=1e-6)


def test_mergekit_cli_reproduces_the_family_recipe(glued, tmp_path):
    result, root = glued
    for name, recipe_path in list(result.recipes.items())[:1]:  # one subprocess: mergekit's import is slow
        out = tmp_path / name
        proc = subprocess.run(
            [str(VENV_BIN / "mergekit-yaml"), str(recipe_path), str(out), "--random-seed", "42", "--quiet"],
            capture_output=True,
            text=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        ours, theirs = load_state_dict(root / "work" / name), load_state_dict(out)
        assert set(ours) == set(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_glue_bad_input(zoo, evaluators, tmp_path):
    search, _ = evaluators
    with pytest.raises(ConfigError, match="at least 2 distinct"):
        glue({"only": zoo.models["ft_R"]}, search, tmp_path / "one")
    with pytest.raises(ConfigError, match="no such folder"):
        glue({"a": zoo.models["ft_R"], "b": tmp_path / "missing"}, search, tmp_path / "missing-out")
    assert not (tmp_path / "one").exists() and not (tmp_path / "missing-out").exists()


def test_cli_glue_and_resume(zoo, zoo_cache, tmp_path):
    from hubtools.merging.cli import merge

    runner = CliRunner()
    built = runner.invoke(
        merge, ["zoo", "synthetic", str(zoo_cache), "--scale", str(SCALE)]
    )  # cached: no training
    assert built.exit_code == 0, built.output
    zoo_file = Path(built.output.strip())
    data = yaml.safe_load(zoo_file.read_text())
    assert data["models"] == {k: str(v) for k, v in zoo.models.items()}
    data.update({"name": "tiny", "evaluator_args": {"limit": 10}, "strategy": "average", "mixture": False})
    zoo_file = tmp_path / "zoo.yml"
    zoo_file.write_text(yaml.safe_dump(data))
    args = ["glue", str(zoo_file), "-o", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    first = runner.invoke(merge, args)
    assert first.exit_code == 0, first.output
    assert "Model-GLUE report: tiny" in first.output
    again = runner.invoke(merge, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    rep = json.loads((tmp_path / "out" / "glue_report.json").read_text())
    assert all(
        f["search"]["evaluations"] == 0 for f in rep["families"].values() if f["search"]
    )  # from the log
    assert rep["mixture"] is None
    bad = tmp_path / "bad.yml"
    bad.write_text("models: {a: /nope}\nthreshhold: 0.9\n")
    res = runner.invoke(merge, ["glue", str(bad), "-o", str(tmp_path / "x")])
    assert res.exit_code != 0 and "threshhold" in res.output


def test_cli_step_commands(zoo, tmp_path):
    from hubtools.merging.cli import merge

    runner = CliRunner()
    r_path, s_path = str(zoo.models["ft_R"]), str(zoo.models["ft_S"])
    sim = runner.invoke(merge, ["similarity", r_path, s_path])
    assert sim.exit_code == 0, sim.output
    assert json.loads(sim.output)["all"] > 0.9
    cl = runner.invoke(
        merge,
        [
            "cluster",
            r_path,
            s_path,
            str(zoo.models["ft_N"]),
            "-o",
            str(tmp_path / "c.json"),
            "--png",
            str(tmp_path / "c.png"),
        ],
    )
    assert cl.exit_code == 0, cl.output
    assert json.loads((tmp_path / "c.json").read_text())["families"] == [["ft_R", "ft_S"], ["ft_N"]]
    assert (tmp_path / "c.png").stat().st_size > 1000
    se = runner.invoke(
        merge,
        [
            "search",
            "heuristic",
            "--model",
            r_path,
            "--model",
            s_path,
            "--tasks",
            "R,S",
            "-o",
            str(tmp_path / "r.yml"),
            "--strategy",
            "average",
        ],
    )
    assert se.exit_code == 0, se.output
    run = runner.invoke(merge, ["run", str(tmp_path / "r.yml"), str(tmp_path / "merged")])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "merged" / "mergekit_config.yml").is_file() and (
        tmp_path / "merged" / "README.md"
    ).is_file()
    prompts = tmp_path / "prompts.yml"
    ev = SyntheticTaskEvaluator(("R", "S"), "search")
    prompts.write_text(yaml.safe_dump([ev.prompts("R", 4), ev.prompts("S", 4)]))
    mix = runner.invoke(
        merge,
        [
            "mixture",
            "--dense",
            r_path,
            "--expert",
            r_path,
            "--expert",
            s_path,
            "--prompts",
            str(prompts),
            "-o",
            str(tmp_path / "mix"),
        ],
    )
    assert mix.exit_code == 0, mix.output
    assert json.loads((tmp_path / "mix" / "config.json").read_text())["model_type"] == "hubtools_glue_mixture"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"merge_method": "frankenmerge", "models": [{"model": r_path}]}))
    res = runner.invoke(merge, ["run", str(bad), str(tmp_path / "nope")])
    assert res.exit_code != 0 and "unknown merge_method 'frankenmerge'" in res.output
    assert not (tmp_path / "nope").exists()


def test_push_and_reload(glued, hub, repo_id, evaluators):
    from huggingface_hub import hf_hub_download
    from transformers import AutoModelForCausalLM

    result, _ = glued
    push(result, repo_id, token=hub.write_token)
    report = json.loads(Path(hf_hub_download(repo_id, "glue_report.json")).read_text())
    assert report["final"]["report"] == pytest.approx(result.final_report, abs=1e-6)
    model = AutoModelForCausalLM.from_pretrained(repo_id)
    assert evaluators[1](model) == pytest.approx(result.final_report)


def _benchmark_module():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import model_glue
    finally:
        sys.path.pop(0)
    return model_glue


def test_benchmark_smoke(zoo_cache, zoo, tmp_path):
    """``model_glue.py --smoke`` on the module's cached zoo: one envelope with the pipeline and calibration rows."""
    from hubtools.bench import Result

    model_glue = _benchmark_module()
    out = tmp_path / "results"
    argv = ["--smoke", "--work", str(zoo_cache.parent), "--scale", str(SCALE), "--out", str(out)]
    assert model_glue.main(argv) == 0
    result = Result.model_validate(json.loads((out / "model_glue_synthetic.json").read_text()))
    assert result.smoke and result.seeds == [42] and result.capability == "merging"
    assert "hubtools/merging/glue.py" in result.code.files
    runs = {r.arm: r for r in result.runs}
    # the steps every zoo has (a mixture level the tiny zoo cannot build is reported as n/a instead)
    assert {"best_single", "merge_all", "family_merge", "glue_final"} <= set(runs)
    for arm in model_glue.STEPS.keys() & runs.keys():
        r = runs[arm]
        assert r.seed == 42 and 0.0 <= r.metrics["mean"] <= 1.0
        assert {k for k in r.metrics if k.startswith("task_")} == {f"task_{t}" for t in ZOO_TASKS}
    assert runs["best_single"].metrics["vs_best_single_pct"] in (0.0, None)  # None: the best single scores 0
    # the tiny smoke zoo need not meet the margins: the values must only be there and in range
    assert 0.0 <= runs["heuristic_coefficient"].metrics["noise_weight"] <= 1.0
    assert runs["cmaes"].metrics["seconds"] > 0
    assert runs["glue_summary"].metrics["purity"] == 1.0
    tables = {t.title: t for t in result.tables}
    margins = {row[0]: row[2] for row in tables["Calibration margins"].rows}
    assert len(margins) == 16 and margins["clusters equal ground truth"] == "pass"
    assert "clustering purity" in [row[0] for row in tables["Measured rows"].rows]
    pipeline = tables["Pipeline (report split, mean over the zoo's tasks)"]
    assert [row[1] for row in pipeline.rows][0] == "best_single" and "(baseline)" in pipeline.rows[0]
    assert (out / "model_glue_synthetic.png").stat().st_size > 1000
    assert "Calibration margins" in (out / "model_glue_synthetic.md").read_text()
    # the finished run is kept for --reuse, its merged models are not
    assert list((zoo_cache.parent / "runs").glob("synthetic-s42-*/record.json"))
    assert not list((zoo_cache.parent / "runs").glob("*/scratch"))
    assert not (out / "model_glue_perf.json").exists()  # --smoke leaves out the cost measurement


def test_benchmark_perf_smoke(zoo_cache, zoo, tmp_path):
    """``--smoke --perf-only``: merge via hubtools and via mergekit in fresh processes, paired per repeat."""
    from hubtools.bench import Result

    model_glue = _benchmark_module()
    out = tmp_path / "results"
    argv = [
        "--smoke",
        "--perf-only",
        "--work",
        str(zoo_cache.parent),
        "--scale",
        str(SCALE),
        "--out",
        str(out),
    ]
    assert model_glue.main(argv) == 0
    assert not (out / "model_glue_synthetic.json").exists()
    result = Result.model_validate(json.loads((out / "model_glue_perf.json").read_text()))
    runs = {(r.arm, r.seed): r for r in result.runs}
    assert set(runs) == {("mergekit", 0), ("hubtools", 0), ("similarity", None)}
    assert (
        runs[("mergekit", 0)].metrics["seconds"] > 0
        and runs[("hubtools", 0)].metrics["outside_run_merge_s"] >= 0
    )
    assert runs[("similarity", None)].metrics["bytes_read"] > 0
    assert result.details["merge"]["ratio_hubtools_over_mergekit"] > 0
    assert not (zoo_cache.parent / "perf_scratch").exists()


def test_example_zoo_config_validates():
    from hubtools.config import validate_config
    from hubtools.merging.cli import ZooFile

    path = Path(__file__).resolve().parents[2] / "configs" / "merging" / "which4_zoo.yml"
    cfg = validate_config(yaml.safe_load(path.read_text()), ZooFile, str(path))
    assert len(cfg.models) == 4 and cfg.threshold == 0.95 and cfg.n_trials == 200


class _NoMixtures(SyntheticTaskEvaluator):
    """Scores any mixture 0, so glue's keep-if-no-drop guard must fall back to the best family merge."""

    def __call__(self, model):
        scores = super().__call__(model)
        cfg = json.loads((Path(model) / "config.json").read_text()) if isinstance(model, (str, Path)) else {}
        if cfg.get("model_type") == "hubtools_glue_mixture":
            return {t: 0.0 for t in scores}
        return scores


def test_glue_keeps_mixture_only_if_it_does_not_drop(zoo, tmp_path):
    search = _NoMixtures(ZOO_TASKS, "search", limit=10, metric="token")
    report = SyntheticTaskEvaluator(ZOO_TASKS, "report", limit=10, metric="token")
    res = glue(zoo.models, search, tmp_path / "out", report_evaluator=report, strategy="average")
    rep = res.report
    assert rep["mixture"] is not None and rep["mixture"]["kept"] is False
    assert rep["final_family"] in rep["families"]
    assert json.loads((res.out_dir / "config.json").read_text())["model_type"] == "llama"
    assert res.final_report == pytest.approx(
        rep["families"][rep["final_family"]]["scores"]["report"], abs=1e-6
    )
    if rep["families"][rep["final_family"]]["search"]:
        assert (res.out_dir / "mergekit_config.yml").is_file()
    assert "not kept" in (res.out_dir / "glue_report.md").read_text()
