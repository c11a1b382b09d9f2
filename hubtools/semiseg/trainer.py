"""``train_semiseg``: supervised, pseudo-label and Bayesian pseudo-label training on the shared loop.

:func:`hubtools.train.train` takes one dataset, so each training item pairs one labelled image
with ``unlabelled_ratio`` unlabelled ones (by index; the arrays live on the device). A batch is
therefore ``batch_size`` labelled + ``batch_size * unlabelled_ratio`` unlabelled images, put
through the U-Net in one forward pass (InstanceNorm: no statistics are shared between samples, so
the pseudo labels are those of the train-mode forward of each image).

With ``teacher="ema"`` (the default of the pseudo-label methods) the unlabelled images are labelled by
an EMA teacher on their weak view (crop and flip) and the student sees a strong view (scanner-like
intensity changes and an elastic warp of up to ``strong_elastic`` pixels, applied to the teacher's
probabilities too). The teacher and the ramp schedule are checkpoint objects.

Random crops, flips and the scan-variability augmentation happen inside ``loss_fn`` with the
global torch RNG, which the checkpoints carry, and the threshold head is part of the model, so
a resumed run is exact. The ramp alpha(t) reads the step from a counter and the plateau test from
a :class:`~hubtools.semiseg.teacher.RampSchedule`, both checkpoint objects for the same reason.

The run folder holds ``metrics.jsonl`` (with the threshold's mean ``T_mu`` and spread ``T_sigma``),
``checkpoints/``, ``model/`` (the Hub artifact: config, safetensors, remote code, card),
``results.json``, ``overlays.png`` (test predictions and unlabelled pseudo labels) and, for
``bpl``, ``threshold.png`` (the learned threshold over training).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from hubtools.hub.artifacts import atomic_dir
from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
from hubtools.semiseg.data import (
    SegmentationData,
    SegmentationDataError,
    check_data,
    one_hot_targets,
    output_channels,
    scan_variability,
)
from hubtools.semiseg.losses import pseudo_labels
from hubtools.semiseg.metrics import segmentation_scores
from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg
from hubtools.semiseg.objective import THRESHOLD_LEARNS, ObjectiveConfig, semiseg_objective
from hubtools.semiseg.teacher import EMATeacher, RampSchedule, strong_view, warp
from hubtools.train import METRICS_FILE, TrainConfig, TrainState, train

MODEL_DIR = "model"
RESULTS_FILE = "results.json"
OVERLAYS_FILE = "overlays.png"
THRESHOLD_FILE = "threshold.png"


class SemiSegTrainConfig(ObjectiveConfig):
    """Everything one run needs besides the data; the YAML keys of ``hubtools semiseg train --config``."""

    output_dir: Path
    width: int = Field(8, ge=1)
    depth: int = Field(3, ge=0)
    temperature: float = Field(1.0, gt=0)
    threshold_detach: bool = True
    threshold_reduce: Literal["image", "batch"] = "image"
    steps: int = Field(600, ge=1)
    batch_size: int = Field(4, ge=1, description="labelled images per step (and per process)")
    unlabelled_ratio: int = Field(1, ge=1, description="unlabelled images per labelled image in a batch")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    seed: int = 0
    crop: tuple[int, ...] | None = Field(
        None, description="random training crop (H, W) or (D, H, W); none: whole images"
    )
    augment: Literal["none", "flip", "scan"] = Field(
        "flip", description="flip: random left-right flips of labelled images; scan: also scanner variability"
    )
    strong_intensity: bool = Field(True, description="teacher mode: scanner-like intensity changes on the student view")
    strong_elastic: float = Field(
        2.0, ge=0, description="teacher mode: elastic warp of the student view, in pixels (0: none)"
    )
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)
    save_every: int | None = Field(None, ge=1)
    resume: str | None = "auto"
    overlays: bool = True


class StepCounter:
    """The optimiser step the next loss belongs to, saved in checkpoints so alpha(t) resumes exactly."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


class PairedIndexDataset(Dataset):
    """Item ``i``: labelled index ``i % n_labelled`` and ``ratio`` unlabelled indices, so one shuffled
    pass covers both splits; the length is large enough for a full batch on every process."""

    def __init__(self, n_labelled: int, n_unlabelled: int, ratio: int, min_length: int) -> None:
        self.n_labelled, self.n_unlabelled, self.ratio = n_labelled, n_unlabelled, ratio
        self.length = max(n_labelled, math.ceil(n_unlabelled / ratio), min_length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        unlabelled = [(i * self.ratio + j) % max(self.n_unlabelled, 1) for j in range(self.ratio)]
        return {"labelled": torch.tensor(i % self.n_labelled), "unlabelled": torch.tensor(unlabelled)}


@dataclass
class SemiSegResult:
    """What a run produced: the trained model, the final test scores and where the files are."""

    model: UNetForSemiSeg
    scores: dict[str, float]
    output_dir: Path
    threshold_history: list[dict[str, float]] = field(default_factory=list)
    pl_start: float | None = None  # the step the pseudo-label ramp started (None: it never did)


def random_crop(
    images: torch.Tensor, masks: torch.Tensor | None, size: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random window of ``size`` per sample (global torch RNG); ``None`` or a full size keeps all."""
    if size is None:
        return images, masks
    spatial = images.shape[2:]
    if len(size) != len(spatial) or any(c > s for c, s in zip(size, spatial, strict=True)):
        raise SegmentationDataError(
            f"crop {tuple(size)} does not fit images of spatial shape {tuple(spatial)}"
        )
    out_i, out_m = [], []
    for n in range(images.shape[0]):
        starts = [int(torch.randint(0, s - c + 1, ()).item()) for c, s in zip(size, spatial, strict=True)]
        window = tuple(slice(a, a + c) for a, c in zip(starts, size, strict=True))
        out_i.append(images[(n, slice(None), *window)])
        if masks is not None:
            out_m.append(masks[(n, *window)])
    return torch.stack(out_i), torch.stack(out_m) if masks is not None else None


def random_flip(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-right flip (last axis) of a random half of the samples, image and mask together."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    images = torch.where(flip.view(-1, *[1] * (images.dim() - 1)), images.flip(-1), images)
    masks = torch.where(flip.view(-1, *[1] * (masks.dim() - 1)), masks.flip(-1), masks)
    return images, masks


@torch.no_grad()
def predict_probabilities(model: UNetForSemiSeg, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``sigmoid(logits / tau)`` of ``images`` in chunks, in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat(
        [model.probabilities(images[i : i + chunk].to(device)).cpu() for i in range(0, len(images), chunk)]
    )
    model.train(was_training)
    return out


def evaluate(model: UNetForSemiSeg, data: SegmentationData) -> dict[str, float]:
    """Dice/IoU per class and mean over the whole test split at p > 0.5."""
    test = data.splits["test"]
    prob = predict_probabilities(model, torch.from_numpy(test.images))
    target = one_hot_targets(torch.from_numpy(test.masks), len(data.class_names))
    return segmentation_scores(prob, target, output_channels(data.class_names))


def build_model(cfg: SemiSegTrainConfig, data: SegmentationData) -> UNetForSemiSeg:
    """A freshly initialised U-Net for ``data`` (seeded with ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    channels = output_channels(data.class_names)
    config = UNetSegConfig(
        spatial_dims=data.spatial_dims,
        in_channels=int(data.splits["labelled"].images.shape[1]),
        out_channels=len(channels),
        width=cfg.width,
        depth=cfg.depth,
        logit_temperature=cfg.temperature,
        threshold_detach=cfg.threshold_detach,
        threshold_reduce=cfg.threshold_reduce,
        threshold_init_mu=cfg.prior_mu,
        threshold_init_sigma=cfg.prior_sigma,
        class_names=channels,
    )
    return UNetForSemiSeg(config)


def train_semiseg(
    data: SegmentationData, cfg: SemiSegTrainConfig, save_artifact: bool = True
) -> SemiSegResult:
    """Train one U-Net with ``cfg.method`` on ``data`` and write the run folder (see the module docstring).

    Raises :class:`SegmentationDataError` for unusable data (empty labelled split, mask shape
    mismatch, labels outside the classes, no unlabelled images for a pseudo-label method).
    """
    check_data(data)
    labelled, unlabelled = data.splits["labelled"], data.splits["unlabelled"]
    if cfg.method != "supervised" and len(unlabelled.images) == 0:
        raise SegmentationDataError(
            f"method '{cfg.method}' needs unlabelled images; the 'unlabelled' split is empty"
        )
    num_classes = len(data.class_names)
    model = build_model(cfg, data)
    out = Path(cfg.output_dir)
    train_cfg = TrainConfig(
        output_dir=out,
        seed=cfg.seed,
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        # transformers' linear decay: the anchor's poly (1 - t/T)^0.99 within 1% of the base lr.
        scheduler="linear",
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        save_every=cfg.save_every,
        resume=cfg.resume,
    )
    counter = StepCounter()
    schedule = RampSchedule(
        cfg.steps,
        trigger=cfg.warmup_trigger,
        earliest=cfg.warmup_start,
        latest=cfg.warmup_latest,
        window=cfg.plateau_window,
        tol=cfg.plateau_tol,
    )
    teacher = EMATeacher(model, cfg.ema_decay) if uses_teacher(cfg) else None
    device_cache: dict[str, torch.Tensor] = {}

    def arrays(device: torch.device) -> dict[str, torch.Tensor]:
        if not device_cache:
            device_cache["x_l"] = torch.from_numpy(labelled.images).to(device)
            device_cache["y_l"] = torch.from_numpy(labelled.masks).to(device)
            if len(unlabelled.images):
                device_cache["x_u"] = torch.from_numpy(unlabelled.images).to(device)
        return device_cache

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        tensors = arrays(batch["labelled"].device)
        x_l, y_l = random_crop(tensors["x_l"][batch["labelled"]], tensors["y_l"][batch["labelled"]], cfg.crop)
        if cfg.augment != "none":
            x_l, y_l = random_flip(x_l, y_l)
        if cfg.augment == "scan":
            x_l = scan_variability(x_l)
        target_l = one_hot_targets(y_l, num_classes)
        x_u, source_u = None, None
        if cfg.method != "supervised":
            x_u, _ = random_crop(tensors["x_u"][batch["unlabelled"].flatten()], None, cfg.crop)
            if teacher is not None:
                if cfg.augment != "none":
                    x_u = random_flip(x_u, x_u)[0]
                teacher.to(x_u.device)
                source_u = teacher.probabilities(x_u)  # the weak view
                x_u, grid = strong_view(x_u, cfg.strong_intensity, cfg.strong_elastic)
                if grid is not None:
                    source_u = warp(source_u, grid)
            elif cfg.augment == "scan":
                x_u = scan_variability(x_u)
        output = model(pixel_values=x_l if x_u is None else torch.cat([x_l, x_u]))
        n_l = x_l.shape[0]
        loss, metrics = semiseg_objective(
            output.logits[:n_l],
            target_l,
            cfg,
            step=counter.step,
            total_steps=cfg.steps,
            temperature=cfg.temperature,
            logits_u=None if x_u is None else output.logits[n_l:],
            mu=output.threshold_mu[n_l:],
            logvar=output.threshold_logvar[n_l:],
            reduce_batch=cfg.threshold_reduce == "batch",
            source_prob_u=source_u,
            alpha=schedule.alpha(counter.step, cfg.warmup_len, cfg.alpha_max),
        )
        schedule.record(float(metrics["loss_sup"]))
        # Every parameter takes part in every step (zero gradient where a term is off), as DDP requires.
        loss = loss + 0.0 * (output.threshold_mu.sum() + output.threshold_logvar.sum())
        return loss, metrics

    def on_step_end(state: TrainState) -> None:
        counter.step = state.step
        schedule.end_step(state.step, state.accelerator)
        if teacher is not None:
            teacher.update(state.model)

    def eval_fn(state: TrainState) -> dict[str, float]:
        return {f"test/{k}": v for k, v in evaluate(state.model, data).items()}

    dataset = PairedIndexDataset(
        len(labelled.images), len(unlabelled.images), cfg.unlabelled_ratio, min_length=8 * cfg.batch_size
    )
    result = train(
        model,
        dataset,
        loss_fn,
        train_cfg,
        eval_fn=eval_fn,
        on_step_end=on_step_end,
        checkpoint_objects=[counter, schedule] + ([teacher] if teacher is not None else []),
    )
    trained = result.model.cpu().eval()
    # eval_fn ran once at the end of the run (or the finished run's checkpoint holds its scores)
    scores = {k.removeprefix("test/"): v for k, v in result.metrics.items() if k.startswith("test/")}
    if "dice" not in scores:
        scores = evaluate(trained, data)
    history = threshold_history(out / METRICS_FILE)
    trained.config.threshold_learned = threshold_learned(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        _write_outputs(trained, data, cfg, scores, history, save_artifact, schedule.start)
    return SemiSegResult(
        model=trained, scores=scores, output_dir=out, threshold_history=history, pl_start=schedule.start
    )


def uses_teacher(cfg: ObjectiveConfig) -> bool:
    """Whether a run labels its unlabelled images with an EMA teacher."""
    return cfg.method != "supervised" and cfg.teacher == "ema"


def threshold_learned(cfg: ObjectiveConfig) -> bool:
    """Whether the run trains q(T) from the pseudo labels' likelihood (else T is drawn from the prior)."""
    return cfg.method == "bpl" and THRESHOLD_LEARNS[cfg.pl_mode]


def threshold_history(metrics_path: Path) -> list[dict[str, float]]:
    """``[{step, T_mu, T_sigma}]`` from a run's metrics log (empty for methods without a learned threshold)."""
    if not metrics_path.exists():
        return []
    rows = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "T_mu" in record:
            rows.append({"step": record["step"], "T_mu": record["T_mu"], "T_sigma": record["T_sigma"]})
    return rows


def _write_outputs(
    model: UNetForSemiSeg,
    data: SegmentationData,
    cfg: SemiSegTrainConfig,
    scores: dict[str, float],
    history: list[dict[str, float]],
    save_artifact: bool,
    pl_start: float | None = None,
) -> None:
    out = Path(cfg.output_dir)
    summary: dict[str, Any] = {
        "method": cfg.method,
        "pl_mode": cfg.pl_mode if cfg.method == "bpl" else None,
        "data": data.description,
        "labelled": len(data.splits["labelled"].images),
        "unlabelled": len(data.splits["unlabelled"].images),
        "test": len(data.splits["test"].images),
        "labelled_fraction": round(data.labelled_fraction, 4),
        "steps": cfg.steps,
        "seed": cfg.seed,
        "scores": scores,
        "final_T_mu": history[-1]["T_mu"] if history else None,
        "threshold_learned": threshold_learned(cfg),
        "teacher": cfg.teacher if cfg.method != "supervised" else None,
        "pl_start_step": pl_start if cfg.method != "supervised" else None,
        "prior": {"mu0": cfg.prior_mu, "sigma0": cfg.prior_sigma} if cfg.method == "bpl" else None,
    }
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if save_artifact:
        save_model_artifact(model, out / MODEL_DIR, cfg, data, scores)
    if cfg.overlays:
        from hubtools.semiseg.plots import plot_overlays, plot_threshold_curve

        plot_overlays(model, data, out / OVERLAYS_FILE, cfg)
        if history:
            plot_threshold_curve(history, out / THRESHOLD_FILE, cfg)


def save_model_artifact(
    model: UNetForSemiSeg,
    folder: Path,
    cfg: SemiSegTrainConfig,
    data: SegmentationData,
    scores: dict[str, float],
    repo_id: str | None = None,
    zoo_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write the Hub repo folder: config + safetensors + remote code (``AutoModel`` with
    ``trust_remote_code=True``) + a ``segmentation_model`` card with the method, prior and scores
    (and ``zoo_fields``: modality, anatomy, task, reproduce, for the model zoo)."""
    from hubtools.hub.cards import render_card

    model.config.register_for_auto_class()
    model.register_for_auto_class("AutoModel")
    prior = {
        "mu0": cfg.prior_mu,
        "sigma0": cfg.prior_sigma,
        "softness": cfg.softness,
        "pl_mode": cfg.pl_mode,
        "threshold_learned": threshold_learned(cfg),
    }
    card = render_card(
        "segmentation_model",
        card_data={
            "library_name": "transformers",
            "tags": ["segmentation", "semi-supervised", "hubtools", cfg.method],
        },
        metrics={
            "task_type": "image-segmentation",
            "dataset": {
                "type": "hubtools/semiseg-" + data.description.split()[0].lower(),
                "name": data.description,
                "split": "test",
            },
            "values": {"dice": round(scores["dice"], 4), "iou": round(scores["iou"], 4)},
        },
        model_name=f"U-Net ({cfg.method}) for {', '.join(output_channels(data.class_names))}",
        repo_id=repo_id,
        method=cfg.method,
        teacher=cfg.teacher if cfg.method != "supervised" else None,
        prior=prior if cfg.method == "bpl" else None,
        labelled_fraction=round(data.labelled_fraction, 4),
        class_names=list(output_channels(data.class_names)),
        dims=data.spatial_dims,
        training_data=data.description,
        training_procedure=f"hubtools semiseg train: {cfg.steps} AdamW steps, {cfg.batch_size} labelled + "
        f"{cfg.batch_size * cfg.unlabelled_ratio} unlabelled images per step.",
        hyperparameters={
            k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("output_dir", "resume")
        },
        **(zoo_fields or {}),
    )
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        card.save(tmp / "README.md")
    return folder


def pseudo_label_preview(model: UNetForSemiSeg, images: torch.Tensor, cfg: ObjectiveConfig) -> torch.Tensor:
    """The pseudo labels the method would assign to ``images`` now (at the posterior mean for ``bpl``)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(images)
        prob = torch.sigmoid(out.logits / model.config.logit_temperature)
    model.train(was_training)
    threshold = out.threshold_mu if cfg.method == "bpl" else cfg.pl_threshold
    mode = cfg.pl_mode if cfg.method == "bpl" else "hard"
    return pseudo_labels(prob, threshold, mode=mode, softness=cfg.softness)


__all__ = [
    "PairedIndexDataset",
    "SemiSegResult",
    "SemiSegTrainConfig",
    "StepCounter",
    "build_model",
    "evaluate",
    "predict_probabilities",
    "pseudo_label_preview",
    "random_crop",
    "random_flip",
    "save_model_artifact",
    "threshold_history",
    "threshold_learned",
    "train_semiseg",
    "uses_teacher",
]
