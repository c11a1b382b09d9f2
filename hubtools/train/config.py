"""`TrainConfig`: the settings every trainer shares, validated like every hubtools YAML config.

A capability's own config either nests it (``train: TrainConfig``) or derives from it, so
``learning_rate:`` instead of ``lr:`` is an error naming the key and the file, not a silently
ignored typo (see :mod:`hubtools.config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hubtools.config import StrictModel


class TrainConfig(StrictModel):
    """Settings of :func:`hubtools.train.train`. Step counts are optimizer steps, not micro-batches."""

    output_dir: Path
    seed: int = 0

    # Length of the run: exactly one of the two.
    max_steps: int | None = Field(None, ge=1)
    num_epochs: int | None = Field(None, ge=1)

    batch_size: int = Field(
        32, ge=1, description="per process; the global batch is this x processes x accumulation"
    )
    gradient_accumulation_steps: int = Field(1, ge=1)
    drop_last: bool = True
    num_workers: int = Field(0, ge=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adamw only")
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)

    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1, description="eval_fn also runs once at the end")
    save_every: int | None = Field(None, ge=1, description="a checkpoint is also saved at the end")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk; older ones are deleted")
    resume: str | None = Field(
        "auto",
        description="'auto': continue from the newest checkpoint in output_dir if there is one; "
        "a path: continue from that checkpoint; null: start fresh (an error if output_dir has checkpoints)",
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `mixed_precision: no` as the boolean false.
        return "no" if value is False else value

    @model_validator(mode="after")
    def _one_run_length(self) -> TrainConfig:
        if (self.max_steps is None) == (self.num_epochs is None):
            raise ValueError("set exactly one of max_steps and num_epochs")
        return self
