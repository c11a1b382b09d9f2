"""Fixtures for hub server tests that need the server in a process of its own, so that
it can be stopped with a signal (SIGTERM, SIGKILL) and restarted on the same data dir.

Clients of such a server must pass ``endpoint=`` explicitly: ``HF_ENDPOINT`` was
captured at import time and points at the session hub.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LISTEN_PREFIX = "hubtools-hub listening on "
START_TIMEOUT_S = 30.0


@dataclass
class HubProc:
    """One `python -m hubtools.hub.server` process and where it listens."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    token: str
    log_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` and wait for the exit; returns the exit status (negative for a signal)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"hub server did not exit {timeout}s after signal {sig}") from None

    def log(self) -> str:
        """Everything the server wrote to stderr so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _drain(stream, lines: queue.Queue) -> None:
    # Keep reading so the server never blocks on a full stdout pipe.
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


@pytest.fixture
def hub_proc(hub, tmp_path_factory):
    """Factory ``hub_proc(data_dir, *extra_args, env=None) -> HubProc``.

    Starts the server with ``--port 0 --data DIR --user testuser --token <write token>``
    (the token of the session ``hub``), waits for its first stdout line
    ``hubtools-hub listening on http://HOST:PORT data=DIR`` and returns the handle.
    Every process still running at teardown is killed.
    """
    started: list[HubProc] = []
    log_dir = tmp_path_factory.mktemp("hub-proc-logs")

    def start(data_dir, *extra_args: str, env: dict[str, str] | None = None) -> HubProc:
        data_dir = Path(data_dir)
        log_path = log_dir / f"server-{len(started)}.log"
        cmd = [
            sys.executable,
            "-m",
            "hubtools.hub.server",
            "--port",
            "0",
            "--data",
            str(data_dir),
            "--user",
            hub.user,
            "--token",
            hub.write_token,
            *extra_args,
        ]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env=child_env,
                text=True,
            )
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True)
        reader.start()
        handle = HubProc(
            url="",
            data_dir=data_dir,
            process=process,
            token=hub.write_token,
            log_path=log_path,
            reader=reader,
        )
        started.append(handle)
        try:
            first = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            process.kill()
            raise AssertionError(
                f"hub server printed nothing in {START_TIMEOUT_S}s:\n{handle.log()}"
            ) from None
        if first is None or not first.startswith(LISTEN_PREFIX):
            process.kill()
            process.wait(10)
            raise AssertionError(f"unexpected first stdout line {first!r}; stderr:\n{handle.log()}")
        handle.stdout_lines.append(first)
        handle.url = first[len(LISTEN_PREFIX) :].split()[0].rstrip("/")
        assert handle.url.startswith("http://"), first
        return handle

    yield start

    for handle in started:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(10)
        # The reader sees EOF once the process is gone; close the pipe only after it.
        if handle.reader is not None:
            handle.reader.join(10)
        if handle.process.stdout is not None and not (handle.reader and handle.reader.is_alive()):
            handle.process.stdout.close()
