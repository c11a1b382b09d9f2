"""Device check of the long-tail methods: does every registered method train on the GPU?

``prepare`` (here) writes the benchmark's smoke subset of the real MRI patch set (20 of the 116 AAL regions, the
whole tail kept) into a folder small enough to carry to a lent GPU machine. ``run`` (there) trains every method
of ``hubtools.longtail.methods.METHODS`` for ``--epochs`` epochs with the same tiny ResNet as the benchmark
(second stages start from their registered first stage), then checks that every logged loss is finite and that
the saved folder reproduces its test metrics when evaluated again. Writes ``device_longtail.json`` (``--tf32``:
``device_longtail_tf32.json``) through the shared harness, with the peak CUDA memory, which shows the work ran
on the GPU; exit status 1 if any method fails.

    python scripts/device/device_check_longtail.py prepare .devdata/longtail            # here
    python scripts/device/device_check_longtail.py run .devdata/longtail [--epochs 2]   # there
    python scripts/device/device_check_longtail.py --smoke --device cpu   # both, into --work: 3 methods, 1 epoch

``--seeds`` sets the training seed (default 1); each seed trains every method again. ``prepare`` builds the
whole MRI set once (needs Debian ``mricron-data``) and reuses it afterwards: by default where
``benchmarks/longtail_mri.py`` keeps it, with ``--work`` under that folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hubtools.bench import Benchmark, Run, Table
from hubtools.bench.harness import default_work_dir

ROOT = Path(__file__).resolve().parents[2]

BACKBONE = {
    "model_type": "resnet",
    "options": {
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64],
        "depths": [1, 1, 1],
        "layer_type": "basic",
    },
}
REQUIRED = {"weighted_ce": {"weight": None}}  # filled with inverse class frequencies at run time
SMOKE_METHODS = ["erm", "weighted_ce", "crt"]  # plain, a required option, a second stage


def prepare(folder: Path, build: Path) -> None:
    """The MRI smoke subset (built once under ``build``) copied to ``folder``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from longtail_mri import build_set  # the long-tail benchmark's own sets

    small = build_set(build, "mri", smoke=True)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(small, folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB)")


def run(folder: Path, epochs: int, methods: list[str], seed: int, work: Path, tf32: bool = False) -> dict:
    import torch

    from hubtools.longtail.methods import METHODS
    from hubtools.longtail.splits import LTProfile
    from hubtools.longtail.trainer import LongTailTrainConfig, evaluate_model, load_model, train_longtail

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1)
    if not tf32:  # plain float32 on the GPU too (PyTorch lets cuDNN convolutions use TF32 by default)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    counts = LTProfile.from_json(next((folder / "longtail").glob("*.json"))).cls_num_list
    report: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "classes": len(counts),
        "epochs": epochs,
        "tf32": tf32,
        "seed": seed,
        "methods": {},
    }
    start = time.perf_counter()
    done: dict[str, Path] = {}
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:

        def train(method: str) -> Path:
            if method not in done:
                first = METHODS[method].start_from
                options = {"weight": [max(counts) / c for c in counts]} if method in REQUIRED else {}
                cfg = LongTailTrainConfig(
                    dataset=str(folder),
                    method=method,
                    backbone=BACKBONE,
                    output_dir=Path(tmp) / method,
                    stage1=train(first) if first else None,
                    method_options=options,
                    image_size=16,
                    num_epochs=epochs,
                    batch_size=128,
                    lr=1e-3,
                    seed=seed,
                )
                done[method] = train_longtail(cfg)
            return done[method]

        for method in methods:
            t0 = time.perf_counter()
            try:
                model_dir = train(method)
                test = json.loads((model_dir / "metrics.json").read_text())["test"]
                log = Path(tmp) / method / "metrics.jsonl"
                losses = (
                    [json.loads(x).get("loss") for x in log.read_text().splitlines()] if log.exists() else []
                )
                losses = [v for v in losses if v is not None]
                again = evaluate_model(model_dir, str(folder))
                model, _ = load_model(model_dir)
                # The reload is evaluated on the CPU: a GPU run can differ by an image whose top two logits
                # are within float noise, so the size of the difference is reported, not only whether it is 0.
                diff = abs(again["balanced_acc"] - test["balanced_acc"])
                report["methods"][method] = {
                    "ok": all(math.isfinite(v) for v in losses) and diff < 1e-6,
                    "losses_finite": all(math.isfinite(v) for v in losses),
                    "n_losses": len(losses),
                    "balanced_acc": round(test["balanced_acc"], 2),
                    "few_acc": round(test["few_acc"], 2),
                    "reload_balanced_acc_abs_diff": round(diff, 4),
                    "reload_classes_with_other_recall": sum(
                        1
                        for a, b in zip(again["per_class_recall"], test["per_class_recall"], strict=True)
                        if not (a == b or (math.isnan(a) and math.isnan(b)))
                    ),
                    "loaded_params": sum(p.numel() for p in model.parameters()),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            except Exception as err:  # one broken method must not hide the others
                report["methods"][method] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
                traceback.print_exc()
    if device == "cuda":
        report["cuda_max_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    report["failed"] = [m for m, r in report["methods"].items() if not r["ok"]]
    report["ok"] = not report["failed"]
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report), flush=True)
    return report


def write(bench: Benchmark, args: argparse.Namespace, folder: Path) -> int:
    from hubtools.longtail.splits import LTProfile

    profile = LTProfile.from_json(next((folder / "longtail").glob("*.json")))
    reports = [run(folder, args.epochs, args.methods, seed, args.work, args.tf32) for seed in args.seeds]
    runs = []
    for seed, report in zip(args.seeds, reports, strict=True):
        for method, r in report["methods"].items():
            metrics = {k: v for k, v in r.items() if k != "error"}
            runs.append(Run(arm=method, seed=seed, metrics=metrics, extra={"error": r["error"]} if "error" in r else {}))
    failed = sorted({f"{r.arm} (seed {r.seed})" for r in runs if not r.metrics["ok"]})
    ok = not failed
    keys = ["ok", "losses_finite", "n_losses", "balanced_acc", "few_acc", "reload_balanced_acc_abs_diff",
            "reload_classes_with_other_recall", "loaded_params", "seconds"]
    table = Table(
        title="Per method and seed",
        columns=["method", "seed", *keys, "error"],
        rows=[[r.arm, r.seed, *(r.metrics.get(k) for k in keys), r.extra.get("error")] for r in runs],
        note="ok: every logged loss is finite and the saved model folder, evaluated again, gives the same "
        "balanced accuracy (within 1e-6 points); the re-evaluation runs on the CPU, so a GPU run can differ by "
        "an image whose top two logits are within float noise: the size of the difference is reported. "
        "Accuracies are test %.",
    )
    first = reports[0]
    where = first["device"] if first["device"] != "cpu" else "the CPU"
    mem = [r["cuda_max_memory_mb"] for r in reports if "cuda_max_memory_mb" in r]
    headline = (f"{len(args.methods) - len({f.split(' (')[0] for f in failed})} of {len(args.methods)} long-tail "
                f"methods train and reload on {where}" + (f" (peak CUDA memory {max(mem):.0f} MiB)" if mem else ""))
    bench.write(
        "device_longtail" + ("_tf32" if args.tf32 else ""),
        data=f"brain MRI patches cut from Debian mricron-data's MNI template by the AAL atlas, the benchmark's "
        f"smoke subset: {profile.num_classes} of the 116 region classes across the whole tail "
        f"({sum(profile.cls_num_list):,} train images, {profile.cls_num_list[0]} -> {profile.cls_num_list[-1]} per class)",
        config={"epochs": args.epochs, "methods": args.methods, "image_size": 16, "batch_size": 128, "lr": 1e-3,
                "backbone": BACKBONE, "tf32": args.tf32, "classes": profile.num_classes,
                "cls_num_list": profile.cls_num_list, "folder": str(folder)},
        runs=runs,
        tables=[table],
        headline=headline,
        verdict=("pass: every method trains with finite losses and its saved folder reproduces its test metrics"
                 if ok else f"FAIL: {', '.join(failed)}"),
        details={"ok": ok, "failed": failed, "torch": first["torch"],
                 "cuda_max_memory_mb": max(mem) if mem else None,
                 "wall_s_per_seed": [r["wall_s"] for r in reports]},
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    from hubtools.longtail.methods import METHODS

    bench = Benchmark(
        "device_check_longtail",
        title="Device check: every long-tail method",
        capability="longtail",
        code=["hubtools/longtail", "hubtools/train", "hubtools/data/mri_patches.py"],
        default_seeds=[1],
        script="scripts/device/device_check_longtail.py",
    )
    parser = bench.parser(__doc__)
    parser.add_argument("action", nargs="?", choices=["prepare", "run"],
                        help="prepare (here) or run (on the GPU machine); --smoke without it does both")
    parser.add_argument("folder", type=Path, nargs="?", default=None,
                        help="the carried set (default: under --work)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per method (smoke: 1)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help=f"default: all {len(METHODS)} registered (smoke: {' '.join(SMOKE_METHODS)})")
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 convolutions/matmuls (PyTorch's default)"
    )
    args = bench.parse(parser, argv)
    if args.action is None and not args.smoke:
        parser.error("say prepare or run (or --smoke for both)")
    if args.device == "cpu":  # before CUDA starts: the shared loop (accelerate) then picks the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.smoke:
        args.epochs, args.methods = 1, SMOKE_METHODS
    folder = args.folder or args.work / "mri_patches_smoke"
    # the whole MRI set: built once, shared with benchmarks/longtail_mri.py unless --work says otherwise
    build = default_work_dir("longtail_mri") if args.work == default_work_dir(bench.name) else args.work / "build"
    if args.action in (None, "prepare"):
        prepare(folder, build)
    if args.action in (None, "run"):
        return write(bench, args, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
