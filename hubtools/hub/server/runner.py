"""Running the local Hub: in a background thread (tests, quickstart) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from aiohttp import web

from hubtools.hub.server.app import HUB_KEY, HubConfig, create_app
from hubtools.hub.server.store import FsckReport, Store

log = logging.getLogger("hubtools.hub")


class HubServer:
    """The server on its own event loop in a daemon thread.

    ``sock`` is an already-bound socket: tests bind it before importing huggingface_hub
    so that ``HF_ENDPOINT`` is known at import time and no port race is possible.
    """

    def __init__(self, cfg: HubConfig, sock: socket.socket | None = None):
        self.cfg = cfg
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.url: str | None = None
        self.app: web.Application | None = None

    @property
    def request_log(self):
        """Every request as (method, raw path), newest last: lets tests count GETs and HEADs."""
        return self.app[HUB_KEY].request_log

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._serve, name="hubtools-hub", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start_site())
        except BaseException as exc:  # reported to the caller of start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start_site(self) -> None:
        self.app = create_app(self.cfg)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if self._sock is not None:
            site = web.SockSite(self._runner, self._sock)
        else:
            site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]
        host = self.cfg.host if self._sock is None else host
        self.url = self.cfg.public_url or f"http://{_url_host(host)}:{port}"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def add_token(data_dir: str | Path, user: str, role: str = "write", token: str | None = None,
              org: str | None = None) -> str:
    """Register a token for ``user`` (created if new); returns the token. Works while a server runs."""
    store = Store(data_dir)
    try:
        return store.add_token(user, role=role, token=token, org=org)
    finally:
        store.close()


def fsck(data_dir: str | Path, gc: bool = False) -> FsckReport:
    """Check that every referenced blob exists and hashes to its name; list (and with ``gc``, delete
    when older than 1 h) blobs nothing references.

    ``gc`` takes the data-dir lock, so it refuses to run beside a server (:class:`DataDirInUse`):
    a running server may be about to reference a blob that looks orphaned. The check alone
    only reads and runs beside a server.
    """
    store = Store(data_dir, serving=gc)
    try:
        return store.fsck(gc=gc)
    finally:
        store.close()


def serve_forever(cfg: HubConfig, user: str = "local", token: str | None = None) -> None:
    """The CLI's foreground server: prints the URL and the exports a client needs, stops on SIGTERM/SIGINT."""
    data_dir = Path(cfg.data_dir)
    token = token or os.environ.get("HUBTOOLS_HUB_TOKEN")
    new_token = None
    store = Store(data_dir, serving=True)  # take the data-dir lock before writing anything
    if token:
        store.add_token(user, "write", token=token, name="cli")
    elif not store.has_tokens():
        new_token = store.add_token(user, "write", name="first")
    if not _is_loopback(cfg.host):
        print(f"WARNING: listening on {cfg.host}, which is not a loopback address; this server speaks plain "
              "HTTP, so tokens travel in clear text.", file=sys.stderr)

    async def main() -> None:
        app = create_app(cfg, store=store)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]
        url = cfg.public_url or f"http://{_url_host(host)}:{port}"
        print(f"hubtools-hub listening on {url} data={data_dir.resolve()}", flush=True)
        print(f"export HF_ENDPOINT={url}")
        print(f"export HF_TOKEN={token or new_token or '<a token from: hubtools hub token create>'}")
        print("export HF_HUB_DISABLE_XET=1", flush=True)
        if new_token:
            print(f"# created a write token for user '{user}' (shown once): {new_token}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
