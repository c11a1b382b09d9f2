"""``hubtools be-dinov2``: expand, pretrain, finetune, forgetting, convert.

Every command takes ``--config FILE.yaml`` with the same settings as its flags (flags given explicitly
win); list-valued flags take comma- or space-separated values (``--positions 3,7,11``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click

from hubtools.config import StrictModel, config_option
from hubtools.errors import HubtoolsError


def _int_list(ctx: click.Context, param: click.Parameter, value: Any) -> list[int] | None:
    if value is None or value == () or value == "":
        return None
    parts = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [int(v) for part in parts for v in str(part).replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"expected integers, got {value!r}") from None


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)


@click.group("be-dinov2")
def be_dinov2_group() -> None:
    """BE-DINORET: block-expanded DINOv2, continued pretraining, retinal evaluation."""


class ExpandConfig(StrictModel):
    base: str | None = None
    positions: list[int] | None = None
    num_groups: int | None = None
    init: Literal["layerscale_zero", "zero_out"] = "layerscale_zero"
    num_heads: int | None = None
    out: Path | None = None
    push: str | None = None


@be_dinov2_group.command("expand")
@click.option("--base", required=False, help="Dinov2 folder, Hub repo id, or original-format .pth file.")
@click.option(
    "--positions",
    callback=_int_list,
    default=None,
    help="Original block indices after which a copy is inserted [default: 3,7,11].",
)
@click.option(
    "--num-groups", type=int, default=None, help="Instead of positions: one copy per group (LLaMA-Pro)."
)
@click.option(
    "--init", type=click.Choice(["layerscale_zero", "zero_out"]), default="layerscale_zero", show_default=True
)
@click.option("--num-heads", type=int, default=None, help="Heads of a .pth base (default hidden_size // 64).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--push", default=None, help="Also publish the folder as this Hub repo (ORG/NAME).")
@config_option(ExpandConfig)
def expand_command(
    base: str | None,
    positions: list[int] | None,
    num_groups: int | None,
    init: str,
    num_heads: int | None,
    out: Path | None,
    push: str | None,
) -> None:
    """Insert identity blocks into a DINOv2 checkpoint; write a Hub-ready folder (and push it)."""
    from hubtools.hub.publish import push_artifact
    from hubtools.models.be_dinov2 import expand_blocks
    from hubtools.models.be_dinov2.artifact import save_backbone

    if base is None or out is None:
        raise click.UsageError("--base and --out are required (as flags or in --config)")
    try:
        model = expand_blocks(
            base,
            positions if positions else ((3, 7, 11) if num_groups is None else None),
            init,
            num_groups=num_groups,
            num_attention_heads=num_heads,
        )
        save_backbone(
            model,
            out,
            base_model=None if Path(base).exists() else base,
            repo_id=push,
            training_procedure="Not trained yet: the inserted blocks are exact identities, so this model "
            "computes the same function as its base.",
        )
        if push:
            push_artifact(out, push)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(
        f"expanded {model.config.original_num_hidden_layers} -> {model.config.num_hidden_layers} layers, "
        f"new at {model.config.expanded_layer_indices} ({init}); wrote {out}"
    )


class PretrainCLIConfig(StrictModel):
    model: str | None = None
    train_data: str | None = None
    out: Path | None = None
    run_dir: Path | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 32
    lr: float | None = None
    mode: Literal["expanded", "full"] = "expanded"
    image_size: int = 256
    global_crop_size: int = 224
    local_crop_size: int = 98
    n_local_crops: int = 8
    head_out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    image_column: str = "image"
    save_every: int | None = None
    seed: int = 0
    push: str | None = None


@be_dinov2_group.command("pretrain")
@click.option(
    "--model", required=False, help="Expanded (or, with --mode full, plain) DINOv2 folder / repo id."
)
@click.option(
    "--train-data",
    required=False,
    help="Image folder, datasets folder / repo id (column --image-column), or skimage:retina.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=False,
    help="Where the exported teacher backbone (Hub folder) goes.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Checkpoints and metrics.jsonl [default: OUT-run]; rerunning resumes from here.",
)
@click.option("--epochs", type=int, default=None)
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None, help="[default: 0.004 * sqrt(batch / 1024), DINOv2's rule]")
@click.option(
    "--mode",
    type=click.Choice(["expanded", "full"]),
    default="expanded",
    show_default=True,
    help="expanded: only inserted blocks + head train (BE-DINORET); full: the whole student (DINORET).",
)
@click.option(
    "--image-size", type=int, default=256, show_default=True, help="Source images are resized to this."
)
@click.option("--global-crop-size", type=int, default=224, show_default=True)
@click.option("--local-crop-size", type=int, default=98, show_default=True)
@click.option("--n-local-crops", type=int, default=8, show_default=True)
@click.option("--head-out-dim", type=int, default=65536, show_default=True)
@click.option("--head-hidden-dim", type=int, default=2048, show_default=True)
@click.option("--head-bottleneck-dim", type=int, default=256, show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option("--save-every", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--push", default=None, help="Also publish the exported folder as this Hub repo.")
@config_option(PretrainCLIConfig)
def pretrain_command(**kwargs: Any) -> None:
    """DINOv2-style continued self-supervised pretraining; exports the EMA teacher with its card."""
    from accelerate import PartialState

    from hubtools.hub.publish import push_artifact
    from hubtools.models.be_dinov2 import load_base
    from hubtools.models.be_dinov2.artifact import save_backbone
    from hubtools.pretrain import PretrainConfig, pretrain
    from hubtools.pretrain.data import load_images
    from hubtools.pretrain.ssl import summary_metrics

    o = PretrainCLIConfig(**kwargs)
    if o.model is None or o.train_data is None or o.out is None:
        raise click.UsageError("--model, --train-data and --out are required (as flags or in --config)")
    if (o.epochs is None) == (o.max_steps is None):
        raise click.UsageError("give exactly one of --epochs and --max-steps")
    try:
        backbone = load_base(o.model)
        data = load_images(o.train_data, o.image_size, column=o.image_column)
        total_steps = o.max_steps or o.epochs * max(len(data) // o.batch_size, 1)
        config = PretrainConfig(
            output_dir=o.run_dir or o.out.with_name(o.out.name + "-run"),
            num_epochs=o.epochs,
            max_steps=o.max_steps,
            batch_size=o.batch_size,
            lr=o.lr or 0.004 * (o.batch_size / 1024) ** 0.5,
            train_mode=o.mode,
            global_crop_size=o.global_crop_size,
            local_crop_size=o.local_crop_size,
            n_local_crops=o.n_local_crops,
            head_out_dim=o.head_out_dim,
            head_hidden_dim=o.head_hidden_dim,
            head_bottleneck_dim=o.head_bottleneck_dim,
            save_every=o.save_every,
            seed=o.seed,
            max_grad_norm=3.0,
            scheduler="cosine",
            warmup_steps=total_steps // 10,  # DINOv2: 10 of 100 epochs
        )
        result = pretrain(backbone, data, config)
        metrics = summary_metrics(result)
        if not PartialState().is_main_process:  # under `accelerate launch` one process writes the artifact
            return
        save_backbone(
            result.backbone.cpu(),
            o.out,
            base_model=None if Path(o.model).exists() else o.model,
            repo_id=o.push,
            training_data=f"`{o.train_data}`: {len(data)} images resized to {o.image_size} px, DINOv2 multi-crop "
            f"({o.global_crop_size} px global, {o.n_local_crops} x {o.local_crop_size} px local).",
            hyperparameters={k: v for k, v in config.model_dump(mode="json").items() if k != "output_dir"},
            training_procedure=f"{o.mode} continued SSL (DINO + iBOT + KoLeo, EMA teacher exported) for "
            f"{result.train.step} steps; last losses: "
            + ", ".join(
                f"{k}={metrics[k]:.4g}"
                for k in ("loss", "dino_loss", "ibot_loss", "koleo_loss")
                if k in metrics
            ),
        )
        if o.push:
            push_artifact(o.out, o.push)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(json.dumps({"out": str(o.out), "steps": result.train.step, **metrics}))


class FinetuneCLIConfig(StrictModel):
    model: str | None = None
    data: str | None = None
    mode: Literal["linear", "full", "expanded"] = "linear"
    few_shot: list[int] | None = None
    folds: int = 3
    out: Path | None = None
    image_size: int = 224
    max_samples: int | None = None
    epochs: int = 50
    batch_size: int = 64
    lr: float | None = None
    head_pooling: Literal["cls", "mean_patch", "cls_mean"] = "cls"
    ordinal_weight: float = 0.1
    eval_every: int = 1
    select: Literal["qwk", "auroc", "accuracy", "balanced_accuracy"] | None = None
    referable_threshold: int | None = None
    classes: str | list[str] | None = None
    fov_crop: bool = True
    clahe: bool = False
    seed: int = 0


@be_dinov2_group.command("finetune")
@click.option("--model", required=False)
@click.option(
    "--data",
    required=False,
    help="fashion-mnist, sklearn:digits, a class-per-subfolder image folder, or a datasets folder/repo id.",
)
@click.option(
    "--mode", type=click.Choice(["linear", "full", "expanded"]), default="linear", show_default=True
)
@click.option("--few-shot", callback=_int_list, default=None, help="N images per class, e.g. 5,10,20.")
@click.option("--folds", type=int, default=3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--max-samples", type=int, default=None, help="Seeded random subset of the data.")
@click.option("--epochs", type=int, default=50, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--lr", type=float, default=None, help="[default: 4e-2 * batch / 256 for linear, 1.25e-5 otherwise]"
)
@click.option(
    "--head-pooling", type=click.Choice(["cls", "mean_patch", "cls_mean"]), default="cls", show_default=True
)
@click.option(
    "--ordinal-weight",
    type=float,
    default=0.1,
    show_default=True,
    help="Weight of the expected squared grade distance; 0 for classes without an order.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Score the validation split every N epochs (and at the end); the best epoch's weights are kept.",
)
@click.option(
    "--select",
    type=click.Choice(["qwk", "auroc", "accuracy", "balanced_accuracy"]),
    default=None,
    help="Validation metric that picks the epoch [default: qwk for > 2 classes, auroc for 2].",
)
@click.option(
    "--referable-threshold",
    type=click.IntRange(min=1),
    default=None,
    help="Also report grades >= K vs < K (AUROC etc.) [default: 2 when the classes are the 5 DR grades].",
)
@click.option(
    "--classes",
    default=None,
    help="Class order of an image folder, comma-separated (e.g. 0,1,2,3,4) [default: classes.txt in the "
    "folder, else alphabetical].",
)
@click.option(
    "--fov-crop/--no-fov-crop",
    default=True,
    show_default=True,
    help="Image folders: crop each photo to its fundus disc and pad to a square (saved in the processor).",
)
@click.option(
    "--clahe", is_flag=True, default=False, help="Image folders: CLAHE on the lightness channel (saved too)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@config_option(FinetuneCLIConfig)
def finetune_command(**kwargs: Any) -> None:
    """Linear probe / full / expanded-block fine-tuning (or few-shot folds), keeping the best validation
    epoch; metrics JSON (every validation row, the selected epoch, the class order) + split file in OUT,
    and the classifier with its class names and training preprocessing in OUT/model."""
    from hubtools.models.be_dinov2 import load_base
    from hubtools.models.be_dinov2.artifact import save_classifier
    from hubtools.models.be_dinov2.downstream import (
        FinetuneConfig,
        class_folder_images,
        few_shot,
        finetune,
        stratified_split,
    )
    from hubtools.models.be_dinov2.processing_fundus import FundusImageProcessor
    from hubtools.pretrain.data import labelled_images

    o = FinetuneCLIConfig(**kwargs)
    if o.model is None or o.data is None or o.out is None:
        raise click.UsageError("--model, --data and --out are required (as flags or in --config)")
    classes = o.classes.replace(",", " ").split() if isinstance(o.classes, str) else o.classes
    path = Path(o.data)
    is_folder = path.is_dir() and not any(
        (path / f).exists() for f in ("dataset_info.json", "dataset_dict.json")
    )
    if classes and not is_folder:
        raise click.UsageError("--classes orders the subfolders of an image folder; --data is not one")
    try:
        backbone = load_base(o.model)
        if is_folder:
            processor = FundusImageProcessor(size=o.image_size, crop_fov=o.fov_crop, clahe=o.clahe)
            data, order = class_folder_images(
                path, processor, classes, max_samples=o.max_samples, seed=o.seed
            )
        else:
            # Arrays and datasets columns are resized and normalised by the data loader: no crop, no CLAHE.
            processor = FundusImageProcessor(size=o.image_size, crop_fov=False, clahe=False)
            data = labelled_images(o.data, o.image_size, max_samples=o.max_samples, seed=o.seed)
            order = "dataset"
        split = stratified_split(data.labels.numpy())
        o.out.mkdir(parents=True, exist_ok=True)
        (o.out / "split.json").write_text(json.dumps(split) + "\n")
        lr = o.lr or (4e-2 * o.batch_size / 256 if o.mode == "linear" else 1.25e-5)
        config = FinetuneConfig(
            output_dir=o.out / "run",
            num_epochs=o.epochs,
            batch_size=o.batch_size,
            lr=lr,
            weight_decay=1e-3,
            scheduler="cosine",
            mode=o.mode,
            head_pooling=o.head_pooling,
            ordinal_weight=o.ordinal_weight,
            seed=o.seed,
            drop_last=False,
            eval_every_epochs=o.eval_every,
            select=o.select,
            referable_threshold=o.referable_threshold,
        )
        train_set, val_set, test_set = (data.subset(split[k]) for k in ("train", "val", "test"))
        report: dict[str, Any] = {"class_names": data.class_names, "class_order": order}
        if o.few_shot:
            report["few_shot"] = few_shot(backbone, train_set, val_set, test_set, config, o.few_shot, o.folds)
        else:
            result = finetune(backbone, train_set, val_set, config, test_set=test_set)
            report.update(
                selection=result.selection,
                val_history=result.val_history,
                val=result.val_metrics,
                test=result.test_metrics,
            )
            values = {
                k: result.test_metrics[k]
                for k in ("accuracy", "auroc_macro", "kappa_quadratic", "f1_macro", "mcc")
            }
            if "referable" in result.test_metrics:
                values["referable_auroc"] = result.test_metrics["referable"]["auroc"]
            save_classifier(
                result.model,
                o.out / "model",
                data.class_names,
                processor,
                base_model=None if Path(o.model).exists() else o.model,
                metrics={
                    "task_type": "image-classification",
                    "dataset": {"type": o.data, "split": "test"},
                    "values": values,
                },
            )
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    report = {"model": o.model, "data": o.data, "mode": o.mode, **report}
    (o.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    click.echo(json.dumps(report.get("test") or report.get("few_shot"), default=str)[:2000])


class ForgettingCLIConfig(StrictModel):
    before: str | None = None
    after: str | None = None
    data: str | None = None
    image_size: int = 224
    max_samples: int | None = 2000
    k: int = 20
    out: Path | None = None


@be_dinov2_group.command("forgetting")
@click.option("--before", required=False, help="The base backbone (folder / repo id).")
@click.option("--after", required=False, help="The adapted backbone.")
@click.option("--data", required=False, help="Original-domain labelled data (e.g. fashion-mnist).")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--max-samples", type=int, default=2000, show_default=True)
@click.option("--k", type=int, default=20, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the report JSON."
)
@config_option(ForgettingCLIConfig)
def forgetting_command(**kwargs: Any) -> None:
    """kNN and linear-probe accuracy of the CLS features before and after adaptation."""
    from hubtools.models.be_dinov2 import load_base
    from hubtools.models.be_dinov2.downstream import stratified_split
    from hubtools.models.be_dinov2.forgetting import forgetting_report
    from hubtools.pretrain.data import labelled_images

    o = ForgettingCLIConfig(**kwargs)
    if o.before is None or o.after is None or o.data is None:
        raise click.UsageError("--before, --after and --data are required (as flags or in --config)")
    try:
        data = labelled_images(o.data, o.image_size, max_samples=o.max_samples)
        split = stratified_split(data.labels.numpy(), val_fraction=0.0, test_fraction=0.3)
        train_set, test_set = data.subset(split["train"]), data.subset(split["test"])
        report = forgetting_report(load_base(o.before), load_base(o.after), train_set, test_set, k=o.k)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    text = json.dumps({"before": o.before, "after": o.after, "data": o.data, **report}, indent=2)
    if o.out:
        o.out.write_text(text + "\n")
    click.echo(text)


class ConvertConfig(StrictModel):
    pth: Path | None = None
    out: Path | None = None
    expanded_indices: list[int] | None = None
    num_heads: int | None = None
    source: Literal["dinov2", "dinov2-train", "retfound-mae", "retfound-dinov2"] | None = None
    use_student: bool = False
    license: str | None = None
    push: str | None = None


_SOURCE_SUMMARIES = {
    "dinov2": "Original-format DINOv2 / DINORET weights",
    "dinov2-train": "The {branch} backbone of a DINOv2-recipe training checkpoint",
    "retfound-mae": "RETFound (ViT pre-trained with MAE on retinal images)",
    "retfound-dinov2": "RETFound (ViT pre-trained with the DINOv2 recipe on retinal images)",
}


@be_dinov2_group.command("convert")
@click.option(
    "--pth",
    type=click.Path(dir_okay=False, path_type=Path),
    required=False,
    help="Checkpoint: dinoret.pth / bedinoret.pth / torch.hub DINOv2, a DINOv2 training checkpoint, RETFound.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option(
    "--source",
    type=click.Choice(["dinov2", "dinov2-train", "retfound-mae", "retfound-dinov2"]),
    default=None,
    help="Checkpoint layout [default: detected from the keys and file name; an error lists what was found].",
)
@click.option(
    "--use-student",
    is_flag=True,
    default=False,
    help="Training checkpoints: keep the student backbone instead of the teacher.",
)
@click.option(
    "--license",
    default=None,
    help="Licence id of the weights [default: from the source: apache-2.0 for DINOv2, cc-by-nc-4.0 for RETFound].",
)
@click.option(
    "--expanded-indices",
    callback=_int_list,
    default=None,
    help="Which blocks are the inserted ones (BE-DINORET weights: 4,9,14).",
)
@click.option("--num-heads", type=int, default=None, help="[default: hidden_size // 64]")
@click.option("--push", default=None, help="Also publish the folder as this Hub repo (ORG/NAME).")
@config_option(ConvertConfig)
def convert_command(
    pth: Path | None,
    out: Path | None,
    source: str | None,
    use_student: bool,
    license: str | None,
    expanded_indices: list[int] | None,
    num_heads: int | None,
    push: str | None,
) -> None:
    """Convert DINOv2 / DINORET / RETFound weights to a be-dinov2 Hub folder (weights_only load).

    Heads, the MAE decoder and the other branch of a training checkpoint are dropped and listed; the
    source's licence goes to the config (weights_license) and the card.
    """
    from hubtools.hub.publish import push_artifact
    from hubtools.models.be_dinov2.artifact import save_backbone
    from hubtools.models.be_dinov2.convert import convert_checkpoint

    if pth is None or out is None:
        raise click.UsageError("--pth and --out are required (as flags or in --config)")
    try:
        model, info = convert_checkpoint(
            pth, expanded_indices, num_heads, source=source, use_student=use_student, license=license
        )
        summary = _SOURCE_SUMMARIES[info.source].format(branch=info.branch) + (
            f", converted to the be-dinov2 transformers family. Weights licence: {info.license}"
            + (" (non-commercial use only)." if "-nc" in info.license else ".")
        )
        save_backbone(
            model,
            out,
            repo_id=push,
            summary=summary,
            training_procedure=f"Converted from `{pth.name}` with `hubtools be-dinov2 convert`: {info.summary()}.",
        )
        if push:
            push_artifact(out, push)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(
        f"converted {pth} ({model.config.num_hidden_layers} layers, expanded "
        f"{model.config.expanded_layer_indices}) -> {out}\n{info.summary()}"
    )
