"""Dice of supervised-only vs. pseudo labels vs. Bayesian pseudo labels (soft and hard) on real data.

    python benchmarks/semiseg.py                               # 3 datasets x 5/10/25 % labelled x seeds 0 1 2 x 4 methods (~14 min, 2 cores)
    python benchmarks/semiseg.py --seeds 0 1 2 3 4 --datasets nuclei-2d
    python benchmarks/semiseg.py --smoke                       # one fraction, one seed, a few steps (< 60 s): the test runs this

Datasets (all real, offline): stardist nuclei (2D, 32x32 tiles, bottom quarter of the image is
test), nilearn MNI152 grey matter (2D axial slices at 4 mm; test slices carry a fixed
scan-variability corruption) and the same in 3D (z-slabs of 4 slices at 2 mm, random 4x32x32
training crops). The published pattern (EM-BPL-Semi-Seg README, MICCAI 2022): pseudo labels beat
supervised-only with few labels and the Bayesian version is at least as good.

Every method of a (dataset, labelled fraction) setting shares the seed (initial weights, batches), so
each is compared with supervised-only (and BPL-soft with PL) paired by seed, with a bootstrap 95 % CI.
The test Dice is also measured every fifth of the budget (deterministic, the weights are unchanged by
it); a setting whose supervised-only Dice curve has not plateaued (last 3 evaluations within 5 %) is
"budget insufficient" rather than evidence against the pattern.

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

METHODS = {  # name -> (method, pl_mode)
    "supervised": ("supervised", "soft"),
    "pl": ("pl", "soft"),
    "bpl-soft": ("bpl", "soft"),
    "bpl-hard": ("bpl", "hard"),
}
BASELINE = "supervised"
EVALS, SMOKE_EVALS = 5, 3  # test-Dice evaluations per run (the plateau check needs at least 3)
# Dataset settings: small U-Nets and patches so the full run fits ~10 minutes on 2 cores.
DATASETS = {
    "nuclei-2d": {
        "builder": "nuclei",
        "dims": 2,
        "width": 8,
        "depth": 3,
        "batch_size": 4,
        "crop": None,
        "augment": "flip",
        "steps": 200,
    },
    "mni-gm-2d": {
        "builder": "mni",
        "dims": 2,
        "width": 8,
        "depth": 3,
        "batch_size": 4,
        "crop": None,
        "augment": "scan",
        "steps": 200,
    },
    "mni-gm-3d": {
        "builder": "mni",
        "dims": 3,
        "width": 8,
        "depth": 2,
        "batch_size": 2,
        "crop": (4, 32, 32),
        "augment": "scan",
        "steps": 200,
    },
}


@lru_cache(maxsize=16)
def load(name: str, fraction: float):
    from hubtools.semiseg.data import mni_dataset, nuclei_dataset

    spec = DATASETS[name]
    if spec["builder"] == "nuclei":
        return nuclei_dataset(tile=32, labelled_fraction=fraction)
    if spec["dims"] == 2:
        return mni_dataset(dims=2, resolution=4, labelled_fraction=fraction)
    return mni_dataset(dims=3, resolution=2, block=4, labelled_fraction=fraction)


def run_one(job: dict) -> dict:
    """One training run in a worker process (one torch thread: fastest for tiny U-Nets on 2 cores)."""
    import json

    import torch

    torch.set_num_threads(1)
    from hubtools.semiseg.trainer import SemiSegTrainConfig, train_semiseg
    from hubtools.train import METRICS_FILE

    spec = DATASETS[job["dataset"]]
    data = load(job["dataset"], job["fraction"])
    method, pl_mode = METHODS[job["method"]]
    start = time.perf_counter()
    folder = Path(job["folder"])
    shutil.rmtree(folder, ignore_errors=True)
    cfg = SemiSegTrainConfig(
        output_dir=folder,
        method=method,
        pl_mode=pl_mode,
        seed=job["seed"],
        steps=job["steps"],
        width=spec["width"],
        depth=spec["depth"],
        batch_size=spec["batch_size"],
        crop=spec["crop"],
        augment=spec["augment"],
        resume=None,
        log_every=max(1, job["steps"] // 30),
        eval_every=max(1, job["steps"] // job["evals"]),
        overlays=False,
    )
    result = train_semiseg(data, cfg, save_artifact=False)
    records = [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]
    curve = [(r["step"], r["test/dice"]) for r in records if "test/dice" in r]
    shutil.rmtree(folder, ignore_errors=True)  # the record below is all the benchmark keeps
    return {
        **{k: v for k, v in job.items() if k != "folder"},
        "labelled": len(data.splits["labelled"].images),
        "pool": len(data.splits["labelled"].images) + len(data.splits["unlabelled"].images),
        "dice": result.scores["dice"],
        "iou": result.scores["iou"],
        "final_T_mu": result.threshold_history[-1]["T_mu"] if result.threshold_history else None,
        "T_mu_curve": [(h["step"], h["T_mu"]) for h in result.threshold_history],
        "dice_curve": curve,
        "seconds": round(time.perf_counter() - start, 2),
    }


def arm_name(dataset: str, fraction: float, method: str) -> str:
    """Arms are unique per setting, so the envelope's per-seed values never mix settings."""
    return f"{dataset}/{fraction:g}/{method}"


def settings_of(runs: list[Run]) -> list[tuple[str, float]]:
    keys = {(r.metrics["dataset"], r.metrics["fraction"]) for r in runs}
    return sorted(keys, key=lambda k: (list(DATASETS).index(k[0]), k[1]))


def compare(runs: list[Run], dataset: str, fraction: float) -> dict:
    """Paired differences of one setting (PL - supervised, BPL-soft - PL, BPL-soft - supervised) and the
    plateau of supervised-only's seed-mean test-Dice curve."""

    def diff(a: str, b: str) -> dict | None:
        d = paired_by_seed(values_by_seed(runs, arm_name(dataset, fraction, a), "dice"),
                           values_by_seed(runs, arm_name(dataset, fraction, b), "dice"))
        return d.as_dict() if d else None

    base = [r.extra["dice_curve"] for r in runs if r.arm == arm_name(dataset, fraction, BASELINE)]
    curve = np.mean([[v for _, v in c] for c in base], axis=0).tolist() if base else []
    p = plateau(curve)
    return {
        "dataset": dataset,
        "fraction": fraction,
        "pl_minus_supervised": diff("pl", BASELINE),
        "bpl_soft_minus_pl": diff("bpl-soft", "pl"),
        "bpl_soft_minus_supervised": diff("bpl-soft", BASELINE),
        "supervised_plateau": p.as_dict() | {"describe": p.describe("supervised-only's test Dice")},
        "supervised_mean_curve": curve,
    }


def verdict(comparisons: list[dict]) -> tuple[str, str]:
    """Whether the published pattern shows: PL above supervised-only and BPL-soft not below PL, each paired
    by seed with the 95 % CI deciding, in every setting whose supervised-only baseline had plateaued."""
    n = len(comparisons)

    def label(c: dict) -> str:
        return f"{c['dataset']} {c['fraction']:.0%}"

    pl_means = [c["pl_minus_supervised"]["mean"] for c in comparisons if c["pl_minus_supervised"]]
    headline = (
        f"PL - supervised-only test Dice: {min(pl_means):+.3f} to {max(pl_means):+.3f} over {n} setting(s) "
        f"({comparisons[0]['pl_minus_supervised']['n']} paired seed(s))"
    )
    if any(c["pl_minus_supervised"]["clear"] is None for c in comparisons if c["pl_minus_supervised"]):
        return headline, headline + ". One seed only: nothing is judged against seed noise."
    pl_above = [c for c in comparisons if c["pl_minus_supervised"]["clear"] and c["pl_minus_supervised"]["mean"] > 0]
    pl_below = [c for c in comparisons if c["pl_minus_supervised"]["clear"] and c["pl_minus_supervised"]["mean"] < 0]
    bpl_below = [c for c in comparisons if c["bpl_soft_minus_pl"]["clear"] and c["bpl_soft_minus_pl"]["mean"] < 0]
    judged = [c for c in comparisons if c["supervised_plateau"]["reached"]]
    unjudged = [c for c in comparisons if not c["supervised_plateau"]["reached"]]
    text = (
        f"PL above supervised-only beyond seed noise in {len(pl_above)}/{n} settings, below it in "
        f"{len(pl_below)}/{n}; BPL-soft below PL beyond seed noise in {len(bpl_below)}/{n}. "
    )
    shown = [c for c in judged if c in pl_above and c not in bpl_below]
    if unjudged:
        text += (
            f"{BUDGET_INSUFFICIENT} in {len(unjudged)}/{n} settings, where supervised-only had not plateaued "
            f"(last 3 test-Dice evaluations not within 5 %): {', '.join(label(c) for c in unjudged)}. "
        )
    if not judged:
        return headline, text + "Published pattern: budget insufficient in every setting (not judged)."
    if len(shown) == len(judged):
        return headline, text + f"Published pattern shown in all {len(judged)} judged setting(s)."
    return headline, text + (
        f"Published pattern NOT shown in {len(judged) - len(shown)} of the {len(judged)} settings whose "
        f"baseline plateaued: {', '.join(label(c) for c in judged if c not in shown)}."
    )


def results_table(runs: list[Run]) -> Table:
    """One block of rows per setting: each method's Dice (mean ± sample sd) and its paired Δ vs supervised."""
    rows, columns, note = [], None, ""
    for dataset, fraction in settings_of(runs):
        sub = [r for r in runs if r.metrics["dataset"] == dataset and r.metrics["fraction"] == fraction]
        first = sub[0].metrics
        arms = [arm_name(dataset, fraction, m) for m in METHODS if any(r.metrics["method"] == m for r in sub)]
        t = arms_table(
            sub, ["dice", "iou", "final_T_mu"], baseline=arm_name(dataset, fraction, BASELINE), arms=arms,
            digits=3, diff_metrics=["dice"], labels={"dice": "Dice", "iou": "IoU", "final_T_mu": "final mean T"},
            extra_columns={
                "data": dict.fromkeys(arms, dataset),
                "labelled": dict.fromkeys(arms, f"{first['labelled']}/{first['pool']} ({fraction:.0%})"),
            },
        )
        arm_col = t.columns.index("arm")
        for row in t.rows:
            row[arm_col] = row[arm_col].rsplit("/", 1)[1]
        columns = [c.replace(f" vs {arm_name(dataset, fraction, BASELINE)}", " vs supervised") for c in t.columns]
        rows += t.rows
        note = t.note
    return Table(title="Test Dice (binarised at p > 0.5)", columns=columns or [], rows=rows, note=note)


def figure(runs: list[Run], name: str) -> dict:
    settings = settings_of(runs)
    datasets = [d for d in DATASETS if any(s[0] == d for s in settings)]
    panels = []
    for dataset in datasets:
        fractions = [f for d, f in settings if d == dataset]
        series = []
        for m in METHODS:
            means, sds = [], []
            for f in fractions:
                vals = list(values_by_seed(runs, arm_name(dataset, f, m), "dice").values())
                means.append(float(np.mean(vals)) if vals else None)
                sds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else None)
            # the renderer's bar panel takes no missing error bars: none at all with one seed
            series.append({"label": m, "x": [f"{f:.0%}" for f in fractions], "y": means,
                           "yerr": sds if None not in sds else None})
        panels.append({"kind": "bar", "title": dataset, "series": series, "xlabel": "labelled fraction",
                       "ylabel": "test Dice (± sd)"})
    curves = []
    for dataset, fraction in settings:
        for m in (m for m in METHODS if m.startswith("bpl")):
            per_seed = [r.extra["T_mu_curve"] for r in runs
                        if r.arm == arm_name(dataset, fraction, m) and r.extra["T_mu_curve"]]
            if per_seed:
                steps = [s for s, _ in per_seed[0]]
                mu = np.mean([[v for _, v in c] for c in per_seed], axis=0).tolist()
                curves.append({"label": f"{dataset} {fraction:.0%} {m}", "x": steps, "y": mu, "style": "-"})
    panels.append({"kind": "line", "title": "mean of q(T) over training (seed mean)", "series": curves,
                   "xlabel": "step", "ylabel": "T_mu"})
    return {"file": f"{name}.png", "title": "Semi-supervised segmentation: test Dice by labelled fraction",
            "panels": panels}


def main(argv: list[str] | None = None) -> Path:
    bench = Benchmark(
        "semiseg",
        title="Bayesian pseudo labels vs supervised-only segmentation",
        capability="semiseg",
        code=["hubtools/semiseg", "hubtools/train", "hubtools/data/offline.py"],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.25])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=None, help="override every dataset's step count")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    args = bench.parse(parser, argv)
    if args.smoke:
        args.fractions, args.steps = [0.1], args.steps or 12
        if args.datasets == list(DATASETS):
            args.datasets = ["nuclei-2d", "mni-gm-3d"]
    evals = SMOKE_EVALS if args.smoke else EVALS
    jobs, runs = [], []
    for d in args.datasets:
        for f in args.fractions:
            for s in args.seeds:
                for m in METHODS:
                    job = {"dataset": d, "fraction": f, "seed": s, "method": m,
                           "steps": args.steps or DATASETS[d]["steps"], "evals": evals}
                    key = {**job, "spec": DATASETS[d], "method_mode": METHODS[m]}
                    folder, saved = bench.cached(f"{d}-{f:g}-{m}-s{s}", key)
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
                f"{run['method']}: dice {run['dice']:.4f} ({run['seconds']} s)",
                flush=True,
            )
    wall = time.perf_counter() - start
    envelope_runs = [
        Run(
            arm=arm_name(r["dataset"], r["fraction"], r["method"]),
            seed=r["seed"],
            metrics={k: r[k] for k in ("dataset", "fraction", "method", "labelled", "pool", "steps",
                                       "dice", "iou", "final_T_mu")},
            extra={k: r[k] for k in ("dice_curve", "T_mu_curve", "seconds")},
        )
        for r in sorted(runs, key=lambda r: (list(DATASETS).index(r["dataset"]), r["fraction"],
                                             list(METHODS).index(r["method"]), r["seed"]))
    ]
    comparisons = [compare(envelope_runs, d, f) for d, f in settings_of(envelope_runs)]
    headline, text = verdict(comparisons)
    name = "semiseg"
    path = bench.write(
        name,
        data="stardist's real nuclei image (Debian, 32x32 tiles; bottom quarter is test) and nilearn's MNI152 "
        "grey-matter template (2D axial slices at 4 mm, and z-slabs of 4 slices at 2 mm in 3D; test slices "
        "carry a fixed scan-variability corruption)",
        config={
            "datasets": {d: DATASETS[d] for d in args.datasets},
            "fractions": args.fractions,
            "steps": sorted({r.metrics["steps"] for r in envelope_runs}),
            "methods": METHODS,
            "evaluations_per_run": evals,
            "workers": args.workers,
            "torch_threads_per_run": 1,
        },
        runs=envelope_runs,
        tables=[results_table(envelope_runs)],
        figures=[figure(envelope_runs, name)],
        headline=headline,
        verdict=text,
        details={
            "comparisons": comparisons,
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
