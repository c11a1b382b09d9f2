"""Publish an artifact folder, with its card, as a Hub repo: ``hubtools push PATH REPO_ID``.

The folder is the repo (DESIGN: "an artifact saved locally is byte-for-byte the repo that
would be pushed"), so a push makes the target revision hold exactly the folder's files:
remote files the folder no longer has are deleted in the same commit (``.gitattributes``
is kept). Folders are checked before anything is sent: they need a ``README.md`` card
with YAML metadata, and weights must be safetensors (no pickle-based files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml
from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError

# The HTTP/transport base class of the client's HTTP library (connection refused, timeouts, ...).
from huggingface_hub.errors import HTTPError as _ClientHTTPError
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from hubtools.errors import ArtifactError, HubtoolsError
from hubtools.hub.artifacts import CARD_FILENAME

HF_HUB_URL = "https://huggingface.co"
REPO_TYPES = ("model", "dataset", "space")

# Pickle-based formats: loading them runs code, so hubtools publishes safetensors only.
REFUSED_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Folders upload_folder never sends (huggingface_hub's DEFAULT_IGNORE_PATTERNS).
_SKIPPED_DIRS = {".git", ".cache"}

# Metadata keys that only dataset cards carry (DatasetCardData fields and what datasets writes).
_DATASET_CARD_KEYS = frozenset(
    {
        "pretty_name",
        "task_categories",
        "task_ids",
        "size_categories",
        "source_datasets",
        "annotations_creators",
        "language_creators",
        "multilinguality",
        "configs",
        "dataset_info",
        "train-eval-index",
    }
)


def read_card_metadata(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML metadata of ``folder/README.md``; :class:`ArtifactError` if there is none."""
    readme = Path(folder) / CARD_FILENAME
    if not readme.is_file():
        raise ArtifactError(
            f"{Path(folder)}: has no {CARD_FILENAME} card; render one with hubtools.hub.cards.render_card"
        )
    try:
        text = readme.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{readme}: is not UTF-8 text ({err})") from None
    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        raise ArtifactError(f"{readme}: has no YAML front matter (a '---' block of metadata at the top)")
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        raise ArtifactError(f"{readme}: the front matter is not valid YAML: {err}") from None
    if not isinstance(metadata, dict) or not metadata:
        raise ArtifactError(f"{readme}: the front matter must be a non-empty YAML mapping, got {metadata!r}")
    return metadata


def check_artifact(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``folder`` can be published and return its card metadata.

    Raises:
        ArtifactError: the folder does not exist, has no card or no card metadata, or holds
            pickle-based weight files (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.pickle``, ``.ckpt``).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ArtifactError(f"{folder}: no such artifact folder")
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: is not a folder; push the artifact folder that holds README.md")
    metadata = read_card_metadata(folder)
    pickled = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        pickled += [Path(root, f) for f in sorted(files) if f.lower().endswith(REFUSED_WEIGHT_SUFFIXES)]
    if pickled:
        names = ", ".join(str(p) for p in pickled[:10]) + (
            f" and {len(pickled) - 10} more" if len(pickled) > 10 else ""
        )
        raise ArtifactError(
            f"{names}: pickle-based weight file(s); hubtools publishes safetensors only "
            "(convert with safetensors.torch.save_file / save_pretrained(safe_serialization=True))"
        )
    return metadata


def detect_repo_type(metadata: Mapping[str, Any]) -> str:
    """``space`` if the card names an ``sdk``, ``dataset`` if it has dataset-card keys, else ``model``."""
    if "sdk" in metadata:
        return "space"
    if _DATASET_CARD_KEYS.intersection(metadata):
        return "dataset"
    return "model"


def _disable_xet_off_huggingface_co() -> None:
    # huggingface_hub 2.x sends every LFS file to a Xet CAS unless told not to; a hubtools
    # (or any other self-hosted) hub has no Xet storage, so the upload would fail.
    if constants.ENDPOINT.rstrip("/") != HF_HUB_URL:
        constants.HF_HUB_DISABLE_XET = True


def push_artifact(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    repo_type: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> CommitInfo:
    """Publish an artifact folder as ``repo_id`` and return the commit.

    Args:
        folder: the artifact folder (its ``README.md`` card must have YAML metadata).
        repo_id: ``namespace/name`` (a bare name goes to the token's user).
        repo_type: ``model``, ``dataset`` or ``space``; default: from the card (:func:`detect_repo_type`).
        private: create the repo private. Only applies when the repo does not exist yet.
        revision: branch to commit to; created from the default branch when missing.
        token: Hub token; default: ``HF_TOKEN`` or the stored login.
        commit_message: default ``"Upload <folder name> with hubtools"``.

    The revision then holds exactly the folder's files (plus the repo's ``.gitattributes``).

    Raises:
        ArtifactError: the folder is refused (see :func:`check_artifact`).
        ValueError: ``repo_type`` is not one of ``model``, ``dataset``, ``space``.
        huggingface_hub.errors.HfHubHTTPError: the Hub refused a request (auth, bad name, ...).
    """
    folder = Path(folder)
    metadata = check_artifact(folder)
    if repo_type is None:
        repo_type = detect_repo_type(metadata)
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    if repo_type == "space" and not metadata.get("sdk"):
        raise ArtifactError(
            f"{folder / CARD_FILENAME}: a Space card needs an 'sdk' (gradio, static, docker, ...)"
        )

    _disable_xet_off_huggingface_co()
    api = HfApi(token=token)
    repo_url = api.create_repo(
        repo_id,
        repo_type=repo_type,
        private=private,
        exist_ok=True,
        space_sdk=metadata["sdk"] if repo_type == "space" else None,
    )
    if revision is not None and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_url.repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=folder,
        repo_type=repo_type,
        revision=revision,
        commit_message=commit_message or f"Upload {folder.resolve().name} with hubtools",
        delete_patterns="*",
    )


class PushError(click.ClickException):
    """A refused folder or a failed push: one line on stderr, exit code 2."""

    exit_code = 2


@click.command("push")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo private (only when it does not exist yet).")
@click.option("--revision", default=None, help="Branch to push to; created from main when missing.")
@click.option(
    "--repo-type",
    type=click.Choice(REPO_TYPES),
    default=None,
    help="Repo type; default: read from the card (sdk -> space, dataset-card keys -> dataset, else model).",
)
@click.option("--token", default=None, help="Hub token; default: HF_TOKEN or the stored login.")
@click.option("-m", "--commit-message", default=None, help="Commit title.")
def push_command(
    path: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    repo_type: str | None,
    token: str | None,
    commit_message: str | None,
) -> None:
    """Publish the artifact folder PATH, with its README.md card, as the Hub repo REPO_ID.

    The folder needs a README.md with YAML metadata and safetensors weights only. The
    branch then holds exactly the folder's files. Prints the commit URL.
    """
    try:
        commit = push_artifact(
            path,
            repo_id,
            repo_type=repo_type,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message,
        )
    except (HubtoolsError, HFValidationError, HfHubHTTPError, _ClientHTTPError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PushError(first_line) from None
    click.echo(commit.commit_url)
