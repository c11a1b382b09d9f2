"""``hubtools longtail``: build, inspect and publish long-tailed medical datasets (MONICA).

``build`` turns the raw files a user downloaded into a long-tailed ``DatasetDict``, prints
the per-class train counts, writes the local artifact (Arrow data, ``LTProfile`` JSON, a
bar chart PNG, a dataset card) and optionally publishes it as Parquet on a Hub.
``train``/``eval`` run a method on a built set (a folder or a Hub dataset repo); ``table``
compares finished runs (Markdown + per-class accuracy PNG).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from hubtools.config import StrictModel, config_option
from hubtools.errors import ConfigError, HubtoolsError


@click.group("longtail")
def longtail_group() -> None:
    """Long-tailed medical datasets and methods (MONICA)."""


class BuildConfig(StrictModel):
    """``hubtools longtail build`` settings, for ``--config FILE.yaml``."""

    source_dir: Path | None = None
    ratio: float | None = None
    splits_dir: Path | None = None
    seed: int = 1
    output: Path | None = None
    cache_dir: Path | None = None
    num_proc: int | None = None
    push_to_hub: str | None = None
    private: bool | None = None
    lesion_disjoint: bool | None = None
    infogrowth: bool = False
    ig_budget: float = 1.0
    ig_score: Literal["probe", "margin", "cosine", "none"] = "probe"
    ig_seed_split: str = "validation"
    ig_min_per_class: int = 20
    ig_encoder: str = "pca"
    ig_encoder_revision: str | None = None
    ig_clean_loss: float = 0.05
    ig_dup_eps: float = 1e-4


# `--ig-*` flags whose value without --infogrowth would silently do nothing
IG_FLAGS = (
    "ig_budget",
    "ig_score",
    "ig_seed_split",
    "ig_min_per_class",
    "ig_encoder",
    "ig_encoder_revision",
    "ig_clean_loss",
    "ig_dup_eps",
)


def default_num_proc(builder: object) -> int:
    """Processes for a build: one per two cores where per-image decoding dominates, and only from 4 cores up.

    On 2 cores, worker start-up and pickling the builder cost more than they save
    (benchmarks/build_throughput.py: num_proc=2 was 2-4x slower than 1 there); in-memory
    array sources (MRI patches, Fashion-MNIST) never gain.
    """
    cpus = os.cpu_count() or 1
    return min(8, cpus // 2) if getattr(builder, "PARALLEL_BUILD", False) and cpus >= 4 else 1


@longtail_group.command("build")
@click.argument("name")
@click.option(
    "--source-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding the raw files as downloaded (optional for mri_patches and fashion_mnist).",
)
@click.option(
    "--ratio",
    type=float,
    default=None,
    help="Imbalance ratio n_max/n_min of the train split (default: the dataset's; MRI: natural; 0: natural).",
)
@click.option(
    "--splits-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local copy of the anchor's numpy/ split lists (otherwise a seeded re-draw).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the split re-draw.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Artifact folder (default: longtail-out/<config>).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Builder cache (default: the datasets cache); an interrupted build resumes from it.",
)
@click.option(
    "--num-proc", type=int, default=None, help="Processes writing the splits (default: by source kind)."
)
@click.option(
    "--push-to-hub", "push_to_hub", default=None, metavar="REPO", help="Publish as a config of this repo."
)
@click.option(
    "--private/--public",
    default=None,
    help="Repo visibility (default: private for non-commercial sources and CheXpert).",
)
@click.option(
    "--lesion-disjoint/--no-lesion-disjoint",
    default=None,
    help="isic2019: keep every lesion_id in one split (default), or draw image by image as MONICA did.",
)
@click.option(
    "--infogrowth",
    is_flag=True,
    default=False,
    help="Also curate the train split with InfoGrowth and write/publish it as config <config>-infogrowth.",
)
@click.option(
    "--ig-budget",
    type=float,
    default=1.0,
    show_default=True,
    help="Share of train rows to keep: 1.0 keeps every row the cleaner kept; below 1, a gain-weighted draw.",
)
@click.option(
    "--ig-score",
    type=click.Choice(["probe", "margin", "cosine", "none"]),
    default="probe",
    show_default=True,
    help="Label cleaner: seed-set probe, prototype margin or cosine, or none (gain only).",
)
@click.option(
    "--ig-seed-split",
    default="validation",
    show_default=True,
    help="Trusted seed (labels must be verified): a split (validation/val) or train:FRACTION, a per-class sample.",
)
@click.option(
    "--ig-min-per-class",
    type=int,
    default=20,
    show_default=True,
    help="Tail floor: every class keeps min(N, its cleaned rows) when --ig-budget < 1.",
)
@click.option(
    "--ig-encoder",
    "--ig-image-encoder",
    "ig_encoder",
    default="pca",
    show_default=True,
    metavar="pca|PATH|REPO",
    help="Image embeddings: pca (PCA-64 of the seed images) or a transformers image encoder folder / Hub id.",
)
@click.option("--ig-encoder-revision", default=None, help="Commit, branch or tag of a Hub --ig-encoder.")
@click.option(
    "--ig-clean-loss",
    type=float,
    default=0.05,
    show_default=True,
    help="Share of clean rows the probe/cosine cleaner's threshold is calibrated to lose.",
)
@click.option(
    "--ig-dup-eps",
    type=float,
    default=1e-4,
    show_default=True,
    help="A row closer than this (cosine distance) to a kept row is a duplicate and dropped.",
)
@config_option(BuildConfig)
def build_command(
    name: str,
    source_dir: Path | None,
    ratio: float | None,
    splits_dir: Path | None,
    seed: int,
    output: Path | None,
    cache_dir: Path | None,
    num_proc: int | None,
    push_to_hub: str | None,
    private: bool | None,
    lesion_disjoint: bool | None,
    infogrowth: bool,
    **ig: Any,
) -> None:
    """Build long-tailed dataset NAME from raw files, print its class counts, save it, optionally push it.

    NAME: isic2019, nct, kvasir, pathmnist, dermamnist, bloodmnist, tissuemnist, organamnist,
    organcmnist, organsmnist, odir, rfmid, chexpert, mri_patches, fashion_mnist.

    With --infogrowth the train split is also curated (hubtools.longtail.curation: trusted seed split,
    label cleaner, duplicates, information gain, a per-class floor) and saved beside the build as
    OUTPUT-infogrowth, config <config>-infogrowth, with infogrowth.json and a card section stating
    the curation; --push-to-hub publishes both configs to the same repo.
    """
    from hubtools.longtail.datasets import counts_table, make_builder, prepare, publish, save_build

    try:
        defaults = BuildConfig()
        changed = [k for k in IG_FLAGS if ig[k] != getattr(defaults, k)]
        if changed and not infogrowth:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise ConfigError(f"{flags} set without --infogrowth: they only apply to the curated config")
        if infogrowth:  # a bad curation request fails before the build, not after it
            from hubtools.longtail.curation import check_budget, parse_seed_split

            parse_seed_split(ig["ig_seed_split"])
            ig["ig_budget"] = check_budget(ig["ig_budget"])
        extra = {}
        if lesion_disjoint is not None:
            if name != "isic2019":
                raise ConfigError(f"--lesion-disjoint is an isic2019 option, not {name}'s")
            extra["lesion_disjoint"] = lesion_disjoint
        builder = make_builder(
            name, source_dir, ratio if ratio is not None else -1, splits_dir, seed, cache_dir, **extra
        )
        lt = builder.plan().profile
        cfg = builder.config.name
        click.echo(f"{name}: config {cfg}, source {builder.data_dir}")
        ds = prepare(builder, num_proc or default_num_proc(builder))
        folder = save_build(output or Path("longtail-out") / cfg, name, builder, ds, lt, repo_id=push_to_hub)
        click.echo(counts_table(lt))
        click.echo(f"saved {folder} (data/, README.md, longtail/{cfg}.json, bar chart longtail/{cfg}.png)")
        visibility = builder.PRIVATE_BY_DEFAULT if private is None else private
        if push_to_hub:
            publish(folder, push_to_hub, private=visibility, num_proc=None)
            click.echo(f"published {push_to_hub} config {cfg}: load_dataset({push_to_hub!r}, {cfg!r})")
        if infogrowth:
            curated_build(name, builder, ds, lt, folder, push_to_hub, visibility, ig)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None


def curated_build(
    name: str,
    builder: Any,
    ds: Any,
    lt: Any,
    folder: Path,
    push_to_hub: str | None,
    private: bool | None,
    ig: dict[str, Any],
) -> Path:
    """``build --infogrowth``: curate the train split just built, save it beside the build, publish it."""
    from hubtools.longtail.curation import (
        curate_split,
        curated_config_name,
        publish_curated,
        replace_train,
        save_curated,
        summary_line,
    )

    cfg = builder.config.name
    cur_cfg = curated_config_name(cfg, ig["ig_budget"])
    train, record = curate_split(
        ds,
        lt,
        seed_split=ig["ig_seed_split"],
        encoder=ig["ig_encoder"],
        encoder_revision=ig["ig_encoder_revision"],
        budget=ig["ig_budget"],
        score=ig["ig_score"],
        min_per_class=ig["ig_min_per_class"],
        clean_loss=ig["ig_clean_loss"],
        dup_eps=ig["ig_dup_eps"],
        seed=builder.config.seed,
        progress=True,
    )
    cur_ds, cur_lt = replace_train(
        ds, lt, train, f"Train split curated by InfoGrowth from config {cfg} (infogrowth.json)."
    )
    cur_folder = folder.parent / f"{folder.name}{cur_cfg[len(cfg) :]}"
    save_curated(cur_folder, name, builder, cur_ds, cur_lt, record, cur_cfg, cfg, repo_id=push_to_hub)
    click.echo(summary_line(record))
    click.echo(f"saved {cur_folder} (data/, README.md, infogrowth.json, longtail/{cur_cfg}.json)")
    if push_to_hub:
        publish_curated(cur_folder, push_to_hub, private=private, num_proc=None)
        click.echo(f"published {push_to_hub} config {cur_cfg}: load_dataset({push_to_hub!r}, {cur_cfg!r})")
    return cur_folder


@longtail_group.command("profile")
@click.option("--n-max", type=int, required=True, help="Train images of class 0.")
@click.option("--classes", type=int, required=True, help="Number of classes C.")
@click.option("--ratio", type=float, required=True, help="Imbalance ratio r.")
@click.option(
    "--rounding", type=click.Choice(["round", "floor_plus_one"]), default="round", show_default=True
)
def profile_command(n_max: int, classes: int, ratio: float, rounding: str) -> None:
    """Print the exponential long-tail profile n_i = n_max * r^(-i/(C-1))."""
    from hubtools.longtail.splits import profile

    counts = profile(n_max, classes, ratio, rounding)  # type: ignore[arg-type]
    click.echo(" ".join(str(c) for c in counts))
    click.echo(f"total {sum(counts)}")


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The run flags ``train`` and ``train-multilabel`` share (their configs have the same field names)."""
    for option in reversed(
        [
            click.option(
                "--output",
                "output_dir",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Run folder; the model is written to OUTPUT/model.",
            ),
            click.option("--epochs", "num_epochs", type=int, default=None),
            click.option("--batch-size", type=int, default=None),
            click.option("--lr", type=float, default=None),
            click.option("--image-size", type=int, default=None),
            click.option("--seed", type=int, default=None),
        ]
    ):
        command = option(command)
    return command


@longtail_group.command("train")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dataset", default=None, help="Long-tailed set: a `longtail build` folder or a Hub dataset repo."
)
@click.option("--config", "config", default=None, help="Dataset config (e.g. r100) of a Hub repo.")
@click.option(
    "--method", default=None, help="Method name (hubtools.longtail.methods.METHODS), e.g. ldam_drw."
)
@click.option(
    "--stage1",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model folder of the first stage (two-stage and post-hoc methods).",
)
@click.option(
    "--backbone",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local pretrained transformers backbone folder (default: the YAML's, else a random ResNet).",
)
@click.option(
    "--recipe",
    default=None,
    help="Named training recipe (hubtools.longtail.recipes): monica (MONICA's 224 px, 50 epochs, Adam 3e-4, "
    "batch 256, crop/flip/rotate/jitter augmentation) or plain (the same without augmentation); "
    "flags and YAML keys given win.",
)
@click.option(
    "--augmentation",
    type=click.Choice(["monica", "none"]),
    default=None,
    help="Train-time augmentation (default: the recipe's, else monica).",
)
@run_options
def train_command(config_file: Path | None, **flags: object) -> None:
    """Train a long-tail method; CONFIG_FILE is a YAML of LongTailTrainConfig (flags given win)."""
    from hubtools.config import settings_from
    from hubtools.longtail.trainer import LongTailTrainConfig, train_longtail

    backbone = flags.pop("backbone")
    try:
        cfg = settings_from(config_file, LongTailTrainConfig, flags)
        if backbone is not None:
            cfg = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"path": backbone})})
        folder = train_longtail(cfg)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch only rank 0 writes the model folder
        return
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["test"]
    click.echo(
        " ".join(
            f"{k}={metrics[k]:.2f}" for k in ("top1", "balanced_acc", "many_acc", "medium_acc", "few_acc")
        )
    )
    click.echo(f"saved {folder} (push with: hubtools push {folder} REPO)")


@longtail_group.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", required=True)
@click.option("--config", "config", default=None)
@click.option("--split", default="test", show_default=True)
def eval_command(model_dir: Path, dataset: str, config: str | None, split: str) -> None:
    """Print the lt_report (JSON) of a trained long-tail model on a split."""
    from hubtools.longtail.trainer import evaluate_model

    try:
        report = evaluate_model(model_dir, dataset, config, split)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(report, indent=2))


@longtail_group.command("table")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the Markdown here (the per-class PNG goes beside it, same stem).",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Per-class PNG path (default: beside --output, else longtail-table.png).",
)
def table_command(runs: tuple[Path, ...], output: Path | None, png: Path | None) -> None:
    """Compare `longtail train` RUNS (same dataset): MONICA-style Markdown table + per-class accuracy PNG.

    Runs of one method (seeds) are pooled into mean +- std.
    """
    from hubtools.longtail.table import comparison

    png = png or (output.with_suffix(".png") if output else Path("longtail-table.png"))
    try:
        md, _ = comparison(runs, png)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    click.echo(md)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(md + "\n", encoding="utf-8")
        click.echo(f"saved {output}")
    click.echo(f"saved {png}")


@longtail_group.command("convert-resnet50")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the transformers ResNetModel (use it as backbone.path / --backbone).",
)
def convert_resnet50_command(checkpoint: Path, out: Path) -> None:
    """Convert a torchvision/timm ResNet-50 CHECKPOINT (.pth or .safetensors) into a transformers
    ResNetModel folder, so MONICA's ImageNet-initialised recipe runs offline on weights you have."""
    from hubtools.longtail.convert import convert_resnet50

    try:
        folder = convert_resnet50(checkpoint, out)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"saved {folder} (train with: hubtools longtail train ... --backbone {folder})")


@longtail_group.command("train-multilabel")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dataset", default=None, help="Multi-label set: a folder (data/ + longtail/*.json) or a Hub repo."
)
@click.option(
    "--config", "config", default=None, help="Dataset config of a Hub repo (e.g. chexpert_multilabel)."
)
@click.option("--loss", default=None, help="bce, asl or distribution_balanced (default bce).")
@run_options
def train_multilabel_command(config_file: Path | None, **flags: object) -> None:
    """Train a multi-label long-tail loss; CONFIG_FILE is a YAML of MultiLabelTrainConfig (flags given win)."""
    from hubtools.config import settings_from
    from hubtools.longtail.multilabel import MultiLabelTrainConfig, train_multilabel

    try:
        folder = train_multilabel(settings_from(config_file, MultiLabelTrainConfig, flags))
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch only rank 0 writes the model folder
        return
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["test"]
    click.echo(
        " ".join(f"{k}={metrics[k]:.2f}" for k in ("map", "many_map", "medium_map", "few_map", "micro_f1"))
    )
    click.echo(f"saved {folder} (push with: hubtools push {folder} REPO)")
