"""SpeeD sampler explorer Space: move tau, k and lambda and see SpeeD's timestep distribution and loss weights.

The noise schedule (and the starting values of the sliders) come from the DDPM pipeline repo in ``$SPEED_MODEL``
(default: the quickstart's ``quickstart/ddpm-digits-speed``, trained with SpeeD on real digits). Every number
shown is computed by :class:`hubtools.diffusion.speed.SpeeDTimestepSampler`, the class the trainer uses; the
empirical shares come from actually drawing timesteps with it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubtools import spaces

MODEL_ENV = "SPEED_MODEL"
DEFAULT_MODEL = "quickstart/ddpm-digits-speed"
SAMPLER_CONFIG = "speed_sampler_config.json"
EMPIRICAL_DRAWS = 20_000


@dataclass
class SpeedSpace:
    repo_id: str
    scheduler: Any
    trained: dict[str, Any]
    samples_png: Path | None
    out_dir: Path

    @classmethod
    def load(cls, repo_id: str) -> SpeedSpace:
        from diffusers import DDPMScheduler

        folder = spaces.snapshot(repo_id)
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        config = folder / SAMPLER_CONFIG
        trained = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
        samples = folder / "samples.png"
        return cls(
            repo_id,
            scheduler,
            trained,
            samples if samples.is_file() else None,
            Path(tempfile.mkdtemp(prefix="speed-space-")),
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def defaults(self) -> dict[str, Any]:
        """The slider start values: the trained model's sampler settings, else SpeeD's defaults."""
        T = self.num_train_timesteps
        return {
            "tau": int(self.trained.get("tau", 700 if T == 1000 else round(0.7 * T))),
            "k": float(self.trained.get("k", 5.0)),
            "lam": float(self.trained.get("lam", 0.6)),
            "dual": bool(self.trained.get("dual", True)),
            "weight_mode": self.trained.get("weight_mode", "paper"),
        }

    def explore(self, tau: int, k: float, lam: float, dual: bool, weight_mode: str, seed: int = 0):
        """(plot PNG path, statistics) of the sampler with these settings on the repo's noise schedule."""
        from hubtools.diffusion.speed import SpeeDTimestepSampler, plot_sampler

        sampler = SpeeDTimestepSampler.from_scheduler(
            self.scheduler, tau=int(tau), k=float(k), lam=float(lam), dual=bool(dual), weight_mode=weight_mode
        )
        q = sampler.effective_probs.numpy()
        w = sampler.weight_table.numpy().astype(np.float64)
        t, _ = sampler.sample(EMPIRICAL_DRAWS, generator=torch.Generator().manual_seed(seed))
        t = t.numpy()
        stats = {
            "pivot": sampler.pivot,
            "share_t_ge_pivot": _pair(q[sampler.pivot :].sum(), (t >= sampler.pivot).mean()),
            "share_t_ge_tau": _pair(q[int(tau) :].sum(), (t >= int(tau)).mean()),
            "share_t_lt_100": _pair(q[:100].sum(), (t < 100).mean()),
            "expected_weight": round(float(q @ w), 4),
            "weight_min_max": [round(float(w.min()), 4), round(float(w.max()), 4)],
            "weight_argmax_t": int(w.argmax()),
        }
        path = plot_sampler(
            sampler, self.out_dir / f"speed_tau{int(tau)}_k{k:g}_lam{lam:g}_{weight_mode}.png"
        )
        return str(path), stats


def _pair(analytic: float, empirical: float) -> dict[str, float]:
    return {
        "analytic": round(float(analytic), 4),
        f"empirical_{EMPIRICAL_DRAWS}_draws": round(float(empirical), 4),
    }


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the pipeline ``repo_id`` (default ``$SPEED_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    from hubtools.diffusion.speed import SamplerError

    space = SpeedSpace.load(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))
    start = space.defaults()
    T = space.num_train_timesteps

    def run(tau, k, lam, dual, weight_mode):
        try:
            return space.explore(int(tau), float(k), float(lam), bool(dual), weight_mode)
        except SamplerError as err:
            raise gr.Error(str(err)) from None

    with gr.Blocks(title="SpeeD sampler explorer") as demo:
        gr.Markdown(
            f"# SpeeD sampler explorer\nNoise schedule of `{space.repo_id}` (T={T}, "
            f"{space.scheduler.config.beta_schedule} {space.scheduler.config.beta_start:g}..."
            f"{space.scheduler.config.beta_end:g}). SpeeD draws the steps t < tau (slider **tau**) k times more often "
            "than the others (slider **k**), adds a dual sample reflected about the pivot, and weights each sample's "
            "loss by how fast the noise variance changes, within [1 - lambda, lambda] (slider **lambda**)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                tau = gr.Slider(1, T - 1, value=start["tau"], step=1, label="tau (probability step)")
                k = gr.Slider(1, 25, value=start["k"], step=0.5, label="k (weight of t < tau)")
                lam = gr.Slider(0.5, 1.0, value=start["lam"], step=0.01, label="lambda (weight range)")
                dual = gr.Checkbox(start["dual"], label="dual sampling (reflect about the pivot)")
                mode = gr.Radio(["paper", "official"], value=start["weight_mode"], label="weight mode")
                stats = gr.JSON(label="Sampling statistics (analytic vs drawn)")
            with gr.Column(scale=2):
                plot = gr.Image(label="Sampling distribution and loss weights", type="filepath")
                if space.samples_png is not None:
                    gr.Image(str(space.samples_png), label="Samples of the trained model", interactive=False)
        controls = [tau, k, lam, dual, mode]
        for control in controls:
            control.change(run, controls, [plot, stats])
        demo.load(run, controls, [plot, stats])
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
