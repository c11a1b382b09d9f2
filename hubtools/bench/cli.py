"""``hubtools bench``: render results, check they validate and are fresh, regenerate the docs page."""

from __future__ import annotations

from pathlib import Path

import click

from hubtools.bench.envelope import RESULTS_DIR


@click.group("bench")
def bench_group() -> None:
    """Benchmark results: render, check freshness, write docs/benchmarks.md."""


@bench_group.command("render")
@click.argument("results", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def render_command(results: tuple[Path, ...]) -> None:
    """Re-draw the Markdown page and PNGs of RESULTS (default: every committed result) from their JSON."""
    from pydantic import ValidationError

    from hubtools.bench.catalog import result_files
    from hubtools.bench.render import render_file

    invalid = 0
    for path in results or result_files():
        try:
            written = render_file(path)
        except ValidationError as err:  # an old-layout file: say which, render the others
            invalid += 1
            click.echo(f"INVALID {path}: {str(err).splitlines()[0]} (not rendered)", err=True)
            continue
        for f in written:
            click.echo(f"wrote {f}")
    if invalid:
        raise SystemExit(1)


@bench_group.command("check")
@click.option("--results", "folder", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True)
def check_command(folder: Path) -> None:
    """Validate every result against the schema and list those whose code changed since (stale)."""
    from hubtools.bench.catalog import check

    bad = 0
    for e in check(folder):
        if e.error:
            bad += 1
            click.echo(f"INVALID {e.path.name}: {e.error}")
        elif e.stale:
            bad += 1
            more = f" (+{len(e.stale) - 5} more)" if len(e.stale) > 5 else ""
            click.echo(f"STALE   {e.path.name}: changed since {e.result.git.commit[:10]}: "
                       f"{', '.join(e.stale[:5])}{more}; rerun: {e.result.command}")
        else:
            click.echo(f"ok      {e.path.name} ({e.result.git.commit[:10]})")
    if bad:
        raise SystemExit(1)


@bench_group.command("compare")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tol", type=float, default=0.0, show_default=True, help="allowed absolute difference per cell")
@click.option("--common", is_flag=True, help="compare only the cells both results have (a rerun of some seeds)")
def compare_command(old: Path, new: Path, tol: float, common: bool) -> None:
    """Compare the raw per-seed values of two results of one benchmark (does a rerun reproduce OLD?)."""
    from hubtools.bench.compare import compare_runs
    from hubtools.bench.render import load_result

    a, b = load_result(old), load_result(new)
    n, diffs = compare_runs(a, b, tol=tol, common=common)
    for d in diffs[:50]:
        click.echo(f"differs: {d.arm} seed {d.seed} {d.metric}: {d.old} -> {d.new}")
    more = " (first 50 shown)" if len(diffs) > 50 else ""
    click.echo(f"{n - len(diffs)} of {n} cells identical (tol {tol}); {len(diffs)} differ{more}; "
               f"commits {a.git.commit[:10]} -> {b.git.commit[:10]}, code digest "
               f"{'same' if a.code.digest == b.code.digest else 'DIFFERENT'}")
    if diffs:
        raise SystemExit(1)


@bench_group.command("docs")
def docs_command() -> None:
    """Regenerate docs/benchmarks.md and every `<!-- bench:NAME -->` block in docs/ from the results."""
    from hubtools.bench.catalog import write_docs

    written = write_docs()
    for page in written:
        click.echo(f"wrote {page}")
    if not written:
        click.echo("docs already up to date")
