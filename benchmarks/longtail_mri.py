"""Long-tail methods on the real brain-region MRI patch set (116 AAL classes, natural tail).

Every method trains the same tiny random-init ResNet (transformers ``ResNetConfig``; patches resized
to 16 px by default; same epochs, batch, lr, seed) through ``hubtools.longtail.trainer``; two-stage and post-hoc methods start
from that seed's ERM model (half the epochs). Writes ``benchmarks/results/longtail_mri.{json,md,png}``: top-1, balanced
accuracy, many/medium/few (mean +- std over seeds) and per-class accuracy against class frequency.

    python benchmarks/longtail_mri.py [--epochs 6] [--image-size 16] [--seeds 1 2 3] [--methods erm rs ...]
    python benchmarks/longtail_mri.py --smoke       # erm, balanced_softmax, crt; 1 epoch; 20 of the 116 classes

Needs Debian ``mricron-data``; the set is built once under ``--work`` (``hubtools longtail build mri_patches``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from hubtools.longtail.trainer import LongTailTrainConfig, train_longtail

STAGE1 = [
    "erm",
    "rs",
    "sqrt_rs",
    "cb_sampler",
    "rw",
    "weighted_softmax",
    "focal",
    "cb_focal",
    "ldam_drw",
    "balanced_softmax",
    "la_loss",
    "vs",
    "lade",
    "seql",
    "gcl",
]
FROM_ERM = ["crt", "lws", "disalign", "la_posthoc", "tau_norm"]
BACKBONE = {
    "model_type": "resnet",
    "options": {
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64],
        "depths": [1, 1, 1],
        "layer_type": "basic",
    },
}
KEYS = ("top1", "balanced_acc", "group_avg_acc", "many_acc", "medium_acc", "few_acc", "macro_f1")


def build_set(work: Path, smoke: bool) -> Path:
    from hubtools.longtail.datasets import load, make_builder, prepare, save_build
    from hubtools.longtail.splits import LTProfile, groups_by_threshold

    folder = work / "mri_patches_lt"
    if not (folder / "data").is_dir():
        builder = make_builder("mri_patches", None, -1, None, 1, work / "cache")
        save_build(folder, "mri_patches", builder, prepare(builder, 1), builder.plan().profile)
    if not smoke:
        return folder
    small = work / "mri_patches_smoke"
    if not (small / "data").is_dir():
        ds, lt = load(folder)
        keep = [c for c in range(lt.num_classes) if c % 6 == 0]  # 20 classes across the whole tail
        remap = {c: i for i, c in enumerate(keep)}
        ds = ds.filter(lambda b: [x in remap for x in b["label"]], batched=True)
        ds = ds.map(lambda b: {"label": [remap[x] for x in b["label"]]}, batched=True)
        from datasets import ClassLabel

        ds = ds.cast_column("label", ClassLabel(names=[lt.class_names[c] for c in keep]))
        counts = np.bincount(ds["train"]["label"], minlength=len(keep)).tolist()
        ds.save_to_disk(str(small / "data"))
        head, medium = groups_by_threshold(counts)
        names = [lt.class_names[c] for c in keep]
        LTProfile(names, counts, counts[0] / counts[-1], head, medium, test_distribution="natural").to_json(
            small / "longtail" / "smoke.json"
        )
    return small


def run(dataset: Path, method: str, seed: int, args: argparse.Namespace, stage1: Path | None) -> dict:
    out = args.work / "runs" / f"{method}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = LongTailTrainConfig(
        dataset=str(dataset),
        method=method,
        backbone=BACKBONE,
        output_dir=out,
        image_size=args.image_size,
        num_epochs=args.epochs if stage1 is None else max(1, args.epochs // 2),
        batch_size=128,
        lr=1e-3,
        seed=seed,
        stage1=stage1,
    )
    start = time.perf_counter()
    folder = train_longtail(cfg)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["folder"] = str(folder)
    return metrics


def summarise(results: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    """method -> metric -> [mean, std] over seeds (test split)."""
    return {
        m: {
            k: [float(np.nanmean(v)), float(np.nanstd(v))]
            for k in KEYS
            for v in [[r["test"][k] for r in runs]]
        }
        for m, runs in results.items()
    }


def table(summary: dict, seeds: int) -> str:
    lines = [f"| method | {' | '.join(KEYS)} |", "|---" * (len(KEYS) + 1) + "|"]
    for m, row in summary.items():
        cells = [f"{row[k][0]:.1f}" + (f" ± {row[k][1]:.1f}" if seeds > 1 else "") for k in KEYS]
        lines.append(f"| {m} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(results: dict, counts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in [x for x in ("erm", "rs", "balanced_softmax", "ldam_drw", "la_posthoc") if x in results]:
        recall = np.nanmean([r["test"]["per_class_recall"] for r in results[m]], axis=0)
        ax.scatter(counts, recall, s=10, label=m, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("train images of the class")
    ax.set_ylabel("test recall (%)")
    ax.set_title("MRI patches: per-class accuracy against class frequency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=STAGE1 + FROM_ERM)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("longtail-bench"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the 2 cores are shared: 2 threads beside another busy process run slower
    if args.smoke:
        args.epochs, args.seeds, args.methods = 1, [1], ["erm", "balanced_softmax", "crt"]
    dataset = build_set(args.work, args.smoke)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        erm = run(dataset, "erm", seed, args, None)
        results.setdefault("erm", []).append(erm)
        for method in args.methods:
            if method == "erm":
                continue
            stage1 = Path(erm["folder"]) if method in FROM_ERM else None
            results.setdefault(method, []).append(run(dataset, method, seed, args, stage1))
            r = results[method][-1]["test"]
            print(
                f"seed {seed} {method}: balanced {r['balanced_acc']:.1f} few {r['few_acc']:.1f}", flush=True
            )
        write_results(results, dataset, args)  # after every seed, so a cut-short run still reports


def write_results(results: dict[str, list[dict]], dataset: Path, args: argparse.Namespace) -> None:
    from hubtools.longtail.datasets import load

    _, lt = load(dataset)
    seeds_done = len(results["erm"])
    summary = summarise(results)
    name = "longtail_mri_smoke" if args.smoke else "longtail_mri"
    args.results.mkdir(parents=True, exist_ok=True)
    setup = {
        "epochs": args.epochs,
        "stage2_epochs": max(1, args.epochs // 2),
        "image_size": args.image_size,
        "seeds": args.seeds[:seeds_done],
        "backbone": BACKBONE,
        "batch_size": 128,
        "lr": 1e-3,
        "classes": lt.num_classes,
        "cls_num_list": lt.cls_num_list,
        "groups": [lt.head, lt.medium],
    }
    seconds = {m: [r["seconds"] for r in rs] for m, rs in results.items()}
    text = json.dumps({"setup": setup, "summary": summary, "seconds": seconds}, indent=2)
    (args.results / f"{name}.json").write_text(text + "\n")
    md = table(summary, seeds_done)
    (args.results / f"{name}.md").write_text(md + "\n")
    plot(results, lt.cls_num_list, args.results / f"{name}.png")
    print(md, flush=True)


if __name__ == "__main__":
    main()
