"""Device check of the shared training loop (`hubtools.train`), well under a minute.

On the chosen device it trains a small MLP on real data (the USGS elevation model of the Jacksboro
fault shipped with matplotlib: regress elevation from (x, y)) with every mixed precision the device
supports (CUDA: no, bf16, fp16; CPU: no, bf16), then checks exact resume with each: a run interrupted
after a checkpoint and resumed must end with the same weights, bit for bit, as the uninterrupted one.
Writes ``device_train.json`` (and its page) through the shared harness; exit status 1 if a check fails.

    python scripts/device/device_check_train.py                    # on the GPU if there is one
    python scripts/device/device_check_train.py --smoke --device cpu   # 40 steps on a 24 x 24 grid, < 30 s

``--seeds`` sets the model initialisation and data order (default 0); each seed repeats every check.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

# cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib import cbook  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from hubtools.bench import Benchmark, Run, Table  # noqa: E402
from hubtools.train import TrainConfig, TrainState, train  # noqa: E402

# full check / smoke: steps, the step the first run is interrupted at, checkpoint interval, grid side, batch
SIZES = {
    "full": {"steps": 200, "interrupt_at": 137, "save_every": 40, "grid": 64, "batch_size": 256},
    "smoke": {"steps": 40, "interrupt_at": 27, "save_every": 10, "grid": 24, "batch_size": 64},
}


def elevation_dataset(n: int = 64) -> TensorDataset:
    """(x, y) in [-1, 1] -> standardised elevation on an n x n grid of the DEM."""
    elevation = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(np.float32)
    rows = np.linspace(0, elevation.shape[0] - 1, n).round().astype(int)
    cols = np.linspace(0, elevation.shape[1] - 1, n).round().astype(int)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    xy = np.stack([cc / cols[-1], rr / rows[-1]], axis=-1).reshape(-1, 2) * 2 - 1
    z = ((elevation[rr, cc] - elevation.mean()) / elevation.std()).reshape(-1)
    return TensorDataset(torch.from_numpy(xy.astype(np.float32)), torch.from_numpy(z))


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 256), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(256, 256), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(256, 1), nn.Flatten(0),
    )  # fmt: skip


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    xy, z = batch
    return F.mse_loss(model(xy).float(), z)


class Interrupt(Exception):
    pass


def stop_at(step: int):
    def on_step_end(state: TrainState) -> None:
        if state.step == step:
            raise Interrupt

    return on_step_end


def check(precision: str, seed: int, dataset: TensorDataset, root: Path, sizes: dict) -> dict:
    settings = dict(
        max_steps=sizes["steps"],
        batch_size=sizes["batch_size"],
        gradient_accumulation_steps=2,
        mixed_precision=precision,
        lr=5e-3,
        scheduler="cosine",
        warmup_steps=5,
        max_grad_norm=1.0,
        log_every=1,
        save_every=sizes["save_every"],
        seed=seed,
    )
    run_a, run_b = root / f"{precision}-s{seed}-a", root / f"{precision}-s{seed}-b"
    straight = train(make_model(seed), dataset, mse_loss, TrainConfig(output_dir=run_a, **settings))
    log = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss" in r]

    config = TrainConfig(output_dir=run_b, **settings)
    try:
        train(make_model(seed), dataset, mse_loss, config, on_step_end=stop_at(sizes["interrupt_at"]))
    except Interrupt:
        pass
    resumed = train(make_model(seed), dataset, mse_loss, config)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    final_loss = float(np.mean([r["loss"] for r in log[-10:]]))  # steps are noisy: the last ten
    return {
        "first_loss": round(log[0]["loss"], 5),
        "final_loss": round(final_loss, 5),
        "loss_decreased": final_loss < 0.6 * log[0]["loss"],
        "steps_per_s": round(sizes["steps"] / log[-1]["elapsed_s"], 1),
        "resume_exact": all(torch.equal(a[k], b[k]) for k in a),
        "resume_max_abs_diff": max((a[k].float() - b[k].float()).abs().max().item() for k in a),
    }


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark(
        "device_check_train",
        title="Device check: shared training loop (every precision, exact resume)",
        capability="train",
        code=["hubtools/train"],
        default_seeds=[0],
        script="scripts/device/device_check_train.py",
    )
    parser = bench.parser(__doc__)
    args = bench.parse(parser, argv)
    if args.device == "cpu":  # before CUDA starts: the shared loop (accelerate) then picks the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cuda = torch.cuda.is_available()
    precisions = ["no", "bf16", "fp16"] if cuda else ["no", "bf16"]
    sizes = SIZES["smoke" if args.smoke else "full"]
    dataset = elevation_dataset(sizes["grid"])
    runs: list[Run] = []
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for seed in args.seeds:
            for p in precisions:
                r = check(p, seed, dataset, Path(tmp), sizes)
                print(f"seed {seed} {p}: {r}", flush=True)
                runs.append(Run(arm=p, seed=seed, metrics=r))
    failed = sorted({f"{r.arm} (seed {r.seed})" for r in runs
                     if not (r.metrics["resume_exact"] and r.metrics["loss_decreased"])})
    ok = not failed
    table = Table(
        title="Per precision and seed",
        columns=["precision", "seed", "first loss", "final loss (mean of last 10 steps)", "loss decreased",
                 "steps/s", "resume bit-exact", "resume max |Δ| weight"],
        rows=[[r.arm, r.seed, r.metrics["first_loss"], r.metrics["final_loss"], r.metrics["loss_decreased"],
               r.metrics["steps_per_s"], r.metrics["resume_exact"], r.metrics["resume_max_abs_diff"]]
              for r in runs],
        note="loss decreased: the mean of the last 10 logged losses is below 0.6 x the first; resume: a run "
        f"interrupted at step {sizes['interrupt_at']} (last checkpoint before it at step "
        f"{sizes['interrupt_at'] // sizes['save_every'] * sizes['save_every']}) and resumed, against the "
        "uninterrupted run.",
    )
    device = "CUDA" if cuda else "the CPU"
    headline = (f"all of {', '.join(precisions)} train and resume bit-exactly on {device}"
                if ok else f"failed on {device}: {', '.join(failed)}")
    bench.write(
        "device_train",
        data="the USGS elevation model of the Jacksboro fault shipped with matplotlib "
        f"(jacksboro_fault_dem.npz), sampled on a {sizes['grid']} x {sizes['grid']} grid: regress "
        "standardised elevation from (x, y)",
        config={**sizes, "precisions": precisions, "gradient_accumulation_steps": 2, "lr": 5e-3,
                "scheduler": "cosine", "warmup_steps": 5, "max_grad_norm": 1.0,
                "model": "MLP 2-256-256-1, GELU, dropout 0.1", "deterministic_algorithms": True},
        runs=runs,
        tables=[table],
        headline=headline,
        verdict=("pass: every precision lowers the loss and resumes from a checkpoint to the same weights, "
                 "bit for bit" if ok else f"FAIL: {', '.join(failed)}"),
        details={"ok": ok, "failed": failed, "torch": torch.__version__,
                 "cuda_device": torch.cuda.get_device_name() if cuda else None},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
