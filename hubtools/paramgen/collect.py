"""Checkpoint collection: K snapshots of a parameter subset while only that subset trains.

The host network is frozen *including its buffers* (kept in eval mode), so a vector plus the
host snapshot define a model exactly; the anchor trained in train mode, which lets BatchNorm
running statistics drift while "original" accuracies were recorded (spec, section 3).
A :class:`CheckpointSet` is saved as a Hub dataset folder: ``params.safetensors`` (K x d),
``spec.json``, ``metrics.jsonl``, ``host/model.safetensors`` (full host state incl. buffers).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from hubtools.errors import ArtifactError
from hubtools.hub.artifacts import atomic_dir
from hubtools.paramgen.spec import ParamSpec, ParamSpecError
from hubtools.train import TrainConfig, TrainState, train

PARAMS_FILE = "params.safetensors"
SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
HOST_DIR = "host"
HOST_FILE = "model.safetensors"


@dataclass
class CheckpointSet:
    """K parameter vectors of one subset, their metrics, the spec, and the frozen host's state."""

    params: torch.Tensor
    spec: ParamSpec
    host_state: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.params.dim() != 2 or self.params.shape[1] != self.spec.dim:
            raise ParamSpecError(
                f"checkpoint vectors have shape {tuple(self.params.shape)}; the spec needs "
                f"[K, {self.spec.dim}]"
            )
        if self.metrics and len(self.metrics) != len(self.params):
            raise ArtifactError(f"{len(self.metrics)} metric records for {len(self.params)} checkpoints")
        self.params = self.params.float().contiguous()

    def __len__(self) -> int:
        return self.params.shape[0]

    def host(self, model: nn.Module) -> nn.Module:
        """Load the saved host state into ``model`` (an instance of the host architecture); eval mode."""
        missing, unexpected = model.load_state_dict(self.host_state, strict=False)
        if missing or unexpected:
            raise ArtifactError(
                f"host state does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
        return model.eval()

    def save_to_disk(self, path: str | Path, card: str | None = None) -> Path:
        """Write the Hub dataset folder (whole or not at all); ``card`` is the README.md text."""
        with atomic_dir(path) as tmp:
            save_file({"params": self.params}, str(tmp / PARAMS_FILE), metadata={"format": "pt"})
            self.spec.save(tmp / SPEC_FILE)
            with open(tmp / METRICS_FILE, "w", encoding="utf-8") as f:
                for record in self.metrics:
                    f.write(json.dumps(record) + "\n")
            if self.host_state:
                (tmp / HOST_DIR).mkdir()
                save_file(
                    {k: v.contiguous() for k, v in self.host_state.items()}, str(tmp / HOST_DIR / HOST_FILE)
                )
            (tmp / "info.json").write_text(json.dumps(self.info, indent=1), encoding="utf-8")
            if card is not None:
                (tmp / "README.md").write_text(card, encoding="utf-8")
        return Path(path)

    @classmethod
    def load_from_disk(cls, path: str | Path) -> CheckpointSet:
        path = Path(path)
        try:
            params = load_file(str(path / PARAMS_FILE))["params"]
        except (OSError, KeyError) as err:
            raise ArtifactError(f"{path}: no readable {PARAMS_FILE}: {err}") from None
        except Exception as err:  # safetensors raises its own error type for a truncated file
            raise ArtifactError(f"{path / PARAMS_FILE}: corrupt safetensors file: {err}") from None
        spec = ParamSpec.load(path / SPEC_FILE)
        metrics_path = path / METRICS_FILE
        metrics = (
            [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            if metrics_path.is_file()
            else []
        )
        host_file = path / HOST_DIR / HOST_FILE
        host_state = load_file(str(host_file)) if host_file.is_file() else {}
        info_file = path / "info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        return cls(params=params, spec=spec, host_state=host_state, metrics=metrics, info=info)

    def to_dataset(self):
        """The vectors as a ``datasets.Dataset`` (column ``params``, plus the metric columns)."""
        from datasets import Dataset as HFDataset

        columns: dict[str, Any] = {"params": self.params.numpy()}
        for key in self.metrics[0] if self.metrics else {}:
            columns[key] = [m.get(key) for m in self.metrics]
        return HFDataset.from_dict(columns)

    def push_to_hub(self, repo_id: str, card: str, private: bool = False) -> str:
        """Publish as a dataset repo through :func:`hubtools.hub.publish.push_artifact`."""
        from hubtools.hub.publish import push_artifact

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_to_disk(Path(tmp) / "checkpoints", card=card)
            push_artifact(folder, repo_id, repo_type="dataset", private=private)
        return repo_id


def stack_checkpoints(vectors: Sequence[torch.Tensor], spec: ParamSpec) -> torch.Tensor:
    """Stack vectors into [K, d], refusing vectors of another length than the spec's (clear error)."""
    bad = [i for i, v in enumerate(vectors) if v.dim() != 1 or v.numel() != spec.dim]
    if bad:
        shapes = {tuple(vectors[i].shape) for i in bad}
        raise ParamSpecError(f"checkpoints {bad[:5]} have shapes {sorted(shapes)}; all must be ({spec.dim},)")
    return torch.stack([v.float() for v in vectors])


class FrozenHost(nn.Module):
    """Wraps the host so that the trainer's ``model.train()`` leaves it in eval mode (buffers frozen)."""

    def __init__(self, host: nn.Module) -> None:
        super().__init__()
        self.host = host

    def train(self, mode: bool = True) -> FrozenHost:
        super().train(False)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.host(*args, **kwargs)


def collect_checkpoints(
    model: nn.Module,
    spec: ParamSpec,
    dataset: Dataset,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    num_checkpoints: int = 200,
    save_every: int = 1,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
) -> CheckpointSet:
    """Train only ``spec``'s parameters of ``model`` (host frozen, eval mode) and snapshot them.

    Runs ``num_checkpoints * save_every`` optimizer steps of the shared trainer (so progress,
    metrics.jsonl, checkpoints and resume come from :func:`hubtools.train.train`; ``config``'s
    ``max_steps``/``num_epochs`` are replaced), and stores the subset after every
    ``save_every`` steps. ``eval_fn(model)`` may add metrics per snapshot (validation only).
    """
    if num_checkpoints < 1 or save_every < 1:
        raise ValueError("num_checkpoints and save_every must be >= 1")
    host_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    subset = set(spec.names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in subset)
    vectors: list[torch.Tensor] = []
    metrics: list[dict[str, Any]] = []

    def snapshot(state: TrainState) -> None:
        if state.step % save_every == 0:
            host = state.model.host
            vectors.append(spec.flatten(host))
            record: dict[str, Any] = {"step": state.step}
            if eval_fn is not None:
                with torch.no_grad():
                    record.update(eval_fn(host))
            metrics.append(record)

    cfg = config.model_copy(update={"max_steps": num_checkpoints * save_every, "num_epochs": None})
    result = train(FrozenHost(model), dataset, lambda m, b: loss_fn(m, b), cfg, on_step_end=snapshot)
    if len(vectors) != num_checkpoints:
        raise ArtifactError(
            f"collected {len(vectors)} of {num_checkpoints} checkpoints: {cfg.output_dir} held a finished or "
            "partial run (resume restores weights but not snapshots taken before it); use a fresh output_dir"
        )
    result.model.host.requires_grad_(True)
    return CheckpointSet(
        params=stack_checkpoints(vectors, spec),
        spec=spec,
        host_state=host_state,
        metrics=metrics,
        info={
            "num_checkpoints": num_checkpoints,
            "save_every": save_every,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
        },
    )
