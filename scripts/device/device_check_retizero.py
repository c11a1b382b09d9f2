"""Device check of RetiZero (well under a minute on a GPU): training under every mixed precision, then zero-shot
and retrieval on the device, and how far bf16/fp16 autocast features drift from float32.

Real data: Fashion-MNIST images captioned with written class descriptions (``retizero.corpora``), 10 classes,
one image per class per batch. Model: the benchmarks' tiny ViT (frozen + LoRA r 8) + real MiniLM text tower.
For each precision (CUDA: no, bf16, fp16; CPU: no, bf16) it trains ``--steps`` steps through the shared
accelerate loop (``hubtools.train``), then evaluates zero-shot Top-1 and retrieval P@1 on held-out images.
The float32-trained model's image/text features are then recomputed under each autocast dtype: max |Δ|.
Writes ``device_retizero.json`` (and its page) through the shared harness; exit status 1 if a loss is not finite.

    python scripts/device/device_check_retizero.py                         # on the GPU if there is one
    python scripts/device/device_check_retizero.py --smoke --device cpu    # 2 steps, 2 test images per class

``--seeds`` sets the model initialisation and data order (default 0); each seed repeats every precision.
On a lent GPU machine without this project's data, run it through ``scripts/device/device_carry.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from hubtools.bench import Benchmark, Run, Table

CODE = ["hubtools/models/retizero", "hubtools/train", "hubtools/data/offline.py"]
DATA = ("Fashion-MNIST (Debian dataset-fashion-mnist) images captioned with written class descriptions "
        "(hubtools.models.retizero.corpora), 10 classes; all-MiniLM-L6-v2 text tower with its real weights")
SMOKE = {"steps": 2, "n_test": 2, "n_train": 10}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The check's own flags (``device_carry.py run`` takes the same)."""
    parser.add_argument("--steps", type=int, default=50, help="training steps per precision (smoke: 2)")
    parser.add_argument("--n-test", type=int, default=20, help="held-out images per class (smoke: 2)")
    parser.add_argument("--n-train", type=int, default=30, help="training images per class (smoke: 10)")


def hide_cuda(args: argparse.Namespace) -> None:
    """``--device cpu``: hide CUDA before torch starts it, so the shared loop (accelerate) picks the CPU."""
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.smoke:
        args.steps, args.n_test, args.n_train = SMOKE["steps"], SMOKE["n_test"], SMOKE["n_train"]


def check(args: argparse.Namespace) -> tuple[list, dict]:
    """Every precision at every seed: the runs (one per precision and seed) and the shared details."""
    import numpy as np
    import torch

    from hubtools.models.retizero.corpora import FASHION, captioned_pairs
    from hubtools.models.retizero.seen_unseen import OnePerClassOrder, tiny_retizero
    from hubtools.models.retizero.train import train_retizero
    from hubtools.models.retizero.zero_shot import (
        image_features,
        retrieval_metrics,
        topk_accuracy,
        zero_shot_classify,
    )
    from hubtools.train import TrainConfig

    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    precisions = ["no", "bf16", "fp16"] if cuda else ["no", "bf16"]
    pairs = captioned_pairs(FASHION, "train", n_per_class=args.n_train)
    test = captioned_pairs(FASHION, "test", n_per_class=args.n_test, seed=1)
    test_images, test_labels = [im.convert("RGB") for im in test["image"]], np.asarray(test["label"])
    runs: list[Run] = []
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for seed in args.seeds:
            trained_fp32 = processor = None
            by_precision: dict[str, Run] = {}
            for precision in precisions:
                model, processor = tiny_retizero(seed=seed)
                out = Path(work) / f"{precision}-s{seed}"
                config = TrainConfig(
                    output_dir=out,
                    seed=seed,
                    max_steps=args.steps,
                    batch_size=len(FASHION.classes),
                    lr=1e-3,
                    weight_decay=1e-5,
                    scheduler="cosine",
                    warmup_steps=args.steps // 10,
                    max_grad_norm=1.0,
                    log_every=max(1, args.steps // 10),
                    mixed_precision=precision,
                    resume=None,
                )
                t0 = time.perf_counter()
                result = train_retizero(model, processor, pairs, config, sampler=OnePerClassOrder(pairs["label"]))
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                losses = [round(r["loss"], 4) for r in records if "loss" in r]
                trained = result.model.eval()
                probs = zero_shot_classify(trained, processor, test_images, FASHION.classes, FASHION.templates)
                feats = image_features(trained, processor, test_images, "retrieval").cpu()
                run = Run(
                    arm=precision,
                    seed=seed,
                    metrics={
                        "train_seconds": round(seconds, 2),
                        "steps_per_second": round(result.step / seconds, 1),
                        "finite": all(math.isfinite(x) for x in losses),
                        "first_loss": losses[0] if losses else None,
                        "last_loss": losses[-1] if losses else None,
                        "logit_scale": round(float(trained.effective_logit_scale().detach()), 3),
                        "zero_shot_top1": float(topk_accuracy(probs, test_labels, ks=(1,))["top1"]),
                        "retrieval_p@1": float(retrieval_metrics(feats, test_labels, ks=(1,))["p@1"]),
                    },
                    extra={"losses": losses, "model_device": str(trained.device)},
                )
                print(f"seed {seed} {precision}: {run.metrics}", flush=True)
                runs.append(run)
                by_precision[precision] = run
                if precision == "no":
                    trained_fp32 = trained

            # Same weights, same inputs: float32 against each autocast dtype.
            device = trained_fp32.device
            batch = processor(images=test_images[:32], text=[f"a photo of a {c}" for c in FASHION.classes]).to(
                device
            )
            with torch.no_grad():
                reference = trained_fp32(**batch)
                for precision in precisions[1:]:
                    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
                    with torch.autocast(device.type, dtype=dtype):
                        out = trained_fp32(**batch)
                    by_precision[precision].metrics.update({
                        "drift_image_embeds": float((out.image_embeds.float() - reference.image_embeds).abs().max()),
                        "drift_text_embeds": float((out.text_embeds.float() - reference.text_embeds).abs().max()),
                        "drift_logits_per_image": float(
                            (out.logits_per_image.float() - reference.logits_per_image).abs().max()
                        ),
                    })
    details = {
        "precisions": precisions,
        "n_train": len(pairs),
        "n_test": len(test_labels),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }
    return runs, details


def write(bench: Benchmark, args: argparse.Namespace, name: str, data: str) -> int:
    """Run the check and write its envelope as ``name``; 0 when every loss is finite."""
    runs, details = check(args)
    failed = sorted({f"{r.arm} (seed {r.seed})" for r in runs if not r.metrics["finite"]})
    ok = not failed
    keys = ["steps_per_second", "finite", "first_loss", "last_loss", "logit_scale", "zero_shot_top1",
            "retrieval_p@1", "drift_image_embeds", "drift_text_embeds", "drift_logits_per_image"]
    table = Table(
        title="Per precision and seed",
        columns=["precision", "seed", *keys, "device"],
        rows=[[r.arm, r.seed, *(r.metrics.get(k) for k in keys), r.extra["model_device"]] for r in runs],
        note="drift: max |Δ| of the float32-trained model's image embeddings, text embeddings and "
        "image-text logits under that autocast dtype against float32, on 32 held-out images and the 10 "
        "class prompts; zero-shot Top-1 and retrieval P@1 are fractions (chance 0.1).",
    )
    drift = {r.arm: r.metrics["drift_image_embeds"] for r in runs if "drift_image_embeds" in r.metrics}
    where = details["cuda_device"] or "the CPU"
    headline = (f"{', '.join(details['precisions'])} train with finite losses on {where}; max image-embedding "
                "drift vs float32: " + ", ".join(f"{k} {v:.2g}" for k, v in drift.items()))
    bench.write(
        name,
        data=f"{data}; {details['n_train']} training pairs, {details['n_test']} held-out images",
        config={"steps": args.steps, "n_train_per_class": args.n_train, "n_test_per_class": args.n_test,
                "batch_size": 10, "lr": 1e-3, "weight_decay": 1e-5, "scheduler": "cosine",
                "warmup_steps": args.steps // 10, "max_grad_norm": 1.0,
                "model": "tiny ViT (hidden 64, 4 layers, patch 4, 32 px; frozen + LoRA r 8) + MiniLM text tower",
                "precisions": details["precisions"]},
        runs=runs,
        tables=[table],
        headline=headline if ok else f"non-finite losses on {where}: {', '.join(failed)}",
        verdict=("pass: every precision trains with finite losses and evaluates on the device; the drift "
                 "column says how far each autocast dtype moves the features" if ok else f"FAIL: {', '.join(failed)}"),
        details={**details, "ok": ok, "failed": failed},
    )
    return 0 if ok else 1


def benchmark(name: str, script: str, code: list[str]) -> Benchmark:
    return Benchmark(
        name,
        title="Device check: RetiZero under every mixed precision",
        capability="retizero",
        code=code,
        default_seeds=[0],
        script=script,
    )


def main(argv: list[str] | None = None) -> int:
    bench = benchmark("device_check_retizero", "scripts/device/device_check_retizero.py", CODE)
    parser = bench.parser(__doc__)
    add_flags(parser)
    args = bench.parse(parser, argv)
    hide_cuda(args)
    return write(bench, args, "device_retizero", DATA)


if __name__ == "__main__":
    sys.exit(main())
