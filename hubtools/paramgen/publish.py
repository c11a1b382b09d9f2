"""Pipeline and checkpoint-set folders with their cards, ready for :func:`hubtools.hub.publish.push_artifact`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline

from hubtools.hub.artifacts import atomic_dir
from hubtools.hub.cards import render_card
from hubtools.paramgen.pipelines import CondPDiffPipeline


def save_pipeline(
    pipe: DiffusionPipeline,
    folder: str | Path,
    *,
    repo_id: str | None = None,
    host_model: str | None = None,
    metrics: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    num_checkpoints: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    **card_vars: Any,
) -> Path:
    """``save_pretrained`` plus a ``parameter_generator`` card (ParamSpec, host, metrics), written atomically."""
    conditional = isinstance(pipe, CondPDiffPipeline)
    spec = pipe.param_spec
    names = spec.names
    subset = ", ".join(f"`{n}`" for n in names[:6]) + (
        f" and {len(names) - 6} more" if len(names) > 6 else ""
    )
    card = render_card(
        "parameter_generator",
        card_data={"license": "apache-2.0", "tags": ["cond-p-diff" if conditional else "p-diff"]},
        metrics=metrics,
        model_name=(repo_id or Path(folder).name).split("/")[-1],
        repo_id=repo_id,
        conditional=conditional,
        host_model=host_model,
        param_subset=subset,
        num_params=spec.dim,
        num_checkpoints=num_checkpoints,
        tasks=pipe.task_names if conditional else None,
        example_condition=0,
        hyperparameters=dict(hyperparameters) if hyperparameters else None,
        **card_vars,
    )
    with atomic_dir(folder) as tmp:
        pipe.save_pretrained(tmp)
        card.save(tmp / "README.md")
    return Path(folder)


def checkpoint_card(repo_id: str | None, num_checkpoints: int, dim: int, host_model: str, data: str) -> str:
    """The dataset card of a collected checkpoint set."""
    card = render_card(
        "dataset",
        card_data={"license": "apache-2.0", "tags": ["hubtools", "p-diff", "parameter-checkpoints"]},
        dataset_name=(repo_id or "p-diff checkpoints").split("/")[-1],
        summary=f"{num_checkpoints} snapshots of a {dim}-float parameter subset of `{host_model}`, trained on {data} "
        "with the rest of the network (and its buffers) frozen. `params.safetensors` holds them as one "
        "[K, d] tensor, `spec.json` the tensor names and shapes, `host/` the frozen host.",
    )
    return str(card)


def generated_adapter_card(
    base_model: str,
    pipeline_repo: str,
    condition: str,
    seed: int,
    *,
    usage_code: str | None = None,
    notes: str | None = None,
) -> str:
    """The card of a generated PEFT adapter: it says *generated*, by which pipeline, for which condition and seed.

    ``usage_code`` replaces the default PEFT snippet (e.g. a one-call classifier load); ``notes`` says
    what in the folder was *not* generated (a copied head, a tokenizer).
    """
    if usage_code is None:
        usage_code = (
            "from peft import PeftModel\nfrom transformers import AutoModel\n\n"
            f'base = AutoModel.from_pretrained("{base_model}")\n'
            'model = PeftModel.from_pretrained(base, "ADAPTER_FOLDER_OR_REPO")'
        )
    card = render_card(
        "model",
        card_data={
            "license": "apache-2.0",
            "library_name": "peft",
            "base_model": base_model,
            "tags": ["hubtools", "cond-p-diff", "generated-adapter", "lora"],
        },
        model_name=f"Generated LoRA adapter ({condition[:60]})",
        summary=f"A LoRA adapter **generated** (not trained) by the COND P-DIFF pipeline `{pipeline_repo}` for the "
        f'condition: "{condition}" (generator seed {seed}). Check it on held-out data before use.',
        usage_code=usage_code,
        training_procedure=notes,
    )
    return str(card)
