"""Device check of RetiZero (well under a minute on a GPU): training under every mixed precision, then zero-shot
and retrieval on the device, and how far bf16/fp16 autocast features drift from float32.

Real data: Fashion-MNIST images captioned with written class descriptions (``retizero.corpora``), 10 classes,
one image per class per batch. Model: the benchmarks' tiny ViT (frozen + LoRA r 8) + real MiniLM text tower.
For each precision (CUDA: no, bf16, fp16; CPU: no, bf16) it trains ``--steps`` steps through the shared
accelerate loop (``hubtools.train``), then evaluates zero-shot Top-1 and retrieval P@1 on held-out images.
The float32-trained model's image/text features are then recomputed under each autocast dtype: max |Δ|.
Prints one JSON object.

    python benchmarks/device_check_retizero.py                 # on the GPU if there is one
    python benchmarks/device_check_retizero.py --device cpu    # hides CUDA (what the test runs, few steps)
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


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=20, help="held-out images per class")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def main() -> dict:
    args = _args()
    if args.device == "cpu":  # before torch starts CUDA: the shared loop then picks the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
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
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    precisions = ["no", "bf16", "fp16"] if cuda else ["no", "bf16"]
    pairs = captioned_pairs(FASHION, "train", n_per_class=30)
    test = captioned_pairs(FASHION, "test", n_per_class=args.n_test, seed=1)
    test_images, test_labels = [im.convert("RGB") for im in test["image"]], np.asarray(test["label"])
    report: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "steps": args.steps,
        "n_train": len(pairs),
        "n_test": len(test_labels),
        "runs": {},
    }
    trained_fp32 = processor = None
    with tempfile.TemporaryDirectory() as work:
        for precision in precisions:
            model, processor = tiny_retizero(seed=0)
            config = TrainConfig(
                output_dir=Path(work) / precision,
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
            records = [
                json.loads(line)
                for line in (Path(work) / precision / "metrics.jsonl").read_text().splitlines()
            ]
            losses = [round(r["loss"], 4) for r in records if "loss" in r]
            trained = result.model.eval()
            probs = zero_shot_classify(trained, processor, test_images, FASHION.classes, FASHION.templates)
            feats = image_features(trained, processor, test_images, "retrieval").cpu()
            report["runs"][precision] = {
                "train_seconds": round(seconds, 2),
                "steps_per_second": round(result.step / seconds, 1),
                "losses": losses,
                "finite": all(math.isfinite(x) for x in losses),
                "model_device": str(trained.device),
                "logit_scale": round(float(trained.effective_logit_scale().detach()), 3),
                "zero_shot_top1": topk_accuracy(probs, test_labels, ks=(1,))["top1"],
                "retrieval_p@1": retrieval_metrics(feats, test_labels, ks=(1,))["p@1"],
            }
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
                report["runs"][precision]["max_abs_diff_vs_fp32"] = {
                    "image_embeds": float((out.image_embeds.float() - reference.image_embeds).abs().max()),
                    "text_embeds": float((out.text_embeds.float() - reference.text_embeds).abs().max()),
                    "logits_per_image": float(
                        (out.logits_per_image.float() - reference.logits_per_image).abs().max()
                    ),
                }
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(0 if all(run["finite"] for run in report["runs"].values()) else 1)
