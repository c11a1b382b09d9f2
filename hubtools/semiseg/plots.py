"""Pictures of a run: predictions and pseudo labels over the images, and the learned threshold over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hubtools.semiseg.data import SegmentationData, one_hot_targets
from hubtools.semiseg.objective import ObjectiveConfig


def _show_slice(volume: np.ndarray) -> np.ndarray:
    """The middle slice of a (D, H, W) volume, or the (H, W) image itself."""
    return volume[volume.shape[0] // 2] if volume.ndim == 3 else volume


def plot_overlays(model, data: SegmentationData, path: Path, cfg: ObjectiveConfig, n: int = 4) -> Path:
    """Rows of test images (ground truth green, prediction at p > 0.5 red) and unlabelled images
    (prediction red, the pseudo label the method would use now blue), channel 0 of the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hubtools.semiseg.trainer import predict_probabilities, pseudo_label_preview

    test, unlabelled = data.splits["test"], data.splits["unlabelled"]
    pick_t = np.linspace(0, len(test.images) - 1, min(n, len(test.images))).round().astype(int)
    x_t = torch.from_numpy(test.images[pick_t])
    prob_t = predict_probabilities(model, x_t)[:, 0].numpy()
    gt_t = one_hot_targets(torch.from_numpy(test.masks[pick_t]), len(data.class_names))[:, 0].numpy()
    rows = [("test", x_t[i, 0].numpy(), gt_t[i], prob_t[i] > 0.5) for i in range(len(pick_t))]
    if len(unlabelled.images):
        pick_u = (
            np.linspace(0, len(unlabelled.images) - 1, min(n, len(unlabelled.images))).round().astype(int)
        )
        x_u = torch.from_numpy(unlabelled.images[pick_u])
        prob_u = predict_probabilities(model, x_u)[:, 0].numpy()
        pl_u = pseudo_label_preview(model, x_u, cfg)[:, 0].numpy()
        rows += [
            ("unlabelled", x_u[i, 0].numpy(), pl_u[i] > 0.5, prob_u[i] > 0.5) for i in range(len(pick_u))
        ]

    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 * len(rows), 2.6), squeeze=False)
    for ax, (kind, image, reference, pred) in zip(axes[0], rows, strict=True):
        image, reference, pred = _show_slice(image), _show_slice(reference), _show_slice(pred)
        ax.imshow(image, cmap="gray")
        ax.contour(
            reference.astype(float),
            levels=[0.5],
            colors="lime" if kind == "test" else "deepskyblue",
            linewidths=0.8,
        )
        ax.contour(pred.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title("test: GT green" if kind == "test" else "unlab.: PL blue", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{getattr(cfg, 'method', '')}: prediction (p > 0.5) in red", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_threshold_curve(history: list[dict[str, float]], path: Path, cfg: ObjectiveConfig) -> Path:
    """Mean of q(T) (line) +- its mean standard deviation (band) against the step, with the prior mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    mu = np.array([h["T_mu"] for h in history])
    sigma = np.array([h["T_sigma"] for h in history])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, mu, color="C0", label="mean of q(T)")
    ax.fill_between(steps, mu - sigma, mu + sigma, color="C0", alpha=0.2, label="+- std of q(T)")
    ax.axhline(cfg.prior_mu, color="gray", ls="--", lw=1, label=f"prior mean {cfg.prior_mu}")
    ax.set_xlabel("step")
    ax.set_ylabel("threshold T")
    ax.set_title(f"learned threshold ({cfg.pl_mode} pseudo labels)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["plot_overlays", "plot_threshold_curve"]
