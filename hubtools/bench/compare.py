"""Does a rerun reproduce a result? Cell-by-cell comparison of two result envelopes' raw runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hubtools.bench.envelope import Result


@dataclass(frozen=True)
class Difference:
    arm: str
    seed: int | None
    metric: str
    old: object
    new: object


def compare_runs(
    old: Result, new: Result, *, tol: float = 0.0, common: bool = False
) -> tuple[int, list[Difference]]:
    """Every (arm, seed, metric) value of ``old`` against ``new``: the number compared and the differences.

    Numbers differ when ``|old - new| > tol`` (``tol = 0``: bit-for-bit equal); a cell missing on
    one side is a difference too, unless ``common`` (compare only the cells both have, e.g. a
    rerun of some seeds of a table).
    """

    def cells(r: Result) -> dict[tuple[str, int | None, str], object]:
        return {(run.arm, run.seed, k): v for run in r.runs for k, v in run.metrics.items()}

    a, b = cells(old), cells(new)
    keys = set(a) & set(b) if common else set(a) | set(b)
    diffs = []
    for key in sorted(keys, key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, int | float) and isinstance(y, int | float) and not isinstance(x, bool):
            same = (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol
        else:
            same = x == y
        if not same or (key in a) != (key in b):
            diffs.append(Difference(*key, x, y))
    return len(keys), diffs
