"""The shared accelerate training loop: one call that every capability's trainer makes.

    from hubtools.train import TrainConfig, train

    config = TrainConfig(output_dir="runs/x", max_steps=1000, batch_size=64, lr=3e-4)
    result = train(model, dataset, loss_fn, config)   # loss_fn(model, batch) -> loss | (loss, metrics)

See :mod:`hubtools.train.loop` for what "exact resume" guarantees and what it needs.
"""

from hubtools.train.config import TrainConfig
from hubtools.train.loop import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    TRAINER_STATE_FILE,
    TrainResult,
    TrainState,
    list_checkpoints,
    train,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "TRAINER_STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "list_checkpoints",
    "train",
]
