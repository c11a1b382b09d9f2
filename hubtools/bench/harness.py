"""The shared benchmark harness: one set of flags, one envelope, keyed run caches, arm tables.

Every script under ``benchmarks/`` does::

    bench = Benchmark("longtail", title=..., code=["hubtools/longtail", "hubtools/train"])
    parser = bench.parser(__doc__)          # --smoke --out --seeds --device --work --reuse
    parser.add_argument(...)                # the script's own flags
    args = bench.parse(parser, argv)
    ...
    bench.write("longtail_fmnist", data=..., config=..., runs=..., tables=..., headline=..., verdict=...)

Why a harness: results that record their commit, command, versions, device and raw per-seed
values can be trusted and rerun; ``--smoke`` must never overwrite committed results; and a cache
that ignores the code or the configuration silently mixes runs of different code in one table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hubtools.bench.envelope import (
    RESULTS_DIR,
    Figure,
    Result,
    Run,
    Table,
    code_info,
    command_line,
    device_info,
    git_info,
    library_versions,
)
from hubtools.bench.render import render
from hubtools.bench.stats import fmt_diff, fmt_mean_sd, mean_sd, paired_by_seed


def default_work_dir(name: str) -> Path:
    """Where a benchmark keeps built data and finished runs: outside the repository."""
    base = os.environ.get("HUBTOOLS_BENCH_WORK") or Path.home() / ".cache" / "hubtools" / "bench"
    return Path(base) / name


def resolve_device(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class Benchmark:
    """One benchmark script's run: its flags, clock, provenance and output folder."""

    def __init__(
        self,
        name: str,
        *,
        title: str,
        capability: str,
        code: Sequence[str],
        default_seeds: Sequence[int] = (0, 1, 2),
        smoke_seeds: Sequence[int] | None = None,
        script: str | None = None,
    ) -> None:
        """``name`` is the script's file stem; ``code`` lists the repository paths (folders or files)
        whose source defines the numbers, so a change there marks committed results stale."""
        self.name, self.title, self.capability = name, title, capability
        self.script = script or f"benchmarks/{name}.py"
        self.code_paths = [*code, self.script]
        self.default_seeds = list(default_seeds)
        self.smoke_seeds = list(smoke_seeds) if smoke_seeds is not None else self.default_seeds[:1]
        self.args: argparse.Namespace | None = None
        self._t0 = time.perf_counter()
        self._started = datetime.now(UTC).isoformat(timespec="seconds")
        self.code = code_info(self.code_paths)
        self.git = git_info()  # the tree the run started from (it may change while a long run goes on)

    # -- flags ---------------------------------------------------------------------------------
    def parser(self, doc: str | None) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            description=(doc or self.title).strip().splitlines()[0],
            epilog=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        g = p.add_argument_group("shared benchmark flags")
        g.add_argument("--smoke", action="store_true",
                       help="tiny sizes that check the pipeline; writes to a temporary folder unless --out")
        g.add_argument("--out", type=Path, default=None,
                       help=f"results folder (default {RESULTS_DIR.relative_to(RESULTS_DIR.parents[1])}; "
                       "smoke: a new temporary folder)")
        g.add_argument("--seeds", type=int, nargs="+", default=None,
                       help=f"seeds (default {' '.join(map(str, self.default_seeds))}; smoke "
                       f"{' '.join(map(str, self.smoke_seeds))})")
        g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="where to compute (default: cuda when available)")
        g.add_argument("--work", type=Path, default=None,
                       help="built data and finished runs (default ~/.cache/hubtools/bench/NAME, "
                       "or $HUBTOOLS_BENCH_WORK/NAME)")
        g.add_argument("--reuse", action="store_true",
                       help="reuse finished runs whose configuration, code digest and versions all match")
        return p

    def parse(self, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
        args = parser.parse_args(argv)
        if args.seeds is None:
            args.seeds = self.smoke_seeds if args.smoke else self.default_seeds
        if args.out is None:
            args.out = (Path(tempfile.mkdtemp(prefix=f"hubtools-bench-{self.name}-"))
                        if args.smoke else RESULTS_DIR)
        args.work = args.work or default_work_dir(self.name)
        args.device = resolve_device(args.device)
        self._load_at_start = device_info(args.device).load_avg  # the load a run began under
        self.args = args
        self._argv = None if argv is None else [self.script, *argv]
        return args

    # -- caches --------------------------------------------------------------------------------
    def cache_key(self, config: dict[str, Any]) -> str:
        """Everything that changes a result: the configuration, the code digest, the versions."""
        blob = json.dumps(
            {"config": config, "code": self.code.digest, "versions": library_versions()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def cached(self, kind: str, config: dict[str, Any]) -> tuple[Path, dict | None]:
        """The run folder for ``config`` and, with ``--reuse``, its saved record if one is complete."""
        assert self.args is not None, "call parse() first"
        key = self.cache_key(config)
        folder = self.args.work / "runs" / f"{kind}-{key[:16]}"
        record = folder / "record.json"
        if self.args.reuse and record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("key") == key:
                return folder, saved["record"]
        return folder, None

    @staticmethod
    def save_record(folder: Path, key_config: dict[str, Any], record: dict, bench: Benchmark) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "record.json.tmp"
        tmp.write_text(json.dumps({"key": bench.cache_key(key_config), "record": record}, default=str))
        tmp.replace(folder / "record.json")

    # -- output --------------------------------------------------------------------------------
    def write(
        self,
        name: str,
        *,
        data: str,
        config: dict[str, Any],
        runs: list[Run | dict],
        tables: list[Table | dict],
        headline: str,
        verdict: str,
        figures: list[Figure | dict] = (),
        details: dict[str, Any] | None = None,
        title: str | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Path:
        """Validate the envelope, write ``<out>/<name>.json`` atomically, then render its page and PNGs."""
        assert self.args is not None, "call parse() first"
        result = Result(
            name=name,
            title=title or self.title,
            capability=self.capability,
            command=command_line(self._argv),
            git=self.git,
            code=self.code,
            versions=library_versions(),
            device=device_info(self.args.device).model_copy(update={"load_avg": self._load_at_start}),
            started_at=self._started,
            wall_s=round(time.perf_counter() - self._t0, 1),
            smoke=bool(self.args.smoke),
            seeds=list(seeds if seeds is not None else self.args.seeds),
            data=data,
            config=config,
            runs=[r if isinstance(r, Run) else Run.model_validate(r) for r in runs],
            tables=[t if isinstance(t, Table) else Table.model_validate(t) for t in tables],
            figures=[f if isinstance(f, Figure) else Figure.model_validate(f) for f in figures],
            headline=headline,
            verdict=verdict,
            details=details or {},
        )
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result.model_dump(mode="json"), indent=1, default=str) + "\n")
        tmp.replace(path)
        render(result, out)
        print(f"[{self.name}] wrote {path} ({result.wall_s:.0f} s): {headline}", flush=True)
        return path


def values_by_seed(runs: Sequence[Run | dict], arm: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one arm's metric (runs without a seed are keyed by their order)."""
    out: dict[int, float] = {}
    for i, r in enumerate(runs):
        r = r if isinstance(r, Run) else Run.model_validate(r)
        if r.arm == arm and r.metrics.get(metric) is not None:
            out[r.seed if r.seed is not None else i] = float(r.metrics[metric])
    return out


def arms_table(
    runs: Sequence[Run | dict],
    metrics: Sequence[str],
    *,
    baseline: str,
    arms: Sequence[str] | None = None,
    title: str = "Results",
    digits: int = 2,
    labels: dict[str, str] | None = None,
    note: str = "",
    diff_metrics: Sequence[str] | None = None,
    extra_columns: dict[str, dict[str, Any]] | None = None,
) -> Table:
    """Mean ± sample sd per arm and metric, and each arm's paired difference from ``baseline``.

    The difference column gives the mean over seeds both arms ran, with a seeded percentile
    bootstrap 95 % CI; an arm whose every value equals the baseline's is marked a no-op, since a
    method that changes nothing is a bug to look at, not a tie. ``diff_metrics`` (default: all)
    limits the difference columns to the metrics a verdict is drawn on; ``extra_columns`` adds
    leading columns (``{column: {arm: value}}``), e.g. a method family.
    """
    runs = [r if isinstance(r, Run) else Run.model_validate(r) for r in runs]
    if arms is None:
        arms = list(dict.fromkeys(r.arm for r in runs))
    labels = labels or {}
    diff_metrics = list(metrics if diff_metrics is None else diff_metrics)
    extra_columns = extra_columns or {}
    columns = [*extra_columns, "arm", "seeds"]
    columns += [labels.get(m, m) for m in metrics]
    columns += [f"Δ {labels.get(m, m)} vs {baseline} [95% CI]" for m in diff_metrics]
    rows = []
    for arm in arms:
        cells: list[Any] = []
        n = 0
        for m in metrics:
            vals = values_by_seed(runs, arm, m)
            n = max(n, len(vals))
            cells.append(fmt_mean_sd(list(vals.values()), digits) if vals else None)
        for m in diff_metrics:
            vals = values_by_seed(runs, arm, m)
            if arm == baseline:
                cells.append("(baseline)")
            else:
                cells.append(fmt_diff(paired_by_seed(vals, values_by_seed(runs, baseline, m)), digits)
                             if vals else None)
        rows.append([*(col.get(arm) for col in extra_columns.values()), arm, n, *cells])
    return Table(title=title, columns=columns, rows=rows, note=note or (
        "mean ± sample sd (ddof = 1) over seeds; Δ = paired difference per seed, mean with a "
        "percentile bootstrap 95 % CI (10,000 resamples); 'no-op' = identical to the baseline on every seed."
    ))


def arm_summary(runs: Sequence[Run | dict], arm: str, metric: str) -> dict[str, float | None]:
    """``{"mean", "sd", "n"}`` of one arm's metric, for headlines and details."""
    vals = list(values_by_seed(runs, arm, metric).values())
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    m, s = mean_sd(vals)
    return {"mean": m, "sd": s, "n": len(vals)}
