"""``hubtools diffusion``: SpeeD sampler inspection, DDPM training, and the speed-up benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtools.config import settings_from
from hubtools.errors import HubtoolsError


class DiffusionCommandError(click.ClickException):
    """Bad input to a diffusion command: one line on stderr, exit code 2."""

    exit_code = 2


def _settings(config_file: Path | None, model: type, flags: dict[str, Any]) -> Any:
    try:
        return settings_from(config_file, model, flags)
    except HubtoolsError as err:
        raise click.UsageError(str(err)) from None


@click.group("diffusion")
def diffusion_group() -> None:
    """SpeeD: faster diffusion training (sampler, DDPM trainer, speed-up bench)."""


@diffusion_group.command("plot-sampler")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("speed_sampler.png"),
    show_default=True,
    help="PNG to write.",
)
@click.option("--timesteps", type=int, default=1000, show_default=True)
@click.option(
    "--beta-schedule",
    type=click.Choice(["linear", "scaled_linear", "squaredcos_cap_v2"]),
    default="linear",
    show_default=True,
)
@click.option("--k", type=float, default=5.0, show_default=True)
@click.option("--tau", type=int, default=None, help="Default 700 for T=1000, else round(0.7 T).")
@click.option("--lam", type=float, default=0.6, show_default=True)
@click.option("--weight-mode", type=click.Choice(["paper", "official"]), default="paper", show_default=True)
def plot_sampler_command(
    out: Path, timesteps: int, beta_schedule: str, k: float, tau: int | None, lam: float, weight_mode: str
) -> None:
    """Draw SpeeD's probabilities and loss weights against the schedule's increments (PNG)."""
    from diffusers import DDPMScheduler

    from hubtools.diffusion.speed import SpeeDTimestepSampler, plot_sampler

    try:
        sampler = SpeeDTimestepSampler.from_scheduler(
            DDPMScheduler(timesteps, beta_schedule=beta_schedule),
            k=k,
            tau=tau,
            lam=lam,
            weight_mode=weight_mode,
        )
    except HubtoolsError as err:
        raise DiffusionCommandError(str(err)) from None
    plot_sampler(sampler, out)
    q = sampler.effective_probs
    click.echo(
        f"pivot={sampler.pivot} tau={sampler.config.tau} share(t>=tau)={float(q[sampler.config.tau :].sum()):.4f} "
        f"weights {float(sampler.weight_table.min()):.4f}..{float(sampler.weight_table.max()):.4f} -> {out}"
    )


@diffusion_group.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML with any DDPMTrainConfig key (flags given explicitly win).",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder: checkpoints/, metrics.jsonl, pipeline/ (the repo folder).",
)
@click.option(
    "--dataset", default=None, help="digits | fashion_mnist | a save_to_disk folder | a load_dataset id."
)
@click.option("--split", default=None)
@click.option("--image-column", default=None)
@click.option("--image-size", type=int, default=None)
@click.option(
    "--sampler", default=None, help="uniform, speed, speed_official, speed_no_dual, ... (default speed)."
)
@click.option("--k", type=float, default=None)
@click.option("--tau", type=int, default=None)
@click.option("--lam", type=float, default=None)
@click.option("--weight-mode", type=click.Choice(["paper", "official"]), default=None)
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--eval-every", type=int, default=None)
@click.option("--save-every", type=int, default=None)
@click.option("--sample-steps", type=int, default=None, help="DDPM steps for the sample grid.")
@click.option("--push-to-hub", default=None, help="Upload the pipeline folder as this repo id.")
def train_command(config_file: Path | None, **flags: Any) -> None:
    """Train a DDPM (diffusers UNet2DModel) with a SpeeD or uniform timestep sampler.

    Writes OUTPUT_DIR/pipeline: a DDPMPipeline folder (model_index.json, unet/, scheduler/)
    with speed_sampler_config.json, metrics.jsonl, samples.png and a README.md card.
    Resumes from OUTPUT_DIR/checkpoints automatically.
    """
    from hubtools.diffusion.data import load_images
    from hubtools.diffusion.trainer import DDPMTrainConfig, train_ddpm

    config = _settings(config_file, DDPMTrainConfig, flags)
    try:
        images = load_images(
            config.dataset,
            split=config.split,
            image_column=config.image_column,
            image_size=config.image_size,
            channels=config.channels,
            limit=config.limit,
        )
        out = train_ddpm(config, images)
    except HubtoolsError as err:
        raise DiffusionCommandError(str(err)) from None
    shown = {
        k: round(v, 4) for k, v in out.metrics.items() if k in ("loss", "heldout_mse", "heldout_mse_ge_tau")
    }
    click.echo(f"step {out.step} {shown} -> {out.pipeline_dir}")
    if config.push_to_hub:
        click.echo(f"pushed to {config.push_to_hub}")


@diffusion_group.command(
    "speedup-bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def speedup_bench_command(argv: tuple[str, ...]) -> None:
    """Steps each sampler needs to reach the uniform baseline's final quality, on real images.

    The same command as ``python benchmarks/speed.py`` (every flag is passed on; ``--help`` lists
    them): --smoke --out --seeds --device --work --reuse, and --config --datasets --arms --steps --workers.
    """
    from hubtools.diffusion.bench import main

    try:
        path = main(list(argv))
    except HubtoolsError as err:
        raise DiffusionCommandError(str(err)) from None
    click.echo(f"-> {path}")
