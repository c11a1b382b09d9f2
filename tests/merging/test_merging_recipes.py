"""Property tests of the merge recipes on tiny random Llamas: recipes, disk vs memory, passthrough, similarity, errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from hubtools.errors import ConfigError
from hubtools.merging.cluster import cluster_models, leader_clusters, purity
from hubtools.merging.mk import load_state_dict, merge_in_memory, run_recipe
from hubtools.merging.recipe import Recipe, product_weights, stack
from hubtools.merging.similarity import ArchitectureMismatch, similarity, similarity_matrix
from hubtools.merging.zoos.synthetic import make_tokenizer, model_config


def _save_llama(path: Path, seed: int, *, init: Path | None = None, noise: float = 0.0, **overrides) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    if init is not None:
        model = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * noise * p.std())
    else:
        cfg = model_config()
        for k, v in overrides.items():
            setattr(cfg, k, v)
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path.absolute()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A base, three perturbed fine-tunes of it, an unrelated model, and two incompatible ones."""
    root = tmp_path_factory.mktemp("tiny-zoo")
    torch.set_num_threads(1)
    base = _save_llama(root / "base", 0)
    out = {"base": base}
    for i in range(3):
        out[f"ft{i}"] = _save_llama(root / f"ft{i}", 10 + i, init=base, noise=0.05)
    out["other"] = _save_llama(root / "other", 1)
    out["narrow"] = _save_llama(root / "narrow", 2, hidden_size=32, intermediate_size=128)
    out["bigvocab"] = _save_llama(root / "bigvocab", 3, vocab_size=100)
    return out


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _recipes(t: dict[str, Path]) -> list[Recipe]:
    fts = [t["ft0"], t["ft1"], t["ft2"]]
    return [
        Recipe.linear(fts, [0.5, 0.3, 0.2]),
        Recipe.task_arithmetic(fts, t["base"], 0.5),
        Recipe.ties(fts, t["base"], [1.0, 0.5, 0.7], 0.5),
        Recipe.dare_ties(fts, t["base"], 1.0, 0.6),
        Recipe.dare_linear(fts, t["base"], 1.0, 0.6),
        Recipe.breadcrumbs(fts, t["base"]),
        Recipe.della(fts, t["base"]),
        Recipe.slerp(fts[0], fts[1], 0.3),
        Recipe.model_stock(fts, t["base"]),
        Recipe.layer_groups(fts, [[1, 0, 0.5], [0, 1, 0.5], [0.2, 0.2, 0.2]], num_layers=4),
    ]


def test_disk_and_memory_merges_are_bit_identical(tiny, tmp_path, offline):
    state = {str(p): load_state_dict(p) for p in tiny.values()}
    for recipe in _recipes(tiny):
        disk = load_state_dict(run_recipe(recipe, tmp_path / recipe.method, write_card=False))
        mem = merge_in_memory(recipe, state)
        assert _max_diff(disk, mem) == 0.0, recipe.method
    # and the merge really did something: linear equals the weighted mean computed by hand
    sd = [state[str(tiny[f"ft{i}"])] for i in range(3)]
    mem = merge_in_memory(_recipes(tiny)[0], state)
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.allclose(mem[name], 0.5 * sd[0][name] + 0.3 * sd[1][name] + 0.2 * sd[2][name], atol=1e-6)


def test_layer_group_filters_do_not_leak_across_layer_numbers(tiny):
    fts = [tiny["ft0"], tiny["ft1"]]
    recipe = Recipe.layer_groups(fts, [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], num_layers=4)
    state = {str(p): load_state_dict(p) for p in fts}
    out = merge_in_memory(recipe, state)
    a, b = state[str(fts[0])], state[str(fts[1])]
    assert torch.equal(
        out["model.layers.1.self_attn.q_proj.weight"], a["model.layers.1.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        out["model.layers.3.self_attn.q_proj.weight"], b["model.layers.3.self_attn.q_proj.weight"]
    )
    assert torch.equal(out["lm_head.weight"], a["lm_head.weight"])  # fallback value: model 0 only


def test_passthrough_identity_and_stack(tiny, tmp_path, offline):
    src = load_state_dict(tiny["ft0"])
    same = load_state_dict(run_recipe(Recipe.passthrough([(tiny["ft0"], 0, 4)]), tmp_path / "same"))
    assert _max_diff(src, same) == 0.0
    stacked_dir = run_recipe(stack([(tiny["ft0"], 0, 4), (tiny["ft0"], 2, 4)]), tmp_path / "stacked")
    stacked = load_state_dict(stacked_dir)
    assert yaml.safe_load((stacked_dir / "config.json").read_text())["num_hidden_layers"] == 6
    for new, old in ((4, 2), (5, 3), (1, 1)):
        key = "model.layers.{}.mlp.down_proj.weight"
        assert torch.equal(stacked[key.format(new)], src[key.format(old)])


def test_chained_two_model_merges_equal_product_weight_recipe(tiny):
    fts = [str(tiny[f"ft{i}"]) for i in range(3)] + [str(tiny["other"])]
    coeffs = [0.7, 0.4, 0.9]
    state = {p: load_state_dict(p) for p in fts}
    current = state[fts[0]]
    for cand, c in zip(fts[1:], coeffs, strict=True):
        current = merge_in_memory(
            Recipe.linear(["cur", cand], [c, 1 - c]), {"cur": current, cand: state[cand]}
        )
    weights = product_weights(coeffs)
    assert math.isclose(sum(weights), 1.0)
    nway = merge_in_memory(Recipe.linear(fts, weights), state)
    assert _max_diff(current, nway) <= 1e-5


def test_yaml_round_trip_is_lossless(tiny):
    from mergekit.config import MergeConfiguration

    recipes = [*_recipes(tiny), Recipe.passthrough([(tiny["ft0"], 0, 2, 0.5), (tiny["ft1"], 2, 4)])]
    digests = set()
    for r in recipes:
        back = Recipe.from_yaml(r.to_yaml())
        assert back == r and back.digest() == r.digest()
        assert back.to_mergekit() == r.to_mergekit()
        via_mergekit = MergeConfiguration.model_validate(yaml.safe_load(r.to_mergekit().to_yaml()))
        assert via_mergekit == r.to_mergekit()
        digests.add(r.digest())
    assert len(digests) == len(recipes)


def test_card_writer_regression_guard(tiny, tmp_path, offline, monkeypatch):
    """mergekit's card writer calls the Hub for relative paths: offline that raises; absolute paths work."""
    from huggingface_hub.errors import OfflineModeIsEnabled
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    monkeypatch.chdir(tiny["ft0"].parent)
    rel = Recipe.linear(["ft0", "ft1"])
    with pytest.raises(OfflineModeIsEnabled):
        run_merge(rel.to_mergekit(), out_path=str(tmp_path / "raw"), options=MergeOptions(quiet=True))
    out = run_recipe(rel, tmp_path / "ok", write_card=True)
    stored = Recipe.from_yaml(out / "mergekit_config.yml")
    assert stored.models == [str(tiny["ft0"]), str(tiny["ft1"])]  # absolute in the stored recipe
    card = (out / "README.md").read_text()
    assert "base_model_relation: merge" in card and str(tiny["ft1"]) in card and "model-glue" in card


def test_similarity_matches_independent_cosine(tiny):
    a, b = load_state_dict(tiny["ft0"]), load_state_dict(tiny["other"])
    attn, mlp = [], []
    for name in a:
        if "self_attn" in name or "mlp" in name:
            s = float(torch.nn.functional.cosine_similarity(a[name], b[name], dim=0).mean())
            (attn if "self_attn" in name else mlp).append(s)
    got = similarity(tiny["ft0"], tiny["other"])
    assert got.attn == pytest.approx(sum(attn) / len(attn), abs=1e-6)
    assert got.mlp == pytest.approx(sum(mlp) / len(mlp), abs=1e-6)
    assert got.all == pytest.approx(sum(attn + mlp) / len(attn + mlp), abs=1e-6)
    # an in-memory state dict is accepted and equals its folder
    assert similarity(a, tiny["other"]) == got
    assert similarity(tiny["ft0"], tiny["ft0"]).all == pytest.approx(1.0, abs=1e-6)
    flat = similarity(tiny["ft0"], tiny["other"], per_column=False)
    assert flat.all != pytest.approx(got.all, abs=1e-9)


def test_similarity_matrix_and_delta_mode(tiny):
    names = {k: tiny[k] for k in ("ft0", "ft1", "other")}
    mat = similarity_matrix(names)
    pair = similarity(tiny["ft0"], tiny["ft1"])
    assert mat.pair("ft0", "ft1").all == pytest.approx(pair.all, abs=1e-6)
    assert mat.all[0, 1] > 0.95 and abs(mat.all[0, 2]) < 0.05
    assert mat.bytes_read > 0
    delta = similarity_matrix(
        {"base": tiny["base"], "ft0": tiny["ft0"], "ft1": tiny["ft1"]}, base=tiny["base"]
    )
    assert math.isnan(delta.all[0, 1]) and math.isnan(delta.all[0, 0])  # base vs itself: no direction -> NaN
    assert abs(delta.all[1, 2]) < 0.2  # independent perturbations are near-orthogonal task vectors
    with pytest.raises(ArchitectureMismatch, match="shapes"):
        similarity(tiny["ft0"], tiny["narrow"])


def test_cluster_groups_by_architecture_and_similarity(tiny):
    models = {k: tiny[k] for k in ("ft0", "other", "ft1", "narrow", "ft2", "bigvocab")}
    c = cluster_models(models, threshold=0.95)
    assert c.families == [["ft0", "ft1", "ft2"], ["other"], ["bigvocab"], ["narrow"]]
    group = next(g for g in c.arch_groups if "bigvocab" in g.members)
    assert group.mixed_vocab  # vocab size is not part of the architecture key
    assert math.isnan(c.matrix.all[0, 3])  # different shapes: not compared
    assert c.largest_gap["low"] < 0.5 < c.largest_gap["high"]
    truth = [["ft0", "ft1", "ft2"], ["other", "narrow", "bigvocab"]]
    assert purity(c.families, truth) == 1.0  # split but never mixed
    assert purity([["ft0", "other"], ["ft1", "ft2", "narrow", "bigvocab"]], truth) == pytest.approx(3 / 6)
    # the leader rule compares with the FIRST member only, strictly above the threshold
    sim = torch.tensor([[1, 0.96, 0.5], [0.96, 1, 0.99], [0.5, 0.99, 1]]).numpy()
    assert leader_clusters(["a", "b", "c"], sim, 0.95) == [["a", "b"], ["c"]]
    assert leader_clusters(["a", "b", "c"], sim, 0.96) == [["a"], ["b", "c"]]


def test_bad_input_fails_before_writing(tiny, tmp_path, offline):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown merge_method 'average'"):
        Recipe({"merge_method": "average", "models": [{"model": str(tiny["ft0"])}]})
    with pytest.raises(ConfigError, match="needs base_model"):
        Recipe({"merge_method": "task_arithmetic", "models": [{"model": str(tiny["ft0"])}]})
    with pytest.raises(ConfigError, match="listed twice"):
        Recipe({"merge_method": "linear", "models": [{"model": "a"}, {"model": "a"}]})
    with pytest.raises(ConfigError, match="no such folder"):
        run_recipe(Recipe.linear([tiny["ft0"], tmp_path / "missing"]), out)
    with pytest.raises(ConfigError, match="not available from the Hub"):
        run_recipe(Recipe.linear([tiny["ft0"], "nobody/missing-model"]), out)
    with pytest.raises(ArchitectureMismatch, match="different architectures or tensor shapes"):
        run_recipe(Recipe.linear([tiny["ft0"], tiny["narrow"]]), out)
    with pytest.raises(ArchitectureMismatch, match="different vocab sizes"):
        run_recipe(Recipe.linear([tiny["ft0"], tiny["bigvocab"]]), out)
    assert not out.exists()
    assert Recipe.linear([tiny["ft0"], tiny["ft0"]]).weights() == {str(tiny["ft0"]): 2.0}  # de-duplicated


def test_failed_merge_leaves_no_output(tiny, tmp_path, offline):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny["ft1"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated mid-tensor
    out = tmp_path / "merged"
    with pytest.raises(Exception):  # noqa: B017  (whatever safetensors raises, the folder must not exist)
        run_recipe(Recipe.linear([tiny["ft0"], broken]), out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_hub_ids_resolve_to_pinned_revisions(tiny, tmp_path, hub, repo_id):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.write_token)
    api.create_repo(repo_id)
    commit = api.upload_folder(repo_id=repo_id, folder_path=tiny["ft1"])
    out = run_recipe(Recipe.linear([tiny["ft0"], repo_id], [0.5, 0.5]), tmp_path / "hubmerge")
    stored = Recipe.from_yaml(out / "mergekit_config.yml")
    assert f"{repo_id}@{commit.oid}" in stored.models and str(tiny["ft0"]) in stored.models
    local = merge_in_memory(
        Recipe.linear([tiny["ft0"], tiny["ft1"]], [0.5, 0.5]),
        {str(tiny["ft0"]): load_state_dict(tiny["ft0"]), str(tiny["ft1"]): load_state_dict(tiny["ft1"])},
    )
    assert _max_diff(load_state_dict(out), local) == 0.0
    assert os.environ.get("HF_HUB_OFFLINE") is None


# ---- selective and evolutionary search with a pluggable evaluator ---------------------------------------


class DistanceEvaluator:
    """Task t scores exp(-(d(model, target_t)/s)^2): a merge between two targets beats either target alone,
    and anything far from both (an unrelated model) scores ~0. Cheap and exact, to test search logic."""

    def __init__(self, targets: dict[str, Path], scale: float) -> None:
        self.tasks = tuple(targets)
        self.targets = {t: load_state_dict(p) for t, p in targets.items()}
        self.scale = scale
        self.calls = 0

    def __call__(self, model) -> dict[str, float]:
        self.calls += 1
        sd = load_state_dict(model) if isinstance(model, (str, os.PathLike)) else model.state_dict()
        out = {}
        for task, target in self.targets.items():
            d2 = sum(float(((sd[k].float() - v) ** 2).sum()) for k, v in target.items() if "mlp" in k)
            out[task] = math.exp(-d2 / self.scale**2)
        return out

    def prompts(self, task: str, n: int = 8, seed: int = 0) -> list[str]:
        return [f"{task} prompt {i}" for i in range(n)]


@pytest.fixture(scope="module")
def dist_eval(tiny) -> DistanceEvaluator:
    a, b = load_state_dict(tiny["ft0"]), load_state_dict(tiny["ft1"])
    d = math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a if "mlp" in k))
    return DistanceEvaluator({"a": tiny["ft0"], "b": tiny["ft1"]}, scale=d)


@pytest.mark.parametrize("strategy", ["average", "coefficient"])
def test_heuristic_keeps_helpful_and_rejects_harmful(tiny, dist_eval, tmp_path, strategy, offline):
    from hubtools.merging.search import heuristic_merge
    from hubtools.merging.types import fitness

    models = {"ft0": tiny["ft0"], "other": tiny["other"], "ft1": tiny["ft1"]}
    res = heuristic_merge(models, dist_eval, strategy=strategy, order="acc")
    assert res.history[0]["init"] in ("ft0", "ft1")
    assert res.rejected == ["other"] and res.weights["other"] == 0.0
    assert all(h.get("candidate") != res.history[0]["init"] for h in res.history[1:])  # init left the pool
    assert sum(res.weights.values()) == pytest.approx(1.0)
    single = max(fitness(dist_eval(tiny[m])) for m in ("ft0", "ft1"))
    assert res.fitness > single + 0.05
    step = next(h for h in res.history[1:] if h["accepted"])
    assert (
        step["best_c"] == step["coefficients"][step["fitness"].index(max(step["fitness"]))]
    )  # best c carried
    if strategy == "coefficient":
        assert step["best_c"] == pytest.approx(0.5)  # symmetric targets: the midpoint is optimal
    # the recipe, run on disk by mergekit, scores what the search reported
    merged = run_recipe(res.recipe, tmp_path / "merged", write_card=False)
    assert fitness(dist_eval(merged)) == pytest.approx(res.fitness, abs=1e-9)


def test_heuristic_similarity_order_and_bad_input(tiny, dist_eval):
    from hubtools.merging.search import heuristic_merge

    models = {"ft0": tiny["ft0"], "other": tiny["other"], "ft2": tiny["ft2"], "ft1": tiny["ft1"]}
    res = heuristic_merge(models, dist_eval, order="sim", init="ft0")
    assert [h["candidate"] for h in res.history[1:]][-1] == "other"  # least similar comes last
    dis = heuristic_merge(models, dist_eval, order="dissim", init="ft0")
    assert dis.history[1]["candidate"] == "other"
    with pytest.raises(ConfigError, match="at least 2 distinct"):
        heuristic_merge({"a": tiny["ft0"], "b": tiny["ft0"]}, dist_eval)
    with pytest.raises(ConfigError, match="init"):
        heuristic_merge(models, dist_eval, init="nope")


@pytest.mark.parametrize("backend", ["optuna", "cmaes"])
def test_evolutionary_search_and_resume(tiny, dist_eval, tmp_path, backend):
    from hubtools.merging.search import default_popsize, evolutionary_merge

    assert [default_popsize(d) for d in (4, 5, 8, 16)] == [8, 9, 10, 12]
    models = {"ft0": tiny["ft0"], "ft1": tiny["ft1"], "other": tiny["other"]}
    log = tmp_path / "search.jsonl"
    first = evolutionary_merge(models, dist_eval, n_trials=14, backend=backend, log=log)
    assert first.fitness == max(h["fitness"] for h in first.history)
    assert sum(first.weights.values()) == pytest.approx(1.0)
    assert first.evaluations == len(log.read_text().splitlines()) <= 14
    again = evolutionary_merge(models, dist_eval, n_trials=14, backend=backend, log=log, resume=True)
    assert again.evaluations == 0 and again.recipe == first.recipe  # replayed entirely from the log
    longer = evolutionary_merge(models, dist_eval, n_trials=21, backend=backend, log=log, resume=True)
    assert 0 < longer.evaluations <= 7 and longer.fitness >= first.fitness
    with pytest.raises(ConfigError, match="needs base_model"):
        evolutionary_merge(models, dist_eval, method="ties", n_trials=2)


def test_evolutionary_ties_and_layer_groups(tiny, dist_eval):
    from hubtools.merging.search import evolutionary_merge

    models = {"ft0": tiny["ft0"], "ft1": tiny["ft1"]}
    ties = evolutionary_merge(models, dist_eval, method="ties", base_model=tiny["base"], n_trials=6)
    assert ties.recipe.method == "ties" and ties.recipe.base_model == str(tiny["base"])
    assert len(ties.history[0]["x"]) == 4  # one weight and one density per model
    groups = evolutionary_merge(models, dist_eval, num_groups=2, n_trials=6, backend="cmaes")
    assert len(groups.history[0]["x"]) == 6  # n * (G + 1)
    weight = groups.recipe.data["models"][0]["parameters"]["weight"]
    assert [w.get("filter") for w in weight] == ["layers.0.", "layers.1.", "layers.2.", "layers.3.", None]
