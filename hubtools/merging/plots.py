"""Pictures of a Model-GLUE run: the pairwise similarity heat-map and the per-step score chart."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def plot_similarity(
    names: Sequence[str],
    matrix: np.ndarray,
    path: str | os.PathLike,
    *,
    families: Sequence[Sequence[str]] | None = None,
    title: str = "sim_all (raw weights)",
) -> Path:
    """Heat-map of a similarity matrix, rows ordered by family so blocks show the clusters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [n for fam in families for n in fam] if families else list(names)
    idx = [list(names).index(n) for n in order]
    m = np.asarray(matrix)[np.ix_(idx, idx)]
    size = 2.5 + 0.55 * len(order)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(np.ma.masked_invalid(m), vmin=min(0.0, float(np.nanmin(m))), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    for i in range(len(order)):
        for j in range(len(order)):
            if not np.isnan(m[i, j]):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if m[i, j] < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_scores(rows: Mapping[str, Mapping[str, float]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Grouped bars: one group per row (model / step), one bar per task, plus the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    tasks = list(dict.fromkeys(t for r in rows.values() for t in r))
    width = 0.8 / max(1, len(tasks))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4))
    x = np.arange(len(labels))
    for k, task in enumerate(tasks):
        ax.bar(x + k * width, [rows[r].get(task, np.nan) for r in labels], width, label=task)
    ax.set_xticks(x + 0.4 - width / 2, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, ncol=min(len(tasks), 7))
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
