"""``hubtools retizero``: build, train, zeroshot, retrieve, fewshot, export, convert.

Every command takes ``--config FILE.yaml`` with the same settings as its flags (flags given explicitly win).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hubtools.config import StrictModel, config_option
from hubtools.errors import HubtoolsError

OUT_DIR = click.Path(file_okay=False, path_type=Path)


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)


def _require(**values: Any) -> None:
    missing = [f"--{k.replace('_', '-')}" for k, v in values.items() if v is None]
    if missing:
        raise click.UsageError(f"{', '.join(missing)} required (as flags or in --config)")


def _register_tower_families() -> None:
    """Towers may be hubtools families transformers does not ship (a block-expanded DINOv2, ``be-dinov2``):
    importing them registers them with AutoConfig/AutoModel, so towers and RetiZero folders holding them load."""
    import hubtools.models.be_dinov2  # noqa: F401


def _load(model_dir: str):
    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor

    _register_tower_families()

    model, processor = (
        RetiZeroModel.from_pretrained(model_dir).eval(),
        RetiZeroProcessor.from_pretrained(model_dir),
    )
    processor.check_towers(model.config)
    return model, processor


def _write_report(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    click.echo(text)


@click.group("retizero")
def retizero_group() -> None:
    """RetiZero: retinal vision-language model, zero-shot and retrieval."""


class BuildConfig(StrictModel):
    vision: str | None = None
    text: str | None = None
    out: Path | None = None
    lora_r: int = 8
    projection_dim: int = 512
    max_length: int = 77


@retizero_group.command("build")
@click.option(
    "--vision", help="Vision tower: folder or Hub id of a ViT/Dinov2 model (and its image processor)."
)
@click.option("--text", help="Text tower: folder or Hub id of a BERT-family model with its tokenizer.")
@click.option("--out", type=OUT_DIR)
@click.option(
    "--lora-r", type=int, default=8, show_default=True, help="LoRA rank on the vision q/v (0: none)."
)
@click.option("--projection-dim", type=int, default=512, show_default=True)
@click.option("--max-length", type=int, default=77, show_default=True, help="Longest text in tokens.")
@config_option(BuildConfig)
def build_command(
    vision: str | None, text: str | None, out: Path | None, lora_r: int, projection_dim: int, max_length: int
) -> None:
    """Towers -> dual encoder (LoRA added after loading the pretrained vision weights); un-merged folder."""
    _require(vision=vision, text=text, out=out)
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, ViTImageProcessorPil

    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor
    from hubtools.models.retizero.train import save_retizero

    _register_tower_families()
    try:
        vision_model, text_model = AutoModel.from_pretrained(vision), AutoModel.from_pretrained(text)
        try:
            image_processor = AutoImageProcessor.from_pretrained(vision)
        except OSError:  # a bare backbone folder: RetiZero's zero-shot preprocessing (resize, ImageNet stats)
            size = int(vision_model.config.image_size)
            image_processor = ViTImageProcessorPil(
                size={"height": size, "width": size},
                image_mean=[0.485, 0.456, 0.406],
                image_std=[0.229, 0.224, 0.225],
            )
        processor = RetiZeroProcessor(
            image_processor, AutoTokenizer.from_pretrained(text), max_length=max_length
        )
        model = RetiZeroModel.from_towers(
            vision_model,
            text_model,
            vision_lora={"r": lora_r} if lora_r else None,
            projection_dim=projection_dim,
            text_max_length=max_length,
        )
        bases = [b for b in (vision, text) if not Path(b).exists()]
        save_retizero(model, processor, out, merge_lora=False, base_model=bases or None)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(
        f"built RetiZero ({vision_model.config.model_type} + {text_model.config.model_type}); wrote {out}"
    )


class TrainCLIConfig(StrictModel):
    model: str | None = None
    pairs: str | None = None
    out: Path | None = None
    run_dir: Path | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-5
    image_column: str = "image"
    text_column: str = "text"
    split: str = "train"
    save_every: int | None = None
    seed: int = 0


@retizero_group.command("train")
@click.option("--model", help="Folder written by `retizero build` (or a previous `train`).")
@click.option("--pairs", help="Image–text dataset: save_to_disk folder, data folder or Hub dataset id.")
@click.option("--out", type=OUT_DIR, help="Trained model folder (LoRA kept: `export` merges it).")
@click.option("--run-dir", type=OUT_DIR, help="Checkpoints and metrics.jsonl [default: OUT.run].")
@click.option("--epochs", type=int, default=None)
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--weight-decay", type=float, default=1e-5, show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--split", default="train", show_default=True)
@click.option("--save-every", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@config_option(TrainCLIConfig)
def train_command(
    model: str | None,
    pairs: str | None,
    out: Path | None,
    run_dir: Path | None,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    image_column: str,
    text_column: str,
    split: str,
    save_every: int | None,
    seed: int,
) -> None:
    """CLIP + evidential training (AdamW, 1 warm-up epoch then cosine, grad-clip 1.0); resumes from RUN_DIR."""
    _require(model=model, pairs=pairs, out=out)
    if (epochs is None) == (max_steps is None):
        raise click.UsageError("give exactly one of --epochs and --max-steps")
    from hubtools.models.retizero.train import open_split, save_retizero, train_retizero
    from hubtools.train import TrainConfig

    try:
        rz, processor = _load(model)
        dataset = open_split(pairs, split)
        steps_per_epoch = max(1, len(dataset) // batch_size)
        config = TrainConfig(
            output_dir=run_dir or out.with_name(out.name + ".run"),
            seed=seed,
            num_epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            scheduler="cosine",
            warmup_steps=steps_per_epoch,
            max_grad_norm=1.0,
            save_every=save_every,
        )
        result = train_retizero(
            rz, processor, dataset, config, image_column=image_column, text_column=text_column
        )
        save_retizero(
            result.model,
            processor,
            out,
            merge_lora=False,
            training_data=pairs,
            training_procedure=f"{result.step} steps of CLIP + evidential loss, batch {batch_size}, lr {lr}",
        )
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(
        f"trained {result.step} steps (loss {result.metrics.get('loss', float('nan')):.4f}); wrote {out}"
    )


class ZeroShotConfig(StrictModel):
    model: str | None = None
    data: str | None = None
    classes: str | None = None
    template: list[str] | None = None
    label_column: str = "label"
    image_column: str = "image"
    split: str = "test"
    out: Path | None = None


def _labels(dataset, label_column: str, class_names: list[str] | None) -> tuple[list[int], list[str]]:
    """Integer labels and class names: a ClassLabel column gives its names; strings are matched to --classes."""
    from hubtools.models.retizero.train import PairsDataError

    if label_column not in dataset.column_names:
        raise PairsDataError(f"no label column {label_column!r} (columns: {dataset.column_names})")
    feature = dataset.features[label_column]
    values = dataset[label_column]
    if hasattr(feature, "names"):
        names = class_names or list(feature.names)
        if len(names) != len(feature.names):
            raise PairsDataError(
                f"--classes gives {len(names)} names for {len(feature.names)} ClassLabel classes"
            )
        return list(values), names
    if class_names is None:
        raise PairsDataError(f"{label_column!r} is not a ClassLabel: pass --classes")
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise PairsDataError(f"labels {unknown[:5]} are not in --classes {class_names}")
    return [index[str(v)] for v in values], class_names


@retizero_group.command("zeroshot")
@click.option("--model", help="RetiZero folder or Hub id.")
@click.option("--data", help="Labelled image dataset (save_to_disk folder, data folder or Hub id).")
@click.option(
    "--classes", help='Comma-separated class names, e.g. "Normal,AMD,Glaucoma" [default: ClassLabel names].'
)
@click.option(
    "--template", multiple=True, help='Prompt template(s), averaged [default: "A fundus photograph of {}"].'
)
@click.option("--label-column", default="label", show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report here, and its picture with the suffix .png.",
)
@config_option(ZeroShotConfig)
def zeroshot_command(
    model: str | None,
    data: str | None,
    classes: str | None,
    template: tuple[str, ...] | list[str],
    label_column: str,
    image_column: str,
    split: str,
    out: Path | None,
) -> None:
    """Zero-shot Top-1/3/5 accuracy of the class prompts on a labelled image dataset: JSON report (overall and
    per class, confusion matrix) and, with --out, a PNG of the confusion matrix and per-class bars beside it."""
    _require(model=model, data=data)
    from hubtools.models.retizero.train import open_split
    from hubtools.models.retizero.zero_shot import (
        DEFAULT_TEMPLATE,
        zero_shot_classify,
        zero_shot_report,
        zero_shot_report_png,
    )

    try:
        rz, processor = _load(model)
        dataset = open_split(data, split)
        names = [c.strip() for c in classes.split(",")] if classes else None
        labels, names = _labels(dataset, label_column, names)
        images = [im.convert("RGB") for im in dataset[image_column]]
        templates = list(template) or [DEFAULT_TEMPLATE]
        probs = zero_shot_classify(rz, processor, images, names, templates)
        report = {
            "n_images": len(labels),
            "classes": names,
            "templates": templates,
            **zero_shot_report(probs, labels, names),
        }
        if out is not None:
            zero_shot_report_png(report, out.with_suffix(".png"))
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    _write_report(report, out)


class RetrieveConfig(StrictModel):
    model: str | None = None
    data: str | None = None
    k: list[int] = [1, 3, 5]
    similarity: str = "cosine"
    normalization: str = "imagenet"
    cluster_weighting: bool = False
    min_cluster_size: int = 100
    max_per_class: int = 8000
    label_column: str = "label"
    image_column: str = "image"
    split: str = "test"
    out: Path | None = None


@retizero_group.command("retrieve")
@click.option("--model", help="RetiZero folder or Hub id.")
@click.option("--data", help="Labelled image dataset (save_to_disk folder, data folder or Hub id).")
@click.option("--k", type=int, multiple=True, help="Cut-offs [default: 1 3 5].")
@click.option(
    "--similarity",
    type=click.Choice(["cosine", "retizero"]),
    default="cosine",
    show_default=True,
    help="retizero: the anchor's ‖e_j‖/2 / (‖e_j‖/2 + ‖e_i − e_j‖).",
)
@click.option(
    "--normalization",
    type=click.Choice(["imagenet", "half"]),
    default="imagenet",
    show_default=True,
    help="half: mean = std = 0.5, as the anchor's retrieval script (parity checks only).",
)
@click.option(
    "--cluster-weighting/--no-cluster-weighting",
    default=False,
    show_default=True,
    help="Anchor option: PCA-256 + HDBSCAN (leaf) clusters; similarities to items outside the query's "
    "cluster x 0.5 (the anchor reduces with UMAP, not installed).",
)
@click.option(
    "--min-cluster-size", type=int, default=100, show_default=True, help="HDBSCAN min_cluster_size."
)
@click.option(
    "--max-per-class",
    type=int,
    default=8000,
    show_default=True,
    help="Gallery cap: at most this many images per label, seeded sample (0: all).",
)
@click.option("--label-column", default="label", show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON report here."
)
@config_option(RetrieveConfig)
def retrieve_command(
    model: str | None,
    data: str | None,
    k: tuple[int, ...] | list[int],
    similarity: str,
    normalization: str,
    cluster_weighting: bool,
    min_cluster_size: int,
    max_per_class: int,
    label_column: str,
    image_column: str,
    split: str,
    out: Path | None,
) -> None:
    """Image-to-image retrieval (each image queries all others; cosine, faiss): precision@k and hit@k."""
    _require(model=model, data=data)
    from hubtools.models.retizero.train import open_split
    from hubtools.models.retizero.zero_shot import (
        cap_per_class,
        cluster_labels,
        image_features,
        nearest_neighbours,
        retrieval_grid_png,
        retrieval_metrics,
    )

    try:
        rz, processor = _load(model)
        dataset = open_split(data, split)
        if label_column not in dataset.column_names:
            raise ValueError(f"no label column {label_column!r} (columns: {dataset.column_names})")
        n_before = len(dataset)
        kept = cap_per_class(dataset[label_column], max_per_class)
        if len(kept) < n_before:
            dataset = dataset.select(kept)
        labels = dataset[label_column]
        images = [im.convert("RGB") for im in dataset[image_column]]
        if normalization == "half":
            processor.image_processor.image_mean = processor.image_processor.image_std = [0.5, 0.5, 0.5]
        feats = image_features(rz, processor, images, "retrieval")
        clusters = cluster_labels(feats, min_cluster_size=min_cluster_size) if cluster_weighting else None
        metrics = retrieval_metrics(feats, labels, list(k) or [1, 3, 5], similarity, clusters)
        if out is not None:  # the picture a person would rather look at: queries and their top 5
            names = getattr(dataset.features[label_column], "names", None)
            shown = [names[v] for v in labels] if names else labels
            neighbours = nearest_neighbours(feats, min(5, len(images) - 1), similarity, clusters)
            retrieval_grid_png(images, shown, neighbours, out.with_suffix(".png"))
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    report = {"n_images": len(labels), "similarity": similarity, "normalization": normalization}
    if len(labels) < n_before:
        report.update(max_per_class=max_per_class, n_images_before_cap=n_before)
    if clusters is not None:
        report["cluster_weighting"] = {
            "reduction": "pca-256",
            "min_cluster_size": min_cluster_size,
            "n_clusters": int(clusters.max()) + 1,
            "noise_share": float((clusters < 0).mean()),
        }
    _write_report({**report, **metrics}, out)


class FewShotConfig(StrictModel):
    model: str | None = None
    data: str | None = None
    shots: int | None = None
    classes: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    epochs: int = 100
    lr: float = 1e-3
    seed: int = 0
    label_column: str = "label"
    image_column: str = "image"
    out: Path | None = None


@retizero_group.command("fewshot")
@click.option("--model", help="RetiZero folder or Hub id (encoder frozen).")
@click.option("--data", help="Labelled image dataset (save_to_disk folder, data folder or Hub id).")
@click.option("--shots", type=int, help="Training images per class, drawn from --train-split (seeded).")
@click.option("--classes", help="Comma-separated class names [default: ClassLabel names].")
@click.option("--train-split", default="train", show_default=True)
@click.option(
    "--test-split",
    default="test",
    show_default=True,
    help="Evaluation split; if it equals --train-split, the images not drawn as shots.",
)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report here, and the head (weight, bias) with the suffix .safetensors.",
)
@config_option(FewShotConfig)
def fewshot_command(
    model: str | None,
    data: str | None,
    shots: int | None,
    classes: str | None,
    train_split: str,
    test_split: str,
    epochs: int,
    lr: float,
    seed: int,
    label_column: str,
    image_column: str,
    out: Path | None,
) -> None:
    """Few-shot linear head (anchor Finetuning.py): Linear(D, C) on the frozen CLS feature, Adam; Top-k report
    (overall, per class, confusion matrix) on the test images."""
    _require(model=model, data=data, shots=shots)
    import numpy as np

    from hubtools.models.retizero.few_shot import head_logits, sample_shots, train_few_shot_head
    from hubtools.models.retizero.train import open_split
    from hubtools.models.retizero.zero_shot import image_features, zero_shot_report

    try:
        rz, processor = _load(model)
        names = [c.strip() for c in classes.split(",")] if classes else None
        train_set = open_split(data, train_split)
        train_labels, names = _labels(train_set, label_column, names)
        picked = sample_shots(train_labels, shots, seed)
        if test_split == train_split:
            test_set = train_set.select(np.setdiff1d(np.arange(len(train_set)), picked))
        else:
            test_set = open_split(data, test_split)
        test_labels, _ = _labels(test_set, label_column, names)
        train_set = train_set.select(picked)

        def features(ds):
            return image_features(rz, processor, [im.convert("RGB") for im in ds[image_column]], "cls")

        result = train_few_shot_head(
            features(train_set),
            [train_labels[i] for i in picked],
            len(names),
            epochs=epochs,
            lr=lr,
            seed=seed,
        )
        logits = head_logits(result.head, features(test_set))
        report = {
            "n_train": len(picked),
            "n_test": len(test_labels),
            "shots": shots,
            "epochs": epochs,
            "lr": lr,
            "seed": seed,
            "classes": names,
            **result.metrics,
            **zero_shot_report(logits, test_labels, names),
        }
        if out is not None:
            from safetensors.torch import save_file

            out.parent.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in result.head.state_dict().items()},
                str(out.with_suffix(".safetensors")),
            )
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    _write_report(report, out)


class ExportConfig(StrictModel):
    model: str | None = None
    out: Path | None = None
    merge_lora: bool = True
    push: str | None = None


@retizero_group.command("export")
@click.option("--model", help="RetiZero folder (LoRA un-merged, as `build`/`train` write it).")
@click.option("--out", type=OUT_DIR)
@click.option(
    "--merge-lora/--keep-lora", default=True, show_default=True, help="Fold LoRA into the base weights."
)
@click.option("--push", default=None, help="Also publish the folder as this Hub repo (ORG/NAME).")
@config_option(ExportConfig)
def export_command(model: str | None, out: Path | None, merge_lora: bool, push: str | None) -> None:
    """Hub artifact: LoRA merged (users need neither peft nor hubtools), processor, card; optionally pushed."""
    _require(model=model, out=out)
    from hubtools.hub.publish import push_artifact
    from hubtools.models.retizero.train import save_retizero

    try:
        rz, processor = _load(model)
        save_retizero(rz, processor, out, merge_lora=merge_lora, repo_id=push)
        if push:
            push_artifact(out, push)
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(
        f"exported {'merged' if merge_lora else 'LoRA'} model to {out}" + (f" and {push}" if push else "")
    )


class ConvertConfig(StrictModel):
    pth: Path | None = None
    text: str | None = None
    out: Path | None = None
    heads: int = 16
    layer_norm_eps: float = 1e-6
    merge_lora: bool = True


@retizero_group.command("convert")
@click.option("--pth", type=click.Path(dir_okay=False, path_type=Path), help="The anchor's RetiZero.pth.")
@click.option("--text", help="The text tower's folder or Hub id (config + tokenizer, e.g. Bio_ClinicalBERT).")
@click.option("--out", type=OUT_DIR)
@click.option(
    "--heads", type=int, default=16, show_default=True, help="Vision attention heads (not in the weights)."
)
@click.option(
    "--layer-norm-eps", type=float, default=1e-6, show_default=True, help="Vision LayerNorm eps (RETFound)."
)
@click.option(
    "--merge-lora/--keep-lora", default=True, show_default=True, help="Fold LoRA into the base weights."
)
@config_option(ConvertConfig)
def convert_command(
    pth: Path | None,
    text: str | None,
    out: Path | None,
    heads: int,
    layer_norm_eps: float,
    merge_lora: bool,
) -> None:
    """Anchor checkpoint (torch.load weights_only=True) -> RetiZero folder with processor and card."""
    _require(pth=pth, text=text, out=out)
    from transformers import AutoConfig, AutoTokenizer, ViTImageProcessorPil

    from hubtools.models.retizero import RetiZeroProcessor
    from hubtools.models.retizero.convert import convert_anchor_state_dict, load_state_dict
    from hubtools.models.retizero.train import save_retizero

    try:
        model = convert_anchor_state_dict(
            load_state_dict(pth),
            AutoConfig.from_pretrained(text),
            num_attention_heads=heads,
            layer_norm_eps=layer_norm_eps,
        )
        size = int(model.config.vision_config.image_size)
        processor = RetiZeroProcessor(  # the anchor's zero-shot preprocessing: resize, ImageNet statistics
            ViTImageProcessorPil(
                size={"height": size, "width": size},
                image_mean=[0.485, 0.456, 0.406],
                image_std=[0.229, 0.224, 0.225],
            ),
            AutoTokenizer.from_pretrained(text),
            max_length=model.config.text_max_length,
        )
        save_retizero(
            model,
            processor,
            out,
            merge_lora=merge_lora,
            base_model=[text] if not Path(text).exists() else None,
            training_procedure=f"converted from {pth.name} (LooKing9218/RetiZero layout)",
        )
    except (HubtoolsError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(f"converted {pth} ({model.config.vision_config.num_hidden_layers}-block ViT); wrote {out}")
