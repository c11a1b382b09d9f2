"""Multi-label long-tail losses on real MRI patches: BCE vs Asymmetric Loss vs Distribution-Balanced Loss.

Data (real, offline): 32-px brain-MRI patches cut from Debian mricron-data's ch2 template (every 8th
axial slice, 8-voxel grid), each labelled with every AAL region that fills at least 5 % of its
in-brain voxels (:mod:`hubtools.data.mri_multilabel`): 116 labels, about 3.4 per patch, train
positives per label from ~170 down to a handful. Every arm trains the same tiny random-init
ResNet (transformers ``ResNetConfig``) with the same epochs, batch, lr and seed through
:func:`hubtools.longtail.multilabel.train_multilabel`; only the loss differs. Test metrics at the
epoch with the best validation mAP: mAP, many/medium/few mAP (groups by train positives: > 100,
20-100, < 20), micro/macro F1 at 0.5, macro AUROC. ASL and DB are compared with BCE by the paired
per-seed difference and its bootstrap 95 % CI (mAP and few-group mAP).

    python benchmarks/longtail_multilabel.py                  # 3 losses x seeds 1 2 3 (about 8-9 min on one core)
    python benchmarks/longtail_multilabel.py --smoke          # 1 epoch, seed 1 (< 60 s); writes to a temp folder
    python benchmarks/longtail_multilabel.py --losses bce asl --seeds 1 --reuse

Writes ``benchmarks/results/longtail_multilabel.{json,md,png}`` through :mod:`hubtools.bench`; the set is
built once and finished runs are cached under ``--work``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from longtail_mri import BACKBONE, smoothed  # the single-label benchmark's model and plateau smoothing

from hubtools.bench import Benchmark, Run, arms_table, budget_verdict, paired_by_seed, values_by_seed

LOSSES = ["bce", "asl", "distribution_balanced"]
BASELINE = "bce"
DATA_OPTIONS = {"patch_size": 32, "stride": 8, "slice_step": 8, "axis": 2, "min_fraction": 0.05}
BATCH_SIZE, LR = 64, 1e-3
KEYS = ["map", "many_map", "medium_map", "few_map", "micro_f1", "macro_f1", "macro_auroc"]
LABELS = {
    "map": "mAP",
    "many_map": "many mAP",
    "medium_map": "medium mAP",
    "few_map": "few mAP",
    "micro_f1": "micro F1",
    "macro_f1": "macro F1",
    "macro_auroc": "macro AUROC",
}
DIFF_KEYS = ["map", "few_map"]


def run_arm(bench: Benchmark, dataset: Path, loss: str, seed: int, args) -> dict:
    """Train one (loss, seed), or pick it up from the cache with ``--reuse``."""
    from hubtools.longtail.multilabel import MultiLabelTrainConfig, train_multilabel

    key = {
        "data": DATA_OPTIONS,
        "loss": loss,
        "seed": seed,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "backbone": BACKBONE,
        "batch_size": BATCH_SIZE,
        "lr": LR,
    }
    folder, saved = bench.cached(f"{loss}-s{seed}", key)
    if saved is not None and (Path(saved["folder"]) / "metrics.json").is_file():
        return saved
    shutil.rmtree(folder, ignore_errors=True)
    cfg = MultiLabelTrainConfig(
        dataset=str(dataset),
        loss=loss,
        backbone=BACKBONE,
        output_dir=folder / "run",
        image_size=args.image_size,
        num_epochs=args.epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        seed=seed,
    )
    start = time.perf_counter()
    model = train_multilabel(cfg)
    record = {"folder": str(model), "seconds": round(time.perf_counter() - start, 1)}
    Benchmark.save_record(folder, key, record, bench)
    test = json.loads((model / "metrics.json").read_text())["test"]
    print(
        f"seed {seed} {loss}: mAP {test['map']:.2f} few {test['few_map']:.2f} ({record['seconds']} s)",
        flush=True,
    )
    return record


def bce_curve(folders: list[Path]) -> list[float]:
    """BCE's validation mAP after each epoch, mean over the seeds' runs."""
    curves = []
    for folder in folders:
        rows = [
            json.loads(x) for x in (folder.parent / "metrics.jsonl").read_text().splitlines() if x.strip()
        ]
        curves.append([r["val_map"] for r in rows if "val_map" in r])
    n = min((len(c) for c in curves), default=0)
    return np.mean([c[:n] for c in curves], axis=0).round(3).tolist() if n else []


def verdict(runs: list[Run], losses: list[str], curve: list[float] | None = None) -> tuple[str, str, dict]:
    """Headline, verdict and each loss's paired gain over BCE in mAP and few-group mAP.

    A loss is *clearly* better than BCE when the bootstrap 95 % CI of its paired gain excludes zero
    on both mAP and few-group mAP; with one seed nothing is judged. ``curve`` is BCE's validation mAP
    by epoch: when its 3-epoch moving average has not plateaued the verdict says "budget insufficient".
    """
    gains = {}
    for loss in losses:
        if loss == BASELINE:
            continue
        gains[loss] = {}
        for k in DIFF_KEYS:
            d = paired_by_seed(values_by_seed(runs, loss, k), values_by_seed(runs, BASELINE, k))
            gains[loss][k] = d.as_dict() if d else None
    if not gains:
        return "only BCE ran", "only BCE ran: no comparison.", gains
    best = max(gains, key=lambda m: gains[m]["map"]["mean"] if gains[m]["map"] else -1e9)
    b, f = gains[best]["map"], gains[best]["few_map"]
    lead = "best mAP" if b["mean"] > 0 else "no loss above BCE in mAP; closest"
    headline = (
        f"{lead}: {best}, {b['mean']:+.1f} points against BCE (few-group mAP {f['mean']:+.1f}; "
        f"{b['n']} paired seed(s))"
    )
    judged = [m for m, g in gains.items() if g["map"] and g["map"]["clear"] is not None]
    if not judged:
        return headline, headline + ". One seed only: no loss is judged against seed noise.", gains
    parts = []
    for m in judged:
        g = gains[m]
        if all(g[k]["clear"] and g[k]["mean"] > 0 for k in DIFF_KEYS):
            parts.append(f"{m} is above BCE on mAP and few-group mAP with both 95 % CIs excluding zero")
        elif g["map"]["clear"] and g["map"]["mean"] < 0:
            parts.append(f"{m} is below BCE in mAP beyond seed noise")
        else:
            parts.append(f"{m} is not separable from BCE on both mAP and few-group mAP at this budget")
        if g["map"]["identical"]:
            parts.append(f"{m} is identical to BCE on every seed (a no-op, a bug to look at)")
    trend = smoothed(curve or [])
    budget = budget_verdict(trend) if curve else None
    if budget:
        parts.insert(
            0,
            f"{budget} (BCE validation mAP by epoch, mean over seeds, 3-epoch moving average: "
            f"{trend[-5:]} at the end)",
        )
    elif curve:
        parts.insert(
            0, f"BCE's validation mAP plateaued (3-epoch moving average, last 3 within 5 %: {trend[-3:]})"
        )
    return headline, headline + ". " + "; ".join(parts) + ".", gains


def main(argv: list[str] | None = None) -> None:
    bench = Benchmark(
        "longtail_multilabel",
        title="Multi-label long-tail losses",
        capability="longtail",
        code=[
            "hubtools/longtail/multilabel.py",
            "hubtools/longtail/trainer.py",
            "hubtools/train",
            "hubtools/data/mri_multilabel.py",
            "hubtools/data/mri_patches.py",
            "benchmarks/longtail_mri.py",
        ],
        default_seeds=[1, 2, 3],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=LOSSES)
    args = bench.parse(parser, argv)
    torch.set_num_threads(1)  # the full run is sized for one core
    if args.smoke:
        args.epochs = 1
    from hubtools.data.mri_multilabel import load_mri_multilabel

    dataset, _, lt = load_mri_multilabel(args.work / "data", **DATA_OPTIONS)
    losses = [BASELINE] + [m for m in args.losses if m != BASELINE]
    runs: list[Run] = []
    per_label: dict[str, list[list[float]]] = {m: [] for m in losses}
    bce_runs: list[str] = []
    for seed in args.seeds:
        for loss in losses:
            record = run_arm(bench, dataset, loss, seed, args)
            test = json.loads((Path(record["folder"]) / "metrics.json").read_text())["test"]
            runs.append(
                Run(
                    arm=loss,
                    seed=seed,
                    metrics={k: test[k] for k in KEYS},
                    extra={"seconds": record["seconds"]},
                )
            )
            per_label[loss].append(test["per_class_ap"])
            if loss == BASELINE:
                bce_runs.append(record["folder"])
    bce_folders = [Path(r) for r in bce_runs]
    headline, text, gains = verdict(runs, losses, bce_curve(bce_folders))
    table = arms_table(
        runs,
        KEYS,
        baseline=BASELINE,
        arms=losses,
        digits=1,
        labels=LABELS,
        diff_metrics=DIFF_KEYS,
        title="Test metrics (%) at the epoch of best validation mAP",
    )
    series = [
        {
            "label": m,
            "x": lt.cls_num_list,
            "y": np.round(np.nanmean(np.array(v, dtype=float), axis=0), 3).tolist(),
        }
        for m, v in per_label.items()
    ]
    figure = {
        "file": "longtail_multilabel.png",
        "title": "MRI multi-label: per-label test AP against train positives",
        "panels": [
            {
                "kind": "scatter",
                "xscale": "log",
                "series": series,
                "xlabel": "train images where the label is positive (log scale)",
                "ylabel": "test AP (%)",
            }
        ],
    }
    bench.write(
        "longtail_multilabel",
        data="brain-MRI patches from Debian mricron-data (ch2 T1, 32 px, every 8th axial slice, 8-voxel grid), each "
        "labelled with every AAL region covering >= 5 % of its in-brain voxels: "
        f"{lt.num_classes} labels, {lt.split_sizes} images per split, train positives {lt.cls_num_list[0]} -> "
        f"{lt.cls_num_list[-1]}",
        config={
            "epochs": args.epochs,
            "image_size": args.image_size,
            "backbone": BACKBONE,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "data": DATA_OPTIONS,
            "labels": lt.num_classes,
            "label_counts": lt.cls_num_list,
            "groups": [lt.head, lt.medium],
            "torch_threads": torch.get_num_threads(),
            "losses": losses,
        },
        runs=runs,
        tables=[table],
        figures=[figure],
        headline=headline,
        verdict=text,
        details={"gains_over_bce": gains},
    )


if __name__ == "__main__":
    main()
