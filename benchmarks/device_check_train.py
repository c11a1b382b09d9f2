"""Device check of the shared training loop (`hubtools.train`), well under a minute.

On this machine's device it trains a small MLP on real data (the USGS elevation model of the
Jacksboro fault shipped with matplotlib: regress elevation from (x, y)) with every mixed
precision the device supports (CUDA: no, bf16, fp16; CPU: no, bf16), then checks exact
resume with each: a run interrupted after a checkpoint and resumed must end with the same
weights, bit for bit, as the uninterrupted one. Prints one JSON line.

    python benchmarks/device_check_train.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

# cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import accelerate  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib import cbook  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from hubtools.train import TrainConfig, TrainState, train  # noqa: E402

STEPS = 200
INTERRUPT_AT = 137  # the last checkpoint before it is step 120 (save_every=40)


def elevation_dataset(n: int = 64) -> TensorDataset:
    """(x, y) in [-1, 1] -> standardised elevation on an n x n grid of the DEM."""
    elevation = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(np.float32)
    rows = np.linspace(0, elevation.shape[0] - 1, n).round().astype(int)
    cols = np.linspace(0, elevation.shape[1] - 1, n).round().astype(int)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    xy = np.stack([cc / cols[-1], rr / rows[-1]], axis=-1).reshape(-1, 2) * 2 - 1
    z = ((elevation[rr, cc] - elevation.mean()) / elevation.std()).reshape(-1)
    return TensorDataset(torch.from_numpy(xy.astype(np.float32)), torch.from_numpy(z))


def make_model() -> nn.Module:
    torch.manual_seed(0)
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


def check(precision: str, dataset: TensorDataset, root: Path) -> dict:
    settings = dict(
        max_steps=STEPS,
        batch_size=256,
        gradient_accumulation_steps=2,
        mixed_precision=precision,
        lr=5e-3,
        scheduler="cosine",
        warmup_steps=5,
        max_grad_norm=1.0,
        log_every=1,
        save_every=40,
        seed=0,
    )
    straight = train(
        make_model(), dataset, mse_loss, TrainConfig(output_dir=root / f"{precision}-a", **settings)
    )
    log = [json.loads(line) for line in (root / f"{precision}-a" / "metrics.jsonl").read_text().splitlines()]

    config = TrainConfig(output_dir=root / f"{precision}-b", **settings)
    try:
        train(make_model(), dataset, mse_loss, config, on_step_end=stop_at(INTERRUPT_AT))
    except Interrupt:
        pass
    resumed = train(make_model(), dataset, mse_loss, config)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    final_loss = float(np.mean([r["loss"] for r in log[-10:]]))  # steps are noisy: the last ten
    return {
        "first_loss": round(log[0]["loss"], 5),
        "final_loss": round(final_loss, 5),
        "loss_decreased": final_loss < 0.6 * log[0]["loss"],
        "steps_per_s": round(STEPS / log[-1]["elapsed_s"], 1),
        "resume_exact": all(torch.equal(a[k], b[k]) for k in a),
        "resume_max_abs_diff": max((a[k].float() - b[k].float()).abs().max().item() for k in a),
    }


def main() -> None:
    start = time.perf_counter()
    torch.use_deterministic_algorithms(True)
    cuda = torch.cuda.is_available()
    precisions = ["no", "bf16", "fp16"] if cuda else ["no", "bf16"]
    dataset = elevation_dataset()
    with tempfile.TemporaryDirectory() as tmp:
        results = {p: check(p, dataset, Path(tmp)) for p in precisions}
    print(
        json.dumps(
            {
                "check": "train_loop",
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "torch": torch.__version__,
                "accelerate": accelerate.__version__,
                "results": results,
                "ok": all(r["resume_exact"] and r["loss_decreased"] for r in results.values()),
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
