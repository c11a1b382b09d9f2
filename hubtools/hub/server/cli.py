"""``hubtools hub ...``: serve, tokens, fsck."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from pydantic import Field

from hubtools.config import StrictModel, config_option
from hubtools.hub.server.app import HubConfig
from hubtools.hub.server.runner import fsck, serve_forever
from hubtools.hub.server.store import DataDirInUse, Store

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'10MiB', '1MB', '1048576' -> bytes (binary multiples: the Hub's own sizes are MiB)."""
    m = _SIZE.match(str(text))
    if not m:
        raise click.BadParameter(f"not a size: {text!r} (examples: 10MiB, 512KiB, 1048576)")
    unit = (m.group(2) or "B").upper()[0]
    return int(m.group(1)) * {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit]


@click.group("hub")
def hub_group() -> None:
    """Run and administer a local Hub server (a Hub-compatible HTTP API on your own disk)."""


class ServeConfig(StrictModel):
    """``hubtools hub serve`` settings, for ``--config FILE.yaml``."""

    data: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    lfs_threshold: str | int = "10MiB"
    regular_only: bool = False
    public_url: str | None = None
    user: str = "local"
    token: str | None = None


@hub_group.command("serve")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory (created if missing). Required, here or in --config.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--lfs-threshold", default="10MiB", show_default=True, help="Files this big or bigger go through LFS.")
@click.option("--regular-only", is_flag=True, help="Never use LFS (works even with Xet enabled on the client).")
@click.option("--public-url", default=None, help="URL clients use, when behind a proxy.")
@click.option("--user", default="local", show_default=True, help="User that owns --token or the first token.")
@click.option("--token", default=None, help="Register this write token (for CI); else $HUBTOOLS_HUB_TOKEN.")
@config_option(ServeConfig)
def serve_command(data: Path | None, host: str, port: int, lfs_threshold: str | int, regular_only: bool,
                  public_url: str | None, user: str, token: str | None) -> None:
    """Serve DATA over HTTP until SIGTERM/Ctrl-C. The first line printed is the URL."""
    if data is None:
        raise click.UsageError("--data is required (or 'data:' in the --config file)")
    cfg = HubConfig(data_dir=Path(data), host=host, port=port, lfs_threshold=parse_size(lfs_threshold),
                    regular_only=regular_only, public_url=public_url)
    try:
        serve_forever(cfg, user=user, token=token)
    except (DataDirInUse, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@hub_group.group("token")
def token_group() -> None:
    """Create, list and revoke access tokens."""


@token_group.command("create")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--user", required=True)
@click.option("--role", type=click.Choice(["read", "write"]), default="write", show_default=True)
@click.option("--org", default=None, help="Also make the user a member of this organization.")
@click.option("--init", "init", is_flag=True, help="Create the hub data dir if there is none at --data yet.")
def token_create(data_dir: Path, user: str, role: str, org: str | None, init: bool) -> None:
    """Print a new token (shown once; only its hash is stored)."""
    store = Store(data_dir) if init else _existing_store(data_dir)
    try:
        click.echo(store.add_token(user, role=role, org=org))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@token_group.command("list")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def token_list(data_dir: Path) -> None:
    """List tokens by hash prefix, user and role."""
    store = _existing_store(data_dir)
    try:
        for t in store.list_tokens():
            click.echo(f"{t['hash_prefix']}  {t['user']:<16} {t['role']:<5} {t['name']}  {t['created_at']}")
    finally:
        store.close()


@token_group.command("revoke")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.argument("token_or_prefix")
def token_revoke(data_dir: Path, token_or_prefix: str) -> None:
    """Revoke a token given in full, by its hash prefix, or by name."""
    store = _existing_store(data_dir)
    try:
        n = store.revoke_token(token_or_prefix)
    finally:
        store.close()
    if n == 0:
        raise click.ClickException(f"no token matches {token_or_prefix!r}")
    click.echo(f"revoked {n} token(s)")


def _existing_store(data_dir: Path) -> Store:
    """The hub at ``data_dir``; a token command never creates one (a mistyped --data would
    otherwise give a token for an empty hub that no server uses)."""
    if not (data_dir / "FORMAT").is_file():
        raise click.ClickException(f"no hub data dir at {data_dir} (a new one: hubtools hub serve --data {data_dir}, "
                                   "or token create --init)")
    return Store(data_dir)


@hub_group.command("fsck")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--gc", is_flag=True, help="Delete orphan blobs older than 1 hour (needs the server stopped).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck_command(data_dir: Path, gc: bool, as_json: bool) -> None:
    """Check every referenced blob exists and hashes to its name; report orphans. Exit 1 if damaged."""
    try:
        report = fsck(data_dir, gc=gc)
    except DataDirInUse as exc:
        raise click.ClickException(f"{exc}: stop the server to collect garbage (fsck without --gc only reads, "
                                   "and runs beside it)") from None
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
    else:
        click.echo(f"blobs={report.blobs} missing={len(report.missing)} corrupt={len(report.corrupt)} "
                   f"orphans={len(report.orphans)} removed={len(report.removed)}")
        for kind in ("missing", "corrupt"):
            for sha in getattr(report, kind):
                click.echo(f"{kind}: {sha}")
    if not report.ok:
        sys.exit(1)
