"""Benchmark harness shared by every script under ``benchmarks/``.

- :mod:`~hubtools.bench.envelope`: the result schema and its provenance (commit, command, versions,
  device, code digest), so every committed number says what produced it and when it went stale.
- :mod:`~hubtools.bench.stats`: sample sd, paired bootstrap CIs, the plateau criterion behind
  "budget insufficient", no-op detection.
- :mod:`~hubtools.bench.harness`: the shared flags, keyed run caches and arm tables.
- :mod:`~hubtools.bench.render`: Markdown and PNGs from the JSON alone.
- :mod:`~hubtools.bench.catalog`: the generated benchmarks page and the freshness check.
"""

from hubtools.bench.envelope import Figure, Panel, Result, Run, Series, Table
from hubtools.bench.harness import Benchmark, arm_summary, arms_table, values_by_seed
from hubtools.bench.stats import budget_verdict, mean_sd, paired_by_seed, paired_diff, plateau

__all__ = [
    "Benchmark",
    "Figure",
    "Panel",
    "Result",
    "Run",
    "Series",
    "Table",
    "arm_summary",
    "arms_table",
    "budget_verdict",
    "mean_sd",
    "paired_by_seed",
    "paired_diff",
    "plateau",
    "values_by_seed",
]
