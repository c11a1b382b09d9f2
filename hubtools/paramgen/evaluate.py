"""Evaluation of generated parameters against the collected ones (spec, section 2.5).

Every vector (original, autoencoder reconstruction, generated) is plugged into the *same*
frozen host and scored by the caller's ``score_fn`` on one split. Novelty is measured in
parameter space: a generated set that only copies checkpoints would have nearest-neighbour
distances to the originals far below the originals' own spacing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def summary(values: Sequence[float]) -> dict[str, float]:
    """best / mean / median / min / std of a list of scores."""
    vals = [float(v) for v in values]
    return {
        "best": max(vals),
        "mean": statistics.fmean(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "std": statistics.pstdev(vals),
        "n": len(vals),
    }


def novelty(generated: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """Nearest-neighbour and pairwise L2 distances: are generated vectors new, and as spread out as the originals?"""
    gen, orig = generated.double(), originals.double()
    gen_to_orig = torch.cdist(gen, orig).min(1).values
    oo = torch.cdist(orig, orig)
    oo.fill_diagonal_(float("inf"))
    orig_to_orig = oo.min(1).values
    gg = torch.cdist(gen, gen)
    iu = torch.triu_indices(len(gen), len(gen), 1)
    io = torch.triu_indices(len(orig), len(orig), 1)
    nn_gen, nn_orig = float(gen_to_orig.median()), float(orig_to_orig.median())
    return {
        "nn_dist_gen_to_orig_median": nn_gen,
        "nn_dist_gen_to_orig_min": float(gen_to_orig.min()),
        "nn_dist_orig_to_orig_median": nn_orig,
        "novelty_ratio": nn_gen / nn_orig if nn_orig > 0 else float("inf"),
        "pairwise_gen_median": float(gg[iu[0], iu[1]].median()) if len(gen) > 1 else 0.0,
        "pairwise_orig_median": float(oo[io[0], io[1]].median()) if len(orig) > 1 else 0.0,
    }


def evaluate_vectors(
    score_fn: Callable[[torch.Tensor], float],
    generated: torch.Tensor,
    originals: torch.Tensor,
    reconstructions: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Scores and their summaries for generated / original / reconstructed vectors, plus novelty."""
    report: dict[str, Any] = {}
    scores: dict[str, list[float]] = {}
    groups = {"generated": generated, "original": originals}
    if reconstructions is not None:
        groups["reconstruction"] = reconstructions
    for name, vecs in groups.items():
        scores[name] = [float(score_fn(v)) for v in vecs]
        report[name] = summary(scores[name])
    med = report["original"]["median"]
    report["generated"]["frac_within_1pt_of_orig_median"] = sum(
        s >= med - 1.0 for s in scores["generated"]
    ) / len(scores["generated"])
    report["novelty"] = novelty(generated, originals)
    report["scores"] = scores
    return report


def plot_histogram(
    scores: dict[str, list[float]], path: str | Path, title: str, xlabel: str = "accuracy (%)"
) -> Path:
    """Overlaid histograms of the score of each group (original vs generated, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    allv = [v for vals in scores.values() for v in vals]
    lo, hi = min(allv), max(allv)
    bins = torch.linspace(lo - 0.01, hi + 0.01, 30).tolist()
    for name, vals in scores.items():
        ax.hist(vals, bins=bins, alpha=0.5, label=f"{name} (n={len(vals)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("models")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return path
