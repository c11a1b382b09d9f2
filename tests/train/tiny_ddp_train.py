"""A tiny real-data training for the shared loop, run by the tests in one process or under
``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU).

Data: the USGS elevation model of the Jacksboro fault that ships with matplotlib; the task is
to regress elevation from (x, y) on a coarse grid of it. Run as a script, every process trains
once straight through and once interrupted and resumed, then writes the sha256 of its final
weights to ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import cbook
from torch import nn
from torch.utils.data import TensorDataset

from hubtools.train import TrainConfig, TrainState, train


def dem_regression(n_rows: int, n_cols: int) -> TensorDataset:
    """(x, y) in [-1, 1] -> standardised elevation, on an evenly spaced n_rows x n_cols grid of the DEM."""
    elevation = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(np.float32)
    rows = np.linspace(0, elevation.shape[0] - 1, n_rows).round().astype(int)
    cols = np.linspace(0, elevation.shape[1] - 1, n_cols).round().astype(int)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    xy = np.stack([cc / (elevation.shape[1] - 1), rr / (elevation.shape[0] - 1)], axis=-1) * 2 - 1
    z = elevation[rr, cc]
    z = (z - elevation.mean()) / elevation.std()
    return TensorDataset(
        torch.from_numpy(xy.reshape(-1, 2).astype(np.float32)), torch.from_numpy(z.reshape(-1))
    )


class TinyMLP(nn.Module):
    """With dropout, so that a resume which replays the RNG stream wrongly changes the weights."""

    def __init__(self, hidden: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.net(xy).squeeze(-1)


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    xy, z = batch
    pred = model(xy)
    return F.mse_loss(pred, z), {"mae": (pred - z).abs().mean()}


def state_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Interrupt(Exception):
    """Raised from on_step_end to stand in for a killed job."""


def interrupt_at(step: int):
    def on_step_end(state: TrainState) -> None:
        if state.step == step:
            raise Interrupt

    return on_step_end


def main(out: Path) -> None:
    from accelerate import PartialState

    dataset = dem_regression(9, 9)  # 81 points: 5 batches of 8 per process on 2 processes
    common = dict(max_steps=6, batch_size=8, gradient_accumulation_steps=2, lr=1e-2, log_every=1, seed=3)

    torch.manual_seed(0)
    model = TinyMLP()
    init = state_sha256(model)
    straight = train(model, dataset, mse_loss, TrainConfig(output_dir=out / "straight", **common))

    torch.manual_seed(0)
    config = TrainConfig(output_dir=out / "resumed", save_every=2, **common)
    try:
        train(TinyMLP(), dataset, mse_loss, config, on_step_end=interrupt_at(5))
    except Interrupt:
        pass
    torch.manual_seed(1)  # the resumed weights must come from the checkpoint, not from this init
    resumed = train(TinyMLP(), dataset, mse_loss, config)

    state = PartialState()
    record = {
        "num_processes": state.num_processes,
        "init": init,
        "straight": state_sha256(straight.model),
        "resumed": state_sha256(resumed.model),
        "step": resumed.step,
    }
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
