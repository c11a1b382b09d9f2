"""The one result envelope every benchmark writes, and the provenance that goes into it.

A number is only worth committing when a reader can tell what produced it: which commit (and
whether the tree was dirty), the exact command, the library versions, the device, how long it
ran, whether it was a smoke run, and the raw per-seed values behind every mean. The envelope also
carries a digest of the capability's source files, so a test can tell when the code behind a
committed number has changed since (the number is then *stale* and must be regenerated).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

# Libraries whose version can change a number; those installed are recorded.
TRACKED_LIBRARIES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "transformers",
    "diffusers",
    "datasets",
    "accelerate",
    "peft",
    "huggingface_hub",
    "safetensors",
    "mergekit",
    "faiss-cpu",
    "optuna",
    "cmaes",
    "scikit-image",
)
# Source suffixes whose content defines a capability's behaviour.
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".jinja", ".md")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GitInfo(_Strict):
    commit: str = Field(pattern=r"^[0-9a-f]{40}$|^unknown$")
    dirty: bool


class CodeInfo(_Strict):
    """The capability's source files and their sha256; ``digest`` covers them all."""

    paths: list[str]
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: dict[str, str]


class DeviceInfo(_Strict):
    kind: str  # "cpu", "cuda", "mps"
    name: str
    cpus: int
    torch_threads: int | None = None
    # 1-minute load average when the run started: timings from a shared, busy machine say so
    load_avg: float | None = None


class Run(_Strict):
    """One raw measurement: an arm (method, setting) at one seed (or repeat), with its metrics."""

    arm: str
    seed: int | None = None
    metrics: dict[str, float | int | bool | str | None]
    extra: dict[str, Any] = Field(default_factory=dict)


class Table(_Strict):
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


class Series(_Strict):
    label: str
    x: list[float | int | str] = Field(default_factory=list)
    y: list[float | int | None] = Field(default_factory=list)
    yerr: list[float | None] | None = None
    style: str = "-o"


class Panel(_Strict):
    title: str = ""
    kind: Literal["line", "scatter", "bar", "heatmap", "image"] = "line"
    xlabel: str = ""
    ylabel: str = ""
    xscale: Literal["linear", "log"] = "linear"
    yscale: Literal["linear", "log"] = "linear"
    series: list[Series] = Field(default_factory=list)
    # heatmap / image: a matrix (rows of numbers), with optional tick labels
    matrix: list[list[float | None]] | None = None
    xticklabels: list[str] | None = None
    yticklabels: list[str] | None = None
    hlines: list[float] = Field(default_factory=list)


class Figure(_Strict):
    """A PNG drawn from the JSON alone by :mod:`hubtools.bench.render` (one renderer for all)."""

    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.png$")
    title: str = ""
    panels: list[Panel]
    columns: int = 0  # 0: all panels in one row


class Result(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    capability: str
    command: str
    git: GitInfo
    code: CodeInfo
    versions: dict[str, str]
    device: DeviceInfo
    started_at: str
    wall_s: float
    smoke: bool
    seeds: list[int]
    data: str  # what real data it ran on, in words
    config: dict[str, Any]
    runs: list[Run]
    tables: list[Table]
    figures: list[Figure] = Field(default_factory=list)
    headline: str
    verdict: str
    details: dict[str, Any] = Field(default_factory=dict)


def git_info(root: Path = REPO_ROOT) -> GitInfo:
    """HEAD and whether tracked files outside ``benchmarks/results`` and ``docs`` differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)benchmarks/results", ":(exclude)docs"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return GitInfo(commit="unknown", dirty=True)
    return GitInfo(commit=commit, dirty=bool(status.strip()))


def _code_files(paths: Iterable[str], root: Path) -> list[Path]:
    files: set[Path] = set()
    for rel in paths:
        p = root / rel
        if p.is_file():
            files.add(p)
        elif p.is_dir():
            files.update(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix in CODE_SUFFIXES and "__pycache__" not in f.parts
            )
        else:
            raise FileNotFoundError(f"benchmark code path {rel!r} does not exist under {root}")
    return sorted(files)


def code_info(paths: Iterable[str], root: Path = REPO_ROOT) -> CodeInfo:
    """sha256 of every source file under ``paths`` (repository-relative) and one digest over them."""
    paths = sorted(set(paths))
    files = {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in _code_files(paths, root)}
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in files.items()).encode()).hexdigest()
    return CodeInfo(paths=paths, digest=digest, files=files)


def stale_files(code: CodeInfo, root: Path = REPO_ROOT) -> list[str]:
    """Files whose content changed (or appeared / disappeared) since the result was produced."""
    now = code_info(code.paths, root).files
    return sorted(k for k in set(now) | set(code.files) if now.get(k) != code.files.get(k))


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in TRACKED_LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device_info(device: str = "cpu") -> DeviceInfo:
    threads = None
    name = platform.processor() or platform.machine()
    kind = device.split(":")[0]
    try:
        import torch

        threads = torch.get_num_threads()
        if kind == "cuda" and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(device))
    except ImportError:
        pass
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return DeviceInfo(kind=kind, name=name, cpus=os.cpu_count() or 1, torch_threads=threads, load_avg=load)


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would retype it: ``python <script relative to the repo> args``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = script.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        argv[0] = Path(argv[0]).as_posix()
    return shlex.join(["python", *argv])
