"""Local ``evaluate`` metric modules, loaded by path: ``evaluate.load("accuracy")`` would fetch from the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str) -> Any:
    """An ``evaluate.EvaluationModule`` shipped in this folder (``next_token`` or ``accuracy``)."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no local metric {name!r}; shipped: {known}")
    return evaluate.load(str(path))
