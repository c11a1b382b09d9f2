"""``hubtools quickstart``: the front door. Every capability, small, on real data, against an embedded Hub.

It starts the local Hub server on a free loopback port, points huggingface_hub at it
(before anything imports huggingface_hub: the client captures ``HF_ENDPOINT`` at import
time), runs each registered demo, and prints one results table, also written as
Markdown and JSON. It ends by cataloguing everything the demos published with the model
zoo (``hubtools.hub.zoo``), publishing the catalogue as ``quickstart/zoo`` and printing the
zoo table (also in results.md). A capability joins by adding its demo module to ``DEMO_MODULES`` and
decorating one function with :func:`register_demo`.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from hubtools.config import StrictModel, config_option

# Each capability's demo module, in the order the table shows them.
DEMO_MODULES: list[str] = [
    "hubtools.hub.demo",
    "hubtools.longtail.demo",
    "hubtools.data.demo",
    "hubtools.models.be_dinov2.demo",
    "hubtools.diffusion.demo",
    "hubtools.paramgen.demo",
    "hubtools.semiseg.demo",
    "hubtools.models.retizero.demo",
    "hubtools.merging.demo",
]

QUICKSTART_USER = "quickstart"


@dataclass
class DemoContext:
    """What a demo gets: the Hub to publish to, a token, and a scratch folder of its own."""

    hub_url: str
    token: str
    user: str
    work_dir: Path

    def repo_id(self, name: str) -> str:
        return f"{self.user}/{name}"


@dataclass
class DemoResult:
    """What a demo reports: the real data it used, the repos it published, the numbers it measured."""

    data: str
    artifacts: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Demo:
    name: str
    title: str
    fn: Callable[[DemoContext], DemoResult]


DEMOS: dict[str, Demo] = {}


def register_demo(name: str, title: str) -> Callable[[Callable[[DemoContext], DemoResult]], Callable]:
    """Register ``fn(ctx) -> DemoResult`` as the quickstart demo called ``name``."""

    def wrap(fn: Callable[[DemoContext], DemoResult]) -> Callable[[DemoContext], DemoResult]:
        DEMOS[name] = Demo(name=name, title=title, fn=fn)
        return fn

    return wrap


@dataclass
class Row:
    name: str
    title: str
    status: str
    seconds: float
    data: str = ""
    artifacts: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())


def write_report(rows: list[Row], out_dir: Path, hub_url: str, zoo: ZooReport | None = None) -> tuple[Path, Path]:
    """Write results.json and results.md (with the zoo table when given); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "results.json"
    report: dict[str, Any] = {"hub": hub_url, "demos": [asdict(r) for r in rows]}
    if zoo is not None:
        report["zoo"] = {"repo": zoo.repo_id, "error": zoo.error, "missing": zoo.missing,
                         "collections": zoo.collections, "entries": [e.to_row() for e in zoo.entries]}
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        "# hubtools quickstart results",
        "",
        f"Local Hub: {hub_url}",
        "",
        "| demo | status | seconds | data | artifacts | metrics |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        metrics = _metrics_text(r.metrics) if r.status == "ok" else r.error.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.data} | {'<br>'.join(r.artifacts)} "
                     f"| {metrics} |")
    if zoo is not None:
        from hubtools.hub.zoo import markdown_table

        lines += ["", f"## Model zoo (`datasets/{zoo.repo_id}`, {len(zoo.entries)} artifacts)", ""]
        if zoo.error:
            lines += [f"**Zoo check failed:** {zoo.error}", ""]
        if zoo.entries:
            lines.append(markdown_table(zoo.entries))
        if zoo.collections:
            lines += ["", "Hub collections: " + ", ".join(f"{t} (`{s}`)" for t, s in zoo.collections.items())]
    md = out_dir / "results.md"
    md.write_text("\n".join(lines) + "\n")
    return md, js


def _print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hubtools quickstart", show_lines=True)
    for col in ("demo", "status", "s", "data", "artifacts", "metrics"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = "[green]ok[/green]" if r.status == "ok" else f"[red]{r.status}[/red]"
        detail = _metrics_text(r.metrics) if r.status == "ok" else r.error
        table.add_row(r.name, status, f"{r.seconds:.1f}", r.data, "\n".join(r.artifacts), detail)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@dataclass
class ZooReport:
    """The closing zoo step: the catalogue of the embedded Hub, and demo artifacts it lacks."""

    repo_id: str
    entries: list[Any] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    collections: dict[str, str] = field(default_factory=dict)
    error: str = ""


def _published_repo(artifact: str) -> tuple[str, str]:
    """``"datasets/ns/name (config)"`` -> ``("dataset", "ns/name")``, as demos list their artifacts."""
    ref = artifact.split()[0]
    for prefix, repo_type in (("datasets/", "dataset"), ("spaces/", "space")):
        if ref.startswith(prefix):
            return repo_type, ref[len(prefix):]
    return "model", ref


def index_zoo(rows: list[Row], out_dir: Path, token: str) -> ZooReport:
    """Catalogue every repo of the quickstart user, publish it as a dataset, and check that each
    artifact a demo reported is in it."""
    from huggingface_hub import HfApi

    from hubtools.hub.zoo import index_and_publish

    report = ZooReport(repo_id=f"{QUICKSTART_USER}/zoo")
    try:
        index = index_and_publish(
            QUICKSTART_USER, repo_id=report.repo_id, out_dir=out_dir / "zoo", api=HfApi(token=token)
        )
        report.entries, report.collections = index.entries, index.collections
    except Exception as exc:  # the demos' results must still be reported
        traceback.print_exc()
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    indexed = {(e.repo_type, e.repo_id) for e in report.entries}
    report.missing = [a for r in rows for a in r.artifacts if _published_repo(a) not in indexed]
    if report.missing:
        report.error = f"published but not in the zoo: {', '.join(report.missing)}"
    return report


def _point_clients_at(url: str, token: str, hf_home: Path) -> None:
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as c

        if c.ENDPOINT != url:
            raise click.ClickException(
                "huggingface_hub was imported before the quickstart could point it at the local Hub; "
                "run `hubtools quickstart` as its own process")
    os.environ.update({
        "HF_ENDPOINT": url,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
    })
    os.environ.pop("HF_HUB_OFFLINE", None)


def run_quickstart(out_dir: Path, data_dir: Path | None = None, only: tuple[str, ...] = ()) -> list[Row]:
    """Start the embedded Hub, run the selected demos, write the report. Returns one row per demo."""
    from hubtools.hub.server import HubConfig, HubServer, add_token

    out_dir = out_dir.resolve()
    data_dir = (data_dir or out_dir / "hub").resolve()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    token = add_token(data_dir, QUICKSTART_USER, role="write", token="hf_" + secrets.token_hex(17))
    _point_clients_at(url, token, out_dir / "hf_home")

    for module in DEMO_MODULES:
        importlib.import_module(module)
    unknown = set(only) - set(DEMOS)
    if unknown:
        raise click.BadParameter(f"unknown demo(s) {sorted(unknown)}; available: {sorted(DEMOS)}",
                                 param_hint="--only")
    selected = [d for d in DEMOS.values() if not only or d.name in only]

    rows: list[Row] = []
    with HubServer(HubConfig(data_dir=data_dir), sock=sock) as server:
        click.echo(f"local Hub at {server.url} (data: {data_dir})")
        for demo in selected:
            click.echo(f"--- {demo.name}: {demo.title}")
            work = out_dir / "work" / demo.name
            # Each run starts from an empty work folder: a demo's trainers refuse (rightly) to
            # mix their snapshots with a previous run's, so re-running into the same --out works.
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            ctx = DemoContext(hub_url=server.url, token=token, user=QUICKSTART_USER, work_dir=work)
            t0 = time.perf_counter()
            try:
                result = demo.fn(ctx)
            except Exception as exc:  # one failing demo must not hide the others' results
                traceback.print_exc()
                rows.append(Row(demo.name, demo.title, "failed", time.perf_counter() - t0,
                                error=f"{type(exc).__name__}: {exc}"))
                continue
            rows.append(Row(demo.name, demo.title, "ok", time.perf_counter() - t0, data=result.data,
                            artifacts=result.artifacts, metrics=result.metrics))
        click.echo("--- zoo: cataloguing every artifact on the embedded Hub")
        zoo = index_zoo(rows, out_dir, token)
        md, js = write_report(rows, out_dir, server.url, zoo)
    _print_table(rows)
    if not zoo.error or zoo.missing:
        from hubtools.hub.zoo import print_table

        print_table(zoo.entries, title=f"hubtools zoo: datasets/{zoo.repo_id}",
                    width=None if sys.stdout.isatty() else 160)
    click.echo(f"results: {md} and {js}")
    if zoo.error:
        raise click.ClickException(f"zoo: {zoo.error}")
    return rows


class QuickstartConfig(StrictModel):
    """``hubtools quickstart`` settings, for ``--config FILE.yaml``."""

    data: Path | None = None
    out: Path = Path("quickstart-out")
    only: tuple[str, ...] = ()


@click.command("quickstart")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory of the embedded Hub (default: OUT/hub). Reuse it to keep what was published.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart-out"),
              show_default=True, help="Where the results table (results.md, results.json) and scratch files go.")
@click.option("--only", multiple=True, help="Run only this demo (repeatable). Default: all.")
@click.option("--list", "list_only", is_flag=True, help="List the demos and exit.")
@config_option(QuickstartConfig)
def quickstart_command(data: Path | None, out: Path, only: tuple[str, ...], list_only: bool) -> None:
    """Run every capability's small demo on real data against an embedded local Hub.

    Each demo builds its artifact, publishes it to the local Hub, loads it back with
    from_pretrained / load_dataset and checks it; the command prints one results table
    and writes it as Markdown and JSON. Exit code 1 if any demo failed.
    """
    if list_only:
        for module in DEMO_MODULES:
            importlib.import_module(module)
        for d in DEMOS.values():
            click.echo(f"{d.name:<16} {d.title}")
        return
    rows = run_quickstart(Path(out), Path(data) if data else None, tuple(only))
    if any(r.status != "ok" for r in rows):
        sys.exit(1)
