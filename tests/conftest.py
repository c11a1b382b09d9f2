"""Test set-up. The environment is set at the very top, before anything imports
huggingface_hub, datasets or transformers: those read HF_ENDPOINT once, at import time,
so setting it later would silently
target the public Hub."""

import os
import socket
import tempfile

# (a) Bind the hub's socket first so the endpoint is known before any HF import,
# and so no other process can take the port between "pick" and "listen".
_HUB_SOCK = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_HUB_SOCK.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
_HUB_SOCK.bind(("127.0.0.1", 0))
HUB_URL = f"http://127.0.0.1:{_HUB_SOCK.getsockname()[1]}"

TEST_USER = "testuser"
WRITE_TOKEN = "hf_TestWriteTokenForHubtoolsSuite0001"
READ_TOKEN = "hf_TestReadTokenForHubtoolsSuite00002"
MALLORY_TOKEN = "hf_MalloryWriteTokenForHubtoolsSuite3"

_TMP_ROOT = tempfile.mkdtemp(prefix="hubtools-tests-")
os.environ["HF_ENDPOINT"] = HUB_URL
os.environ["HF_TOKEN"] = WRITE_TOKEN
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HOME"] = os.path.join(_TMP_ROOT, "hf_home")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_TMP_ROOT, "hf_datasets")
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# benchmark smoke runs keep their built data and runs here, not in the user's cache
os.environ["HUBTOOLS_BENCH_WORK"] = os.path.join(_TMP_ROOT, "bench-work")

import shutil  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_configure(config):
    import huggingface_hub.constants

    assert huggingface_hub.constants.ENDPOINT == HUB_URL, (
        "huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT"
    )


def pytest_unconfigure(config):
    shutil.rmtree(_TMP_ROOT, ignore_errors=True)


@dataclass
class HubHandle:
    """What the session hub fixture yields: where it listens and who may write."""

    url: str
    data_dir: Path
    server: object
    user: str = TEST_USER
    write_token: str = WRITE_TOKEN
    read_token: str = READ_TOKEN
    mallory_token: str = MALLORY_TOKEN


@pytest.fixture(scope="session")
def hub():
    """(b) The local Hub server on the pre-bound socket, for the whole session."""
    from hubtools.hub.server import HubConfig, HubServer, add_token

    data_dir = Path(_TMP_ROOT) / "hub-data"
    add_token(data_dir, TEST_USER, role="write", token=WRITE_TOKEN)
    add_token(data_dir, TEST_USER, role="read", token=READ_TOKEN)
    add_token(data_dir, "mallory", role="write", token=MALLORY_TOKEN)
    server = HubServer(HubConfig(data_dir=data_dir, host="127.0.0.1", port=0), sock=_HUB_SOCK)
    server.start()
    try:
        yield HubHandle(url=server.url, data_dir=data_dir, server=server)
    finally:
        server.stop()


@pytest.fixture
def repo_id(hub) -> str:
    """(c) A fresh repo name in the test user's namespace."""
    return f"{TEST_USER}/t-{uuid.uuid4().hex[:8]}"
