"""The SpeeD speed-up benchmark (spec section 4): optimiser steps to reach the uniform baseline's final quality.

Every arm (sampler) trains the same UNet from the same initial weights on the same data
order with the same optimiser, EMA and evaluation; only the timestep sampler differs. The
quality measure does not depend on the sampler: a Frechet distance between features of a
small CNN classifier, trained once on the real training images, for samples drawn with DDIM
from the EMA weights, always from the same initial noise ("classifier-FID"). The held-out
denoising loss on a fixed t grid is logged as a diagnostic.

Sized for 2 CPU cores: 16x16 images, a 2-level UNet, ~1k steps per run. The published
claim (~3x, on ImageNet latents with DiT-XL/2 at 400k+ steps) is about a very different
scale; this run measures what a small real-image problem shows, it does not tune per arm.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save_file
from torch import nn

from hubtools.config import StrictModel
from hubtools.diffusion.data import digits_split, fashion_arrays, to_model_range
from hubtools.diffusion.speed import SAMPLER_NAMES
from hubtools.diffusion.trainer import DDPMTrainConfig, one_torch_thread, train_ddpm
from hubtools.errors import ConfigError
from hubtools.train import METRICS_FILE

BENCH_DATASETS = ("digits", "fashion_mnist")
_GEN_NOISE_SEED = 1234


class BenchConfig(StrictModel):
    """``hubtools diffusion speedup-bench`` settings. The first arm is the baseline."""

    out: Path = Path("benchmarks/results")
    smoke: bool = False
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

    def resolved(self) -> BenchConfig:
        """The smoke settings: the whole protocol, on digits only, in well under a minute."""
        if not self.smoke:
            return self
        return self.model_copy(
            update={
                "datasets": ("digits",),
                "arms": self.arms[:2],
                "seeds": self.seeds[:1],
                "steps": 24,
                "evals": 3,
                "fid_samples": 48,
                "ddim_steps": 4,
                "heldout_examples": 32,
                "smoothing": 1,
                "workers": 1,
            }
        )


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


def _bench_data(name: str, cfg: BenchConfig) -> dict[str, Any]:
    """Training images, held-out images, and the real-vs-real floor of the quality measure."""
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
    epochs = (30 if name == "digits" else 4) if not cfg.smoke else 4
    clf = train_feature_classifier(train_x, torch.from_numpy(y_tr), size, epochs)
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


def _run_arm(cfg: BenchConfig, data: dict[str, Any], arm: str, seed: int, work: Path) -> dict[str, Any]:
    every = max(1, cfg.steps // cfg.evals)
    config = DDPMTrainConfig(
        output_dir=work / f"{arm}-s{seed}",
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
    keys = ("fid", "confidence", "heldout_mse", "heldout_mse_lt_tau", "heldout_mse_ge_tau")
    return {
        "steps": [r["step"] for r in evals],
        **{k: [r[k] for r in evals] for k in keys},
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


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` evaluations (fewer at the start of the curve)."""
    return np.array([curve[max(0, i - window + 1) : i + 1].mean() for i in range(len(curve))])


def steps_to_reach(steps: list[int], curve: np.ndarray, target: float) -> int | None:
    """The first evaluated step whose (smoothed) quality is at or below ``target``; None if never."""
    hits = np.flatnonzero(curve <= target + 1e-12)
    return int(steps[hits[0]]) if hits.size else None


def analyse(runs: dict[str, dict[int, dict[str, Any]]], baseline: str, window: int) -> dict[str, Any]:
    """Speed-ups r = S_U / S_X from seed-averaged smoothed FID curves, per-seed r, equal-step check, verdict."""
    steps = next(iter(runs[baseline].values()))["steps"]
    s_u = steps[-1]
    fid = {arm: np.array([runs[arm][s]["fid"] for s in sorted(runs[arm])]) for arm in runs}
    base_sm = smooth(fid[baseline].mean(0), window)
    target = float(base_sm[-1])
    base_final_std = float(fid[baseline][:, -1].std(ddof=1)) if fid[baseline].shape[0] > 1 else 0.0
    third = int(np.argmin(np.abs(np.array(steps) - s_u / 3)))
    out: dict[str, Any] = {
        "target_fid": target,
        "S_U": s_u,
        "baseline_final_fid_std": base_final_std,
        "arms": {},
    }
    for arm, curves in fid.items():
        sm = smooth(curves.mean(0), window)
        s_x = steps_to_reach(steps, sm, target)
        per_seed = []
        for i in range(curves.shape[0]):
            seed_target = float(smooth(fid[baseline][i], window)[-1])
            s_seed = steps_to_reach(steps, smooth(curves[i], window), seed_target)
            per_seed.append(round(s_u / s_seed, 3) if s_seed else None)
        r = s_u / s_x if s_x else None
        final = curves[:, -1]
        entry = {
            "steps_to_target": s_x,
            "speedup": round(r, 3) if r else None,
            "speedup_per_seed": per_seed,
            "final_fid_mean": float(final.mean()),
            "final_fid_std": float(final.std(ddof=1)) if final.size > 1 else 0.0,
            "smoothed_fid_at_third": float(sm[third]),
            "third_step": int(steps[third]),
            "reaches_target_at_third": bool(sm[third] <= target),
        }
        if arm != baseline:
            entry["verdict"] = _verdict(entry, target, base_final_std)
        out["arms"][arm] = entry
    out["resolution_steps"] = int(steps[1] - steps[0]) if len(steps) > 1 else s_u
    return out


def _verdict(entry: dict[str, Any], target: float, base_std: float) -> str:
    r = entry["speedup"] or 0.0
    seeds = [s or 0.0 for s in entry["speedup_per_seed"]]
    if r < 1.5 or entry["final_fid_mean"] > target + base_std:
        return "not reproduced"
    if r >= 2.5 and min(seeds) >= 1.5:
        return "reproduced"
    return "partial"


def _fmt_r(r: float | None) -> str:
    return f"{r:.2f}x" if r else "not reached"


def table_markdown(report: dict[str, Any]) -> str:
    """One row per dataset and arm: final FID, steps to the baseline's final FID, speed-up, verdict."""
    lines = [
        "| dataset | arm | final FID (mean ± sd, 3 seeds) | steps to baseline FID | speed-up | per seed "
        "| at S_U/3 ≤ target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in report["datasets"].items():
        a = res["analysis"]
        for arm, e in a["arms"].items():
            seeds = ", ".join(_fmt_r(s) for s in e["speedup_per_seed"])
            lines.append(
                f"| {name} | {arm} | {e['final_fid_mean']:.2f} ± {e['final_fid_std']:.2f} | "
                f"{e['steps_to_target'] or '—'} / {a['S_U']} | {_fmt_r(e['speedup'])} | {seeds} | "
                f"{'yes' if e['reaches_target_at_third'] else 'no'} | {e.get('verdict', 'baseline')} |"
            )
    return "\n".join(lines)


def plot_curves(report: dict[str, Any], path: Path) -> Path:
    """FID and held-out loss against steps, one row per dataset, mean ± sd over seeds per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["datasets"])
    metrics = [
        ("fid", "classifier-FID (lower is better)"),
        ("heldout_mse_lt_tau", "held-out eps-MSE, t < tau"),
        ("heldout_mse_ge_tau", "held-out eps-MSE, t >= tau"),
    ]
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        res = report["datasets"][name]
        for col, (key, label) in enumerate(metrics):
            ax = axes[row][col]
            for arm, by_seed in res["runs"].items():
                steps = next(iter(by_seed.values()))["steps"]
                curves = np.array([by_seed[s][key] for s in sorted(by_seed)])
                mean, sd = curves.mean(0), curves.std(0)
                ax.plot(steps, mean, marker="o", ms=3, label=arm)
                ax.fill_between(steps, mean - sd, mean + sd, alpha=0.2)
            if key == "fid":
                ax.axhline(res["analysis"]["target_fid"], color="k", ls="--", lw=0.8, label="baseline final")
                ax.axhline(res["fid_floor_real_vs_real"], color="grey", ls=":", lw=0.8, label="real vs real")
                ax.set_yscale("log")
            ax.set_title(f"{name}: {label}")
            ax.set_xlabel("optimiser step")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run every dataset x seed x arm, write speedup.json, speedup.md and speed_curves.png under ``config.out``."""
    cfg = config.resolved()
    unknown = [a for a in cfg.arms if a not in SAMPLER_NAMES]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; valid: {', '.join(SAMPLER_NAMES)}")
    if len(cfg.arms) < 2:
        raise ConfigError("give at least two arms: a baseline and one to compare with it")
    bad = [d for d in cfg.datasets if d not in BENCH_DATASETS]
    if bad:
        raise ConfigError(f"unknown benchmark dataset(s) {bad}; valid: {', '.join(BENCH_DATASETS)}")
    start = time.perf_counter()
    report: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="speed-bench-") as tmp:
        for name in cfg.datasets:
            with one_torch_thread():
                data = _bench_data(name, cfg)
            jobs = [(arm, seed) for seed in cfg.seeds for arm in cfg.arms]
            shared = {k: data[k] for k in ("train", "heldout", "classifier", "reference_features")}
            args = [(cfg, shared, arm, seed, Path(tmp) / name) for arm, seed in jobs]
            results = _map_runs(args, cfg.workers)
            runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in cfg.arms}
            for (arm, seed), result in zip(jobs, results, strict=True):
                runs[arm][seed] = result
            report["datasets"][name] = {
                **{k: v for k, v in data.items() if k not in shared},
                "runs": runs,
                "analysis": analyse(runs, cfg.arms[0], cfg.smoothing),
            }
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in data["classifier"].state_dict().items()},
                Path(cfg.out) / f"speed_feature_cnn_{name}.safetensors",
            )
            _write_report(report, cfg, start)
    return _write_report(report, cfg, start)


def _write_report(report: dict[str, Any], cfg: BenchConfig, start: float) -> dict[str, Any]:
    """Write what is measured so far (after each dataset), so a long run that is stopped still leaves results."""
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "workers": cfg.workers,
        "torch_threads_per_run": 1,
        "torch": torch.__version__,
    }
    report["table_markdown"] = table_markdown(report)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "speedup.json", out / "speedup.md", out / "speed_curves.png"]
    report["files"] = [str(f) for f in files]
    files[0].write_text(json.dumps(report, indent=1) + "\n")
    files[1].write_text(
        f"# SpeeD speed-up benchmark\n\n{report['table_markdown']}\n\nTotal: {report['seconds']} s\n"
    )
    plot_curves(report, files[2])
    return report
