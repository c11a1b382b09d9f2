"""``hubtools paramgen cond collect | train | generate | evaluate``: COND P-DIFF on your own text tasks.

The input is a tasks file (:mod:`hubtools.paramgen.textcls`): a BERT-family base, a head
task and tasks with descriptions and ``text,label`` files. The output of ``generate`` is one
PEFT folder per generated adapter that loads as a complete classifier in one call
(``AutoPeftModelForSequenceClassification.from_pretrained(folder)``): generated LoRA plus the
shared classification head copied from the collection run. Every command also takes
``--config FILE.yaml`` with the same keys as its flags.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hubtools.config import StrictModel, config_option
from hubtools.errors import ConfigError, HubtoolsError
from hubtools.paramgen.cli import PRESETS, GenerateOptions, TrainOptions, _fail, _need_out, paramgen_group

COND_PRESETS = {
    **PRESETS,
    # Sized for LoRA vectors of a few thousand floats on 2 CPU cores.
    "lora": {
        "fold_rate": 4,
        "kernel_size": 3,
        "dec_channels": (4, 32, 32, 8),
        "denoiser_channels": (16, 32, 64, 64),
        "ema_decay": 0.999,
    },
}
TEMPLATE_DIR = "base_classifier"  # inside a pipeline folder: the zero adapter = base + shared head
TEMPLATE_INFO = "cond_classifier.json"


class CondCollectOptions(StrictModel):
    out: Path | None = None
    lora_steps: int = 80
    last_n_steps: int = 40
    lr: float = 5e-3
    batch_size: int = 16
    rank: int = 1
    alpha: int = 8
    target_modules: str = "query,value"
    layers: str | None = None
    seed: int = 0
    max_length: int = 64


class CondTrainOptions(TrainOptions):
    preset: str = "lora"
    ae_steps: int = 500


class CondGenerateOptions(GenerateOptions):
    condition: str | None = None
    num_models: int = 10


class CondEvaluateOptions(StrictModel):
    tasks: Path | None = None
    collected: Path | None = None
    json_path: Path | None = None
    num_models: int = 10
    scheduler: str = "ddpm"
    steps: int | None = None
    seed: int = 0


@paramgen_group.group("cond")
def cond_group() -> None:
    """COND P-DIFF on your own text-classification tasks: LoRA adapters generated from a task description."""


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _load_pipeline(path: Path, scheduler: str):
    from hubtools.paramgen import CondPDiffPipeline, ddim_copy

    pipe = CondPDiffPipeline.from_pretrained(path)
    if scheduler == "ddim":
        pipe = ddim_copy(pipe)
    info_file = path / TEMPLATE_DIR / TEMPLATE_INFO
    if not info_file.is_file():
        raise HubtoolsError(
            f"{path}: no {TEMPLATE_DIR}/{TEMPLATE_INFO}; train it with `hubtools paramgen cond train`"
        )
    return pipe, json.loads(info_file.read_text(encoding="utf-8"))


@cond_group.command("example")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder for tasks.yaml + data/",
)
@click.option("--n-train", default=64, show_default=True, help="training quotes per class")
@click.option("--n-test", default=32, show_default=True, help="test quotes per class")
@click.option("--seed", default=0, show_default=True)
def example_command(out: Path | None, n_train: int, n_test: int, seed: int) -> None:
    """Write a real offline tasks file: Debian fortunes category pairs on all-MiniLM-L6-v2.

    Head task literature-vs-science, training tasks computers-vs-love and science-vs-food,
    held-out task computers-vs-food.
    """
    out = _need_out(out)
    from hubtools.paramgen.textcls import write_fortunes_tasks

    try:
        path = write_fortunes_tasks(
            out,
            [("computers", "love"), ("science", "food")],
            n_train,
            n_test,
            seed,
            held_out=[("computers", "food")],
        )
    except HubtoolsError as err:
        _fail(err)
    click.echo(f"wrote {path}")


@cond_group.command("collect")
@click.argument(
    "tasks_file", metavar="TASKS.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="collection folder"
)
@click.option("--lora-steps", default=80, show_default=True, help="optimizer steps of LoRA training per task")
@click.option(
    "--last-n-steps", default=40, show_default=True, help="keep the adapter after each of the last N steps"
)
@click.option("--lr", default=5e-3, show_default=True, help="AdamW learning rate of the LoRA weights")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--rank", default=1, show_default=True, help="LoRA rank r")
@click.option("--alpha", default=8, show_default=True, help="LoRA alpha")
@click.option(
    "--target-modules", default="query,value", show_default=True, help="comma-separated module names"
)
@click.option("--layers", default=None, help="comma-separated layer indices to adapt (default: all)")
@click.option(
    "--seed", default=0, show_default=True, help="head, LoRA init (same for every task) and batches"
)
@click.option("--max-length", default=64, show_default=True, help="tokens per text (truncation)")
@config_option(CondCollectOptions)
def collect_command(
    tasks_file: Path,
    out: Path | None,
    lora_steps: int,
    last_n_steps: int,
    lr: float,
    batch_size: int,
    rank: int,
    alpha: int,
    target_modules: str,
    layers: str | None,
    seed: int,
    max_length: int,
) -> None:
    """Fit the shared head on the head task (backbone frozen), then collect each task's LoRA checkpoints.

    \b
    TASKS.yaml (paths relative to it; `hubtools paramgen cond example` writes a real one):
      base_model: path-or-hub-id        # BERT-family encoder with a tokenizer
      head_task: NAME                   # the shared, frozen head is fitted on this task
      num_labels: 2                     # optional; default: inferred from the labels
      tasks:
        - name: NAME
          description: "what the task decides"   # the generation condition
          train: data/x-train.jsonl     # .jsonl or .csv with text,label (label 0..num_labels-1)
          test: data/x-test.jsonl
          held_out: false               # true: never trained, generated from the description
          lora: true                    # false: no adapter (e.g. a task only for the head)
    """
    out = _need_out(out)
    from hubtools.paramgen.textcls import collect_text_tasks, load_tasks

    try:
        tasks = load_tasks(tasks_file)
        collection = collect_text_tasks(
            tasks,
            out,
            lora_steps=lora_steps,
            last_n_steps=last_n_steps,
            lr=lr,
            batch_size=batch_size,
            rank=rank,
            alpha=alpha,
            target_modules=[m.strip() for m in target_modules.split(",") if m.strip()],
            layers=_int_list(layers, "--layers"),
            seed=seed,
            max_length=max_length,
        )
    except HubtoolsError as err:
        _fail(err)
    head = collection.manifest["head_accuracy"]
    click.echo(
        f"head fitted on {tasks.head_task}: train {head['train']:.1f} %, test {head['test']:.1f} %; "
        f"collected {last_n_steps} x {collection.manifest['dim']} LoRA floats for {len(collection.sets)} tasks "
        f"({', '.join(collection.sets)}) -> {out}"
    )


@cond_group.command("train")
@click.argument("collected", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="pipeline folder")
@click.option("--preset", type=click.Choice(sorted(COND_PRESETS)), default="lora", show_default=True)
@click.option("--ae-steps", default=500, show_default=True)
@click.option("--ddpm-steps", default=2000, show_default=True)
@click.option(
    "--normalization",
    type=click.Choice(["global", "per_task", "none"]),
    default="global",
    show_default=True,
    help="z-score of the LoRA vectors; per_task cannot generate unseen tasks",
)
@click.option("--seed", default=0, show_default=True)
@config_option(CondTrainOptions)
def train_command(
    collected: Path,
    out: Path | None,
    preset: str,
    ae_steps: int,
    ddpm_steps: int,
    normalization: str,
    seed: int,
) -> None:
    """Train the autoencoder and the conditional latent DDPM; save a CondPDiffPipeline (resumable).

    The base encoder is the pipeline's text encoder, so any task description can be a condition.
    """
    out = _need_out(out)
    import torch

    from hubtools.hub.artifacts import atomic_dir
    from hubtools.paramgen import PDiffTrainConfig, train_cond_pdiff
    from hubtools.paramgen.publish import save_pipeline
    from hubtools.paramgen.textcls import (
        Collection,
        load_text_encoder,
        load_tokenizer,
        write_classifier_adapter,
    )

    try:
        collection = Collection.load(collected)
        names = list(collection.sets)
        order = collection.condition_tasks
        conditions = collection.conditions[[order.index(n) for n in names]]
        cfg = PDiffTrainConfig(
            output_dir=out.parent / f".{out.name}.work",
            seed=seed,
            ae_steps=ae_steps,
            ddpm_steps=ddpm_steps,
            normalization=normalization,
            **COND_PRESETS[preset],
        )
        tokenizer = load_tokenizer(collection.base_model)
        encoder = load_text_encoder(collection.base_model)
        pipe, stats = train_cond_pdiff(
            collection.sets, conditions, cfg, text_encoder=encoder, tokenizer=tokenizer
        )
        spec = pipe.param_spec
        info = {
            "base_model": collection.base_model,
            "num_labels": collection.num_labels,
            "head_task": collection.manifest["head_task"],
            "max_length": collection.manifest["training"]["max_length"],
            "collected_from": str(collection.path.resolve()),
            "descriptions": {t["name"]: t["description"] for t in collection.manifest["tasks"]},
        }
        with atomic_dir(out) as tmp:
            save_pipeline(
                pipe,
                tmp,
                host_model=collection.base_model,
                num_checkpoints=sum(len(s) for s in collection.sets.values()),
                hyperparameters={
                    "preset": preset,
                    "ae_steps": ae_steps,
                    "ddpm_steps": ddpm_steps,
                    "normalization": normalization,
                    "seed": seed,
                    "head_task": collection.manifest["head_task"],
                },
            )
            write_classifier_adapter(
                torch.zeros(spec.dim),
                spec,
                collection.lora_config(),
                collection.head,
                tmp / TEMPLATE_DIR,
                collection.base_model,
                tokenizer=tokenizer,
                card=_template_card(collection.base_model, info["head_task"]),
                extra_files={TEMPLATE_INFO: json.dumps(info, indent=1)},
            )
    except HubtoolsError as err:
        _fail(err)
    click.echo(
        f"trained on {len(names)} tasks in {stats['ae_train_s'] + stats['ddpm_train_s']:.0f} s "
        f"(autoencoder reconstruction MSE {stats['ae_recon_mse']:.3g}) -> {out}"
    )


def _template_card(base_model: str, head_task: str) -> str:
    from hubtools.hub.cards import render_card

    return str(
        render_card(
            "model",
            card_data={"license": "apache-2.0", "library_name": "peft", "base_model": base_model},
            model_name="Base classifier with the shared COND P-DIFF head",
            summary=f"The base model with the classification head fitted on `{head_task}` (backbone frozen) "
            "and an all-zero LoRA adapter: the no-adaptation reference every generated adapter is compared with, "
            "and the template `hubtools paramgen cond generate` copies the head from.",
        )
    )


def _head_note(info: dict, index: int, total: int) -> str:
    return (
        f"Sample {index + 1} of {total}. Only the LoRA matrices (`lora_A`, `lora_B`) are generated. The "
        f"classification head (`classifier`, saved as a `modules_to_save` module) is **not generated**: it is "
        f"copied from the collection run (`{info['collected_from']}`), where it was fitted once on the task "
        f"`{info['head_task']}` with the backbone frozen and then shared, frozen, by every task. The tokenizer "
        "is copied from the base model."
    )


def _usage(info: dict) -> str:
    return (
        "from peft import AutoPeftModelForSequenceClassification\n\n"
        'model = AutoPeftModelForSequenceClassification.from_pretrained("ADAPTER_FOLDER_OR_REPO"'
        + (f", num_labels={info['num_labels']}" if info["num_labels"] != 2 else "")
        + ")"
    )


@cond_group.command("generate")
@click.argument("pipeline", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--condition", default=None, help="a trained task's name, a held-out task's name, or any task description"
)
@click.option("--num-models", default=10, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="folder of adapter folders"
)
@click.option("--scheduler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--steps", type=int, default=None, help="default: 1000 (ddpm), 50 (ddim)")
@click.option("--seed", default=0, show_default=True)
@config_option(CondGenerateOptions)
def generate_command(
    pipeline: Path,
    condition: str | None,
    num_models: int,
    out: Path | None,
    scheduler: str,
    steps: int | None,
    seed: int,
) -> None:
    """Generate N LoRA adapters for a condition; each folder loads as a complete classifier in one PEFT call."""
    out = _need_out(out)
    if not condition:
        raise click.UsageError("--condition is required (as a flag or as `condition:` in --config)")
    import torch
    from peft import LoraConfig
    from safetensors.torch import load_file

    from hubtools.hub.artifacts import atomic_dir
    from hubtools.paramgen.publish import generated_adapter_card
    from hubtools.paramgen.textcls import HEAD_MODULE, PEFT_PREFIX, load_tokenizer, write_classifier_adapter

    try:
        pipe, info = _load_pipeline(pipeline, scheduler)
        pipe.set_progress_bar_config(desc="sampling")
        # a held-out task's name means its description; a trained task's name is resolved by the pipeline
        resolved = condition
        if condition not in pipe.task_names and condition in info["descriptions"]:
            resolved = info["descriptions"][condition]
        steps = steps or (1000 if scheduler == "ddpm" else 50)
        try:
            params = pipe(
                condition=resolved,
                num_models=num_models,
                generator=torch.Generator().manual_seed(seed),
                num_inference_steps=steps,
                eta=0.05 if scheduler == "ddim" else 0.0,
            ).params
        except ValueError as err:
            raise HubtoolsError(str(err)) from None
        template = pipeline / TEMPLATE_DIR
        lora = LoraConfig.from_pretrained(str(template))
        head = {
            k[len(PEFT_PREFIX) :]: v
            for k, v in load_file(str(template / "adapter_model.safetensors")).items()
            if k.startswith(f"{PEFT_PREFIX}{HEAD_MODULE}.")
        }
        tokenizer = load_tokenizer(str(template))
        record = {
            "pipeline": str(pipeline.resolve()),
            "condition": condition,
            "resolved_condition": resolved,
            "scheduler": scheduler,
            "steps": steps,
            "seed": seed,
            "num_models": num_models,
            "base_model": info["base_model"],
            "num_labels": info["num_labels"],
        }
        spec = pipe.param_spec
        with atomic_dir(out) as tmp:
            for i, vec in enumerate(params):
                card = generated_adapter_card(
                    info["base_model"],
                    str(pipeline),
                    condition,
                    seed,
                    usage_code=_usage(info),
                    notes=_head_note(info, i, num_models),
                )
                write_classifier_adapter(
                    vec,
                    spec,
                    lora,
                    head,
                    tmp / f"adapter-{i:03d}",
                    info["base_model"],
                    tokenizer=tokenizer,
                    card=card,
                )
            (tmp / "generation.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    except HubtoolsError as err:
        _fail(err)
    click.echo(f"generated {num_models} adapters ({spec.dim} LoRA floats each, shared head copied) -> {out}")


@cond_group.command("evaluate")
@click.argument("pipeline", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--tasks", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="tasks file"
)
@click.option(
    "--collected",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="collection folder",
)
@click.option("--num-models", default=10, show_default=True, help="generated adapters per task")
@click.option("--scheduler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--steps", type=int, default=None, help="default: 1000 (ddpm), 50 (ddim)")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the numbers",
)
@config_option(CondEvaluateOptions)
def evaluate_command(
    pipeline: Path,
    tasks: Path | None,
    collected: Path | None,
    num_models: int,
    scheduler: str,
    steps: int | None,
    seed: int,
    json_path: Path | None,
) -> None:
    """Test accuracy per task: generated adapters vs originals, per-task mean, base model, best other task's adapter."""
    if tasks is None or collected is None:
        raise click.UsageError("--tasks and --collected are required (as flags or in --config)")
    from hubtools.paramgen.textcls import Collection, evaluate_text_tasks, format_report, load_tasks

    try:
        pipe, _ = _load_pipeline(pipeline, scheduler)
        pipe.set_progress_bar_config(disable=True)
        steps = steps or (1000 if scheduler == "ddpm" else 50)
        report = evaluate_text_tasks(
            pipe,
            load_tasks(tasks),
            Collection.load(collected),
            num_models=num_models,
            seed=seed,
            num_inference_steps=steps,
            eta=0.05 if scheduler == "ddim" else 0.0,
        )
    except HubtoolsError as err:
        _fail(err)
    report["settings"]["scheduler"] = scheduler
    click.echo(format_report(report))
    click.echo(
        "accuracy in % on each task's test split; generated = description-conditioned LoRA + shared head"
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
        click.echo(f"-> {json_path}")
