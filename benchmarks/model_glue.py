"""Model-GLUE benchmark: cluster → selective merge → mixture on a zoo with a known answer.

    python benchmarks/model_glue.py --zoo synthetic --no-perf   # pipeline + calibration margins (exit 1 if one fails)
    python benchmarks/model_glue.py --zoo fortunes --no-perf    # the real-text fortunes zoo (pipeline rows)
    python benchmarks/model_glue.py --zoo minilm --no-perf      # real all-MiniLM-L6-v2 fine-tunes (pipeline rows)
    python benchmarks/model_glue.py --perf-only                 # merge / similarity cost on 3 random 265 MB Llamas
    python benchmarks/model_glue.py --smoke                     # tiny zoo, margins reported not enforced, no perf
    python benchmarks/model_glue.py --smoke --perf-only         # the perf path on 3 smoke-zoo models, 1 repeat

Rows for every zoo: best single model, merge-all (uniform linear), clustered selective merge (heuristic
Coefficient per family), each mixture level (model / block / FFN) of the family models, and the full Model-GLUE
recipe (``glue()``): mean score over the zoo's categories on the REPORT split, change over the best single model
in %, clustering purity. The synthetic zoo adds its calibration rows and margins: similarity inside and across
the two families >= 0.95 / <= 0.05, clusters equal to the two true families, the noise fine-tune costs a uniform
merge >= 0.2 and is rejected (weight 0) by both heuristic strategies, heuristic and CMA-ES merges beat the best
single model by >= 0.05 (CMA-ES gives the noise model <= 5 %), the family-B merge scores >= 0.9 on N and T, the
model-level mixture routes >= 95 % of prompts right, reaches >= 95 % of the oracle and beats the best single
model by >= 0.2, and the io=dense splice (negative control) scores <= 0.1 on N and T.

The zoos are fixed (every training step seeded); ``--seeds`` are the merge-search seeds (``glue``'s seed and the
CMA-ES sampler's; default 42). The heuristic search is deterministic, so only the CMA-ES row moves with them.
Performance (``model_glue_perf``): the merge step through hubtools vs the same recipe through mergekit directly
(median time ratio, peak RSS, each in a fresh subprocess, alternating order), and the similarity pass's time and
peak RSS vs bytes read. Results: benchmarks/results/model_glue_<zoo>.{json,md,png} and model_glue_perf.{json,md}.
Zoos are cached under ``--work``/zoos, finished zoo runs under ``--work``/runs (``--reuse``). Runs on one thread.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from hubtools.bench import Benchmark, Run, arms_table, values_by_seed
from hubtools.bench.stats import fmt_diff, paired_by_seed

ZOO_DATA = {
    "synthetic": "the synthetic zoo: 7 tiny Llamas fine-tuned here from two unrelated bases on generated string "
    "tasks (family A: R, S, I, P and a harmful noise fine-tune; family B: digit tasks N, T); search split 100 and "
    "report split 200 generated examples per task, from disjoint seeds",
    "fortunes": "Debian fortunes text: a BPE tokenizer and a 0.4 M-parameter Llama base trained on all categories, "
    "experts fine-tuned on computers/science/politics/songs-poems, 2 outliers from another initialisation on "
    "definitions/zippy; per-category next-token accuracy on disjoint search and report entries",
    "minilm": "the real all-MiniLM-L6-v2 fine-tuned on three binary tasks telling two Debian fortunes categories "
    "apart; accuracy per task on disjoint search and report entries",
}
PERF_DATA = (
    "no real data: 3 randomly initialised Llamas (hidden 512, 8 layers, vocabulary 32,000; 265 MB each) merged "
    "with one linear recipe; this measures merge cost, not quality"
)
PERF_MODEL = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
}
# arm key -> label prefix of the pipeline table (the full label carries the details of this zoo's run)
STEPS = {
    "best_single": "best single model",
    "merge_all": "merge-all (uniform linear)",
    "family_merge": "clustered selective merge",
    "mixture_block": "mixture, block level",
    "mixture_ffn": "mixture, FFN level",
    "mixture_model": "mixture, model level",
    "glue_final": "full Model-GLUE recipe",
}


def _diff(d, digits: int = 3) -> str:
    """A paired difference for running text ("identical" rather than the table's no-op flag)."""
    return "identical on every seed" if d is not None and d.identical else fmt_diff(d, digits)


def _fit(scores: dict, tasks=None) -> float:
    vals = [v for k, v in scores.items() if tasks is None or k in tasks]
    return sum(vals) / len(vals) if vals else math.nan


class Collector:
    """One zoo run's measurements: human-readable rows, margin checks and raw values (runs) per arm."""

    def __init__(self, zoo_name: str, seed: int | None, smoke: bool) -> None:
        self.zoo_name, self.seed, self.smoke = zoo_name, seed, smoke
        self.rows: list[dict] = []
        self.checks: list[dict] = []
        self.runs: list[dict] = []
        self.extra: dict = {}
        self.perf: dict = {}

    def row(self, name: str, value, **kw) -> None:
        self.rows.append({"quantity": name, "value": value, **kw})
        print(f"  {name}: {value}", flush=True)

    def check(self, name: str, ok: bool, detail: str, measured: float | None = None) -> None:
        self.checks.append({"check": name, "pass": bool(ok), "detail": detail, "measured": measured})
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    def measure(self, arm: str, extra: dict | None = None, **metrics) -> None:
        """A raw value set of this seed (floats rounded to 6 digits)."""
        clean = {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in metrics.items()}
        self.runs.append({"arm": arm, "seed": self.seed, "metrics": clean, "extra": extra or {}})

    def record(self) -> dict:
        return {"rows": self.rows, "checks": self.checks, "runs": self.runs, "extra": self.extra}


# ---- pipeline rows (any zoo) -------------------------------------------------------------------------


def pipeline_rows(b: Collector, zoo, work: Path, search_ev, report_ev, *, n_trials: int, seed: int) -> dict:
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
        seed=seed,
    )
    glue_s = time.perf_counter() - t0
    rep = res.report
    singles = {n: s["report"] for n, s in rep["single_scores"].items()}
    best_single = rep["best_single"]["model"]
    best = _fit(singles[best_single])
    table = {"best_single": (f"best single ({best_single}, chosen on search split)", singles[best_single])}

    try:
        merge_all = run_recipe(Recipe.linear(list(zoo.models.values())), work / "merge_all", write_card=False)
        table["merge_all"] = ("merge-all (uniform linear)", report_ev(merge_all))
    except ArchitectureMismatch as err:
        b.row("merge-all", f"n/a ({err})")
    fam_dirs = {f: work / "glue_work" / f for f, i in rep["families"].items() if i.get("search")}
    fam_dirs.update({f: zoo.models[i["model"]] for f, i in rep["families"].items() if not i.get("search")})
    fam_scores = {f: i["scores"]["report"] for f, i in rep["families"].items()}
    best_fam = max(fam_scores, key=lambda f: _fit(fam_scores[f]))
    table["family_merge"] = (f"clustered selective merge (best family: {best_fam})", fam_scores[best_fam])
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
                table[f"mixture_{level}"] = (
                    f"mixture, {level} level (top-1; experts: the {len(members)} members of {best_fam})",
                    report_ev(path),
                )
            except Exception as err:  # a level that cannot be built for this zoo is reported, not hidden
                b.row(f"mixture, {level} level", f"n/a ({type(err).__name__}: {err})")
    if mix:
        table["mixture_model"] = ("mixture, model level (io auto)", mix["report_scores"])
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
    table["glue_final"] = (f"full Model-GLUE recipe (final = {final})", res.final_report)
    out = {}
    for arm, (label, scores) in table.items():
        f = _fit(scores)
        pct = round(100 * (f - best) / best, 1) if best else None
        out[arm] = {
            "label": label,
            "mean": round(f, 4),
            "vs_best_single_pct": pct,
            "per_task": {k: round(v, 3) for k, v in scores.items()},
        }
        b.measure(
            arm,
            extra={"label": label},
            mean=f,
            vs_best_single_pct=pct,
            **{f"task_{k}": float(v) for k, v in scores.items()},
        )
    b.extra["pipeline"] = out
    b.extra["purity"] = (
        purity(rep["clustering"]["families"], zoo.truth_families) if zoo.truth_families else None
    )
    b.extra["clusters"] = rep["clustering"]["families"]
    b.extra["glue_seconds"] = round(glue_s, 1)
    b.extra["glue_timings"] = rep["timings"]
    b.measure(
        "glue_summary",
        purity=b.extra["purity"],
        routing_accuracy=b.extra.get("glue_routing_accuracy"),
        oracle=b.extra.get("oracle"),
        seconds=round(glue_s, 1),
        mixture_kept=bool(mix and mix["kept"]),
    )
    print(f"pipeline on {zoo.name} (report split, mean over {len(tasks)} categories):")
    for r in out.values():
        b.row(r["label"], r["mean"], vs_best_single_pct=r["vs_best_single_pct"])
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


# ---- calibration rows (synthetic zoo) ----------------------------------------------------------------


def synthetic_rows(
    b: Collector, zoo, work: Path, search_ev, report_ev, pipe: dict, *, n_trials: int, seed: int
) -> None:
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
    print("calibration rows (report split):")
    c = cluster_models(m, threshold=0.95)
    mat = c.matrix
    idx = {n: i for i, n in enumerate(mat.names)}
    inside_a = [float(mat.all[idx[x], idx[y]]) for x in from_a for y in from_a if x < y]
    inside_b = float(mat.all[idx["ft_N"], idx["ft_T"]])
    across = [float(mat.all[idx[x], idx[y]]) for x in from_a for y in ("ft_N", "ft_T")]
    b.row(
        "sim_all inside A (min–max) / inside B / across (max)",
        f"{min(inside_a):.3f}–{max(inside_a):.3f} / {inside_b:.3f} / {max(across):.3f}",
    )
    inside_min = min(min(inside_a), inside_b)
    b.check("min sim inside families >= 0.95", inside_min >= 0.95, f"{inside_min:.3f}", inside_min)
    b.check("max sim across families <= 0.05", max(across) <= 0.05, f"{max(across):.3f}", max(across))
    b.row("clusters at 0.95", c.families)
    truth = sorted(sorted(f) for f in zoo.truth_families)
    b.check("clusters equal ground truth", sorted(sorted(f) for f in c.families) == truth, str(c.families))
    delta = similarity_matrix({n: m[n] for n in from_a}, base=zoo.base)
    gi = [[float(delta.all[i, j]) for j in range(4) if j > i] for i in range(4)]
    goods = [v for r in gi for v in r]
    noise = [float(delta.all[4, j]) for j in range(4)]
    b.row(
        "delta-sim vs base_A: good fine-tunes / noise vs good",
        f"{min(goods):.2f}–{max(goods):.2f} / {min(noise):.2f} to {max(noise):.2f}",
    )
    b.measure(
        "similarity",
        inside_a_min=min(inside_a),
        inside_a_max=max(inside_a),
        inside_b=inside_b,
        across_max=max(across),
        delta_good_min=min(goods),
        delta_good_max=max(goods),
        delta_noise_min=min(noise),
        delta_noise_max=max(noise),
    )

    singles = {n: a_report(m[n]) for n in from_a}
    b.row("single models, mean over R/S/I/P", {n: round(_fit(s), 3) for n, s in singles.items()})
    for n, s in singles.items():
        b.measure(f"single_{n}", mean_RSIP=_fit(s))
    best_single = max(_fit(singles[n]) for n in good)

    def merged(recipe: Recipe, name: str) -> float:
        return _fit(a_report(run_recipe(recipe, work / name, write_card=False)))

    lin4 = merged(Recipe.linear([m[n] for n in good]), "lin4")
    lin5 = merged(Recipe.linear([m[n] for n in from_a]), "lin5")
    b.row("uniform linear of 4 good / of all 5", f"{lin4:.3f} / {lin5:.3f}")
    b.measure("linear_4_good", mean_RSIP=lin4)
    b.measure("linear_all_5", mean_RSIP=lin5)
    b.check("noise costs >= 0.2", lin4 - lin5 >= 0.2, f"{lin4 - lin5:.3f}", lin4 - lin5)
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
        tag = label.replace(" ", "_")
        for lam, v in zip(lams, ta, strict=True):
            b.measure(f"task_arithmetic_{lam:g}_{tag}", mean_RSIP=v)
        b.measure(f"ties_{tag}", mean_RSIP=ties)

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
        b.measure(
            f"heuristic_{strategy}",
            extra={"kept": [r.history[0]["init"], *r.accepted], "rejected": r.rejected, "weights": r.weights},
            mean_RSIP=rep,
            noise_weight=float(r.weights["ft_noise"]),
            seconds=round(secs, 2),
        )
        b.check(
            f"heuristic {strategy}: >= best single + 0.05",
            rep >= best_single + 0.05,
            f"{rep:.3f} vs {best_single:.3f}",
            rep - best_single,
        )
        b.check(
            f"heuristic {strategy}: noise rejected (weight 0)",
            r.weights["ft_noise"] == 0.0,
            str(r.weights["ft_noise"]),
            float(r.weights["ft_noise"]),
        )
        b.perf[f"heuristic_{strategy}_s"] = round(secs, 2)

    t = time.perf_counter()
    cma = evolutionary_merge(
        {n: m[n] for n in from_a}, a_search, n_trials=n_trials, seed=seed, log=work / "cma.jsonl"
    )
    secs = time.perf_counter() - t
    rep = merged(cma.recipe, "cma")
    b.row(
        f"CMA-ES linear, d=5, popsize 9, {n_trials} trials, seed {seed}",
        f"search {cma.fitness:.3f}, report {rep:.3f}; normalised noise weight {100 * cma.weights['ft_noise']:.1f}%; "
        f"{secs:.1f} s",
    )
    b.measure(
        "cmaes",
        extra={"weights": cma.weights},
        search=float(cma.fitness),
        mean_RSIP=rep,
        noise_weight=float(cma.weights["ft_noise"]),
        seconds=round(secs, 2),
    )
    b.check("CMA-ES: >= best single + 0.05", rep >= best_single + 0.05, f"{rep:.3f}", rep - best_single)
    b.check(
        "CMA-ES: noise weight <= 5%",
        cma.weights["ft_noise"] <= 0.05,
        f"{100 * cma.weights['ft_noise']:.1f}%",
        float(cma.weights["ft_noise"]),
    )
    b.perf["cmaes_s"] = round(secs, 2)

    fam_b = run_recipe(Recipe.linear([m["ft_N"], m["ft_T"]]), work / "fam_b", write_card=False)
    fb = SyntheticTaskEvaluator(FAMILY_B, "report", limit=lim)(fam_b)
    b.row("family-B merge (uniform N,T)", {k: round(v, 3) for k, v in fb.items()})
    b.measure("family_b_merge", **{f"task_{k}": float(v) for k, v in fb.items()})
    b.check("family-B merge: N, T >= 0.9", min(fb.values()) >= 0.9, str(fb), float(min(fb.values())))

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
    b.measure(
        "mixture_expert",
        routing=float(acc),
        mean=mean6,
        oracle=oracle,
        best_single=best6,
        **{f"task_{k}": float(v) for k, v in mix_scores.items()},
    )
    b.check("mixture routing >= 0.95", acc >= 0.95, f"{acc:.3f}", float(acc))
    b.check(
        "mixture >= 0.95 * oracle",
        mean6 >= 0.95 * oracle,
        f"{mean6:.3f} vs {oracle:.3f}",
        mean6 / oracle if oracle else None,
    )
    b.check(
        "mixture N, T >= 0.9",
        min(mix_scores["N"], mix_scores["T"]) >= 0.9,
        str(mix_scores),
        float(min(mix_scores["N"], mix_scores["T"])),
    )
    b.check(
        "mixture >= best single (6 tasks) + 0.2",
        mean6 >= best6 + 0.2,
        f"{mean6:.3f} vs {best6:.3f}",
        mean6 - best6,
    )

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
            b.measure(f"routing_{pool}_{bias}", **{f"k{k}": float(a) for k, a in enumerate(accs)})

    path, _ = mixture("mix_dense", level="model", io="dense")
    ds = report_ev(path)
    b.row("io=dense splice of family-B layers onto A (negative control)", f"N {ds['N']:.3f}, T {ds['T']:.3f}")
    b.measure("mixture_dense", **{f"task_{k}": float(v) for k, v in ds.items()})
    b.check(
        "io=dense negative control: N, T <= 0.1",
        max(ds["N"], ds["T"]) <= 0.1,
        str(ds),
        float(max(ds["N"], ds["T"])),
    )

    try:
        ffn = build_mixture(
            fam_a,
            [m[n] for n in good],
            work / "mix_ffn",
            level="ffn",
            top_k=1,
            prompts=[search_ev.prompts(t, 8) for t in FAMILY_A],
        )
        ffn_score = _fit(a_report(ffn))
        b.row(
            "FFN-level Mixtral (4 good fine-tunes, top-1, hidden gates), mean over R/S/I/P",
            round(ffn_score, 3),
        )
        b.measure("ffn_mixtral_4_good", mean_RSIP=ffn_score)
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


def perf_models(work: Path) -> list[Path]:
    """3 random Llamas (``PERF_MODEL``, init seeds 0-2), built once under ``work``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hubtools.merging.zoos.synthetic import make_tokenizer

    models = []
    for i in range(3):
        path = work / "perf_models" / f"perf_{i}"
        if not (path / "config.json").exists():
            torch.manual_seed(i)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            LlamaForCausalLM(LlamaConfig(**PERF_MODEL)).save_pretrained(tmp)
            make_tokenizer().save_pretrained(tmp)  # mergekit copies the tokenizer: part of the merge step
            tmp.replace(path)
        models.append(path.absolute())
    return models


def perf_runs(b: Collector, scratch: Path, models: list[Path], reps: int) -> None:
    """Merge step via hubtools vs mergekit directly (``reps`` alternating repeats), and the similarity pass."""
    from hubtools.merging.recipe import Recipe

    scratch.mkdir(parents=True, exist_ok=True)
    size = sum(f.stat().st_size for p in models for f in p.glob("*.safetensors"))
    recipe = scratch / "perf_recipe.yml"
    recipe.write_text(Recipe.linear(models, [0.5, 0.3, 0.2]).to_yaml())
    runs: dict[str, list[dict]] = {"mergekit": [], "hubtools": []}
    for r in range(reps):
        # alternate the order and flush dirty pages first, so neither side pays for the other's disk writes
        order = ("mergekit", "hubtools") if r % 2 == 0 else ("hubtools", "mergekit")
        for kind in order:
            os.sync()
            out = scratch / f"perf_out_{kind}_{r}"
            res = _spawn(kind, str(recipe), str(out))
            shutil.rmtree(out, ignore_errors=True)
            runs[kind].append(res)
            metrics = {
                "seconds": round(res["seconds"], 4),
                "peak_rss_increase_mb": round(res["peak_rss_mb"] - res["rss_before_mb"], 1),
            }
            if kind == "hubtools":
                metrics["outside_run_merge_s"] = round(res["seconds"] - res["inside_run_merge_s"], 4)
            # the seed field holds the repeat: both arms of one repeat are paired
            b.runs.append(
                {"arm": kind, "seed": r, "metrics": metrics, "extra": {"ran_first": kind == order[0]}}
            )
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
    b.runs.append(
        {
            "arm": "similarity",
            "seed": None,
            "metrics": {
                "seconds": b.perf["similarity"]["seconds"],
                "bytes_read": sim["bytes_read"],
                "peak_rss_increase_mb": b.perf["similarity"]["peak_rss_increase_mb"],
            },
            "extra": {},
        }
    )
    b.row(
        f"similarity pass ({len(models)} models, all pairs)",
        f"{sim['bytes_read'] / 1e6:.0f} MB read in {sim['seconds']:.2f} s; peak RSS increase "
        f"{sim['peak_rss_mb'] - sim['rss_before_mb']:.0f} MB",
    )


# ---- output -------------------------------------------------------------------------------------------


def load_zoo(name: str, cache: Path, scale: float, smoke: bool):
    """The zoo (built once under ``cache``; its folder name is a digest of its build settings) and its
    search / report evaluators."""
    if name == "synthetic":
        from hubtools.merging.zoos.synthetic import ZOO_TASKS, SyntheticTaskEvaluator, build_synthetic_zoo

        zoo = build_synthetic_zoo(cache, scale=scale)
        lim = 10 if smoke else None
        return (
            zoo,
            SyntheticTaskEvaluator(ZOO_TASKS, "search", limit=lim),
            SyntheticTaskEvaluator(ZOO_TASKS, "report", limit=lim),
        )
    if name == "fortunes":
        from hubtools.merging.zoos.fortunes import build_fortunes_zoo

        zoo = build_fortunes_zoo(cache, scale=scale)
    else:
        from hubtools.merging.zoos.minilm import build_minilm_zoo

        zoo = build_minilm_zoo(cache, scale=scale)
    return zoo, zoo.search, zoo.report


def run_zoo(bench: Benchmark, args, zoo, search_ev, report_ev, seed: int) -> dict:
    """Pipeline (and, on the synthetic zoo, calibration) rows at one search seed; cached under --work/runs."""
    key = {"zoo": args.zoo, "scale": args.scale, "n_trials": args.n_trials, "seed": seed, "smoke": args.smoke}
    folder, saved = bench.cached(f"{args.zoo}-s{seed}", key)
    if saved is not None:
        print(f"{args.zoo} seed {seed}: reusing {folder}", flush=True)
        return saved
    scratch = folder / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    b = Collector(args.zoo, seed, args.smoke)
    t = time.perf_counter()
    pipe = pipeline_rows(b, zoo, scratch, search_ev, report_ev, n_trials=args.n_trials, seed=seed)
    if args.zoo == "synthetic":
        synthetic_rows(b, zoo, scratch, search_ev, report_ev, pipe, n_trials=args.n_trials, seed=seed)
    record = {**b.record(), "perf": b.perf, "seconds": round(time.perf_counter() - t, 1)}
    shutil.rmtree(scratch, ignore_errors=True)  # merged models: the record holds every number
    Benchmark.save_record(folder, key, record, bench)
    return record


def _rows_table(records: dict[int, dict], title: str) -> dict:
    rows = [
        [
            r["quantity"],
            s,
            r["value"]
            if isinstance(r["value"], (int, float, str)) or r["value"] is None
            else json.dumps(r["value"], default=str),
        ]
        for s, rec in records.items()
        for r in rec["rows"]
    ]
    return {"title": title, "columns": ["quantity", "seed", "value"], "rows": rows}


def write_zoo(bench: Benchmark, args, records: dict[int, dict], zoo_s: float) -> list[str]:
    """``model_glue_<zoo>``: the pipeline table (paired over seeds vs the best single model), every measured
    row, the margin checks; returns the failed margins."""
    runs = [Run.model_validate(r) for rec in records.values() for r in rec["runs"]]
    last = records[max(records)]
    pipeline = last["extra"]["pipeline"]
    arms = list(pipeline)
    labels = {a: pipeline[a]["label"] for a in arms}
    tasks = list(pipeline["best_single"]["per_task"])
    table = arms_table(
        runs,
        ["mean", "vs_best_single_pct"],
        baseline="best_single",
        arms=arms,
        digits=3,
        labels={"mean": "mean score (report)", "vs_best_single_pct": "vs best single (%)"},
        diff_metrics=["mean"],
        title="Pipeline (report split, mean over the zoo's tasks)",
        extra_columns={"step": labels},
    )
    per_task = arms_table(
        runs,
        [f"task_{t}" for t in tasks],
        baseline="best_single",
        arms=arms,
        digits=3,
        labels={f"task_{t}": t for t in tasks},
        diff_metrics=[],
        title="Pipeline per task (report split)",
    )
    tables = [table, per_task, _rows_table(records, "Measured rows")]
    checks = [(s, c) for s, rec in records.items() for c in rec["checks"]]
    if checks:
        tables.append(
            {
                "title": "Calibration margins",
                "columns": ["margin", "seed", "result", "measured"],
                "rows": [[c["check"], s, "pass" if c["pass"] else "FAIL", c["detail"]] for s, c in checks],
            }
        )
    failed = sorted({c["check"] for _, c in checks if not c["pass"]})
    # a heatmap (steps × tasks) rather than grouped bars: the harness renderer keeps a heatmap's tick labels
    figure = {
        "file": f"model_glue_{args.zoo}.png",
        "title": f"{args.zoo}: score per task (report split, seed {max(records)})",
        "panels": [
            {
                "kind": "heatmap",
                "xlabel": "task",
                "matrix": [[pipeline[a]["per_task"].get(t) for t in tasks] for a in arms],
                "xticklabels": tasks,
                "yticklabels": [STEPS[a] for a in arms],
            }
        ],
    }
    final = values_by_seed(runs, "glue_final", "mean")
    single = values_by_seed(runs, "best_single", "mean")
    fam = values_by_seed(runs, "family_merge", "mean")
    d_final, d_fam = paired_by_seed(final, single), paired_by_seed(fam, single)
    purity = last["extra"]["purity"]
    seeds = sorted(records)
    headline = (
        f"{args.zoo}: full recipe {statistics.fmean(final.values()):.3f} vs best single "
        f"{statistics.fmean(single.values()):.3f} ({_diff(d_final)}); clustered selective merge "
        f"{_diff(d_fam)}; clustering purity {purity}"
    )
    verdict = (
        f"Full Model-GLUE recipe minus best single model (report split, paired over search seeds "
        f"{', '.join(map(str, seeds))}): {_diff(d_final)}; clustered selective merge: "
        f"{_diff(d_fam)}. "
    )
    if len(seeds) < 2:
        verdict += (
            "One search seed: the zoo is fixed and the heuristic search deterministic, so this is one "
            "measurement, not a spread over seeds. "
        )
    if checks:
        n = len({c["check"] for _, c in checks})
        verdict += (
            f"Calibration margins: all {n} pass."
            if not failed
            else f"Calibration margins: {len(failed)} of {n} FAIL: {', '.join(failed)}."
        )
        if args.smoke:
            verdict += " (Smoke run: tiny zoo, margins reported, not enforced.)"
    config = {
        "zoo": args.zoo,
        "scale": args.scale,
        "n_trials": args.n_trials,
        "threshold": 0.95,
        "search": "heuristic coefficient (glue default), acc order",
        "torch_threads": torch.get_num_threads(),
        "evaluator_limit": 10 if args.smoke and args.zoo == "synthetic" else None,
    }
    details = {
        "zoo_build_or_load_s": round(zoo_s, 1),
        "per_seed": {
            str(s): {
                "pipeline": rec["extra"]["pipeline"],
                "clusters": rec["extra"]["clusters"],
                "glue_timings": rec["extra"]["glue_timings"],
                "seconds": rec["seconds"],
                "timings": rec["perf"],
                "checks": rec["checks"],
            }
            for s, rec in records.items()
        },
        "failed_margins": failed,
    }
    bench.write(
        f"model_glue_{args.zoo}",
        title=f"Model-GLUE on the {args.zoo} zoo",
        data=ZOO_DATA[args.zoo],
        config=config,
        runs=runs,
        tables=tables,
        figures=[figure],
        headline=headline,
        verdict=verdict.strip(),
        details=details,
        seeds=seeds,
    )
    return failed


def write_perf(bench: Benchmark, args, b: Collector, models: list[Path], reps: int) -> None:
    runs = [Run.model_validate(r) for r in b.runs]
    merge, sim = b.perf["merge"], b.perf["similarity"]
    table = arms_table(
        runs,
        ["seconds", "peak_rss_increase_mb"],
        baseline="mergekit",
        arms=["mergekit", "hubtools"],
        digits=3,
        labels={"seconds": "merge s", "peak_rss_increase_mb": "peak RSS increase (MB)"},
        title=f"Merge step, {reps} alternating repeats in fresh processes",
        note="mean ± sample sd over repeats; Δ = paired difference per repeat (same recipe and "
        "inputs), mean with a percentile bootstrap 95 % CI; the target is on the median ratio.",
    )
    ratio = merge["ratio_hubtools_over_mergekit"]
    headline = (
        f"merge step hubtools / mergekit = {ratio:.3f} (median of {reps}; target <= 1.05); similarity "
        f"pass {sim['bytes_read'] / 1e6:.0f} MB in {sim['seconds']:.2f} s"
    )
    d = paired_by_seed(
        values_by_seed(runs, "hubtools", "seconds"), values_by_seed(runs, "mergekit", "seconds")
    )
    verdict = (
        f"Median time ratio {ratio:.3f} {'meets' if ratio <= 1.05 else 'misses'} the 1.05 target; paired "
        f"difference per repeat {_diff(d)} s; hubtools' own work outside mergekit's run_merge "
        f"{merge['hubtools_overhead_outside_run_merge_s']:.3f} s (median). Peak RSS increase "
        f"{merge['peak_rss_increase_mb']['hubtools']:.0f} vs {merge['peak_rss_increase_mb']['mergekit']:.0f} MB "
        f"for {merge['input_bytes'] / 1e6:.0f} MB of inputs. Timings depend on the machine's load."
    )
    config = {
        "models": PERF_MODEL if not args.smoke else "the first 3 models of the smoke zoo",
        "recipe": "linear, weights 0.5 / 0.3 / 0.2",
        "reps": reps,
        "threads": 1,
    }
    bench.write(
        "model_glue_perf",
        title="Model-GLUE merge cost: hubtools vs mergekit directly",
        data=PERF_DATA if not args.smoke else "the first 3 models of the smoke synthetic zoo (cost only)",
        config=config,
        runs=runs,
        tables=[table, _rows_table({0: {"rows": b.rows}}, "Measured rows")],
        headline=headline,
        verdict=verdict,
        details=b.perf,
        seeds=[],
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:  # one measured operation in a fresh interpreter (see _spawn)
        _child(argv[1], argv[2:])
        return 0
    bench = Benchmark(
        "model_glue",
        title="Model-GLUE",
        capability="merging",
        code=["hubtools/merging", "hubtools/data/offline.py"],
        default_seeds=[42],
    )
    p = bench.parser(__doc__)
    p.add_argument("--zoo", choices=["synthetic", "fortunes", "minilm"], default="synthetic")
    p.add_argument("--n-trials", type=int, default=None, help="CMA-ES trials (default 200; smoke 6)")
    p.add_argument(
        "--scale", type=float, default=None, help="zoo training steps × scale (default 1; smoke 0.08)"
    )
    p.add_argument(
        "--no-perf",
        action="store_true",
        help="skip the merge / similarity cost measurement (implied by --smoke)",
    )
    p.add_argument(
        "--perf-only", action="store_true", help="only the merge / similarity cost (model_glue_perf)"
    )
    args = bench.parse(p, argv)
    if args.device != "cpu":
        print(f"model_glue runs on the CPU (--device {args.device} ignored)", flush=True)
        args.device = "cpu"
    torch.set_num_threads(1)
    args.scale = args.scale if args.scale is not None else (0.08 if args.smoke else 1.0)
    args.n_trials = args.n_trials or (6 if args.smoke else 200)
    zoo_cache = args.work / "zoos"
    failed: list[str] = []
    zoo = None
    if not args.perf_only or args.smoke:  # the smoke perf rows merge the zoo's own models
        start = time.perf_counter()
        zoo, search_ev, report_ev = load_zoo(args.zoo, zoo_cache, args.scale, args.smoke)
        zoo_s = time.perf_counter() - start
    if not args.perf_only:
        records: dict[int, dict] = {}
        for seed in args.seeds:
            records[seed] = run_zoo(bench, args, zoo, search_ev, report_ev, seed)
            # written after every seed, so a cut-short run still reports
            failed = write_zoo(bench, args, records, zoo_s)
    if args.perf_only or not (args.no_perf or args.smoke):
        models = list(zoo.models.values())[:3] if args.smoke else perf_models(args.work)
        reps = 1 if args.smoke else 5
        b = Collector("perf", None, args.smoke)
        scratch = args.work / "perf_scratch"
        try:
            perf_runs(b, scratch, models, reps)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_perf(bench, args, b, models, reps)
    if failed and not args.smoke:
        print(f"FAILED margins: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    # As a script nothing may reach a Hub: a stray call fails at once (the test suite sets its own endpoint).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
