"""Gradio Spaces (``spaces/<name>/``): ``hubtools spaces list | run NAME`` and what the apps share.

Each folder under ``spaces/`` is a Hugging Face Space: ``README.md`` with the Space metadata,
``requirements.txt`` and ``app.py``. An app reads its model's repo id from an environment
variable whose default is the artifact ``hubtools quickstart`` publishes, builds its
``gr.Blocks`` in ``build_demo()`` and launches it when run as a script (what the Hub does).

``hubtools spaces run NAME`` serves the quickstart's Hub folder (``quickstart-out/hub``) on
loopback and points the app at it, so every Space runs on quickstart artifacts without a
network. gradio is imported only through :func:`gradio`, which first turns off its analytics
and version check (both call home).
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import types
from pathlib import Path
from typing import Any

import click

from hubtools.errors import ConfigError

SPACES_ENV = "HUBTOOLS_SPACES_DIR"
QUICKSTART_HUB = Path("quickstart-out/hub")
# gradio and huggingface_hub read these when imported or when a Blocks is created.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",
    "DO_NOT_TRACK": "1",
}


class UnknownSpaceError(ConfigError):
    """``hubtools spaces run NAME`` with a NAME that has no ``spaces/NAME/app.py``."""


def spaces_dir() -> Path:
    """``$HUBTOOLS_SPACES_DIR`` or ``<repo>/spaces`` (source checkout)."""
    env = os.environ.get(SPACES_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "spaces"


def space_names() -> list[str]:
    root = spaces_dir()
    return sorted(p.parent.name for p in root.glob("*/app.py")) if root.is_dir() else []


def space_metadata(name: str) -> dict[str, Any]:
    """The YAML block at the top of ``spaces/NAME/README.md`` (the Hub's Space settings)."""
    import yaml

    text = (app_path(name).parent / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if match is None:
        raise ConfigError(f"spaces/{name}/README.md: no YAML metadata block")
    return yaml.safe_load(match.group(1)) or {}


def app_path(name: str) -> Path:
    path = spaces_dir() / name / "app.py"
    if not path.is_file():
        raise UnknownSpaceError(
            f"unknown Space {name!r}; available: {', '.join(space_names()) or 'none'} (in {spaces_dir()})"
        )
    return path


def load_app(name: str) -> types.ModuleType:
    """Import ``spaces/NAME/app.py`` as module ``hubtools_spaces.NAME`` (without launching it)."""
    import importlib.util

    module_name = f"hubtools_spaces.{name.replace('-', '_')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, app_path(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def gradio() -> types.ModuleType:
    """``import gradio`` with its analytics and version check off (set unless the user set them)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    return gr


def model_repo(env_var: str, default: str) -> str:
    """The repo id an app loads: ``$env_var`` when set, else the quickstart artifact ``default``."""
    return os.environ.get(env_var) or default


def snapshot(repo_id: str, repo_type: str = "model") -> Path:
    """The repo's files in the local cache (downloaded once from ``HF_ENDPOINT``)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, repo_type=repo_type))


def figure_image(fig: Any) -> Any:
    """A matplotlib figure as a PIL image (closed afterwards): gr.Image shows it without a plot backend."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def launch(demo: Any, host: str | None = None, port: int | None = None, block: bool = True) -> Any:
    """``demo.launch`` with no share link and no server-side rendering (neither works offline).

    ``host``/``port`` default to gradio's own (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, which the
    Hub sets for a Space; 127.0.0.1:7860 here).
    """
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        prevent_thread_lock=not block,
        quiet=not block,
    )


def _serve_hub(data_dir: Path) -> Any:
    """Start the local Hub on ``data_dir`` and point huggingface_hub at it (before it is imported)."""
    if "huggingface_hub" in sys.modules:
        raise click.ClickException(
            "huggingface_hub was imported before the local Hub was set up; "
            "run `hubtools spaces run` as its own process"
        )
    from hubtools.hub.server import HubConfig, HubServer

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    os.environ.update(
        {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(data_dir.parent / "hf_home")}
    )
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.pop("HF_TOKEN", None)  # the quickstart's repos are public; a foreign token would be refused
    return HubServer(HubConfig(data_dir=data_dir), sock=sock).start()


@click.group("spaces")
def spaces_group() -> None:
    """Gradio Spaces for the capabilities: list them, run one locally."""


@spaces_group.command("list")
def list_command() -> None:
    """The Spaces in spaces/ with their titles."""
    for name in space_names():
        click.echo(f"{name:<16} {space_metadata(name).get('title', '')}")


@spaces_group.command("run")
@click.argument("name")
@click.option(
    "--hub-data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Serve this local Hub folder and load models from it (default: quickstart-out/hub when "
    "it exists and HF_ENDPOINT is not set).",
)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 7860, or the next free one).")
def run_command(name: str, hub_data: Path | None, host: str | None, port: int | None) -> None:
    """Start Space NAME locally, on the quickstart's artifacts unless its env variable names another repo."""
    try:
        app_path(name)
    except UnknownSpaceError as err:
        raise click.ClickException(str(err)) from None
    if hub_data is None and "HF_ENDPOINT" not in os.environ and QUICKSTART_HUB.is_dir():
        hub_data = QUICKSTART_HUB
    server = None
    if hub_data is not None:
        if not Path(hub_data).is_dir():
            raise click.ClickException(
                f"--hub-data {hub_data}: not a folder (run `hubtools quickstart` first)"
            )
        server = _serve_hub(Path(hub_data).resolve())
        click.echo(f"local Hub at {server.url} (data: {hub_data})")
    try:
        launch(load_app(name).build_demo(), host=host, port=port)
    finally:
        if server is not None:
            server.stop()
