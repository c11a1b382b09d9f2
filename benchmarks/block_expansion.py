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
3. Reported per arm and seed: domain-B test accuracy (also every fifth of the budget, for the plateau
   check), and domain-A accuracy of a frozen-feature probe (logistic regression and weighted kNN on the
   CLS feature) before and after adaptation. Every arm is compared with ``full`` paired by seed.

"Matches full fine-tuning on B" is only judged when full fine-tuning's B-accuracy curve has plateaued
(last 3 evaluations within 5 %); otherwise that half of the claim is "budget insufficient".

    python benchmarks/block_expansion.py                 # 3 seeds, ~10 min on 2 CPU cores
    python benchmarks/block_expansion.py --seeds 0 1 2 3 4
    python benchmarks/block_expansion.py --smoke         # < 60 s, a temporary folder: what the test runs

Writes ``block_expansion.{json,md,png}`` under ``--out`` (default benchmarks/results) through the shared
harness (:mod:`hubtools.bench`).
"""

from __future__ import annotations

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

from hubtools.bench import (
    Benchmark,
    Run,
    arm_summary,
    arms_table,
    paired_by_seed,
    plateau,
    values_by_seed,
)
from hubtools.bench.stats import BUDGET_INSUFFICIENT
from hubtools.models.be_dinov2 import expand_blocks, freeze_original_layers
from hubtools.models.be_dinov2.downstream import FinetuneConfig, build_classifier, predict_proba
from hubtools.models.be_dinov2.forgetting import probe_scores
from hubtools.pretrain.data import LabelledImages, labelled_images
from hubtools.train import TrainConfig, TrainState, train

ARMS = ("full", "block_expansion", "lora")
BASELINE = "full"
SIZE = 28
EVALS = 5  # domain-B evaluations per adaptation run (the plateau check needs at least 3)
MODEL = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "mlp_ratio": 2,
         "patch_size": 7, "image_size": SIZE, "layerscale_value": 0.1}
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["classifier"]}
EXPAND_AT = (1, 3)


def _train_classifier(
    model: torch.nn.Module,
    data: LabelledImages,
    steps: int,
    lr: float,
    seed: int,
    out: Path,
    eval_data: LabelledImages | None = None,
) -> tuple[torch.nn.Module, list[tuple[int, float]]]:
    """Plain cross-entropy through the shared trainer (no checkpoints kept: a benchmark run is short).

    With ``eval_data``, its accuracy is measured every ``steps / EVALS`` steps (deterministic, no
    random draws, so the trained weights are the same as without it); returns ``[(step, accuracy)]``.
    """

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(pixel_values=batch["pixel_values"]).logits, batch["labels"])

    curve: list[tuple[int, float]] = []

    def eval_fn(state: TrainState) -> dict[str, float]:
        acc = _accuracy(state.model, eval_data)
        curve.append((state.step, acc))
        return {"eval_accuracy": acc}

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
        eval_every=max(steps // EVALS, 1) if eval_data is not None else None,
        resume=None,
    )
    result = train(model, data, loss_fn, config, eval_fn=eval_fn if eval_data is not None else None)
    return result.model.eval(), curve


def _accuracy(model: torch.nn.Module, data: LabelledImages) -> float:
    return float((predict_proba(model, data).argmax(1) == data.labels.numpy()).mean())


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The (possibly LoRA-wrapped) backbone whose CLS feature the domain-A probe reads."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.dinov2


def run(smoke: bool, seeds: list[int], work: Path) -> dict[str, Any]:
    """Pretrain on A once, then every (seed, arm) adaptation to B; the raw values of every run."""
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
    base = Dinov2Model(Dinov2Config(**MODEL))
    t0 = time.perf_counter()
    clf_a, _ = _train_classifier(
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
        "sizes": {"a_train": len(a_train), "a_probe": len(a_probe), "a_test": len(a_test),
                  "b_train": len(b_train), "b_test": len(b_test)},
        "pretrain_steps": pre_steps,
        "adapt_steps": adapt_steps,
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
                    expand_blocks(pretrained, positions=EXPAND_AT),
                    10,
                    FinetuneConfig(output_dir=work, max_steps=1, mode="expanded", seed=seed),
                )
                freeze_original_layers(model)
            else:
                model = build_classifier(
                    pretrained, 10, FinetuneConfig(output_dir=work, max_steps=1, mode="full", seed=seed)
                )
                if arm == "lora":
                    model = get_peft_model(model, LoraConfig(**LORA))
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            t0 = time.perf_counter()
            model, curve = _train_classifier(
                model, b_train, adapt_steps, 1e-3, seed, work / f"{arm}-{seed}", eval_data=b_test
            )
            seconds = time.perf_counter() - t0
            after = probe_scores(_backbone(model), a_probe, a_test)
            run = Run(
                arm=arm,
                seed=seed,
                metrics={
                    "b_accuracy": _accuracy(model, b_test),
                    "a_linear_probe_after": after["linear_probe_accuracy"],
                    "a_knn_after": after["knn_accuracy"],
                    "a_linear_probe_retention": after["linear_probe_accuracy"] / a_before["linear_probe_accuracy"],
                    "a_knn_retention": after["knn_accuracy"] / a_before["knn_accuracy"],
                    "trainable_params": trainable,
                },
                extra={"b_accuracy_curve": curve, "seconds": round(seconds, 1)},
            )
            record["runs"].append(run)
            print(f"seed {seed} {arm}: {run.metrics} ({run.extra['seconds']} s)", flush=True)
    return record


def verdict(runs: list[Run], before: dict[str, float]) -> tuple[str, str, dict[str, Any]]:
    """Headline, verdict and the paired comparisons of block expansion with full fine-tuning.

    The claim has two halves. "Keeps A": block expansion's A linear-probe accuracy after adaptation is
    above full fine-tuning's (paired 95 % CI excluding zero). "Matches full on B": its B accuracy is not
    below full fine-tuning's beyond seed noise (paired CI not entirely below zero); judged only when full
    fine-tuning's mean B-accuracy curve has plateaued, else "budget insufficient".
    """
    d_b = paired_by_seed(values_by_seed(runs, "block_expansion", "b_accuracy"),
                         values_by_seed(runs, BASELINE, "b_accuracy"))
    d_a = paired_by_seed(values_by_seed(runs, "block_expansion", "a_linear_probe_after"),
                         values_by_seed(runs, BASELINE, "a_linear_probe_after"))
    curves = [[acc for _, acc in r.extra["b_accuracy_curve"]] for r in runs if r.arm == BASELINE]
    mean_curve = np.mean(np.array(curves, dtype=float), axis=0).tolist()
    flat = plateau(mean_curve)
    what = "full fine-tuning's seed-mean B-accuracy curve"
    budget = None if flat.reached else f"{BUDGET_INSUFFICIENT} to judge it: {flat.describe(what)}"
    details = {"block_expansion_minus_full": {"b_accuracy": d_b.as_dict() if d_b else None,
                                               "a_linear_probe_after": d_a.as_dict() if d_a else None},
               "full_b_accuracy_plateau": flat.as_dict(),
               "full_b_accuracy_mean_curve": mean_curve}
    be_b, full_b = arm_summary(runs, "block_expansion", "b_accuracy"), arm_summary(runs, BASELINE, "b_accuracy")
    be_a = arm_summary(runs, "block_expansion", "a_linear_probe_after")
    headline = (
        f"block expansion: B accuracy {be_b['mean']:.3f} vs full {full_b['mean']:.3f} "
        f"(paired Δ {d_b.mean:+.3f}); A linear probe after {be_a['mean']:.3f} "
        f"(before {before['linear_probe_accuracy']:.3f}, Δ vs full {d_a.mean:+.3f}); {d_b.n} paired seed(s)"
    )
    if d_b.clear is None:
        return headline, headline + ". One seed only: nothing is judged against seed noise.", details
    keeps_a = bool(d_a.clear and d_a.mean > 0)
    parts = [
        "Keeps domain A better than full fine-tuning (paired 95 % CI of the A linear-probe gain excludes zero)"
        if keeps_a else
        "Does not keep domain A better than full fine-tuning beyond seed noise"
    ]
    if budget is not None:
        parts.append(f"matching full fine-tuning on B: {budget}")
        matches_b = None
    else:
        matches_b = not (d_b.ci_high is not None and d_b.ci_high < 0)
        parts.append(
            "matches full fine-tuning on B (paired CI of the B-accuracy difference does not lie below zero)"
            if matches_b else
            f"falls short of full fine-tuning on B beyond seed noise ({d_b.mean:+.3f} "
            f"[{d_b.ci_low:+.3f}, {d_b.ci_high:+.3f}]) although full fine-tuning had plateaued"
        )
    if matches_b is None:
        overall = "budget insufficient" if keeps_a else "not reproduced (domain A not kept)"
    else:
        overall = "reproduced" if keeps_a and matches_b else "not reproduced"
    details["claim"] = overall
    return headline, f"Claim {overall}. " + "; ".join(parts) + ".", details


def write_results(bench: Benchmark, record: dict[str, Any], args: Any) -> None:
    runs: list[Run] = record["runs"]
    before = record["a_probe_before"]
    metrics = ["b_accuracy", "a_linear_probe_after", "a_knn_after", "a_linear_probe_retention", "a_knn_retention"]
    labels = {"b_accuracy": "B accuracy", "a_linear_probe_after": "A linear probe after",
              "a_knn_after": "A kNN after", "a_linear_probe_retention": "A linear retention",
              "a_knn_retention": "A kNN retention"}
    trainable = {arm: f"{next(r.metrics['trainable_params'] for r in runs if r.arm == arm):,}" for arm in ARMS}
    table = arms_table(
        runs, metrics, baseline=BASELINE, arms=list(ARMS), digits=3, labels=labels,
        diff_metrics=["b_accuracy", "a_linear_probe_after", "a_knn_after"],
        title=f"Adaptation to B (domain A probe before: linear {before['linear_probe_accuracy']:.3f}, "
        f"kNN {before['knn_accuracy']:.3f})",
        extra_columns={"trainable params": trainable},
    )
    headline, text, details = verdict(runs, before)
    points = []
    for arm in ARMS:
        b, a = arm_summary(runs, arm, "b_accuracy"), arm_summary(runs, arm, "a_linear_probe_after")
        points.append({"label": arm, "x": [b["mean"]], "y": [a["mean"]]})
    curves = []
    for arm in ARMS:
        per_seed = [r.extra["b_accuracy_curve"] for r in runs if r.arm == arm]
        steps = [s for s, _ in per_seed[0]]
        acc = np.array([[v for _, v in c] for c in per_seed], dtype=float)
        sd = acc.std(axis=0, ddof=1).round(4).tolist() if len(per_seed) > 1 else None
        curves.append({"label": arm, "x": steps, "y": acc.mean(axis=0).round(4).tolist(), "yerr": sd})
    figure = {
        "file": f"{args.name}.png",
        "title": "Adapting without forgetting (mean over seeds)",
        "panels": [
            {"kind": "scatter", "series": points, "hlines": [before["linear_probe_accuracy"]],
             "title": "dashed: domain A probe before adaptation",
             "xlabel": "domain B (digits) test accuracy",
             "ylabel": "domain A (Fashion-MNIST) linear-probe accuracy"},
            {"kind": "line", "series": curves, "title": "domain B test accuracy during adaptation (± sd)",
             "xlabel": "adaptation step", "ylabel": "B accuracy"},
        ],
    }
    sizes = record["sizes"]
    bench.write(
        args.name,
        data=(f"domain A: real Fashion-MNIST from Debian dataset-fashion-mnist ({sizes['a_train']} train, "
              f"probe {sizes['a_probe']} / test {sizes['a_test']}); domain B: scikit-learn's real 8x8 digit "
              f"scans upsampled to 28 px ({sizes['b_train']} train / {sizes['b_test']} test)"),
        config={
            "model": MODEL,
            "pretrain_steps": record["pretrain_steps"],
            "adapt_steps": record["adapt_steps"],
            "batch_size": 64,
            "lr": {"pretrain": 2e-3, "adapt": 1e-3},
            "schedule": "cosine, 10 % warm-up, weight decay 0.05",
            "expanded_at": list(EXPAND_AT),
            "lora": LORA,
            "b_evaluations": EVALS,
            "torch_threads": torch.get_num_threads(),
        },
        runs=runs,
        tables=[table],
        figures=[figure],
        headline=headline,
        verdict=text,
        details={
            "a_probe_before": before,
            "a_accuracy_pretrained_head": record["a_accuracy_pretrained_head"],
            "pretrain_seconds": record["pretrain_seconds"],
            **details,
        },
    )


def main(argv: list[str] | None = None) -> Path:
    bench = Benchmark(
        "block_expansion",
        title="Block expansion vs full fine-tuning vs LoRA",
        capability="be_dinov2",
        code=["hubtools/models/be_dinov2", "hubtools/pretrain/data.py", "hubtools/pretrain/augment.py",
              "hubtools/train", "hubtools/data/offline.py"],
    )
    parser = bench.parser(__doc__)
    args = bench.parse(parser, argv)
    args.name = "block_expansion"
    # Tiny models are overhead-bound: a second thread on a shared 2-core machine only spins (51 ms vs 1.3 s/step).
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work, prefix="runs-") as work:  # training folders only
        record = run(args.smoke, list(args.seeds), Path(work))
    write_results(bench, record, args)
    return Path(args.out) / f"{args.name}.json"


if __name__ == "__main__":
    main()
