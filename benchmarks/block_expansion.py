"""Block expansion vs full fine-tuning vs LoRA: adapt to a new domain without forgetting the old one.

Claim (BE-DINORET, Bafghi et al.): inserting identity blocks and training only them keeps the original
domain's performance while matching full fine-tuning on the new domain.

Protocol, on real images only:
1. A small DINOv2-architecture ViT is trained supervised on domain A = Fashion-MNIST (Debian
   ``dataset-fashion-mnist``, 28 px, 3 channels).
2. It is adapted to domain B = scikit-learn digits (1797 real 8x8 scans, upsampled to 28 px) in three
   arms with the same budget (steps, batch, lr, schedule), each with a fresh linear head:
   ``full`` (every parameter), ``block_expansion`` (2 identity blocks inserted, originals frozen),
   ``lora`` (peft, r=8 on q_proj/v_proj, head trained).
3. Reported per arm over 3 seeds: domain-B test accuracy, and domain-A accuracy of a frozen-feature
   probe (logistic regression and weighted kNN on the CLS feature) before and after adaptation.

    python benchmarks/block_expansion.py            # ~5-10 min on 2 CPU cores
    python benchmarks/block_expansion.py --smoke    # < 60 s, what the test runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from sklearn.model_selection import train_test_split
from transformers import Dinov2Config, Dinov2Model

from hubtools.models.be_dinov2 import expand_blocks, freeze_original_layers
from hubtools.models.be_dinov2.downstream import FinetuneConfig, build_classifier, predict_proba
from hubtools.models.be_dinov2.forgetting import probe_scores
from hubtools.pretrain.data import LabelledImages, labelled_images
from hubtools.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results"
ARMS = ("full", "block_expansion", "lora")
SIZE = 28


def _train_classifier(
    model: torch.nn.Module, data: LabelledImages, steps: int, lr: float, seed: int, out: Path
) -> torch.nn.Module:
    """Plain cross-entropy through the shared trainer (no checkpoints kept: a benchmark run is short)."""

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(pixel_values=batch["pixel_values"]).logits, batch["labels"])

    config = TrainConfig(
        output_dir=out,
        max_steps=steps,
        batch_size=64,
        lr=lr,
        weight_decay=0.05,
        scheduler="cosine",
        warmup_steps=steps // 10,
        seed=seed,
        log_every=max(steps // 5, 1),
        resume=None,
    )
    return train(model, data, loss_fn, config).model.eval()


def _accuracy(model: torch.nn.Module, data: LabelledImages) -> float:
    return float((predict_proba(model, data).argmax(1) == data.labels.numpy()).mean())


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The (possibly LoRA-wrapped) backbone whose CLS feature the domain-A probe reads."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.dinov2


def run(smoke: bool, seeds: list[int], work: Path) -> dict[str, Any]:
    n_a, n_probe, n_a_test = (400, 200, 150) if smoke else (6000, 2000, 1000)
    pre_steps, adapt_steps = (20, 10) if smoke else (600, 200)
    a_train = labelled_images("fashion-mnist", SIZE, "train", max_samples=n_a, seed=0)
    a_test = labelled_images("fashion-mnist", SIZE, "test", max_samples=n_a_test, seed=0)
    a_probe = a_train.subset(np.arange(n_probe))
    digits = labelled_images("sklearn:digits", SIZE)
    idx_train, idx_test = train_test_split(
        np.arange(len(digits)), test_size=0.4, stratify=digits.labels.numpy(), random_state=0
    )
    b_train, b_test = digits.subset(np.sort(idx_train)), digits.subset(np.sort(idx_test))
    if smoke:
        b_train, b_test = b_train.subset(np.arange(200)), b_test.subset(np.arange(150))

    # 1. Domain A "pretraining" (supervised), once.
    torch.manual_seed(0)
    base = Dinov2Model(
        Dinov2Config(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            mlp_ratio=2,
            patch_size=7,
            image_size=SIZE,
            layerscale_value=0.1,
        )
    )
    t0 = time.perf_counter()
    clf_a = _train_classifier(
        build_classifier(base, 10, FinetuneConfig(output_dir=work, max_steps=1, mode="full")),
        a_train,
        pre_steps,
        2e-3,
        0,
        work / "pretrain-a",
    )
    pretrained = clf_a.dinov2
    a_before = probe_scores(pretrained, a_probe, a_test)
    record: dict[str, Any] = {
        "domain_a": f"Fashion-MNIST ({len(a_train)} train, probe {len(a_probe)} / test {len(a_test)})",
        "domain_b": f"sklearn digits ({len(b_train)} train / {len(b_test)} test)",
        "model": "DINOv2 ViT hidden 64, 4 layers, 4 heads, patch 7, 28 px",
        "pretrain_steps": pre_steps,
        "adapt_steps": adapt_steps,
        "seeds": seeds,
        "a_accuracy_pretrained_head": _accuracy(clf_a, a_test),
        "a_probe_before": a_before,
        "pretrain_seconds": round(time.perf_counter() - t0, 1),
        "runs": [],
    }

    # 2. Adaptation arms, same budget.
    for seed in seeds:
        for arm in ARMS:
            torch.manual_seed(seed)
            if arm == "block_expansion":
                model = build_classifier(
                    expand_blocks(pretrained, positions=(1, 3)),
                    10,
                    FinetuneConfig(output_dir=work, max_steps=1, mode="expanded", seed=seed),
                )
                freeze_original_layers(model)
            else:
                model = build_classifier(
                    pretrained, 10, FinetuneConfig(output_dir=work, max_steps=1, mode="full", seed=seed)
                )
                if arm == "lora":
                    model = get_peft_model(
                        model,
                        LoraConfig(
                            r=8,
                            lora_alpha=16,
                            target_modules=["q_proj", "v_proj"],
                            modules_to_save=["classifier"],
                        ),
                    )
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            t0 = time.perf_counter()
            model = _train_classifier(model, b_train, adapt_steps, 1e-3, seed, work / f"{arm}-{seed}")
            seconds = time.perf_counter() - t0
            after = probe_scores(_backbone(model), a_probe, a_test)
            record["runs"].append(
                {
                    "arm": arm,
                    "seed": seed,
                    "trainable_params": trainable,
                    "seconds": round(seconds, 1),
                    "b_accuracy": _accuracy(model, b_test),
                    "a_linear_probe_after": after["linear_probe_accuracy"],
                    "a_knn_after": after["knn_accuracy"],
                }
            )
            print(json.dumps(record["runs"][-1]), flush=True)
    record["summary"] = _summarise(record)
    return record


def _summarise(record: dict[str, Any]) -> dict[str, Any]:
    before = record["a_probe_before"]
    summary = {}
    for arm in ARMS:
        runs = [r for r in record["runs"] if r["arm"] == arm]

        def ms(key: str, runs: list[dict] = runs) -> tuple[float, float]:
            values = [r[key] for r in runs]
            return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        summary[arm] = {
            "trainable_params": runs[0]["trainable_params"],
            "b_accuracy": ms("b_accuracy"),
            "a_linear_probe_after": ms("a_linear_probe_after"),
            "a_linear_probe_retention": ms("a_linear_probe_after")[0] / before["linear_probe_accuracy"],
            "a_knn_after": ms("a_knn_after"),
            "a_knn_retention": ms("a_knn_after")[0] / before["knn_accuracy"],
        }
    return summary


def table(record: dict[str, Any]) -> str:
    before = record["a_probe_before"]
    lines = [
        f"Domain A probe before adaptation: linear {before['linear_probe_accuracy']:.3f}, "
        f"kNN {before['knn_accuracy']:.3f}",
        "",
        "| arm | trainable params | B accuracy | A linear probe after (retention) | A kNN after (retention) |",
        "|---|---|---|---|---|",
    ]
    for arm, s in record["summary"].items():
        lines.append(
            f"| {arm} | {s['trainable_params']:,} | {s['b_accuracy'][0]:.3f} ± {s['b_accuracy'][1]:.3f} | "
            f"{s['a_linear_probe_after'][0]:.3f} ± {s['a_linear_probe_after'][1]:.3f} "
            f"({s['a_linear_probe_retention']:.1%}) | {s['a_knn_after'][0]:.3f} ± {s['a_knn_after'][1]:.3f} "
            f"({s['a_knn_retention']:.1%}) |"
        )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, s in record["summary"].items():
        ax.errorbar(
            s["b_accuracy"][0],
            s["a_linear_probe_after"][0],
            xerr=s["b_accuracy"][1],
            yerr=s["a_linear_probe_after"][1],
            fmt="o",
            capsize=3,
            label=arm,
        )
    ax.axhline(
        record["a_probe_before"]["linear_probe_accuracy"], color="grey", ls="--", label="A before adaptation"
    )
    ax.set_xlabel("domain B (digits) test accuracy")
    ax.set_ylabel("domain A (Fashion-MNIST) linear-probe accuracy")
    ax.set_title("Adapting without forgetting")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 seed (< 60 s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for block_expansion[_smoke].{json,md,png}"
    )
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    # Tiny models are overhead-bound: a second thread on a shared 2-core machine only spins (51 ms vs 1.3 s/step).
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        record = run(args.smoke, seeds, Path(work))
    record["total_seconds"] = round(time.perf_counter() - start, 1)
    name = "block_expansion_smoke" if args.smoke else "block_expansion"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(table(record) + "\n")
    plot(record, args.out / f"{name}.png")
    print(table(record))
    print(f"total {record['total_seconds']} s -> {args.out / name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
