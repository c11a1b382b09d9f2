"""RetiZero end-to-end gate on real handwritten digits (spec §4): training, zero-shot and retrieval all work.

Protocol (seeded): scikit-learn digits (8 px -> 32 px, 3 channels), first 1 200 images train, last 597 test;
captions "a handwritten digit {word}"; tiny random ViT (frozen base + LoRA r 8) + real MiniLM text tower;
600 steps, batch 10 = one image per class. Evaluated on the 597 held-out images: zero-shot Top-1/3/5 over the
10 class prompts and image-to-image retrieval P@1/3/5 (``get_retrieval_features``, cosine).

Gate (exit status 1 when it fails): Top-1 >= 0.3 and P@1 >= 0.3 (3x chance), Top-1 <= Top-3 <= Top-5.

    python benchmarks/retizero_digits.py            # ~2-4 min on 2 shared CPU cores
    python benchmarks/retizero_digits.py --smoke    # seconds, what the test runs (no gate)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hubtools.models.retizero.corpora import DIGITS, captioned_pairs
from hubtools.models.retizero.seen_unseen import OnePerClassOrder, tiny_retizero
from hubtools.models.retizero.train import train_retizero
from hubtools.models.retizero.zero_shot import (
    image_features,
    nearest_neighbours,
    retrieval_grid_png,
    retrieval_metrics,
    zero_shot_classify,
    zero_shot_report,
    zero_shot_report_png,
)
from hubtools.train import TrainConfig

RESULTS = Path(__file__).parent / "results"
GATE = {"top1": 0.3, "p@1": 0.3}


def gate_failures(metrics: dict[str, float]) -> list[str]:
    """The gate conditions ``metrics`` breaks (empty when it passes)."""
    failures = [f"{k} = {metrics[k]:.3f} < {v}" for k, v in GATE.items() if metrics[k] < v]
    if not metrics["top1"] <= metrics["top3"] <= metrics["top5"]:
        failures.append("Top-1 <= Top-3 <= Top-5 does not hold")
    return failures


def run(work_dir: Path, steps: int, seed: int, n_test: int | None, out: Path, stem: str) -> dict:
    model, processor = tiny_retizero(seed)
    train_pairs = captioned_pairs(DIGITS, "train")
    config = TrainConfig(
        output_dir=work_dir / "run",
        max_steps=steps,
        batch_size=len(DIGITS.classes),
        lr=1e-3,
        weight_decay=1e-5,
        scheduler="cosine",
        warmup_steps=steps // 10,
        max_grad_norm=1.0,
        log_every=max(1, steps // 10),
        seed=seed,
        resume=None,
    )
    start = time.perf_counter()
    result = train_retizero(
        model, processor, train_pairs, config, sampler=OnePerClassOrder(train_pairs["label"], seed)
    )
    train_seconds = time.perf_counter() - start
    model = result.model.eval()

    test = captioned_pairs(DIGITS, "test")
    if n_test is not None:
        test = test.select(range(0, len(test), max(1, len(test) // n_test)))
    images, labels = [im.convert("RGB") for im in test["image"]], np.asarray(test["label"])
    probs = zero_shot_classify(model, processor, images, DIGITS.classes, DIGITS.templates)
    report = zero_shot_report(probs, labels, DIGITS.classes)
    feats = image_features(model, processor, images, "retrieval")
    retrieval = retrieval_metrics(feats, labels)
    zero_shot_report_png(report, out / f"{stem}_zeroshot.png")
    retrieval_grid_png(
        [im.resize((32, 32)) for im in images],
        [DIGITS.classes[v] for v in labels],
        nearest_neighbours(feats, 5, "cosine"),
        out / f"{stem}_retrieval.png",
    )
    return {
        "n_train": len(train_pairs),
        "n_test": len(labels),
        "steps": result.step,
        "train_seconds": round(train_seconds, 1),
        "final_loss": result.metrics.get("loss"),
        "logit_scale": float(model.effective_logit_scale().detach()),
        "zero_shot": report,
        "retrieval": retrieval,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps on 50 test images; no gate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny towers: extra threads only spin on a shared machine
    steps, n_test = (5, 50) if args.smoke else (args.steps, None)
    stem = "retizero_digits" + ("_smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        record = run(Path(work), steps, args.seed, n_test, args.out, stem)
    metrics = {k: record["zero_shot"][k] for k in ("top1", "top3", "top5")} | record["retrieval"]
    failures = [] if args.smoke else gate_failures(metrics)
    record |= {
        "seed": args.seed,
        "smoke": args.smoke,
        "torch_threads": 1,
        "gate": GATE,
        "gate_failures": failures,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    table = (
        f"# RetiZero digits gate ({record['steps']} steps, seed {args.seed}, {record['n_test']} held-out images)\n\n"
        "| zero-shot Top-1 | Top-3 | Top-5 | retrieval P@1 | P@3 | P@5 | hit@5 | gate |\n|---|---|---|---|---|---|---|---|\n"
        + "| "
        + " | ".join(f"{metrics[k]:.3f}" for k in ("top1", "top3", "top5", "p@1", "p@3", "p@5", "hit@5"))
        + f" | {'smoke' if args.smoke else ('FAIL: ' + '; '.join(failures) if failures else 'pass')} |\n"
    )
    (args.out / f"{stem}.md").write_text(table)
    print(table, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
