"""The training loop every hubtools trainer runs, short enough to read in one sitting.

:func:`train` owns what all capabilities share: seeding, gradient accumulation, mixed
precision, optimizer and learning-rate schedule, checkpoints with exact resume, a JSON-lines
metrics log and a progress bar. The caller brings what differs: the model, the dataset and
``loss_fn``. The same call runs in one process or under ``accelerate launch`` / ``torchrun``
with several (data parallel; the output folder must be one that every process sees).

Exact resume: a run killed after a checkpoint and started again (``resume: auto``) ends with
bit-identical weights to a run that was never interrupted, because

1. the shuffle order of epoch ``e`` depends on ``(seed, e)`` only (accelerate's seedable
   sampler, set explicitly each epoch), and the partly consumed epoch is replayed with
   ``skip_first_batches``;
2. ``save_state`` stores model, optimizer, grad scaler, the registered schedule and the
   Python, NumPy, torch and CUDA RNG states of every process;
3. no DataLoader iterator draws from the global torch RNG (the loader has its own
   generator), so dropout and any other randomness inside ``loss_fn`` sees the same stream.

It does not hold for a dataset whose ``__getitem__`` draws random numbers: accelerate fetches
one batch ahead, so the batch after a checkpoint is drawn twice. Do random augmentation on the
batch inside ``loss_fn`` instead.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from hubtools.errors import ArtifactError, ConfigError
from hubtools.train.config import TrainConfig

CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_FILE = "trainer_state.json"
_PARTIAL_PREFIX = ".partial-"
_CHECKPOINT_NAME = re.compile(r"^step_(\d+)$")
# What decides which examples each optimizer step sees; resuming with another value is not exact.
_DATA_ORDER_KEYS = ("seed", "batch_size", "gradient_accumulation_steps", "drop_last")
_SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}

LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]


@dataclass
class TrainState:
    """What ``eval_fn`` and ``on_step_end`` receive after each optimizer step.

    ``model`` is unwrapped (no DDP wrapper) and lives on ``accelerator.device``. Under several
    processes the callbacks run on every process, so they may use collectives
    (``accelerator.gather_for_metrics``) and must do the same thing on each.
    """

    accelerator: Accelerator
    model: nn.Module
    step: int
    epoch: int


@dataclass
class TrainResult:
    """The trained (unwrapped) model, the optimizer steps done, the last logged train and eval
    metrics (the same on every process) and the newest checkpoint of the run."""

    model: nn.Module
    step: int
    metrics: dict[str, float]
    checkpoint: Path | None


def train(
    model: nn.Module,
    train_dataset: Dataset,
    loss_fn: Callable[[nn.Module, Any], LossOutput],
    config: TrainConfig,
    *,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    eval_fn: Callable[[TrainState], Mapping[str, float]] | None = None,
    on_step_end: Callable[[TrainState], None] | None = None,
    checkpoint_objects: Sequence[Any] = (),
    sampler: Sampler | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` by minimising ``loss_fn(model, batch)``.

    ``loss_fn`` gets the prepared model (DDP-wrapped under several processes, so call it for
    the forward pass) and a batch already on the device; it returns the loss, or
    ``(loss, metrics)`` where metrics are scalars averaged and logged like the loss. It runs
    under ``accelerator.autocast()``, so helper modules it calls share the mixed precision.

    ``on_step_end`` runs after every optimizer step, before logging, evaluation and saving: the
    place for an EMA teacher update. Objects whose state must survive a resume (that teacher,
    a loss re-weighting schedule) go in ``checkpoint_objects``: anything with ``state_dict`` and
    ``load_state_dict``; they are saved in every checkpoint and restored on resume. Moving
    them to ``accelerator.device`` is up to the caller.

    ``eval_fn`` runs every ``config.eval_every`` steps and once at the end, with the model in
    eval mode and gradients off; what it returns is logged with the step.

    Seed before building the model if its initial weights must be reproducible: this function
    seeds (``config.seed``) only the training itself.

    ``sampler`` replaces the shuffle (re-sampling methods). For exact resume and several processes
    it must draw the same indices on every process, depending only on its seed and the epoch it
    gets through ``set_epoch``; accelerate splits its batches between the processes.
    """
    out_dir = Path(config.output_dir)
    checkpoints_dir = out_dir / CHECKPOINTS_DIR
    metrics_path = out_dir / METRICS_FILE
    with _accelerator(config) as accelerator:
        set_seed(config.seed)
        if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
            warnings.warn("accelerate runs fp16 on CPU as plain fp32; use bf16 on CPU", stacklevel=2)

        # The loader has its own generator: creating an iterator draws a seed from it, and drawing
        # that from the global RNG would shift the dropout stream of a resumed run.
        loader = DataLoader(
            train_dataset,
            batch_size=config.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=config.drop_last,
            collate_fn=collate_fn,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )
        optimizer = _build_optimizer(model, config)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if len(loader) == 0:
            raise ConfigError(
                f"train_dataset has {len(train_dataset)} examples: too few for batch_size {config.batch_size} "
                f"on {accelerator.num_processes} process(es) with drop_last={config.drop_last}"
            )
        steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
        total_steps = config.max_steps or config.num_epochs * steps_per_epoch
        # Stepped by hand once per optimizer step (a prepared scheduler would step once per
        # process), and registered so that save_state/load_state carry it.
        scheduler = get_scheduler(
            _SCHEDULER_NAMES[config.scheduler],
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=total_steps,
        )
        accelerator.register_for_checkpointing(scheduler, *checkpoint_objects)

        step, epoch, batches_done, elapsed_before, metrics = 0, 0, 0, 0.0, {}
        resume_dir = _resume_dir(config, checkpoints_dir)
        if resume_dir is not None:
            saved = json.loads((resume_dir / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
            _check_same_data_order(saved, config, accelerator.num_processes, resume_dir)
            accelerator.load_state(str(resume_dir))
            step, epoch, batches_done = saved["step"], saved["epoch"], saved["batches_done"]
            elapsed_before, metrics = saved["elapsed_s"], saved["metrics"]
        if accelerator.is_main_process:
            _forget_after(step, checkpoints_dir, metrics_path)
        accelerator.wait_for_everyone()

        window = _MetricWindow()
        grad_norm = None
        checkpoint = resume_dir
        start = time.perf_counter()
        model.train()
        # Redrawing at most once a second and unwrapping the model once keep the loop within a few
        # percent of a bare PyTorch loop (both showed up at ~5% each in a profile of small models).
        progress = tqdm(
            total=total_steps,
            initial=step,
            desc="train",
            mininterval=1.0,
            disable=not accelerator.is_local_main_process,
        )
        unwrapped = accelerator.unwrap_model(model)
        while step < total_steps:
            loader.set_epoch(epoch)
            # A resumed run replays its partly consumed epoch from where the checkpoint was taken.
            batches = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
            for batch in batches:
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, batch_metrics = _split_loss_output(loss_fn(model, batch))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()  # a no-op until the last micro-batch of the accumulation
                    optimizer.zero_grad(set_to_none=True)
                batches_done += 1
                window.add({"loss": loss, **batch_metrics})
                if not accelerator.sync_gradients:
                    continue
                if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
                    scheduler.step()
                step += 1
                progress.update(1)
                state = TrainState(accelerator, unwrapped, step, epoch)
                if on_step_end is not None:
                    on_step_end(state)

                if step % config.log_every == 0 or step == total_steps:
                    metrics = {"step": step, "epoch": epoch, **window.mean(accelerator)}
                    metrics["lr"] = scheduler.get_last_lr()[0]
                    if grad_norm is not None:
                        metrics["grad_norm"] = float(grad_norm)
                    metrics["elapsed_s"] = round(elapsed_before + time.perf_counter() - start, 3)
                    _log(accelerator, metrics_path, metrics)
                    progress.set_postfix(loss=f"{metrics['loss']:.4g}")
                if eval_fn is not None and (step == total_steps or _every(step, config.eval_every)):
                    model.eval()
                    with torch.no_grad():
                        eval_metrics = {"step": step, **eval_fn(state)}
                    model.train()
                    _log(accelerator, metrics_path, eval_metrics)
                    metrics = {**metrics, **eval_metrics}
                if step == total_steps or _every(step, config.save_every):
                    trainer_state = {
                        "step": step,
                        "epoch": epoch,
                        "batches_done": batches_done,
                        "elapsed_s": elapsed_before + time.perf_counter() - start,
                        "metrics": metrics,
                        "num_processes": accelerator.num_processes,
                        "config": config.model_dump(mode="json"),
                    }
                    checkpoint = _save_checkpoint(
                        accelerator, checkpoints_dir, trainer_state, config.keep_last
                    )
                if step == total_steps:
                    break
            else:
                epoch, batches_done = epoch + 1, 0
        progress.close()
        return TrainResult(
            model=accelerator.unwrap_model(model, keep_fp32_wrapper=False),
            step=step,
            metrics=metrics,
            checkpoint=checkpoint,
        )


@contextmanager
def _accelerator(config: TrainConfig) -> Iterator[Accelerator]:
    """An Accelerator for one run; accelerate's process-wide state is cleared when the run ends.

    Without the clearing, a second ``train`` in the same process could not pick another
    ``mixed_precision``, and an epoch left half-iterated stays registered in ``GradientState``.
    """
    accelerator = Accelerator(
        # On a machine without GPU, processes started by `accelerate launch --multi_gpu` or torchrun
        # join one gloo group only when asked for cpu; otherwise each trains alone as rank 0 of 1.
        cpu=not torch.accelerator.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    try:
        yield accelerator
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()


def _build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Optimise only the trainable parameters, so frozen backbones (LoRA, linear probes) cost no state."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _split_loss_output(output: LossOutput) -> tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]:
    if isinstance(output, tuple):
        return output
    return output, {}


def _every(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


class _MetricWindow:
    """Sums per-micro-batch metrics on the device and averages them (over the window and all
    processes) only when a record is logged, so training never waits on a device-to-host copy."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: Mapping[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            value = torch.as_tensor(value).detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def mean(self, accelerator: Accelerator) -> dict[str, float]:
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k].to(accelerator.device) for k in keys]) / self.count
        self.sums, self.count = {}, 0
        return dict(zip(keys, accelerator.reduce(local, reduction="mean").tolist(), strict=True))


def _log(accelerator: Accelerator, path: Path, record: Mapping[str, Any]) -> None:
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Complete checkpoints (``step_N`` folders) under ``checkpoints_dir``, oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_CHECKPOINT_NAME.match(p.name).group(1)))


def _resume_dir(config: TrainConfig, checkpoints_dir: Path) -> Path | None:
    existing = list_checkpoints(checkpoints_dir)
    if config.resume == "auto":
        return existing[-1] if existing else None
    if config.resume is None:
        if existing:
            raise ConfigError(
                f"{checkpoints_dir} holds checkpoints of an earlier run: set resume to 'auto' to continue "
                "it, or choose another output_dir"
            )
        return None
    resume_dir = Path(config.resume)
    if not (resume_dir / TRAINER_STATE_FILE).is_file():
        raise ArtifactError(f"{resume_dir}: not a complete checkpoint (no {TRAINER_STATE_FILE})")
    return resume_dir


def _check_same_data_order(
    saved: Mapping[str, Any], config: TrainConfig, num_processes: int, resume_dir: Path
) -> None:
    was = {**{k: saved["config"][k] for k in _DATA_ORDER_KEYS}, "num_processes": saved["num_processes"]}
    now = {**{k: getattr(config, k) for k in _DATA_ORDER_KEYS}, "num_processes": num_processes}
    changed = [f"{k} {was[k]!r} -> {now[k]!r}" for k in was if was[k] != now[k]]
    if changed:
        raise ConfigError(
            f"{resume_dir}: cannot resume exactly, changed since the checkpoint: {', '.join(changed)}"
        )


def _forget_after(step: int, checkpoints_dir: Path, metrics_path: Path) -> None:
    """Drop what an earlier run did after ``step``: the run continues from there, so its later
    checkpoints and log records belong to a future that will be recomputed. Also removes
    partial checkpoints left by a save that was killed half-way."""
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.iterdir():
            name = _CHECKPOINT_NAME.match(path.name)
            if path.name.startswith(_PARTIAL_PREFIX) or (name and int(name.group(1)) > step):
                shutil.rmtree(path)
    if metrics_path.exists():
        kept = []
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short when the earlier run was killed
        metrics_path.write_text("".join(kept), encoding="utf-8")


def _save_checkpoint(
    accelerator: Accelerator, checkpoints_dir: Path, trainer_state: Mapping[str, Any], keep_last: int
) -> Path:
    """Write ``step_N`` so that it is never seen half-written: everything goes to a partial folder
    that is renamed only after every process has finished writing its part."""
    final = checkpoints_dir / f"step_{trainer_state['step']}"
    partial = checkpoints_dir / f"{_PARTIAL_PREFIX}{final.name}"
    # The main process writes weights, optimizer and registered objects; each process its RNG states.
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partial.rename(final)
        for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
