"""Model-GLUE benchmark: cluster → selective merge → mixture on a zoo with a known answer.

    python benchmarks/model_glue.py --zoo synthetic            # spec 4.3 rows + margins (exit 1 if one fails)
    python benchmarks/model_glue.py --zoo fortunes             # the real-text fortunes zoo (pipeline rows)
    python benchmarks/model_glue.py --smoke                    # tiny zoo, margins reported not enforced (tests)

Rows for every zoo: best single model, merge-all (uniform linear), clustered selective merge (heuristic
Coefficient per family), each mixture level (model / block / FFN) of the family models, and the full Model-GLUE
recipe (``glue()``): mean score over the zoo's categories on the REPORT split, improvement over the best single
model in %, clustering purity. The synthetic zoo adds the calibration rows of spec 4.3 with their margins.
Performance: merge step through hubtools vs the same recipe through mergekit directly (time ratio, peak RSS,
each in a fresh subprocess), and the similarity pass's time and peak RSS vs bytes read.
Results: benchmarks/results/model_glue_<zoo>.{json,md,png}. Runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _fit(scores: dict, tasks=None) -> float:
    vals = [v for k, v in scores.items() if tasks is None or k in tasks]
    return sum(vals) / len(vals) if vals else math.nan


class Bench:
    """Collects rows, margin checks and timings; writes JSON/Markdown/PNG."""

    def __init__(self, zoo_name: str, out_dir: Path, smoke: bool) -> None:
        self.zoo_name, self.out_dir, self.smoke = zoo_name, out_dir, smoke
        self.rows: list[dict] = []
        self.checks: list[dict] = []
        self.perf: dict = {}
        self.extra: dict = {}

    def row(self, name: str, value, **kw) -> None:
        self.rows.append({"quantity": name, "value": value, **kw})
        print(f"  {name}: {value}", flush=True)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "pass": bool(ok), "detail": detail})
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)


# ---- pipeline rows (any zoo) -------------------------------------------------------------------------


def pipeline_rows(b: Bench, zoo, work: Path, search_ev, report_ev, *, n_trials: int) -> dict:
    from hubtools.merging.cluster import purity
    from hubtools.merging.glue import glue
    from hubtools.merging.mixture import build_mixture
    from hubtools.merging.mk import run_recipe
    from hubtools.merging.recipe import Recipe
    from hubtools.merging.similarity import ArchitectureMismatch

    tasks = list(report_ev.tasks)
    t0 = time.perf_counter()
    res = glue(
        zoo.models,
        search_ev,
        work / "glue_out",
        report_evaluator=report_ev,
        work_dir=work / "glue_work",
        truth_families=zoo.truth_families,
        zoo_name=zoo.name,
        n_trials=n_trials,
    )
    glue_s = time.perf_counter() - t0
    rep = res.report
    singles = {n: s["report"] for n, s in rep["single_scores"].items()}
    best_single = rep["best_single"]["model"]
    best = _fit(singles[best_single])
    table = {f"best single ({best_single}, chosen on search split)": singles[best_single]}

    try:
        merge_all = run_recipe(Recipe.linear(list(zoo.models.values())), work / "merge_all", write_card=False)
        table["merge-all (uniform linear)"] = report_ev(merge_all)
    except ArchitectureMismatch as err:
        b.row("merge-all", f"n/a ({err})")
    fam_dirs = {f: work / "glue_work" / f for f, i in rep["families"].items() if i.get("search")}
    fam_dirs.update({f: zoo.models[i["model"]] for f, i in rep["families"].items() if not i.get("search")})
    fam_scores = {f: i["scores"]["report"] for f, i in rep["families"].items()}
    best_fam = max(fam_scores, key=lambda f: _fit(fam_scores[f]))
    table[f"clustered selective merge (best family: {best_fam})"] = fam_scores[best_fam]
    mix = rep["mixture"]
    # Block and FFN levels splice layers, which only makes sense between models of one initialisation: their
    # experts are the members of the best family, around that family's merge, each gated by prompts of the
    # task it scores best on (search split).
    members = rep["families"][best_fam]["members"]
    if len(members) > 1:
        best_task = {m: max(tasks, key=lambda t: rep["single_scores"][m]["search"][t]) for m in members}
        member_prompts = [search_ev.prompts(best_task[m]) for m in members]
        for level in ("block", "ffn"):
            try:
                path = build_mixture(
                    fam_dirs[best_fam],
                    [zoo.models[m] for m in members],
                    work / f"mixture_{level}",
                    level=level,
                    prompts=member_prompts,
                    top_k=1,
                )
                table[
                    f"mixture, {level} level (top-1; experts: the {len(members)} members of {best_fam})"
                ] = report_ev(path)
            except Exception as err:  # a level that cannot be built for this zoo is reported, not hidden
                b.row(f"mixture, {level} level", f"n/a ({type(err).__name__}: {err})")
    if mix:
        table["mixture, model level (io auto)"] = mix["report_scores"]
        b.extra["glue_routing_accuracy"] = _routing(
            work / "glue_work" / "mixture", rep, mix["experts"], report_ev
        )
        b.extra["oracle"] = round(_fit({t: max(fam_scores[f][t] for f in mix["experts"]) for t in tasks}), 4)
    final = (
        "mixture"
        if mix and mix["kept"]
        else f"{rep['final_family']}, mixture not kept"
        if mix
        else "no mixture"
    )
    table[f"full Model-GLUE recipe (final = {final})"] = res.final_report
    out = {}
    for name, scores in table.items():
        f = _fit(scores)
        out[name] = {
            "mean": round(f, 4),
            "vs_best_single_pct": round(100 * (f - best) / best, 1) if best else None,
            "per_task": {k: round(v, 3) for k, v in scores.items()},
        }
    b.extra["pipeline"] = out
    b.extra["purity"] = (
        purity(rep["clustering"]["families"], zoo.truth_families) if zoo.truth_families else None
    )
    b.extra["clusters"] = rep["clustering"]["families"]
    b.extra["glue_seconds"] = round(glue_s, 1)
    b.extra["glue_timings"] = rep["timings"]
    print(f"pipeline on {zoo.name} (report split, mean over {len(tasks)} categories):")
    for name, r in out.items():
        b.row(name, r["mean"], vs_best_single_pct=r["vs_best_single_pct"])
    if "oracle" in b.extra:
        b.row("oracle (best family model per category)", b.extra["oracle"])
        b.row(
            "routing accuracy of the glued mixture (25 report prompts per category)",
            b.extra["glue_routing_accuracy"],
        )
    b.row("clustering purity", b.extra["purity"])
    return {"glue": res, "fam_dirs": fam_dirs, "singles": singles}


def _routing(folder: Path, rep: dict, experts: list[str], report_ev) -> float:
    """Fraction of report prompts routed to the expert their category's gate prompts went to."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hubtools.merging.mixture import routing_accuracy

    search = {f: rep["families"][f]["scores"]["search"] for f in experts}
    owner = {t: max(experts, key=lambda f: search[f][t]) for t in report_ev.tasks}
    prompts = [
        [p for t in report_ev.tasks if owner[t] == f for p in report_ev.prompts(t, 25)] for f in experts
    ]
    model = AutoModelForCausalLM.from_pretrained(folder)
    return round(routing_accuracy(model, AutoTokenizer.from_pretrained(folder), prompts), 4)


# ---- spec 4.3 calibration rows (synthetic zoo) -------------------------------------------------------


def synthetic_rows(b: Bench, zoo, work: Path, search_ev, report_ev, pipe: dict, *, n_trials: int) -> None:
    from transformers import AutoTokenizer

    import hubtools.merging  # noqa: F401
    from hubtools.merging.cluster import cluster_models
    from hubtools.merging.mixture import build_mixture, routing_accuracy
    from hubtools.merging.mk import run_recipe
    from hubtools.merging.recipe import Recipe
    from hubtools.merging.search import evolutionary_merge, heuristic_merge
    from hubtools.merging.similarity import similarity_matrix
    from hubtools.merging.zoos.synthetic import FAMILY_A, FAMILY_B, SyntheticTaskEvaluator

    from_a = ["ft_R", "ft_S", "ft_I", "ft_P", "ft_noise"]
    good = from_a[:4]
    m = zoo.models
    lim = 10 if b.smoke else None
    a_search = SyntheticTaskEvaluator(FAMILY_A, "search", limit=lim)
    a_report = SyntheticTaskEvaluator(FAMILY_A, "report", limit=lim)
    print("spec 4.3 rows (report split):")
    c = cluster_models(m, threshold=0.95)
    mat = c.matrix
    idx = {n: i for i, n in enumerate(mat.names)}
    inside_a = [mat.all[idx[x], idx[y]] for x in from_a for y in from_a if x < y]
    inside_b = mat.all[idx["ft_N"], idx["ft_T"]]
    across = [mat.all[idx[x], idx[y]] for x in from_a for y in ("ft_N", "ft_T")]
    b.row(
        "sim_all inside A (min–max) / inside B / across (max)",
        f"{min(inside_a):.3f}–{max(inside_a):.3f} / {inside_b:.3f} / {max(across):.3f}",
    )
    b.check(
        "min sim inside families >= 0.95",
        min(min(inside_a), inside_b) >= 0.95,
        f"{min(min(inside_a), inside_b):.3f}",
    )
    b.check("max sim across families <= 0.05", max(across) <= 0.05, f"{max(across):.3f}")
    b.row("clusters at 0.95", c.families)
    truth = sorted(sorted(f) for f in zoo.truth_families)
    b.check("clusters equal ground truth", sorted(sorted(f) for f in c.families) == truth, str(c.families))
    delta = similarity_matrix({n: m[n] for n in from_a}, base=zoo.base)
    gi = [[delta.all[i, j] for j in range(4) if j > i] for i in range(4)]
    goods = [v for r in gi for v in r]
    noise = [delta.all[4, j] for j in range(4)]
    b.row(
        "delta-sim vs base_A: good fine-tunes / noise vs good",
        f"{min(goods):.2f}–{max(goods):.2f} / {min(noise):.2f} to {max(noise):.2f}",
    )

    singles = {n: a_report(m[n]) for n in from_a}
    b.row("single models, mean over R/S/I/P", {n: round(_fit(s), 3) for n, s in singles.items()})
    best_single = max(_fit(singles[n]) for n in good)

    def merged(recipe: Recipe, name: str) -> float:
        return _fit(a_report(run_recipe(recipe, work / name, write_card=False)))

    lin4 = merged(Recipe.linear([m[n] for n in good]), "lin4")
    lin5 = merged(Recipe.linear([m[n] for n in from_a]), "lin5")
    b.row("uniform linear of 4 good / of all 5", f"{lin4:.3f} / {lin5:.3f}")
    b.check("noise costs >= 0.2", lin4 - lin5 >= 0.2, f"{lin4 - lin5:.3f}")
    for label, members in (("all 5", from_a), ("4 good", good)):
        lams = (1.0,) if b.smoke else (0.5, 0.75, 1.0)
        ta = [
            merged(
                Recipe.task_arithmetic([m[n] for n in members], zoo.base, 1.0, lambda_=lam),
                f"ta{lam}_{len(members)}",
            )
            for lam in lams
        ]
        ties = merged(Recipe.ties([m[n] for n in members], zoo.base, 1.0, 0.5), f"ties_{len(members)}")
        b.row(
            f"task_arithmetic λ={'/'.join(f'{x:g}' for x in lams)}; ties (density .5, λ 1), {label}",
            f"{'/'.join(f'{x:.3f}' for x in ta)}; {ties:.3f}",
        )

    for strategy in ("average", "coefficient"):
        t = time.perf_counter()
        r = heuristic_merge({n: m[n] for n in from_a}, a_search, strategy=strategy)
        secs = time.perf_counter() - t
        rep = merged(r.recipe, f"heur_{strategy}")
        b.row(
            f"heuristic {strategy.capitalize()} (acc order)",
            f"kept {[r.history[0]['init'], *r.accepted]}; rejected {r.rejected}; "
            f"weights { {k: round(v, 3) for k, v in r.weights.items()} }; report {rep:.3f}; {secs:.1f} s",
        )
        b.check(
            f"heuristic {strategy}: >= best single + 0.05",
            rep >= best_single + 0.05,
            f"{rep:.3f} vs {best_single:.3f}",
        )
        b.check(
            f"heuristic {strategy}: noise rejected (weight 0)",
            r.weights["ft_noise"] == 0.0,
            str(r.weights["ft_noise"]),
        )
        b.perf[f"heuristic_{strategy}_s"] = round(secs, 2)

    t = time.perf_counter()
    cma = evolutionary_merge({n: m[n] for n in from_a}, a_search, n_trials=n_trials, log=work / "cma.jsonl")
    secs = time.perf_counter() - t
    rep = merged(cma.recipe, "cma")
    b.row(
        f"CMA-ES linear, d=5, popsize 9, {n_trials} trials",
        f"search {cma.fitness:.3f}, report {rep:.3f}; normalised noise weight {100 * cma.weights['ft_noise']:.1f}%; "
        f"{secs:.1f} s",
    )
    b.check("CMA-ES: >= best single + 0.05", rep >= best_single + 0.05, f"{rep:.3f}")
    b.check(
        "CMA-ES: noise weight <= 5%", cma.weights["ft_noise"] <= 0.05, f"{100 * cma.weights['ft_noise']:.1f}%"
    )
    b.perf["cmaes_s"] = round(secs, 2)

    fam_b = run_recipe(Recipe.linear([m["ft_N"], m["ft_T"]]), work / "fam_b", write_card=False)
    fb = SyntheticTaskEvaluator(FAMILY_B, "report", limit=lim)(fam_b)
    b.row("family-B merge (uniform N,T)", {k: round(v, 3) for k, v in fb.items()})
    b.check("family-B merge: N, T >= 0.9", min(fb.values()) >= 0.9, str(fb))

    # model-level mixture: experts = heuristic Coefficient merge of A and the uniform B merge; 8 prompts/expert
    fam_a = work / "heur_coefficient"
    experts = [fam_a, fam_b]
    prompts = [
        [p for t in FAMILY_A for p in search_ev.prompts(t, 2)],
        [p for t in FAMILY_B for p in search_ev.prompts(t, 4)],
    ]
    route_eval = [
        [p for t in FAMILY_A for p in report_ev.prompts(t, 25)],
        [p for t in FAMILY_B for p in report_ev.prompts(t, 50)],
    ]
    tok = AutoTokenizer.from_pretrained(fam_a)

    def mixture(name: str, **kw):
        from transformers import AutoModelForCausalLM

        path = build_mixture(fam_a, experts, work / name, prompts=prompts, **kw)
        model = AutoModelForCausalLM.from_pretrained(path)
        return path, routing_accuracy(model, tok, route_eval)

    path, acc = mixture("mix_expert", level="model", io="expert")
    mix_scores = report_ev(path)
    expert_scores = [report_ev(e) for e in experts]
    oracle = _fit({t: max(s[t] for s in expert_scores) for t in report_ev.tasks})
    ft_t = _fit(report_ev(m["ft_T"]))
    best6 = max(_fit(s) for s in pipe["singles"].values())
    mean6 = _fit(mix_scores)
    b.row(
        "model-level mixture, io=expert, masked-mean gate, k=0",
        f"routing {acc:.3f}; mean over 6 tasks {mean6:.3f}; oracle {oracle:.3f}; "
        f"N {mix_scores['N']:.3f}, T {mix_scores['T']:.3f}; best single over 6 {best6:.3f} (ft_T {ft_t:.3f})",
    )
    b.check("mixture routing >= 0.95", acc >= 0.95, f"{acc:.3f}")
    b.check("mixture >= 0.95 * oracle", mean6 >= 0.95 * oracle, f"{mean6:.3f} vs {oracle:.3f}")
    b.check("mixture N, T >= 0.9", min(mix_scores["N"], mix_scores["T"]) >= 0.9, str(mix_scores))
    b.check("mixture >= best single (6 tasks) + 0.2", mean6 >= best6 + 0.2, f"{mean6:.3f} vs {best6:.3f}")

    if not b.smoke:
        variants = {
            "last token, no bias": ("last", "none"),
            "masked mean, no bias": ("mean", "none"),
            "centred masked mean": ("mean", "center"),
        }
        for label, (pool, bias) in variants.items():
            accs = [
                mixture(
                    f"mix_{pool}_{bias}_{k}",
                    level="model",
                    io="expert",
                    num_dense_layers=k,
                    gate_pooling=pool,
                    router_bias=bias,
                )[1]
                for k in range(4)
            ]
            b.row(f"routing accuracy k=0..3, {label}", [round(a, 2) for a in accs])

    path, _ = mixture("mix_dense", level="model", io="dense")
    ds = report_ev(path)
    b.row("io=dense splice of family-B layers onto A (negative control)", f"N {ds['N']:.3f}, T {ds['T']:.3f}")
    b.check("io=dense negative control: N, T <= 0.1", max(ds["N"], ds["T"]) <= 0.1, str(ds))

    try:
        ffn = build_mixture(
            fam_a,
            [m[n] for n in good],
            work / "mix_ffn",
            level="ffn",
            top_k=1,
            prompts=[search_ev.prompts(t, 8) for t in FAMILY_A],
        )
        b.row(
            "FFN-level Mixtral (4 good fine-tunes, top-1, hidden gates), mean over R/S/I/P",
            round(_fit(a_report(ffn)), 3),
        )
    except Exception as err:
        b.row("FFN-level Mixtral", f"n/a ({type(err).__name__}: {err})")


# ---- performance (fresh subprocesses, peak RSS) ------------------------------------------------------


def _child(kind: str, args: list[str]) -> None:
    """Runs inside a fresh interpreter: one operation, then prints time and peak RSS as JSON."""
    torch.set_num_threads(1)
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from hubtools.merging.mk import run_recipe
    from hubtools.merging.recipe import Recipe
    from hubtools.merging.similarity import similarity_matrix

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out: dict = {}
    if kind == "similarity":
        mat = similarity_matrix(args)
        out["bytes_read"] = mat.bytes_read
    elif kind == "hubtools":
        import mergekit.merge

        inner = mergekit.merge.run_merge

        def timed(*a, **kw):  # hubtools' own overhead = total - time inside mergekit's run_merge
            t_in = time.perf_counter()
            inner(*a, **kw)
            out["inside_run_merge_s"] = time.perf_counter() - t_in

        mergekit.merge.run_merge = timed
        run_recipe(Recipe.from_yaml(Path(args[0])), args[1], write_card=True, random_seed=42)
    elif kind == "mergekit":
        cfg = Recipe.from_yaml(Path(args[0])).to_mergekit()
        run_merge(
            cfg,
            out_path=args[1],
            options=MergeOptions(
                device="cpu", random_seed=42, write_model_card=True, quiet=True, out_shard_size=1_000_000_000
            ),
        )
    out["seconds"] = time.perf_counter() - t
    out["rss_before_mb"] = before / 1024
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def _spawn(kind: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")


def perf_rows(b: Bench, work: Path, models: list[Path] | None) -> None:
    """Merge step via hubtools vs mergekit directly, and the similarity pass, on bigger random Llamas."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hubtools.merging.recipe import Recipe
    from hubtools.merging.zoos.synthetic import make_tokenizer

    if models is None:
        cfg = LlamaConfig(
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=8,
            tie_word_embeddings=False,
        )
        models = []
        for i in range(3):
            path = work / f"perf_{i}"
            if not (path / "config.json").exists():
                torch.manual_seed(i)
                LlamaForCausalLM(cfg).save_pretrained(path)
                make_tokenizer().save_pretrained(
                    path
                )  # mergekit copies the tokenizer: part of the merge step
            models.append(path.absolute())
    size = sum(f.stat().st_size for p in models for f in p.glob("*.safetensors"))
    recipe = work / "perf_recipe.yml"
    recipe.write_text(Recipe.linear(models, [0.5, 0.3, 0.2]).to_yaml())
    reps = 1 if b.smoke else 5
    runs: dict[str, list[dict]] = {"mergekit": [], "hubtools": []}
    for r in range(reps):
        # alternate the order and flush dirty pages first, so neither side pays for the other's disk writes
        for kind in ("mergekit", "hubtools") if r % 2 == 0 else ("hubtools", "mergekit"):
            os.sync()
            out = work / f"perf_out_{kind}_{r}"
            runs[kind].append(_spawn(kind, str(recipe), str(out)))
            shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    peak = {k: max(x["peak_rss_mb"] - x["rss_before_mb"] for x in v) for k, v in runs.items()}
    overhead = statistics.median(x["seconds"] - x["inside_run_merge_s"] for x in runs["hubtools"])
    b.perf["merge"] = {
        "hubtools_overhead_outside_run_merge_s": round(overhead, 3),
        "input_bytes": size,
        "models": len(models),
        "reps": reps,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "ratio_hubtools_over_mergekit": round(med["hubtools"] / med["mergekit"], 3),
        "peak_rss_increase_mb": {k: round(v, 1) for k, v in peak.items()},
    }
    print("performance:")
    b.row(
        "merge step hubtools / mergekit direct (median time ratio, target <= 1.05)",
        f"{med['hubtools']:.2f} s / {med['mergekit']:.2f} s = {med['hubtools'] / med['mergekit']:.3f}; "
        f"peak RSS increase {peak['hubtools']:.0f} / {peak['mergekit']:.0f} MB; inputs {size / 1e6:.0f} MB; "
        f"hubtools' own work outside run_merge {overhead:.3f} s",
    )
    sim = _spawn("similarity", *map(str, models))
    b.perf["similarity"] = {
        "bytes_read": sim["bytes_read"],
        "seconds": round(sim["seconds"], 3),
        "peak_rss_increase_mb": round(sim["peak_rss_mb"] - sim["rss_before_mb"], 1),
        "mb_per_s": round(sim["bytes_read"] / 1e6 / sim["seconds"], 1),
    }
    b.row(
        "similarity pass (3 models, all pairs)",
        f"{sim['bytes_read'] / 1e6:.0f} MB read in {sim['seconds']:.2f} s; peak RSS increase "
        f"{sim['peak_rss_mb'] - sim['rss_before_mb']:.0f} MB",
    )


# ---- output -------------------------------------------------------------------------------------------


def write(b: Bench, wall: float) -> None:
    b.out_dir.mkdir(parents=True, exist_ok=True)
    stem = b.out_dir / f"model_glue_{b.zoo_name}{'_smoke' if b.smoke else ''}"
    data = {
        "zoo": b.zoo_name,
        "smoke": b.smoke,
        "wall_s": round(wall, 1),
        "rows": b.rows,
        "checks": b.checks,
        "perf": b.perf,
        **b.extra,
        "threads": torch.get_num_threads(),
    }
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    lines = [
        f"# Model-GLUE benchmark — zoo `{b.zoo_name}`{' (smoke)' if b.smoke else ''}",
        "",
        f"Wall time {wall:.0f} s on {torch.get_num_threads()} thread(s). Scores: report split.",
        "",
    ]
    if "pipeline" in b.extra:
        lines += ["| pipeline step | mean score | vs best single |", "|---|---|---|"]
        for name, r in b.extra["pipeline"].items():
            pct = r["vs_best_single_pct"]
            lines.append(f"| {name} | {r['mean']:.3f} | {'n/a' if pct is None else f'{pct:+.1f}%'} |")
        lines += ["", f"Clustering purity: {b.extra['purity']}; clusters {b.extra['clusters']}.", ""]
    lines += ["| quantity | value |", "|---|---|"]
    lines += [f"| {r['quantity']} | {r['value']} |" for r in b.rows]
    if b.checks:
        lines += ["", "| margin check | result | measured |", "|---|---|---|"]
        lines += [f"| {c['check']} | {'pass' if c['pass'] else 'FAIL'} | {c['detail']} |" for c in b.checks]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if "pipeline" in b.extra:
        from hubtools.merging.plots import plot_scores

        plot_scores(
            {n.split(" (")[0].split(",")[0][:28]: r["per_task"] for n, r in b.extra["pipeline"].items()},
            stem.with_suffix(".png"),
            title=f"Model-GLUE on {b.zoo_name} (report split)",
        )
    print(f"wrote {stem}.json/.md/.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", choices=["synthetic", "fortunes", "minilm"], default="synthetic")
    p.add_argument(
        "--smoke", action="store_true", help="tiny zoo, few trials; margins reported, not enforced"
    )
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "hubtools-model-glue")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--n-trials", type=int, default=None)
    p.add_argument("--scale", type=float, default=None)
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--perf-only", action="store_true", help="only the merge/similarity cost rows")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a.child[0], a.child[1:])
        return 0
    torch.set_num_threads(1)
    scale = a.scale if a.scale is not None else (0.08 if a.smoke else 1.0)
    n_trials = a.n_trials or (6 if a.smoke else 200)
    start = time.perf_counter()
    if a.zoo == "synthetic":
        from hubtools.merging.zoos.synthetic import ZOO_TASKS, SyntheticTaskEvaluator, build_synthetic_zoo

        zoo = build_synthetic_zoo(a.cache_dir, scale=scale)
        lim = 10 if a.smoke else None
        search_ev = SyntheticTaskEvaluator(ZOO_TASKS, "search", limit=lim)
        report_ev = SyntheticTaskEvaluator(ZOO_TASKS, "report", limit=lim)
    elif a.zoo == "fortunes":
        from hubtools.merging.zoos.fortunes import build_fortunes_zoo

        zoo = build_fortunes_zoo(a.cache_dir, scale=scale)
        search_ev, report_ev = zoo.search, zoo.report
    else:
        from hubtools.merging.zoos.minilm import build_minilm_zoo

        zoo = build_minilm_zoo(a.cache_dir, scale=scale)
        search_ev, report_ev = zoo.search, zoo.report
    zoo_s = time.perf_counter() - start
    b = Bench(a.zoo, a.out or (RESULTS if not a.smoke else a.cache_dir / "results"), a.smoke)
    b.perf["zoo_build_or_load_s"] = round(zoo_s, 1)
    with tempfile.TemporaryDirectory(prefix="model-glue-bench-") as tmp:
        work = Path(tmp)
        if a.perf_only:
            b.zoo_name = "perf"
        else:
            pipe = pipeline_rows(b, zoo, work, search_ev, report_ev, n_trials=n_trials)
        if a.zoo == "synthetic" and not a.perf_only:
            synthetic_rows(b, zoo, work, search_ev, report_ev, pipe, n_trials=n_trials)
        if not a.no_perf:
            perf_rows(b, work, list(zoo.models.values())[:3] if a.smoke else None)
    wall = time.perf_counter() - start
    write(b, wall)
    failed = [c["check"] for c in b.checks if not c["pass"]]
    if failed and not a.smoke:
        print(f"FAILED margins: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    # As a script nothing may reach a Hub: a stray call fails at once (the test suite sets its own endpoint).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
