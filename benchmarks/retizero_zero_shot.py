"""RetiZero zero-shot recognition of UNSEEN classes, and what the pretrained text tower brings.

Claim (RetiZero, Wang et al., arXiv 2406.09317): a CLIP-style model whose text tower carries knowledge of
many diseases recognises classes it never saw as images, from prompts alone.

Protocol, on real data only (no retinal image–text corpus exists offline):
1. Pairs (``hubtools.models.retizero.corpora``), 3 written sentences per class:
   ``--data fmnist``: real Fashion-MNIST images, official train/test split;
   ``--data mri``: real brain-MRI patches (ch2 T1 + AAL atlas, 32 px) of 10 cortical/cerebellar regions
   described by lobe, location and function; train = left hemisphere, test = right hemisphere.
   Training uses the 5 SEEN classes only, one image per class per batch. Model = tiny random-init ViT
   (hidden 64, 4 layers, patch 4, 32 px; frozen base + LoRA r 8) + MiniLM text tower.
2. Arms: the real pretrained all-MiniLM-L6-v2 text tower vs the same architecture randomly initialised;
   both arms share each seed (same ViT init, same training images and batch order), so every comparison
   is the paired difference per seed.
3. Reported per arm and seed: seen-class zero-shot Top-1, unseen-class zero-shot Top-1/3 (5 classes:
   Top-5 is trivially 1 and not reported) against chance and a linear probe trained on the unseen
   classes' labels, image-to-image retrieval P@1/3/5 on held-out images of all 10 classes, and the
   training-loss curve (10 points), whose plateau decides whether a null result may be called one.

    python benchmarks/retizero_zero_shot.py --data fmnist   # 3 seeds x 2 arms, ~7 min on 2 shared CPU cores
    python benchmarks/retizero_zero_shot.py --data mri      # ~7 min
    python benchmarks/retizero_zero_shot.py --smoke         # 3 steps, 4 images per class, seed 0 (seconds)
    python benchmarks/retizero_zero_shot.py --data mri --seeds 0 1 2 3 4 --reuse   # reuses identical runs

Results: ``benchmarks/results/retizero_zero_shot.{json,md,png}`` (fmnist) and
``retizero_zero_shot_mri.{json,md,png}`` (mri). Finished runs are cached under ``--work`` keyed on their
configuration, the RetiZero/trainer code digest and the library versions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubtools.bench import Benchmark, Run, arm_summary, arms_table, budget_verdict, plateau, values_by_seed
from hubtools.bench.stats import paired_by_seed
from hubtools.models.retizero.corpora import SOURCES
from hubtools.models.retizero.seen_unseen import run_seen_unseen

ARMS = {"pretrained_text": True, "random_text": False}
METHOD, BASELINE = "pretrained_text", "random_text"
COLUMNS = (
    "seen_top1",
    "unseen_top1",
    "unseen_top3",
    "unseen_chance_top1",
    "unseen_linear_probe_top1",
    "retrieval_p@1",
    "retrieval_p@3",
    "retrieval_p@5",
)
DIFF_COLUMNS = ("seen_top1", "unseen_top1", "unseen_top3", "unseen_linear_probe_top1", "retrieval_p@1")
LR = 1e-3  # run_seen_unseen's default, recorded in the cache key
DATA = {
    "fmnist": "Fashion-MNIST from Debian dataset-fashion-mnist (official train/test split), 10 classes, each "
    "with 3 written descriptions; trained on 5 seen classes, tested zero-shot on the 5 unseen ones",
    "mri": "32-px brain-MRI patches cut from Debian mricron-data's ch2 T1 by the AAL atlas, 10 cortical and "
    "cerebellar regions with 3 written descriptions each (lobe, location, function); train = left "
    "hemisphere, test = right hemisphere; trained on 5 seen regions, tested zero-shot on the 5 unseen ones",
}
TITLES = {"fmnist": "Fashion-MNIST images", "mri": "brain-MRI patches (AAL regions)"}


def loss_curve(run_dir: Path) -> list[float]:
    """The training loss logged every ``steps // 10`` steps by the shared trainer (``metrics.jsonl``)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [float(r["loss"]) for r in rows if "loss" in r]


def train_arm(bench: Benchmark, args, arm: str, seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    """One (arm, seed) run, from the cache when ``--reuse`` finds an identical one."""
    key = {
        "data": args.data,
        "arm": arm,
        "pretrained_text": ARMS[arm],
        "seed": seed,
        "steps": args.steps,
        "lr": LR,
        **sizes,
    }
    folder, saved = bench.cached(f"{args.data}-{arm}-s{seed}", key)
    if saved is not None:
        return saved
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    metrics = run_seen_unseen(
        folder,
        source=SOURCES[args.data],
        steps=args.steps,
        seed=seed,
        pretrained_text=ARMS[arm],
        lr=LR,
        **sizes,
    )
    run_dirs = sorted(folder.glob("run-*"))
    record = {
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_curve": loss_curve(run_dirs[0]) if run_dirs else [],
    }
    for d in run_dirs:  # the checkpoint holds the whole MiniLM: keep only the record
        shutil.rmtree(d, ignore_errors=True)
    Benchmark.save_record(folder, key, record, bench)
    return record


def judge(runs: list[Run], curves: dict[str, list[list[float]]], data: str) -> tuple[str, str, dict]:
    """Headline, verdict and the paired gains of the pretrained text tower over random init.

    The claim holds when the paired bootstrap 95 % CI of the unseen Top-1 gain excludes zero and is
    positive. A null or negative result is only a finding when the baseline (random-init text tower)
    training loss had plateaued; otherwise the verdict says the budget was insufficient.
    """
    gains = {}
    for k in DIFF_COLUMNS:
        d = paired_by_seed(values_by_seed(runs, METHOD, k), values_by_seed(runs, BASELINE, k))
        gains[k] = d.as_dict() if d else None
    pre, rnd = arm_summary(runs, METHOD, "unseen_top1"), arm_summary(runs, BASELINE, "unseen_top1")
    chance = arm_summary(runs, METHOD, "unseen_chance_top1")["mean"]
    g = gains["unseen_top1"]
    headline = (
        f"{TITLES[data]}: unseen-class zero-shot Top-1 {pre['mean']:.3f} with the pretrained MiniLM text tower vs "
        f"{rnd['mean']:.3f} randomly initialised (paired Δ {g['mean']:+.3f} over {g['n']} seed(s); chance {chance:.3f})"
    )
    mean_curve = (
        np.mean(curves[BASELINE], axis=0).tolist() if curves[BASELINE] and all(curves[BASELINE]) else []
    )
    budget = (
        budget_verdict(mean_curve) if mean_curve else "budget insufficient: no training-loss curve was logged"
    )
    if g["clear"] is None:
        return headline, headline + ". One seed only: the difference is not judged against seed noise.", gains
    if g["identical"]:
        return (
            headline,
            headline + ". The two arms gave identical unseen Top-1 on every seed: a no-op, a bug to look at.",
            gains,
        )
    if g["clear"] and g["mean"] > 0:
        text = (
            f"Reproduced on {TITLES[data]}: the pretrained text tower raises unseen-class zero-shot Top-1 by "
            f"{g['mean']:+.3f} [95 % CI {g['ci_low']:+.3f}, {g['ci_high']:+.3f}], paired over {g['n']} seeds."
        )
    elif budget is not None:
        text = (
            f"Not judged on {TITLES[data]} ({budget}, mean over seeds of the random-init arm's training loss): "
            f"the unseen Top-1 gain {g['mean']:+.3f} [95 % CI {g['ci_low']:+.3f}, {g['ci_high']:+.3f}] may still change "
            "with more steps."
        )
    else:
        text = (
            f"Not reproduced on {TITLES[data]}: the unseen Top-1 gain of the pretrained text tower is "
            f"{g['mean']:+.3f} [95 % CI {g['ci_low']:+.3f}, {g['ci_high']:+.3f}] over {g['n']} paired seeds, "
            "with the random-init arm's training loss plateaued."
        )
    above = "above" if pre["mean"] > chance else "not above"
    text += f" The pretrained arm's unseen Top-1 is {above} chance ({pre['mean']:.3f} vs {chance:.3f})."
    return headline, text, gains


def main(argv: list[str] | None = None) -> None:
    bench = Benchmark(
        "retizero_zero_shot",
        title="RetiZero seen/unseen zero-shot: pretrained vs random-init text tower",
        capability="retizero",
        code=[
            "hubtools/models/retizero",
            "hubtools/train",
            "hubtools/data/offline.py",
            "hubtools/data/mri_patches.py",
        ],
        default_seeds=[0, 1, 2],
    )
    parser = bench.parser(__doc__)
    parser.add_argument(
        "--data",
        choices=["fmnist", "mri"],
        default="fmnist",
        help="fmnist: Fashion-MNIST; mri: brain-MRI patches of 10 AAL regions",
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (smoke: 3)")
    args = bench.parse(parser, argv)
    if args.device == "cpu":  # the shared trainer otherwise takes any visible GPU (read when it starts)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(1)  # the towers are tiny: extra threads only spin on a shared machine
    if args.smoke:
        args.steps = 3
    args.name = "retizero_zero_shot" + ("" if args.data == "fmnist" else f"_{args.data}")
    # full: run_seen_unseen's defaults, passed explicitly so that the cache key records them
    sizes = (
        {"n_train_per_class": 4, "n_test_per_class": 4}
        if args.smoke
        else {"n_train_per_class": 100, "n_test_per_class": 40}
    )
    source = SOURCES[args.data]
    half = len(source.classes) // 2
    runs: list[Run] = []
    curves: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        for arm in ARMS:
            rec = train_arm(bench, args, arm, seed, sizes)
            runs.append(
                Run(
                    arm=arm,
                    seed=seed,
                    metrics=rec["metrics"],
                    extra={"seconds": rec["seconds"], "loss_curve": rec["loss_curve"]},
                )
            )
            curves[arm].append(rec["loss_curve"])
            print(
                arm,
                seed,
                {k: round(rec["metrics"][k], 3) for k in COLUMNS},
                f"({rec['seconds']} s)",
                flush=True,
            )

    headline, verdict, gains = judge(runs, curves, args.data)
    table = arms_table(
        runs,
        COLUMNS,
        baseline=BASELINE,
        arms=[METHOD, BASELINE],
        digits=3,
        diff_metrics=DIFF_COLUMNS,
        title="Zero-shot, linear probe and retrieval (held-out test images)",
    )
    summaries = {arm: {k: arm_summary(runs, arm, k) for k in COLUMNS} for arm in ARMS}
    log_every = max(1, args.steps // 10)
    loss_series = []
    for arm in ARMS:
        if curves[arm] and all(curves[arm]) and len({len(c) for c in curves[arm]}) == 1:
            c = np.asarray(curves[arm], dtype=float)
            loss_series.append(
                {
                    "label": f"{arm} (mean over seeds)",
                    "x": [min(args.steps, log_every * (i + 1)) for i in range(c.shape[1])],
                    "y": c.mean(axis=0).round(4).tolist(),
                    "style": "-",
                }
            )
    paired = [
        {
            "label": f"seed {r.seed}",
            "x": [0, 1],
            "y": [values_by_seed(runs, BASELINE, "unseen_top1")[r.seed], r.metrics["unseen_top1"]],
        }
        for r in runs
        if r.arm == METHOD
    ]
    chance = 1.0 / (len(source.classes) - half)
    figure = {
        "file": f"{args.name}.png",
        "title": f"RetiZero on real {TITLES[args.data]} with written descriptions: seen vs unseen classes",
        "columns": 3,
        "panels": [
            {
                # a heatmap, not bars: the shared renderer keeps category tick labels only on heatmaps
                "kind": "heatmap",
                "matrix": [[summaries[arm][k]["mean"] for k in COLUMNS] for arm in ARMS],
                "xticklabels": list(COLUMNS),
                "yticklabels": list(ARMS),
                "title": "mean over seeds (sd and paired Δ in the table)",
            },
            {
                "kind": "line",
                "series": paired,
                "xlabel": "text tower: 0 = random-init, 1 = pretrained",
                "ylabel": "unseen zero-shot Top-1",
                "title": "unseen Top-1 paired by seed (dashed: chance)",
                "hlines": [chance],
            },
            {
                "kind": "line",
                "series": loss_series,
                "xlabel": "training step",
                "ylabel": "training loss",
                "title": "training loss",
            },
        ],
    }
    plateaus = {arm: plateau(np.mean(curves[arm], axis=0)).as_dict() if loss_series else None for arm in ARMS}
    bench.write(
        args.name,
        title=f"RetiZero seen/unseen zero-shot on {TITLES[args.data]}: pretrained vs random-init text tower",
        data=DATA[args.data] + (" (smoke: 4 train and 4 test images per class)" if args.smoke else ""),
        config={
            "data": args.data,
            "steps": args.steps,
            "lr": LR,
            "batch_size": len(source.classes[:half]),
            "seen": source.classes[:half],
            "unseen": source.classes[half:],
            "arms": ARMS,
            "torch_threads": torch.get_num_threads(),
            **sizes,
        },
        runs=runs,
        tables=[table],
        figures=[figure],
        headline=headline,
        verdict=verdict,
        details={"gains_over_random_text": gains, "training_loss_plateau": plateaus},
    )


if __name__ == "__main__":
    main()
