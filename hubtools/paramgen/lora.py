"""COND P-DIFF's inputs and outputs on the PEFT side: collecting LoRA snapshots, writing generated adapters.

A generated vector becomes a normal PEFT adapter folder (``adapter_config.json`` +
``adapter_model.safetensors`` with the saved-adapter keys, no adapter name), so
``PeftModel.from_pretrained(base, folder)`` loads it like any trained adapter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hubtools.hub.artifacts import atomic_dir
from hubtools.paramgen.collect import CheckpointSet, stack_checkpoints
from hubtools.paramgen.spec import ParamSpec

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def write_peft_adapter(
    vec: torch.Tensor,
    spec: ParamSpec,
    lora_config: Any,
    out_dir: str | Path,
    base_model_name_or_path: str | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    card: str | None = None,
) -> Path:
    """Write ``vec`` (a flat adapter in ``spec`` order) as a PEFT adapter folder, whole or not at all.

    ``extra_tensors`` are saved-adapter tensors that were not generated (e.g. a task head in
    ``modules_to_save``) copied from a template checkpoint; say so in ``card``.
    """
    tensors = {k: v.detach().float().contiguous().clone() for k, v in spec.unflatten(vec).items()}
    for key, value in (extra_tensors or {}).items():
        tensors[key] = value.detach().float().contiguous().clone()
    config = copy.deepcopy(lora_config)
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(out_dir)


def lora_vector(peft_model: nn.Module, spec: ParamSpec) -> torch.Tensor:
    """The flat adapter of a PEFT model in ``spec`` order (keys as in the saved adapter)."""
    from peft import get_peft_model_state_dict

    return spec.flatten(get_peft_model_state_dict(peft_model))


def collect_lora_checkpoints(
    base_model: nn.Module,
    lora_config: Any,
    tasks: Mapping[str, Any],
    train_task: Callable[[nn.Module, Any, Callable[[int], None]], None],
    last_n_steps: int = 200,
    init_seed: int = 0,
) -> dict[str, CheckpointSet]:
    """Fine-tune one LoRA per task and keep the adapter after each of the last ``last_n_steps`` steps.

    ``train_task(peft_model, task, on_step)`` runs the task's optimisation and calls
    ``on_step(step)`` after every optimizer step, with ``step`` counting down to 0 at the last
    step (so the callback knows the window). The base is deep-copied per task (peft mutates
    it) and every task starts from the same LoRA init (``init_seed``), so all vectors share
    one parameterisation.
    """
    from peft import get_peft_model

    result: dict[str, CheckpointSet] = {}
    spec: ParamSpec | None = None
    for name, task in tasks.items():
        torch.manual_seed(init_seed)
        model = get_peft_model(copy.deepcopy(base_model), copy.deepcopy(lora_config))
        if spec is None:
            spec = ParamSpec.from_peft(model)
        vectors: list[torch.Tensor] = []
        metrics: list[dict[str, Any]] = []

        def on_step(
            steps_left: int,
            model: nn.Module = model,
            vectors: list = vectors,
            metrics: list = metrics,
            task_spec: ParamSpec = spec,
        ) -> None:
            if steps_left < last_n_steps:
                vectors.append(lora_vector(model, task_spec))
                metrics.append({"steps_left": steps_left})

        train_task(model, task, on_step)
        if not vectors:
            raise ValueError(
                f"task {name!r}: train_task never called on_step within the last {last_n_steps} steps"
            )
        result[name] = CheckpointSet(
            params=stack_checkpoints(vectors, spec),
            spec=spec,
            metrics=metrics,
            info={"task": name, "lora_config": _jsonable(lora_config)},
        )
    return result


def _jsonable(lora_config: Any) -> dict[str, Any]:
    data = lora_config.to_dict() if hasattr(lora_config, "to_dict") else dict(lora_config)
    return json.loads(
        json.dumps(data, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))
    )
