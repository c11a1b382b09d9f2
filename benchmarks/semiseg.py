"""Dice of supervised-only vs. pseudo labels vs. Bayesian pseudo labels (soft and hard) on real data.

    python benchmarks/semiseg.py            # full: 3 datasets x 5/10/25% labelled x 3 seeds x 4 methods (~10 min, 2 cores)
    python benchmarks/semiseg.py --smoke    # one fraction, one seed, a few steps (< 60 s): the test runs this

Datasets (all real, offline): stardist nuclei (2D, 32x32 tiles, bottom quarter of the image is
test), nilearn MNI152 grey matter (2D axial slices at 4 mm; test slices carry a fixed
scan-variability corruption) and the same in 3D (z-slabs of 4 slices at 2 mm, random 4x32x32
training crops). The published pattern (EM-BPL-Semi-Seg README, MICCAI 2022): pseudo labels beat
supervised-only with few labels and the Bayesian version is at least as good. This script
reports what it measures and asserts nothing about it.

Writes ``semiseg.json`` (every run), ``semiseg.md`` (the table) and ``semiseg.png`` (Dice by
labelled fraction; learned threshold over training) under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

OUT_DEFAULT = Path(__file__).resolve().parent / "results"
METHODS = {  # name -> (method, pl_mode)
    "supervised": ("supervised", "soft"),
    "pl": ("pl", "soft"),
    "bpl-soft": ("bpl", "soft"),
    "bpl-hard": ("bpl", "hard"),
}
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
    import torch

    torch.set_num_threads(1)
    from hubtools.semiseg.trainer import SemiSegTrainConfig, train_semiseg

    spec = DATASETS[job["dataset"]]
    data = load(job["dataset"], job["fraction"])
    method, pl_mode = METHODS[job["method"]]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="semiseg-bench-") as tmp:
        cfg = SemiSegTrainConfig(
            output_dir=Path(tmp),
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
            overlays=False,
        )
        result = train_semiseg(data, cfg, save_artifact=False)
    return {
        **job,
        "labelled": len(data.splits["labelled"].images),
        "pool": len(data.splits["labelled"].images) + len(data.splits["unlabelled"].images),
        "dice": result.scores["dice"],
        "iou": result.scores["iou"],
        "final_T_mu": result.threshold_history[-1]["T_mu"] if result.threshold_history else None,
        "T_mu_curve": [(h["step"], h["T_mu"]) for h in result.threshold_history],
        "seconds": round(time.perf_counter() - start, 2),
    }


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted(
        {(r["dataset"], r["fraction"]) for r in runs}, key=lambda k: (list(DATASETS).index(k[0]), k[1])
    )
    for dataset, fraction in keys:
        group = [r for r in runs if r["dataset"] == dataset and r["fraction"] == fraction]
        row = {
            "dataset": dataset,
            "fraction": fraction,
            "labelled": group[0]["labelled"],
            "pool": group[0]["pool"],
        }
        for m in METHODS:
            dice = [r["dice"] for r in group if r["method"] == m]
            if dice:
                row[m] = (float(np.mean(dice)), float(np.std(dice)), len(dice))
            mus = [r["final_T_mu"] for r in group if r["method"] == m and r["final_T_mu"] is not None]
            if mus:
                row[f"{m}_T_mu"] = float(np.mean(mus))
        rows.append(row)
    return rows


def markdown(rows: list[dict], settings: str) -> str:
    lines = [
        "Test Dice, mean +- sd over seeds (binarised at p > 0.5). " + settings,
        "",
        "| data | labelled | " + " | ".join(METHODS) + " | final mean T (soft / hard) |",
        "|---|---|" + "---|" * len(METHODS) + "---|",
    ]
    for row in rows:
        cells = [f"{row[m][0]:.3f} +- {row[m][1]:.3f}" if m in row else "-" for m in METHODS]
        mus = f"{row.get('bpl-soft_T_mu', float('nan')):.4f} / {row.get('bpl-hard_T_mu', float('nan')):.4f}"
        lines.append(
            f"| {row['dataset']} | {row['labelled']}/{row['pool']} ({row['fraction']:.0%}) | "
            + " | ".join(cells)
            + f" | {mus} |"
        )
    return "\n".join(lines) + "\n"


def verdict(rows: list[dict]) -> str:
    """Whether the published pattern shows: PL > supervised and BPL >= PL, counted per (data, fraction)."""
    pl_wins = sum(r["pl"][0] > r["supervised"][0] for r in rows if "pl" in r and "supervised" in r)
    bpl_ok = sum(r["bpl-soft"][0] >= r["pl"][0] for r in rows if "bpl-soft" in r and "pl" in r)
    bpl_sup = sum(
        r["bpl-soft"][0] > r["supervised"][0] for r in rows if "bpl-soft" in r and "supervised" in r
    )
    n = len(rows)
    shown = pl_wins == n and bpl_ok == n
    return (
        f"PL > supervised in {pl_wins}/{n} settings; BPL-soft >= PL in {bpl_ok}/{n}; BPL-soft > supervised in "
        f"{bpl_sup}/{n}. Published pattern {'shown' if shown else 'NOT shown'} by this run."
    )


def plot(rows: list[dict], runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(1, len(datasets) + 1, figsize=(4 * (len(datasets) + 1), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=False):
        sub = [r for r in rows if r["dataset"] == dataset]
        x = np.arange(len(sub))
        for i, m in enumerate(METHODS):
            mean = [r[m][0] for r in sub]
            sd = [r[m][1] for r in sub]
            ax.bar(x + (i - 1.5) * 0.2, mean, 0.2, yerr=sd, label=m, capsize=2)
        ax.set_xticks(x, [f"{r['fraction']:.0%}" for r in sub])
        low = min(r[m][0] for r in sub for m in METHODS)
        ax.set_ylim(max(0.0, low - 0.15), 1.0)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("labelled fraction")
        ax.set_ylabel("test Dice")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    for r in runs:
        if r["method"].startswith("bpl") and r["T_mu_curve"]:
            steps, mu = zip(*r["T_mu_curve"], strict=True)
            ax.plot(steps, mu, color="C2" if r["method"] == "bpl-soft" else "C3", alpha=0.4, lw=0.8)
    ax.plot([], [], color="C2", label="bpl-soft")
    ax.plot([], [], color="C3", label="bpl-hard")
    ax.set_title("mean of q(T) over training (all BPL runs)", fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one fraction, one seed, few steps (< 60 s)")
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=None, help="override every dataset's step count")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.smoke:
        args.fractions, args.seeds, args.steps = [0.1], [0], args.steps or 12
        if args.datasets == list(DATASETS):
            args.datasets = ["nuclei-2d", "mni-gm-3d"]
    jobs = [
        {"dataset": d, "fraction": f, "seed": s, "method": m, "steps": args.steps or DATASETS[d]["steps"]}
        for d in args.datasets
        for f in args.fractions
        for s in args.seeds
        for m in METHODS
    ]
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    name = "semiseg_smoke" if args.smoke else "semiseg"
    runs = []
    with contextlib.ExitStack() as stack:
        if args.workers > 1:
            pool = stack.enter_context(mp.get_context("spawn").Pool(args.workers))
            results = pool.imap_unordered(run_one, jobs, chunksize=1)
        else:
            results = map(run_one, jobs)
        for run in results:  # a partial log survives an interrupted run
            runs.append(run)
            print(
                f"[{len(runs)}/{len(jobs)}] {run['dataset']} {run['fraction']:.0%} seed {run['seed']} "
                f"{run['method']}: dice {run['dice']:.4f} ({run['seconds']} s)",
                flush=True,
            )
            with (args.out / f"{name}_runs.jsonl").open("a" if len(runs) > 1 else "w") as f:
                f.write(json.dumps(run) + "\n")
    wall = time.perf_counter() - start
    rows = summarise(runs)
    cpu = sum(r["seconds"] for r in runs)
    settings = (
        f"{len(args.seeds)} seed(s) {args.seeds}; steps {sorted({j['steps'] for j in jobs})}; "
        f"{len(jobs)} runs in {wall:.0f} s wall ({args.workers} worker(s), 1 thread each; "
        f"{cpu:.0f} s summed over runs)."
    )
    table = markdown(rows, settings)
    summary = verdict(rows)
    report = {
        "settings": settings,
        "verdict": summary,
        "table": rows,
        "runs": runs,
        "wall_s": round(wall, 1),
        "smoke": args.smoke,
    }
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(table + "\n" + summary + "\n")
    plot(rows, runs, args.out / f"{name}.png")
    print(table)
    print(summary)
    print(f"wrote {args.out / name}.{{json,md,png}}")
    return report


if __name__ == "__main__":
    main()
