"""Label-limited segmentation: supervised-only vs pseudo labels (same-pass and teacher) vs Bayesian pseudo labels.

    python benchmarks/semiseg.py                         # MNI 2D + 3D, 3 seeds, 1000 steps (~1 h on 2 cores)
    python benchmarks/semiseg.py --datasets mni-gm-2d --fractions 0.05 0.1
    python benchmarks/semiseg.py --smoke                 # a few steps, one seed: the test suite runs this

Arms of each (dataset, labelled fraction) setting, all sharing a seed's initial weights and batches:

- ``supervised``: the labelled images only (the baseline every Δ is paired against);
- ``pl``: pseudo labels from the student's own forward pass on the same view, ramp at 20 % of the
  budget (the original method; the control that shows confirmation bias);
- ``teacher-pl``: pseudo labels from an EMA teacher on a weak view, student on a strong view,
  confident pixels only, ramp once the supervised loss plateaus (hubtools' default);
- ``bpl``: Bayesian pseudo labels (soft mode, threshold learned) with the same teacher (the default).

Each dataset also gets an upper-bound row: supervised with the whole training pool labelled
(labelled fraction 100 %). Labelled fractions that select the same number of images are run once.
A prior sweep (``--sweep``, default mni-gm-2d at 10 %) trains BPL with prior means mu0 = 0.3 and 0.7 and
the ``hard`` mode, which has no gradient to the threshold, to show where the learned threshold ends.

Data (real, offline): nilearn's MNI152 grey-matter template (2D axial slices at 4 mm; 3D z-slabs of
4 slices at 2 mm, random 4x32x32 crops; test slices carry a fixed scan-variability corruption), and
with ``--datasets nuclei-2d`` stardist's nuclei image (32x32 tiles, bottom quarter test), which is
saturated: supervised-only Dice is the same at 5 % and 25 % labels. Test Dice is measured ten times per run;
a setting whose supervised-only seed-mean curve has not plateaued (last 3 within 5 %) is
"budget insufficient". Acceptance (mni-gm-2d at 5 % and 10 %): teacher-pl and bpl each at least
supervised + 0.02 Dice on average with every seed's paired difference positive.

Writes ``semiseg.{json,md,png}`` under ``--out`` (default benchmarks/results) through the shared
harness (:mod:`hubtools.bench`); finished runs are cached under ``--work`` (``--reuse`` picks them up).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import shutil
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from hubtools.bench import Benchmark, Run, Table, arms_table, paired_by_seed, plateau, values_by_seed
from hubtools.bench.stats import BUDGET_INSUFFICIENT

# arm -> objective settings on top of the trainer's defaults
ARMS: dict[str, dict] = {
    "supervised": {"method": "supervised"},
    "pl": {"method": "pl", "teacher": "none", "confidence": 0.5, "warmup_trigger": "step"},
    "teacher-pl": {"method": "pl"},
    "bpl": {"method": "bpl", "pl_mode": "soft"},
}
SWEEP_MU0 = (0.3, 0.7)
BASELINE = "supervised"
ACCEPT = {"datasets": ("mni-gm-2d",), "fractions": (0.05, 0.1), "arms": ("teacher-pl", "bpl"), "margin": 0.02}
EVALS, SMOKE_EVALS = 10, 3
FULL_POOL = 1.0
DATASETS = {
    "mni-gm-2d": {"dims": 2, "width": 8, "depth": 3, "batch_size": 4, "crop": None, "augment": "scan"},
    "mni-gm-3d": {"dims": 3, "width": 8, "depth": 2, "batch_size": 2, "crop": (4, 32, 32), "augment": "scan"},
    "nuclei-2d": {"dims": 2, "width": 8, "depth": 3, "batch_size": 4, "crop": None, "augment": "flip"},
}
# nuclei is saturated (supervised Dice the same at 5 % and 25 % labels), so it runs only when asked for
DEFAULT_DATASETS = ["mni-gm-2d", "mni-gm-3d"]
DATA_TEXT = {
    "mni-gm-2d": "nilearn MNI152 2009a T1 at 4 mm, grey matter > 0.5, axial slices in blocks of 2, every third "
    "block test (test slices carry a fixed scan-variability corruption)",
    "mni-gm-3d": "the same template at 2 mm in z-slabs of 4 slices, every third slab test, 4x32x32 training crops",
    "nuclei-2d": "stardist img2d.tif nuclei (DSB2018) in 32x32 tiles, bottom quarter test",
}


@lru_cache(maxsize=16)
def load(name: str, fraction: float):
    from hubtools.semiseg.data import mni_dataset, nuclei_dataset

    if name == "nuclei-2d":
        return nuclei_dataset(tile=32, labelled_fraction=fraction)
    if name == "mni-gm-2d":
        return mni_dataset(dims=2, resolution=4, labelled_fraction=fraction)
    return mni_dataset(dims=3, resolution=2, block=4, labelled_fraction=fraction)


def arm_settings(arm: str) -> dict:
    """The objective settings of an arm, sweep arms included (``bpl-mu0.3``, ``bpl-hard``)."""
    if arm in ARMS:
        return ARMS[arm]
    if arm == "bpl-hard":
        return {"method": "bpl", "pl_mode": "hard"}
    if arm.startswith("bpl-mu"):
        return {"method": "bpl", "pl_mode": "soft", "prior_mu": float(arm.removeprefix("bpl-mu"))}
    raise ValueError(f"unknown arm {arm!r}")


def run_one(job: dict) -> dict:
    """One training run in a worker process (one torch thread: fastest for tiny U-Nets on 2 cores)."""
    import json

    import torch

    torch.set_num_threads(1)
    from hubtools.semiseg.trainer import SemiSegTrainConfig, train_semiseg
    from hubtools.train import METRICS_FILE

    spec = DATASETS[job["dataset"]]
    data = load(job["dataset"], job["fraction"])
    start = time.perf_counter()
    folder = Path(job["folder"])
    shutil.rmtree(folder, ignore_errors=True)
    cfg = SemiSegTrainConfig(
        output_dir=folder,
        seed=job["seed"],
        steps=job["steps"],
        width=spec["width"],
        depth=spec["depth"],
        batch_size=spec["batch_size"],
        crop=spec["crop"],
        augment=spec["augment"],
        resume=None,
        log_every=max(1, job["steps"] // 50),
        eval_every=max(1, job["steps"] // job["evals"]),
        overlays=False,
        **arm_settings(job["arm"]),
    )
    result = train_semiseg(data, cfg, save_artifact=False)
    records = [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]
    curve = [(r["step"], r["test/dice"]) for r in records if "test/dice" in r]
    pl_fg = [
        (r["step"], r["pl_foreground"]) for r in records if "pl_foreground" in r and r.get("alpha", 0) > 0
    ]
    shutil.rmtree(folder, ignore_errors=True)  # the record below is all the benchmark keeps
    labelled = data.splits["labelled"]
    return {
        **{k: v for k, v in job.items() if k != "folder"},
        "labelled": len(labelled.images),
        "pool": len(labelled.images) + len(data.splits["unlabelled"].images),
        "labelled_foreground": float((labelled.masks > 0).mean()),
        "dice": result.scores["dice"],
        "iou": result.scores["iou"],
        "final_T_mu": result.threshold_history[-1]["T_mu"] if result.threshold_history else None,
        "prior_mu": cfg.prior_mu if cfg.method == "bpl" else None,
        "pl_start": result.pl_start if cfg.method != "supervised" else None,
        "final_pl_foreground": pl_fg[-1][1] if pl_fg else None,
        "T_mu_curve": [(h["step"], h["T_mu"]) for h in result.threshold_history],
        "dice_curve": curve,
        "seconds": round(time.perf_counter() - start, 2),
    }


def arm_name(dataset: str, fraction: float, arm: str) -> str:
    """Arms are unique per setting, so the envelope's per-seed values never mix settings."""
    return f"{dataset}/{fraction:g}/{arm}"


def settings_of(runs: list[Run]) -> list[tuple[str, float]]:
    keys = {(r.metrics["dataset"], r.metrics["fraction"]) for r in runs}
    return sorted(keys, key=lambda k: (list(DATASETS).index(k[0]), k[1]))


def arms_of(runs: list[Run], dataset: str, fraction: float) -> list[str]:
    present = {
        r.metrics["method"]
        for r in runs
        if r.metrics["dataset"] == dataset and r.metrics["fraction"] == fraction
    }
    extra = sorted(present - set(ARMS), key=lambda a: (a == "bpl-hard", a))
    return [a for a in ARMS if a in present] + extra


def compare(runs: list[Run], dataset: str, fraction: float) -> dict:
    """Paired differences of one setting against supervised-only (and teacher-pl against pl), plus the
    plateau of supervised-only's seed-mean test-Dice curve."""

    def diff(a: str, b: str) -> dict | None:
        d = paired_by_seed(
            values_by_seed(runs, arm_name(dataset, fraction, a), "dice"),
            values_by_seed(runs, arm_name(dataset, fraction, b), "dice"),
        )
        if d is None:
            return None
        per_seed = {
            s: values_by_seed(runs, arm_name(dataset, fraction, a), "dice")[s]
            - values_by_seed(runs, arm_name(dataset, fraction, b), "dice")[s]
            for s in sorted(
                set(values_by_seed(runs, arm_name(dataset, fraction, a), "dice"))
                & set(values_by_seed(runs, arm_name(dataset, fraction, b), "dice"))
            )
        }
        return d.as_dict() | {"per_seed": per_seed}

    base = [r.extra["dice_curve"] for r in runs if r.arm == arm_name(dataset, fraction, BASELINE)]
    curve = np.mean([[v for _, v in c] for c in base], axis=0).tolist() if base else []
    p = plateau(curve)
    arms = [a for a in arms_of(runs, dataset, fraction) if a != BASELINE]
    return {
        "dataset": dataset,
        "fraction": fraction,
        "vs_supervised": {a: diff(a, BASELINE) for a in arms},
        "teacher_pl_minus_pl": diff("teacher-pl", "pl") if {"teacher-pl", "pl"} <= set(arms) else None,
        "supervised_plateau": p.as_dict() | {"describe": p.describe("supervised-only's test Dice")},
        "supervised_mean_curve": curve,
    }


def acceptance(comparisons: list[dict]) -> dict:
    """The issue's bar: on mni-gm-2d 5 % and 10 %, teacher-pl and bpl >= supervised + 0.02 on average
    with every seed's paired difference positive."""
    checks = []
    for c in comparisons:
        if c["dataset"] not in ACCEPT["datasets"] or not any(
            abs(c["fraction"] - f) < 1e-9 for f in ACCEPT["fractions"]
        ):
            continue
        for arm in ACCEPT["arms"]:
            d = c["vs_supervised"].get(arm)
            if d is None:
                continue
            ok = d["mean"] >= ACCEPT["margin"] and all(v > 0 for v in d["per_seed"].values()) and d["n"] >= 3
            checks.append(
                {
                    "setting": f"{c['dataset']} {c['fraction']:.0%}",
                    "arm": arm,
                    "mean": d["mean"],
                    "seeds_positive": sum(v > 0 for v in d["per_seed"].values()),
                    "n": d["n"],
                    "met": ok,
                }
            )
    return {"rule": ACCEPT, "checks": checks, "met": bool(checks) and all(c["met"] for c in checks)}


def verdict(comparisons: list[dict]) -> tuple[str, str]:
    """Headline: the acceptance settings; text: every setting's gains and losses beyond seed noise."""
    acc = acceptance(comparisons)
    parts = [
        f"{c['setting']} {c['arm']} {c['mean']:+.3f} ({c['seeds_positive']}/{c['n']} seeds > 0)"
        for c in acc["checks"]
    ]
    headline = "Δ test Dice vs supervised-only: " + (
        "; ".join(parts) if parts else "no acceptance setting in this run"
    )
    lines = []
    for c in comparisons:
        if c["fraction"] == FULL_POOL:
            continue
        label = f"{c['dataset']} {c['fraction']:.0%}"
        diffs = [
            f"{a} {d['mean']:+.3f}"
            + ("" if d["clear"] is None else (" (CI excludes 0)" if d["clear"] else " (CI includes 0)"))
            for a, d in c["vs_supervised"].items()
            if d and not a.startswith("bpl-")
        ]
        note = (
            ""
            if c["supervised_plateau"]["reached"]
            else f" [{BUDGET_INSUFFICIENT}: supervised-only had not plateaued]"
        )
        lines.append(f"{label}: {', '.join(diffs)}{note}")
    if any(d["n"] < 2 for c in comparisons for d in c["vs_supervised"].values() if d):
        lines.append("One seed only: nothing is judged against seed noise.")
    if acc["checks"]:
        lines.append(
            "Acceptance (teacher-pl and bpl >= supervised + 0.02 on mni-gm-2d 5 % and 10 %, every seed "
            "positive): " + ("met." if acc["met"] else "NOT met.")
        )
    return headline, " ".join(lines)


def results_table(runs: list[Run]) -> Table:
    """One block of rows per setting: each arm's Dice (mean ± sample sd) and its paired Δ vs supervised."""
    rows, columns, note = [], None, ""
    for dataset, fraction in settings_of(runs):
        sub = [r for r in runs if r.metrics["dataset"] == dataset and r.metrics["fraction"] == fraction]
        first = sub[0].metrics
        arms = [arm_name(dataset, fraction, a) for a in arms_of(runs, dataset, fraction)]
        t = arms_table(
            sub,
            ["dice", "iou", "final_T_mu", "pl_start"],
            baseline=arm_name(dataset, fraction, BASELINE),
            arms=arms,
            digits=3,
            diff_metrics=["dice"],
            labels={"dice": "Dice", "iou": "IoU", "final_T_mu": "final mean T", "pl_start": "PL from step"},
            extra_columns={
                "data": dict.fromkeys(arms, dataset),
                "labelled": dict.fromkeys(arms, f"{first['labelled']}/{first['pool']} ({fraction:.0%})"),
            },
        )
        arm_col = t.columns.index("arm")
        for row in t.rows:
            row[arm_col] = row[arm_col].rsplit("/", 1)[1]
            if fraction == FULL_POOL:
                row[arm_col] = "supervised, whole pool labelled (upper bound)"
        columns = [
            c.replace(f" vs {arm_name(dataset, fraction, BASELINE)}", " vs supervised") for c in t.columns
        ]
        rows += t.rows
        note = t.note
    note += (
        " final mean T: the threshold posterior's mean at the end (bpl-hard's is not learned: the prior)."
        " PL from step: where the pseudo-label ramp started."
    )
    return Table(title="Test Dice (binarised at p > 0.5)", columns=columns or [], rows=rows, note=note)


def sweep_table(runs: list[Run]) -> Table | None:
    rows = []
    for r in runs:
        if r.metrics["method"].startswith("bpl") and r.metrics["prior_mu"] is not None:
            rows.append(r)
    if not any(r.metrics["method"].startswith("bpl-") for r in rows):
        return None
    out = []
    for dataset, fraction in settings_of(runs):
        for arm in arms_of(runs, dataset, fraction):
            if not arm.startswith("bpl"):
                continue
            sub = [r for r in rows if r.arm == arm_name(dataset, fraction, arm)]
            if not sub:
                continue
            t_end = [r.metrics["final_T_mu"] for r in sub]
            out.append(
                [
                    f"{dataset} {fraction:.0%}",
                    arm,
                    sub[0].metrics["prior_mu"],
                    f"{np.mean(t_end):.3f} ± {np.std(t_end, ddof=1) if len(t_end) > 1 else 0:.3f}",
                    f"{np.mean(t_end) - sub[0].metrics['prior_mu']:+.3f}",
                    f"{np.mean([r.metrics['dice'] for r in sub]):.3f}",
                ]
            )
    return Table(
        title="Where the learned threshold ends (prior sweep)",
        columns=["setting", "arm", "prior mean mu0", "final mean T (± sd over seeds)", "T - mu0", "Dice"],
        rows=out,
        note="prior sd sigma0 = 0.1 in every arm; bpl-hard has no gradient to T (only the KL).",
    )


def figure(runs: list[Run], name: str) -> dict:
    settings = settings_of(runs)
    datasets = [d for d in DATASETS if any(s[0] == d for s in settings)]
    panels = []
    for dataset in datasets:
        fractions = [f for d, f in settings if d == dataset and f != FULL_POOL]
        series = []
        for m in ARMS:
            means, sds = [], []
            for f in fractions:
                vals = list(values_by_seed(runs, arm_name(dataset, f, m), "dice").values())
                means.append(float(np.mean(vals)) if vals else None)
                sds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else None)
            series.append(
                {
                    "label": m,
                    "x": [f"{f:.0%}" for f in fractions],
                    "y": means,
                    "yerr": sds if None not in sds else None,
                }
            )
        panels.append(
            {
                "kind": "bar",
                "title": dataset,
                "series": series,
                "xlabel": "labelled fraction",
                "ylabel": "test Dice (± sd)",
            }
        )
    curves = []
    for dataset, fraction in settings:
        for m in (m for m in arms_of(runs, dataset, fraction) if m.startswith("bpl")):
            per_seed = [
                r.extra["T_mu_curve"]
                for r in runs
                if r.arm == arm_name(dataset, fraction, m) and r.extra["T_mu_curve"]
            ]
            if per_seed:
                steps = [s for s, _ in per_seed[0]]
                mu = np.mean([[v for _, v in c] for c in per_seed], axis=0).tolist()
                curves.append({"label": f"{dataset} {fraction:.0%} {m}", "x": steps, "y": mu, "style": "-"})
    panels.append(
        {
            "kind": "line",
            "title": "mean of q(T) over training (seed mean)",
            "series": curves,
            "xlabel": "step",
            "ylabel": "T_mu",
        }
    )
    return {
        "file": f"{name}.png",
        "title": "Semi-supervised segmentation: test Dice by labelled fraction",
        "panels": panels,
    }


def plan(args, bench: Benchmark) -> list[tuple[str, float, str]]:
    """(dataset, fraction, arm) to run: distinct labelled counts only, the full-pool row, the sweep."""
    out = []
    for d in args.datasets:
        seen = set()
        for f in sorted(args.fractions):
            n = len(load(d, f).splits["labelled"].images)
            if n in seen:
                print(
                    f"{d}: fraction {f:g} labels {n} image(s), as a smaller fraction does: skipped",
                    flush=True,
                )
                continue
            seen.add(n)
            out += [(d, f, a) for a in ARMS]
        if not args.smoke:
            out.append((d, FULL_POOL, BASELINE))
    if args.sweep and not args.smoke:
        d, f = args.sweep[0], float(args.sweep[1])
        out += [(d, f, f"bpl-mu{mu:g}") for mu in SWEEP_MU0] + [(d, f, "bpl-hard")]
    return out


def main(argv: list[str] | None = None) -> Path:
    bench = Benchmark(
        "semiseg",
        title="Pseudo labels, teacher pseudo labels and Bayesian pseudo labels vs supervised-only segmentation",
        capability="semiseg",
        # the modules that produce the numbers (not the CLI, predict, plots or demo)
        code=[
            *(
                f"hubtools/semiseg/{m}.py"
                for m in (
                    "configuration_semiseg_unet",
                    "data",
                    "losses",
                    "metrics",
                    "modeling_semiseg_unet",
                    "objective",
                    "teacher",
                    "trainer",
                )
            ),
            "hubtools/train",
            "hubtools/data/offline.py",
        ],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.25])
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps per run")
    parser.add_argument(
        "--sweep",
        nargs=2,
        default=["mni-gm-2d", "0.1"],
        metavar=("DATASET", "FRACTION"),
        help="setting of the prior-mean sweep (BPL with mu0 in 0.3..0.7 and the hard mode)",
    )
    parser.add_argument("--no-sweep", dest="sweep", action="store_const", const=None)
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    args = bench.parse(parser, argv)
    if args.smoke:
        args.fractions, args.steps = [0.1], 12
        if args.datasets == DEFAULT_DATASETS:
            args.datasets = ["nuclei-2d", "mni-gm-3d"]
    evals = SMOKE_EVALS if args.smoke else EVALS
    jobs, runs = [], []
    for d, f, arm in plan(args, bench):
        for s in args.seeds:
            job = {"dataset": d, "fraction": f, "seed": s, "arm": arm, "steps": args.steps, "evals": evals}
            key = {**job, "spec": DATASETS[d], "settings": arm_settings(arm)}
            folder, saved = bench.cached(f"{d}-{f:g}-{arm}-s{s}", key)
            if saved is not None:
                runs.append(saved)
            else:
                jobs.append((folder, key, {**job, "folder": str(folder / "run")}))
    total = len(jobs) + len(runs)
    if runs:
        print(f"reusing {len(runs)} finished run(s) from {args.work}", flush=True)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(mp.get_context("spawn").Pool(args.workers))
            results = pool.imap(run_one, [j for _, _, j in jobs], chunksize=1)
        else:
            results = map(run_one, [j for _, _, j in jobs])
        for (folder, key, _), run in zip(jobs, results, strict=True):
            Benchmark.save_record(folder, key, run, bench)
            runs.append(run)
            print(
                f"[{len(runs)}/{total}] {run['dataset']} {run['fraction']:.0%} seed {run['seed']} "
                f"{run['arm']}: dice {run['dice']:.4f} ({run['seconds']} s)",
                flush=True,
            )
    wall = time.perf_counter() - start
    arm_order = {a: i for i, a in enumerate([*ARMS, *(f"bpl-mu{m:g}" for m in SWEEP_MU0), "bpl-hard"])}
    envelope_runs = [
        Run(
            arm=arm_name(r["dataset"], r["fraction"], r["arm"]),
            seed=r["seed"],
            metrics={
                "method": r["arm"],
                **{
                    k: r[k]
                    for k in (
                        "dataset",
                        "fraction",
                        "labelled",
                        "pool",
                        "steps",
                        "dice",
                        "iou",
                        "final_T_mu",
                        "prior_mu",
                        "pl_start",
                        "final_pl_foreground",
                        "labelled_foreground",
                    )
                },
            },
            extra={k: r[k] for k in ("dice_curve", "T_mu_curve", "seconds")},
        )
        for r in sorted(
            runs,
            key=lambda r: (list(DATASETS).index(r["dataset"]), r["fraction"], arm_order[r["arm"]], r["seed"]),
        )
    ]
    comparisons = [compare(envelope_runs, d, f) for d, f in settings_of(envelope_runs)]
    headline, text = verdict(comparisons)
    tables = [results_table(envelope_runs)]
    sweep = sweep_table(envelope_runs)
    if sweep is not None:
        tables.append(sweep)
    name = "semiseg"
    path = bench.write(
        name,
        data="; ".join(f"{d}: {DATA_TEXT[d]}" for d in args.datasets),
        config={
            "datasets": {d: DATASETS[d] for d in args.datasets},
            "fractions": args.fractions,
            "steps": args.steps,
            "arms": {a: arm_settings(a) for a in dict.fromkeys(r["arm"] for r in runs)},
            "sweep": args.sweep,
            "evaluations_per_run": evals,
            "workers": args.workers,
            "torch_threads_per_run": 1,
        },
        runs=envelope_runs,
        tables=tables,
        figures=[figure(envelope_runs, name)],
        headline=headline,
        verdict=text,
        details={
            "comparisons": comparisons,
            "acceptance": acceptance(comparisons),
            "trained_runs": len(jobs),
            "reused_runs": total - len(jobs),
            "training_wall_s": round(wall, 1),
            "summed_run_s": round(sum(r["seconds"] for r in runs), 1),
        },
    )
    print((Path(args.out) / f"{name}.md").read_text())
    return path


if __name__ == "__main__":
    main()
