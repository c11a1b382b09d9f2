"""Device check of the long-tail methods: does every registered method train on the GPU?

``prepare`` (here) writes the benchmark's smoke subset of the real MRI patch set (20 of the 116 AAL regions, the
whole tail kept) into a folder small enough to carry to a lent GPU machine. ``run`` (there) trains every method
of ``hubtools.longtail.methods.METHODS`` for ``--epochs`` epochs with the same tiny ResNet as the benchmark
(second stages start from their registered first stage), then checks that every logged loss is finite and that
the saved folder reproduces its test metrics when evaluated again. Prints one JSON line (with the peak CUDA
memory, which shows the work ran on the GPU); exit status 1 if any method fails.

    python benchmarks/device_check_longtail.py prepare .devdata/longtail
    python benchmarks/device_check_longtail.py run .devdata/longtail [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

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


def prepare(folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from longtail_mri import build_set

    with tempfile.TemporaryDirectory() as work:
        small = build_set(Path(work), "mri", smoke=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(small, folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB)")


def run(folder: Path, epochs: int, tf32: bool = False) -> dict:
    import torch

    from hubtools.longtail.methods import METHODS
    from hubtools.longtail.splits import LTProfile
    from hubtools.longtail.trainer import LongTailTrainConfig, evaluate_model, load_model, train_longtail

    device = "cuda" if torch.cuda.is_available() else "cpu"
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
        "methods": {},
    }
    start = time.perf_counter()
    done: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as work:

        def train(method: str) -> Path:
            if method not in done:
                first = METHODS[method].start_from
                options = {"weight": [max(counts) / c for c in counts]} if method in REQUIRED else {}
                cfg = LongTailTrainConfig(
                    dataset=str(folder),
                    method=method,
                    backbone=BACKBONE,
                    output_dir=Path(work) / method,
                    stage1=train(first) if first else None,
                    method_options=options,
                    image_size=16,
                    num_epochs=epochs,
                    batch_size=128,
                    lr=1e-3,
                )
                done[method] = train_longtail(cfg)
            return done[method]

        for method in METHODS:
            t0 = time.perf_counter()
            try:
                model_dir = train(method)
                test = json.loads((model_dir / "metrics.json").read_text())["test"]
                log = Path(work) / method / "metrics.jsonl"
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 convolutions/matmuls (PyTorch's default)"
    )
    args = parser.parse_args()
    if args.action == "prepare":
        prepare(args.folder)
    else:
        sys.exit(0 if run(args.folder, args.epochs, args.tf32)["ok"] else 1)
