"""MONICA-style comparison of trained long-tail runs (``hubtools longtail table RUNS...``).

Each run is a folder written by ``hubtools longtail train`` (``RUN/model/metrics.json`` +
``longtail.json``; the model folder itself is accepted too). Runs of the same method (seeds) are
pooled into mean ± sample sd; rows are ordered as MONICA's tables are, by method family (baseline,
re-sampling, re-weighting, ...), and a PNG shows per-class test accuracy against train-class
frequency, where the head/tail trade-off of each method is visible at a glance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from hubtools.errors import ArtifactError, ConfigError

TABLE_KEYS = (
    "many_acc",
    "medium_acc",
    "few_acc",
    "group_avg_acc",
    "balanced_acc",
    "top1",
    "macro_f1",
    "macro_auroc",
)
HEADERS = {
    "many_acc": "Many",
    "medium_acc": "Medium",
    "few_acc": "Few",
    "group_avg_acc": "Group avg",
    "balanced_acc": "Balanced acc",
    "top1": "Top-1",
    "macro_f1": "Macro F1",
    "macro_auroc": "Macro AUROC",
    "macro_auprc": "Macro AUPRC",
}


@dataclass(frozen=True)
class RunResult:
    """One trained run: its method, test report and the train counts it was trained on."""

    folder: Path
    method: str
    test: dict[str, Any]
    cls_num_list: list[int]
    head: int
    medium: int


def load_run(folder: str | Path) -> RunResult:
    """Read a run folder (or its ``model`` folder) written by ``hubtools longtail train``."""
    from hubtools.longtail.trainer import LONGTAIL_FILE, METRICS_JSON

    folder = Path(folder)
    model = folder / "model" if (folder / "model" / METRICS_JSON).is_file() else folder
    if not (model / METRICS_JSON).is_file() or not (model / LONGTAIL_FILE).is_file():
        raise ArtifactError(
            f"{folder}: not a `hubtools longtail train` run (needs model/{METRICS_JSON} and model/{LONGTAIL_FILE})"
        )
    try:
        metrics = json.loads((model / METRICS_JSON).read_text(encoding="utf-8"))
        info = json.loads((model / LONGTAIL_FILE).read_text(encoding="utf-8"))
        return RunResult(
            folder, info["method"], metrics["test"], list(info["cls_num_list"]), info["head"], info["medium"]
        )
    except (json.JSONDecodeError, KeyError) as err:
        raise ArtifactError(f"{model}: unreadable run files ({err!r})") from None


def _family(method: str) -> str:
    from hubtools.longtail.methods import METHODS

    return METHODS[method].group if method in METHODS else "other"


def summarise(runs: Sequence[RunResult], keys: Sequence[str] = TABLE_KEYS) -> dict[str, dict[str, Any]]:
    """method -> {metric: [mean, std], "runs": n, "family": group}; methods keep their first-seen order."""
    by_method: dict[str, list[RunResult]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    out: dict[str, dict[str, Any]] = {}
    for method, group in by_method.items():
        row: dict[str, Any] = {"runs": len(group), "family": _family(method)}
        for k in keys:
            values = np.array([float(r.test.get(k, np.nan)) for r in group])
            defined = values[~np.isnan(values)]
            # sample sd (ddof=1): population sd understates the spread of 3 seeds by ~18 %
            sd = float(defined.std(ddof=1)) if defined.size > 1 else np.nan
            row[k] = [float(defined.mean()), sd] if defined.size else [np.nan, np.nan]
        out[method] = row
    return out


def markdown_table(summary: dict[str, dict[str, Any]], keys: Sequence[str] = TABLE_KEYS) -> str:
    """Markdown table, one row per method, rows grouped by family in MONICA's order; mean ± std over runs."""
    from hubtools.longtail.methods import Group

    order = {g: i for i, g in enumerate(get_args(Group))}
    rows = sorted(summary.items(), key=lambda kv: order.get(kv[1]["family"], len(order)))
    lines = [
        "| Family | Method | " + " | ".join(HEADERS.get(k, k) for k in keys) + " | Runs |",
        "|---|---|" + "---:|" * (len(keys) + 1),
    ]
    for method, row in rows:
        cells = []
        for k in keys:
            mean, std = row[k]
            cells.append(
                "–" if mean != mean else f"{mean:.1f}" + (f" ± {std:.1f}" if row["runs"] > 1 else "")
            )
        lines.append(f"| {row['family']} | {method} | " + " | ".join(cells) + f" | {row['runs']} |")
    return "\n".join(lines)


def per_class_plot(
    runs: Sequence[RunResult],
    path: str | Path,
    title: str = "Per-class test accuracy against class frequency",
) -> Path:
    """Scatter of each method's per-class test recall (mean over its runs) against train images of the class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = _common_counts(runs)
    by_method: dict[str, list[list[float]]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run.test["per_class_recall"])
    fig, ax = plt.subplots(figsize=(8, 4.8))
    markers = "os^Dv<>pPX*h"
    for i, (method, recalls) in enumerate(by_method.items()):
        recall = np.nanmean(np.array(recalls, dtype=np.float64), axis=0)
        ax.scatter(counts, recall, s=14, alpha=0.7, marker=markers[i % len(markers)], label=method)
    head, medium = runs[0].head, runs[0].medium
    for cut in (head, medium):
        if 0 < cut < len(counts):  # group boundary halfway between the last class of one group and the next
            ax.axvline(np.sqrt(counts[cut - 1] * counts[cut]), color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("train images of the class (log scale; dashed lines split few | medium | many)")
    ax.set_ylabel("test recall (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(by_method) > 8 else 1, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _common_counts(runs: Sequence[RunResult]) -> list[int]:
    if not runs:
        raise ConfigError("no runs to compare")
    counts = runs[0].cls_num_list
    for run in runs[1:]:
        if run.cls_num_list != counts:
            raise ConfigError(
                f"runs trained on different class counts cannot share a table: {runs[0].folder} and {run.folder}"
            )
    return counts


def comparison(
    folders: Sequence[str | Path], png: str | Path | None = None, keys: Sequence[str] = TABLE_KEYS
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Markdown table and summary of run ``folders`` (same dataset), and the per-class PNG if ``png`` is given."""
    runs = [load_run(f) for f in folders]
    _common_counts(runs)
    summary = summarise(runs, keys)
    if png is not None:
        per_class_plot(runs, png)
    return markdown_table(summary, keys), summary
