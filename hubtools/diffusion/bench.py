"""The SpeeD speed-up benchmark: optimiser steps to reach the uniform baseline's final quality.

Every arm (sampler) trains the same UNet from the same initial weights on the same data
order with the same optimiser, EMA and evaluation; only the timestep sampler differs. The
quality measure does not depend on the sampler: a Frechet distance between features of a
small CNN classifier, trained once on the real training images, for samples drawn with DDIM
from the EMA weights, always from the same initial noise ("classifier-FID"). The held-out
denoising loss on a fixed t grid is logged as a diagnostic.

Sized for 2 CPU cores: 16x16 images, a 2-level UNet, ~1k steps per run. The published
claim (~3x, on ImageNet latents with DiT-XL/2 at 400k+ steps) is about a very different
scale; this run measures what a small real-image problem shows, it does not tune per arm.

A speed-up is only meaningful against a converged baseline: when the uniform baseline's
seed-mean FID curve has not plateaued (its last 3 evaluations span more than 5 %), every
arm's verdict is "budget insufficient", never "not reproduced". Arms are compared with the
baseline paired by seed (same initial weights and data order): per-seed speed-ups against the
same seed's baseline, and the paired final-FID difference with a bootstrap 95 % CI.

Run through the shared benchmark harness (:mod:`hubtools.bench`) by ``benchmarks/speed.py`` and
``hubtools diffusion speedup-bench`` (the same flags); see :func:`main`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from hubtools.config import StrictModel
from hubtools.diffusion.data import digits_split, fashion_arrays, to_model_range
from hubtools.diffusion.speed import SAMPLER_NAMES
from hubtools.diffusion.trainer import DDPMTrainConfig, one_torch_thread, train_ddpm
from hubtools.errors import ConfigError
from hubtools.train import METRICS_FILE

BENCH_DATASETS = ("digits", "fashion_mnist")
RESULT_NAME = "speedup"
FIGURE_FILE = "speed_curves.png"
_GEN_NOISE_SEED = 1234
USAGE = """SpeeD speed-up benchmark: steps to reach the uniform baseline's final quality on real images.

    python benchmarks/speed.py                 # digits + Fashion-MNIST, 3 arms, seeds 0 1 2 (about 27 min of CPU on 2 cores)
    python benchmarks/speed.py --smoke         # the whole protocol in well under a minute (tests run it)
    python benchmarks/speed.py --config configs/diffusion/speed_bench_quick.yaml   # digits, uniform vs speed
    hubtools diffusion speedup-bench --datasets digits --arms uniform speed --seeds 0 1 2 --steps 800

The first arm is the baseline. Writes speedup.{json,md} and speed_curves.png under --out (default
benchmarks/results; --smoke: a temporary folder). Finished runs are cached under --work keyed on the
protocol settings, the code digest and the library versions; --reuse picks them up.
"""


class BenchConfig(StrictModel):
    """The protocol settings (also the YAML keys of ``--config``). The first arm is the baseline."""

    out: Path | None = Field(None, description="results folder when --out is not given (ignored by --smoke)")
    datasets: tuple[str, ...] = BENCH_DATASETS
    arms: tuple[str, ...] = ("uniform", "speed", "speed_official")
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = Field(800, ge=4, description="baseline budget S_U (optimiser steps)")
    evals: int = Field(10, ge=2, description="evaluations per run, every steps/evals")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    image_size: int = Field(16, ge=4)
    block_out_channels: tuple[int, ...] = (16, 32)
    norm_num_groups: int = 8
    k: float = 5.0
    tau: int = 700
    lam: float = 0.6
    fid_samples: int = Field(256, ge=10)
    ddim_steps: int = Field(10, ge=1)
    heldout_examples: int = Field(64, ge=1)
    fashion_train: int = Field(10000, ge=100, description="Fashion-MNIST training images used")
    fashion_reference: int = Field(2000, ge=100, description="real images per side of the Fashion FID")
    smoothing: int = Field(3, ge=1, description="trailing mean over this many evaluations")
    workers: int = Field(2, ge=1, description="runs in parallel, one torch thread each")

    def resolved(self, smoke: bool, seeds_given: bool = False) -> BenchConfig:
        """The smoke settings: the whole protocol, on digits only, in well under a minute (seeds given
        on the command line are kept; otherwise the first)."""
        if not smoke:
            return self
        return self.model_copy(
            update={
                "datasets": ("digits",),
                "arms": self.arms[:2],
                "seeds": self.seeds if seeds_given else self.seeds[:1],
                "steps": 24,
                "evals": 3,
                "fid_samples": 48,
                "ddim_steps": 4,
                "heldout_examples": 32,
                "smoothing": 1,
                "workers": 1,
            }
        )

    def check(self) -> None:
        unknown = [a for a in self.arms if a not in SAMPLER_NAMES]
        if unknown:
            raise ConfigError(f"unknown arm(s) {unknown}; valid: {', '.join(SAMPLER_NAMES)}")
        if len(self.arms) < 2:
            raise ConfigError("give at least two arms: a baseline and one to compare with it")
        bad = [d for d in self.datasets if d not in BENCH_DATASETS]
        if bad:
            raise ConfigError(f"unknown benchmark dataset(s) {bad}; valid: {', '.join(BENCH_DATASETS)}")


class FeatureCNN(nn.Module):
    """The fixed feature extractor of the quality measure: 128-d penultimate layer of a small classifier."""

    def __init__(self, image_size: int, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def train_feature_classifier(
    x: torch.Tensor, y: torch.Tensor, image_size: int, epochs: int, seed: int = 0
) -> FeatureCNN:
    """Train the feature CNN once (fixed seed) on the real training images in [-1, 1]."""
    torch.manual_seed(seed)
    model = FeatureCNN(image_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def features(model: FeatureCNN, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(128-d features as float64, max softmax probability) for images in [-1, 1]."""
    feats, logits = zip(*(model(x[i : i + 1024]) for i in range(0, x.shape[0], 1024)), strict=True)
    return torch.cat(feats).double().numpy(), torch.cat(logits).softmax(-1).max(-1).values.numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (float64).

    tr sqrt(S_a S_b) is computed as the sum of square roots of the eigenvalues of
    sqrt(S_a) S_b sqrt(S_a), a symmetric PSD matrix, with negative round-off clipped.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


@torch.no_grad()
def ddim_samples(
    unet: nn.Module, scheduler: Any, n: int, steps: int, seed: int = _GEN_NOISE_SEED
) -> torch.Tensor:
    """n images from the same initial noise at every call (DDIM, eta=0), clamped to [-1, 1]."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    size = unet.config.sample_size
    device = next(unet.parameters()).device
    x = torch.randn((n, unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(seed))
    x = x.to(device)
    for t in ddim.timesteps:
        eps = unet(x, t.to(device)).sample
        x = ddim.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1).cpu()


def classifier_epochs(name: str, smoke: bool) -> int:
    """Epochs of the feature classifier behind the quality measure."""
    return 4 if smoke or name != "digits" else 30


def _bench_data(
    name: str, cfg: BenchConfig, smoke: bool = False, classifier_state: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """Training images, held-out images, and the real-vs-real floor of the quality measure.

    ``classifier_state``: the feature classifier's saved weights (it is then not trained again)."""
    size = cfg.image_size
    if name == "digits":
        x_tr, y_tr, x_te, y_te = digits_split(0)
        x_ref = x_tr
    elif name == "fashion_mnist":
        x_tr, y_tr = fashion_arrays("train", cfg.fashion_train)
        x_te, y_te = fashion_arrays("test", cfg.fashion_reference)
        x_ref = x_tr[: cfg.fashion_reference]
    else:
        raise ConfigError(f"unknown benchmark dataset {name!r}; valid: {', '.join(BENCH_DATASETS)}")
    train_x = to_model_range(torch.from_numpy(x_tr), size)
    test_x = to_model_range(torch.from_numpy(x_te), size)
    if classifier_state is None:
        clf = train_feature_classifier(train_x, torch.from_numpy(y_tr), size, classifier_epochs(name, smoke))
    else:
        clf = FeatureCNN(size)
        clf.load_state_dict(classifier_state)
        clf.eval()
    with torch.no_grad():
        acc = float((clf(test_x)[1].argmax(-1).numpy() == y_te).mean())
    ref_feats, _ = features(clf, to_model_range(torch.from_numpy(x_ref), size))
    test_feats, test_conf = features(clf, test_x)
    return {
        "train": train_x,
        "heldout": test_x[: cfg.heldout_examples],
        "classifier": clf,
        "classifier_heldout_accuracy": acc,
        "reference_features": ref_feats,
        "fid_floor_real_vs_real": frechet_distance(test_feats, ref_feats),
        "real_confidence": float(test_conf.mean()),
        "n_train": int(train_x.shape[0]),
        "n_reference": int(ref_feats.shape[0]),
        "n_heldout": int(test_x.shape[0]),
    }


def _run_arm(cfg: BenchConfig, data: dict[str, Any], arm: str, seed: int, folder: Path) -> dict[str, Any]:
    """One (arm, seed) training run in ``folder`` (removed afterwards): its evaluation curves."""
    every = max(1, cfg.steps // cfg.evals)
    shutil.rmtree(folder, ignore_errors=True)
    config = DDPMTrainConfig(
        output_dir=folder,
        resume=None,
        seed=seed,
        max_steps=every * cfg.evals,
        eval_every=every,
        log_every=every,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        ema_decay=cfg.ema_decay,
        image_size=cfg.image_size,
        block_out_channels=cfg.block_out_channels,
        attention_blocks=(),
        norm_num_groups=cfg.norm_num_groups,
        sampler=arm,
        k=cfg.k,
        tau=cfg.tau,
        lam=cfg.lam,
    )

    def quality(unet: nn.Module, scheduler: Any) -> dict[str, float]:
        samples = ddim_samples(unet, scheduler, cfg.fid_samples, cfg.ddim_steps)
        feats, conf = features(data["classifier"], samples)
        return {"fid": frechet_distance(feats, data["reference_features"]), "confidence": float(conf.mean())}

    start = time.perf_counter()
    train_ddpm(config, data["train"], eval_images=data["heldout"], quality_fn=quality, save=False)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (config.output_dir / METRICS_FILE).read_text().splitlines()]
    evals = [r for r in records if "fid" in r]
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "steps": [r["step"] for r in evals],
        **{k: [r[k] for r in evals] for k in CURVES},
        "seconds": round(seconds, 2),
    }


def _run_arm_one_thread(args: tuple[Any, ...]) -> dict[str, Any]:
    with one_torch_thread():
        return _run_arm(*args)


def _map_runs(args: list[tuple[Any, ...]], workers: int) -> list[dict[str, Any]]:
    if workers == 1:
        return [_run_arm_one_thread(a) for a in args]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_run_arm_one_thread, args))


CURVES = ("fid", "confidence", "heldout_mse", "heldout_mse_lt_tau", "heldout_mse_ge_tau")


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` evaluations (fewer at the start of the curve)."""
    return np.array([curve[max(0, i - window + 1) : i + 1].mean() for i in range(len(curve))])


def steps_to_reach(steps: list[int], curve: np.ndarray, target: float) -> int | None:
    """The first evaluated step whose (smoothed) quality is at or below ``target``; None if never."""
    hits = np.flatnonzero(curve <= target + 1e-12)
    return int(steps[hits[0]]) if hits.size else None


def analyse(runs: dict[str, dict[int, dict[str, Any]]], baseline: str, window: int) -> dict[str, Any]:
    """Speed-ups r = S_U / S_X, per-seed r against the same seed's baseline, paired final FID, verdicts.

    ``runs[arm][seed]`` holds ``steps`` and the ``fid`` curve. The target is the baseline's final
    seed-mean FID (trailing mean over ``window`` evaluations); S_X is the first step at which an arm's
    smoothed seed-mean FID reaches it. Before any arm is judged, the plateau criterion is applied to
    the baseline's seed-mean (raw) FID curve: if it has not plateaued, the verdict is "budget
    insufficient" whatever the arm did.
    """
    from hubtools.bench.stats import BUDGET_INSUFFICIENT, mean_sd, paired_by_seed, plateau

    steps = next(iter(runs[baseline].values()))["steps"]
    s_u = steps[-1]
    fid = {arm: {int(s): np.asarray(r["fid"], dtype=float) for s, r in by_seed.items()} for arm, by_seed in runs.items()}
    base = fid[baseline]
    base_mean = np.mean([base[s] for s in sorted(base)], axis=0)
    target = float(smooth(base_mean, window)[-1])
    base_final = {s: float(c[-1]) for s, c in base.items()}
    base_final_sd = mean_sd(list(base_final.values()))[1] or 0.0
    flat = plateau(base_mean.tolist())
    budget = (None if flat.reached else
              f"{BUDGET_INSUFFICIENT}: {flat.describe(f'the {baseline} baseline (seed-mean classifier-FID)')}")
    third = int(np.argmin(np.abs(np.array(steps) - s_u / 3)))
    out: dict[str, Any] = {
        "target_fid": target,
        "S_U": s_u,
        "baseline_final_fid_std": base_final_sd,
        "baseline_plateau": flat.as_dict(),
        "budget": budget,
        "arms": {},
    }
    for arm, by_seed in fid.items():
        seeds = sorted(by_seed)
        sm = smooth(np.mean([by_seed[s] for s in seeds], axis=0), window)
        s_x = steps_to_reach(steps, sm, target)
        paired = [s for s in seeds if s in base]
        per_seed = []
        for s in paired:  # each seed against the same seed's baseline: same initial weights and data order
            s_seed = steps_to_reach(steps, smooth(by_seed[s], window), float(smooth(base[s], window)[-1]))
            per_seed.append(round(s_u / s_seed, 3) if s_seed else None)
        final = {s: float(c[-1]) for s, c in by_seed.items()}
        m, sd = mean_sd(list(final.values()))
        diff = paired_by_seed(final, base_final)
        r = s_u / s_x if s_x else None
        entry = {
            "steps_to_target": s_x,
            "speedup": round(r, 3) if r else None,
            "seeds": paired,
            "speedup_per_seed": per_seed,
            "final_fid_mean": m,
            "final_fid_std": sd or 0.0,
            "final_fid_minus_baseline": diff.as_dict() if diff else None,
            "smoothed_fid_at_third": float(sm[third]),
            "third_step": int(steps[third]),
            "reaches_target_at_third": bool(sm[third] <= target),
        }
        if arm != baseline:
            entry["verdict"] = budget or _verdict(entry, target, base_final_sd)
        out["arms"][arm] = entry
    out["resolution_steps"] = int(steps[1] - steps[0]) if len(steps) > 1 else s_u
    return out


def _verdict(entry: dict[str, Any], target: float, base_std: float) -> str:
    """reproduced / partial / not reproduced, for an arm against a baseline that has plateaued.

    Not reproduced: speed-up below 1.5x, or a final FID worse than the baseline's beyond seed noise
    (paired 95 % CI above zero; with one seed, above the target by more than the baseline's sd).
    Reproduced: at least 2.5x on the seed-mean curve and at least 1.5x on every seed.
    """
    r = entry["speedup"] or 0.0
    seeds = [s or 0.0 for s in entry["speedup_per_seed"]] or [0.0]
    d = entry["final_fid_minus_baseline"]
    if d is not None and d["clear"] is not None:
        worse = bool(d["clear"] and d["mean"] > 0)
    else:
        worse = entry["final_fid_mean"] > target + base_std
    if r < 1.5 or worse:
        return "not reproduced"
    if r >= 2.5 and min(seeds) >= 1.5:
        return "reproduced"
    return "partial"


def _fmt_r(r: float | None) -> str:
    return f"{r:.2f}x" if r else "not reached"


def _arm_id(dataset: str, arm: str) -> str:
    return f"{dataset}/{arm}"


def envelope_runs(report: dict[str, Any]) -> list:
    """One :class:`~hubtools.bench.Run` per (dataset, arm, seed): final values, per-seed speed-up, curves."""
    from hubtools.bench import Run

    out = []
    for name, res in report["datasets"].items():
        a = res["analysis"]
        for arm, by_seed in res["runs"].items():
            e = a["arms"][arm]
            per_seed = dict(zip(e["seeds"], e["speedup_per_seed"], strict=True))
            for seed in sorted(by_seed, key=int):
                r = by_seed[seed]
                out.append(Run(
                    arm=_arm_id(name, arm),
                    seed=int(seed),
                    metrics={
                        "dataset": name,
                        "sampler": arm,
                        **{f"final_{k}": r[k][-1] for k in CURVES},
                        "speedup_vs_same_seed_baseline": per_seed.get(int(seed)),
                        "seconds": r["seconds"],
                    },
                    extra={"steps": r["steps"], **{k: r[k] for k in CURVES}},
                ))
    return out


def speedup_table(report: dict[str, Any]) -> Any:
    """One row per dataset and arm: final FID, steps to the baseline's final FID, speed-up, verdict."""
    from hubtools.bench import Table
    from hubtools.bench.stats import fmt_mean_sd

    rows = []
    for name, res in report["datasets"].items():
        a = res["analysis"]
        for arm, e in a["arms"].items():
            finals = [r["fid"][-1] for r in res["runs"][arm].values()]
            rows.append([
                name, arm, len(finals), fmt_mean_sd(finals, 2),
                f"{e['steps_to_target'] or '—'} / {a['S_U']}", _fmt_r(e["speedup"]),
                ", ".join(_fmt_r(s) for s in e["speedup_per_seed"]),
                "yes" if e["reaches_target_at_third"] else "no",
                e.get("verdict", "baseline"),
            ])
    return Table(
        title="Steps to the baseline's final quality",
        columns=["dataset", "arm", "seeds", "final FID", "steps to baseline FID", "speed-up", "per seed",
                 "at S_U/3 ≤ target", "verdict"],
        rows=rows,
        note="final FID: classifier-FID at the last evaluation, mean ± sample sd over seeds. Speed-up: S_U / "
        "steps at which the arm's smoothed seed-mean FID reaches the baseline's final smoothed seed-mean FID; "
        "per seed: the same, against the same seed's baseline. Verdicts are 'budget insufficient' whenever the "
        "baseline's seed-mean FID curve has not plateaued (last 3 evaluations within 5 %).",
    )


def curves_figure(report: dict[str, Any]) -> dict[str, Any]:
    """FID and held-out loss against steps, one row per dataset, mean ± sample sd over seeds per arm."""
    metrics = [
        ("fid", "classifier-FID (lower is better)"),
        ("heldout_mse_lt_tau", "held-out eps-MSE, t < tau"),
        ("heldout_mse_ge_tau", "held-out eps-MSE, t >= tau"),
    ]
    panels = []
    for name, res in report["datasets"].items():
        for key, label in metrics:
            series = []
            for arm, by_seed in res["runs"].items():
                steps = next(iter(by_seed.values()))["steps"]
                curves = np.array([by_seed[s][key] for s in sorted(by_seed, key=int)], dtype=float)
                sd = curves.std(0, ddof=1).tolist() if curves.shape[0] > 1 else None
                series.append({"label": arm, "x": steps, "y": curves.mean(0).tolist(), "yerr": sd})
            panel = {"title": f"{name}: {label}", "kind": "line", "xlabel": "optimiser step", "series": series}
            if key == "fid":
                panel |= {"yscale": "log",
                          "hlines": [res["analysis"]["target_fid"], res["fid_floor_real_vs_real"]],
                          "title": f"{name}: classifier-FID (log); dashed: target, real vs real"}
            panels.append(panel)
    return {"file": FIGURE_FILE, "title": "SpeeD vs uniform: quality over training (mean ± sd over seeds)",
            "panels": panels, "columns": 3}


def headline_and_verdict(report: dict[str, Any]) -> tuple[str, str]:
    parts, text = [], []
    for name, res in report["datasets"].items():
        a = res["analysis"]
        arms = [arm for arm in a["arms"] if "verdict" in a["arms"][arm]]
        parts.append(f"{name}: " + ", ".join(f"{arm} {_fmt_r(a['arms'][arm]['speedup'])}" for arm in arms))
        for arm in arms:
            e = a["arms"][arm]
            d = e["final_fid_minus_baseline"]
            diff = ""
            if d is not None:
                ci = f" [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]" if d["ci_low"] is not None else ""
                diff = f"; final FID {d['mean']:+.1f}{ci} vs the baseline, paired over {d['n']} seed(s)"
            text.append(f"{name}, {arm}: {e['verdict']} (speed-up {_fmt_r(e['speedup'])}{diff}).")
        if a["budget"] is None:
            text.append(f"{name}: {_plateau_sentence(a)}")
    budget = [n for n, res in report["datasets"].items() if res["analysis"]["budget"]]
    headline = "speed-up to the uniform baseline's final FID: " + "; ".join(parts)
    if budget:
        headline += f" (budget insufficient on {', '.join(budget)}: the baseline had not plateaued)"
    return headline, " ".join(text)


def _plateau_sentence(a: dict[str, Any]) -> str:
    p = a["baseline_plateau"]
    return (f"the baseline plateaued (last {p['window']} evaluations span {100 * p['rel_change']:.1f} %, "
            f"criterion {100 * p['rel_tol']:.0f} %).")


def _data_text(datasets: Sequence[str], cfg: BenchConfig) -> str:
    words = {
        "digits": "scikit-learn's real 8x8 handwritten digit scans (1347 train / 450 held out)",
        "fashion_mnist": f"real Fashion-MNIST from Debian dataset-fashion-mnist ({cfg.fashion_train} train, "
        f"{cfg.fashion_reference} real images per side of the FID)",
    }
    return "; ".join(words[d] for d in datasets) + f"; all resized to {cfg.image_size} px"


def main(argv: Sequence[str] | None = None) -> Path:
    """``benchmarks/speed.py`` and ``hubtools diffusion speedup-bench``: run, then write through the harness.

    Shared flags (``--smoke --out --seeds --device --work --reuse``) come from :class:`hubtools.bench.Benchmark`;
    the protocol settings from ``--config`` (YAML with :class:`BenchConfig` keys), overridden by the flags
    given. Returns the result JSON's path.
    """
    from hubtools.bench import Benchmark, arms_table
    from hubtools.config import settings_from

    bench = Benchmark(
        "speed",
        title="SpeeD speed-up: steps to the uniform baseline's final quality",
        capability="diffusion",
        code=["hubtools/diffusion/bench.py", "hubtools/diffusion/data.py", "hubtools/diffusion/speed.py",
              "hubtools/diffusion/trainer.py", "hubtools/train", "hubtools/data/offline.py"],
        script="benchmarks/speed.py",
    )
    parser = bench.parser(USAGE)
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with any BenchConfig key (flags given explicitly win)")
    parser.add_argument("--datasets", nargs="+", default=None, help=f"of {', '.join(BENCH_DATASETS)}")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="sampler names; the first is the baseline (default uniform speed speed_official)")
    parser.add_argument("--steps", type=int, default=None, help="baseline budget S_U in optimiser steps")
    parser.add_argument("--workers", type=int, default=None, help="runs in parallel, one torch thread each")
    argv = None if argv is None else list(argv)
    given = parser.parse_args(argv)  # which shared flags were given (the harness fills their defaults)
    args = bench.parse(parser, argv)

    def split(values: list[str] | None) -> tuple[str, ...] | None:  # "a,b" still works as well as "a b"
        return None if values is None else tuple(v for s in values for v in s.split(",") if v.strip())

    flags = {"datasets": split(args.datasets), "arms": split(args.arms), "steps": args.steps,
             "workers": args.workers, "seeds": tuple(given.seeds) if given.seeds else None}
    cfg = settings_from(args.config, BenchConfig, flags).resolved(args.smoke, seeds_given=bool(given.seeds))
    cfg.check()
    if given.out is None and cfg.out is not None and not args.smoke:
        args.out = cfg.out
    args.seeds = list(cfg.seeds)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer takes a GPU whenever it sees one
    report = run_bench(cfg, bench, args.work, args.smoke)
    headline, verdict = headline_and_verdict(report)
    runs = envelope_runs(report)
    tables = [speedup_table(report)]
    for name in report["datasets"]:
        tables.append(arms_table(
            [r for r in runs if r.metrics["dataset"] == name],
            ["final_fid", "final_heldout_mse_lt_tau", "final_heldout_mse_ge_tau"],
            baseline=_arm_id(name, cfg.arms[0]), arms=[_arm_id(name, a) for a in cfg.arms], digits=3,
            diff_metrics=["final_fid"], title=f"{name}: final values, paired by seed",
            labels={"final_fid": "final FID", "final_heldout_mse_lt_tau": "held-out MSE t < tau",
                    "final_heldout_mse_ge_tau": "held-out MSE t >= tau"},
        ))
    details = {
        name: {k: v for k, v in res.items() if k != "runs"} for name, res in report["datasets"].items()
    }
    path = bench.write(
        RESULT_NAME,
        data=_data_text(list(report["datasets"]), cfg),
        config=cfg.model_dump(mode="json", exclude={"out"}) | {"classifier_epochs": {
            d: classifier_epochs(d, args.smoke) for d in cfg.datasets}, "torch_threads_per_run": 1},
        runs=runs,
        tables=tables,
        figures=[curves_figure(report)],
        headline=headline,
        verdict=verdict,
        details=details,
    )
    print((Path(args.out) / f"{RESULT_NAME}.md").read_text(), flush=True)
    return path


def run_bench(cfg: BenchConfig, bench: Any, work: Path, smoke: bool) -> dict[str, Any]:
    """Every dataset x seed x arm; finished runs are cached under ``work`` through ``bench.cached``.

    Returns ``{"datasets": {name: {data facts, "runs": {arm: {seed: curves}}, "analysis": ...}}}``.
    """
    from hubtools.bench import Benchmark

    cfg.check()
    protocol = cfg.model_dump(mode="json", exclude={"out", "datasets", "arms", "seeds", "workers"})
    report: dict[str, Any] = {"datasets": {}}
    for name in cfg.datasets:
        clf_key = {"dataset": name, "epochs": classifier_epochs(name, smoke), "image_size": cfg.image_size,
                   "fashion_train": cfg.fashion_train, "fashion_reference": cfg.fashion_reference}
        clf_folder, clf_saved = bench.cached(f"feature-cnn-{name}", clf_key)
        clf_file = clf_folder / "feature_cnn.safetensors"
        state = load_file(clf_file) if clf_saved is not None and clf_file.is_file() else None
        with one_torch_thread():
            data = _bench_data(name, cfg, smoke, classifier_state=state)
        if state is None:
            clf_folder.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in data["classifier"].state_dict().items()}, clf_file)
            Benchmark.save_record(clf_folder, clf_key, {"file": str(clf_file)}, bench)
        base_key = {**protocol, "dataset": name, "classifier": clf_key}
        runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in cfg.arms}
        todo = []
        for seed in cfg.seeds:
            for arm in cfg.arms:
                key = {**base_key, "arm": arm, "seed": seed}
                folder, saved = bench.cached(f"{name}-{arm}-s{seed}", key)
                if saved is not None:
                    runs[arm][seed] = saved
                else:
                    todo.append((arm, seed, folder, key))
        shared = {k: data[k] for k in ("train", "heldout", "classifier", "reference_features")}
        results = _map_runs([(cfg, shared, arm, seed, folder / "run") for arm, seed, folder, _ in todo], cfg.workers)
        for (arm, seed, folder, key), result in zip(todo, results, strict=True):
            Benchmark.save_record(folder, key, result, bench)
            runs[arm][seed] = result
        report["datasets"][name] = {
            **{k: v for k, v in data.items() if k not in shared},
            "feature_cnn": {"file": str(clf_file), "sha256": hashlib.sha256(clf_file.read_bytes()).hexdigest()},
            "trained_runs": len(todo),
            "reused_runs": len(cfg.seeds) * len(cfg.arms) - len(todo),
            "runs": runs,
            "analysis": analyse(runs, cfg.arms[0], cfg.smoothing),
        }
    return report
