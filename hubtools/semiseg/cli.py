"""``hubtools semiseg``: train (supervised, pseudo labels, Bayesian pseudo labels), build the real datasets, predict.

hubtools semiseg train --data nuclei --labelled-fraction 0.1 --method bpl --out runs/nuclei-bpl
hubtools semiseg train --config configs/semiseg/mni_gm_2d_bpl.yaml
accelerate launch --multi_gpu --num_processes 2 -m hubtools.semiseg.cli train --data mni-gm --out runs/x
hubtools semiseg build-data mni-gm --dims 3 --labelled-fraction 0.25 --out data/mni3d [--push org/mni3d]
hubtools semiseg predict --model runs/x/model --image brain.nii.gz --out mask.nii.gz
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from pydantic import Field

from hubtools.config import config_option, validate_config
from hubtools.errors import HubtoolsError
from hubtools.semiseg.data import BUILDERS
from hubtools.semiseg.objective import METHODS
from hubtools.semiseg.trainer import SemiSegTrainConfig

PL_MODE_CHOICES = ("soft", "straight_through", "hard")


class TrainCommandConfig(SemiSegTrainConfig):
    """``hubtools semiseg train --config FILE.yaml``: the run settings plus where the data comes from."""

    output_dir: Path | None = None
    data: str | None = None
    dims: int = Field(2, ge=2, le=3)
    labelled_fraction: float = Field(0.1, gt=0, le=1)
    classes: str | None = None
    push_to: str | None = None
    threads: int | None = Field(None, ge=1)


def _load_data(source: str, dims: int, labelled_fraction: float, classes: str | None):
    from hubtools.semiseg.data import builtin_dataset, load_segmentation_data

    if source in BUILDERS:
        return builtin_dataset(source, labelled_fraction, dims)
    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    return load_segmentation_data(source, names)


@click.group("semiseg")
def semiseg_group() -> None:
    """Semi-supervised segmentation with (Bayesian) pseudo labels."""


@semiseg_group.command("train")
@click.option(
    "--data",
    required=False,
    help=f"Built-in real data ({', '.join(sorted(BUILDERS))}), a save_to_disk "
    "folder or a Hub dataset repo with labelled/unlabelled/test splits.",
)
@click.option(
    "--dims", type=click.IntRange(2, 3), default=2, show_default=True, help="2D slices or 3D volumes."
)
@click.option(
    "--labelled-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Built-in data: fraction of the training pool that keeps its masks.",
)
@click.option(
    "--classes", default=None, help="Comma-separated class names of a dataset folder/repo (index order)."
)
@click.option("--method", type=click.Choice(METHODS), default="bpl", show_default=True)
@click.option(
    "--pl-mode",
    type=click.Choice(PL_MODE_CHOICES),
    default="soft",
    show_default=True,
    help="bpl: soft (differentiable in T, default), straight_through, or hard (anchor: T trained by KL only).",
)
@click.option(
    "--out",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder: metrics.jsonl, checkpoints/, model/, overlays.png, threshold.png.",
)
@click.option("--steps", type=int, default=600, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True, help="Labelled images per step.")
@click.option("--unlabelled-ratio", type=int, default=1, show_default=True)
@click.option("--width", type=int, default=8, show_default=True)
@click.option("--depth", type=int, default=3, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--prior-mu", type=float, default=0.5, show_default=True)
@click.option("--prior-sigma", type=float, default=0.1, show_default=True)
@click.option("--beta-kl", type=float, default=0.1, show_default=True)
@click.option("--softness", type=float, default=0.05, show_default=True)
@click.option(
    "--teacher",
    type=click.Choice(["ema", "none"]),
    default="ema",
    show_default=True,
    help="pl/bpl: pseudo labels from an EMA teacher on a weak view (ema) or the student's own pass (none).",
)
@click.option("--ema-decay", type=float, default=0.99, show_default=True, help="EMA teacher decay per step.")
@click.option(
    "--confidence",
    type=float,
    default=0.8,
    show_default=True,
    help="Student learns pseudo labels only where p >= c or p <= 1 - c (0.5: every pixel).",
)
@click.option(
    "--strong-elastic",
    type=float,
    default=2.0,
    show_default=True,
    help="Teacher mode: elastic warp of the student's view, in pixels (0: none).",
)
@click.option(
    "--warmup-trigger",
    type=click.Choice(["plateau", "step"]),
    default="plateau",
    show_default=True,
    help="Start the pseudo-label ramp when the supervised loss plateaus, or at --warmup-start exactly.",
)
@click.option("--warmup-start", type=float, default=0.2, show_default=True, help="Earliest ramp start (fraction).")
@click.option("--warmup-latest", type=float, default=0.5, show_default=True, help="Plateau trigger: latest start.")
@click.option("--warmup-len", type=float, default=0.1, show_default=True)
@click.option(
    "--crop", type=int, multiple=True, help="Random training crop, one value per axis (repeat the flag)."
)
@click.option("--augment", type=click.Choice(["none", "flip", "scan"]), default="flip", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--eval-every", type=int, default=None)
@click.option("--save-every", type=int, default=None)
@click.option("--resume", default="auto", show_default=True, help="'auto', a checkpoint folder, or 'none'.")
@click.option("--push", "push_to", default=None, help="Publish the model folder to this Hub repo.")
@click.option(
    "--threads", type=int, default=None, help="torch CPU threads (1 is fastest for tiny U-Nets on 2 cores)."
)
@config_option(TrainCommandConfig)
def train_command(**options: Any) -> None:
    """Train a U-Net from a few labelled and many unlabelled images and write a Hub model folder."""
    import torch

    from hubtools.hub.publish import push_artifact
    from hubtools.semiseg.trainer import MODEL_DIR, save_model_artifact, train_semiseg

    # Under accelerate launch every process runs this command; only the main one reports.
    main_process = int(os.environ.get("RANK", "0")) == 0
    say = click.echo if main_process else (lambda *_, **__: None)
    if options["crop"] == ():
        options["crop"] = None
    if options["resume"] in ("none", "null"):
        options["resume"] = None
    if not options.get("data") or not options.get("output_dir"):
        raise click.UsageError("--data and --out are required (as flags or keys data/output_dir in --config)")
    command_keys = ("data", "dims", "labelled_fraction", "classes", "push_to", "threads")
    extra = {k: options.pop(k) for k in command_keys}
    try:
        cfg = validate_config(options, SemiSegTrainConfig, source="hubtools semiseg train")
        if extra["threads"]:
            torch.set_num_threads(extra["threads"])
        data = _load_data(extra["data"], extra["dims"], extra["labelled_fraction"], extra["classes"])
        say(
            f"data: {data.description}; labelled {len(data.splits['labelled'].images)}, unlabelled "
            f"{len(data.splits['unlabelled'].images)}, test {len(data.splits['test'].images)}"
        )
        result = train_semiseg(data, cfg)
        scores = ", ".join(f"{k}={v:.4f}" for k, v in result.scores.items())
        say(f"test: {scores}")
        if result.threshold_history:
            last = result.threshold_history[-1]
            learned = "learned" if result.model.config.threshold_learned else "not learned: the prior (hard mode)"
            say(f"threshold q(T): mean {last['T_mu']:.4f}, std {last['T_sigma']:.4f} ({learned})")
        if result.pl_start is not None and cfg.method != "supervised":
            say(f"pseudo labels from step {result.pl_start:g}")
        if extra["push_to"] and main_process:
            folder = save_model_artifact(
                result.model, cfg.output_dir / MODEL_DIR, cfg, data, result.scores, repo_id=extra["push_to"]
            )
            commit = push_artifact(folder, extra["push_to"])
            say(f"pushed {folder} to {commit.commit_url}")
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    say(f"run folder: {cfg.output_dir}")


@semiseg_group.command("build-data")
@click.argument("name", type=click.Choice(sorted(BUILDERS)))
@click.option("--dims", type=click.IntRange(2, 3), default=2, show_default=True)
@click.option("--labelled-fraction", type=float, default=0.1, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the DatasetDict here (save_to_disk).",
)
@click.option(
    "--push", "push_to", default=None, help="Publish as a Parquet dataset repo (load_dataset works)."
)
def build_data_command(
    name: str, dims: int, labelled_fraction: float, out: Path | None, push_to: str | None
) -> None:
    """Build a real segmentation dataset (labelled/unlabelled/test splits) from the offline packages."""
    from hubtools.semiseg.data import builtin_dataset

    try:
        data = builtin_dataset(name, labelled_fraction, dims)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    dd = data.to_datasets()
    click.echo(f"{data.description}: " + ", ".join(f"{k} {v.num_rows}" for k, v in dd.items()))
    if out is not None:
        dd.save_to_disk(str(out))
        click.echo(f"saved to {out}")
    if push_to:
        dd.push_to_hub(push_to)
        click.echo(f"pushed to datasets/{push_to}")


@semiseg_group.command("predict")
@click.option(
    "--model", "model_path", required=True, help="A model folder or Hub repo written by semiseg train."
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help=".nii/.nii.gz, .tif or .npy; intensities are scaled to [0, 1] (uint8 by 255, others by percentile).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Mask file (same format as the image): class index per voxel.",
)
@click.option(
    "--confidence-png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save image | mask | threshold-confidence map (default: beside the mask, *.confidence.png).",
)
def predict_command(model_path: str, image: Path, out: Path, confidence_png: Path | None) -> None:
    """Segment one image or volume (2D models go slice by slice through a volume's last axis) and save
    the per-pixel confidence under the threshold distribution q(T) as a PNG beside the mask."""
    from hubtools.semiseg.predict import confidence_png_path, predict_file

    png = confidence_png or confidence_png_path(out)
    try:
        counts = predict_file(model_path, image, out, confidence_png=png)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out}: voxels per class {counts}")
    click.echo(f"wrote {png}: image, mask and confidence under the threshold distribution")


if __name__ == "__main__":
    semiseg_group()
