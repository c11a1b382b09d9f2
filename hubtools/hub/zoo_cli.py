"""``hubtools zoo``: build the model-zoo catalogue from a Hub's cards, then list, search, show and pull."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

CATALOGUE_ENV = "HUBTOOLS_ZOO_CATALOGUE"


class ZooCommandError(click.ClickException):
    exit_code = 2


def _point_at(endpoint: str | None) -> None:
    # huggingface_hub and datasets capture HF_ENDPOINT once, at import time.
    if not endpoint:
        return
    endpoint = endpoint.rstrip("/")
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as c

        if c.ENDPOINT.rstrip("/") != endpoint:
            raise ZooCommandError(
                f"huggingface_hub already targets {c.ENDPOINT}; cannot switch to {endpoint}"
            )
    os.environ["HF_ENDPOINT"] = endpoint
    if not endpoint.startswith("https://huggingface.co"):
        os.environ["HF_HUB_DISABLE_XET"] = "1"  # a self-hosted Hub has no Xet storage


@click.group("zoo")
@click.option("--endpoint", default=None, help="Hub URL (default: $HF_ENDPOINT, else huggingface.co).")
@click.option("--token", default=None, help="Hub token (default: $HF_TOKEN or the stored login).")
@click.pass_context
def zoo_group(ctx: click.Context, endpoint: str | None, token: str | None) -> None:
    """The model zoo: a catalogue of every artifact on a Hub, built from the repos' own cards."""
    _point_at(endpoint)
    ctx.obj = {"token": token}


def _catalogue_option(fn):  # noqa: ANN001, ANN202 - click decorator
    return click.option(
        "--catalogue",
        envvar=CATALOGUE_ENV,
        required=True,
        help=f"Catalogue: a Hub dataset id (ORG/zoo) or a folder written by `zoo index --out` (env {CATALOGUE_ENV}).",
    )(fn)


def _load(catalogue: str):  # noqa: ANN202
    from hubtools.hub.zoo import ZooError, load_catalogue

    try:
        return load_catalogue(catalogue)
    except ZooError as err:
        raise ZooCommandError(str(err)) from None


def _filters(fn):  # noqa: ANN001, ANN202 - click decorator
    for opt in (
        click.option("--modality", default=None, help="Modality contains this text (e.g. MRI, fundus)."),
        click.option("--anatomy", default=None, help="Anatomy contains this text (e.g. retina, brain)."),
        click.option("--task", default=None, help="Task contains this text (e.g. segmentation)."),
        click.option(
            "--kind",
            type=click.Choice(["model", "pipeline", "adapter", "dataset", "recipe", "space"]),
            default=None,
        ),
        click.option(
            "--metric", "metrics", multiple=True, help="NAME OP NUMBER, e.g. 'dice>=0.6' (repeatable)."
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON instead of a table."),
    ):
        fn = opt(fn)
    return fn


def _show_entries(entries, as_json: bool) -> None:  # noqa: ANN001
    from hubtools.hub.zoo import print_table

    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2))
    else:
        print_table(entries)


def _select(catalogue: str, query: str | None, **filters):  # noqa: ANN003, ANN202
    from hubtools.hub.zoo import ZooError, filter_entries

    try:
        return filter_entries(_load(catalogue), query=query, **filters)
    except ZooError as err:
        raise ZooCommandError(str(err)) from None


@zoo_group.command("index")
@click.option("--author", required=True, help="User or organisation whose repos are catalogued.")
@click.option("--repo", "repo_id", default=None, help="Catalogue dataset repo (default: AUTHOR/zoo).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("zoo-catalogue"),
    show_default=True,
    help="Local folder for the catalogue dataset.",
)
@click.option("--no-push", is_flag=True, help="Only write the local folder.")
@click.pass_context
def index_command(ctx: click.Context, author: str, repo_id: str | None, out: Path, no_push: bool) -> None:
    """Catalogue every model, dataset and Space of AUTHOR from their cards and publish it as a dataset.

    Private repos the token can see are catalogued too; the catalogue dataset and every zoo
    collection that lists one are then made private, so nothing private is published.
    """
    from huggingface_hub import HfApi

    from hubtools.hub.zoo import index_and_publish, print_table

    # build_index logs one line per repo whose card lacks fields: show them on stderr.
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    index = index_and_publish(
        author, repo_id=repo_id, out_dir=out, api=HfApi(token=ctx.obj["token"]), push=not no_push
    )
    print_table(index.entries)
    private = any(e.private for e in index.entries)
    target = "" if no_push else f", published as datasets/{repo_id or f'{author}/zoo'}"
    if private and not no_push:
        target += " (private: it lists private repos)"
    click.echo(f"catalogue: {index.folder}{target}")
    for title, slug in index.collections.items():
        click.echo(f"collection: {title} -> {slug}")


@zoo_group.command("list")
@_catalogue_option
@_filters
def list_command(catalogue: str, as_json: bool, **filters) -> None:  # noqa: ANN003
    """Print the catalogue as a table, filtered by modality, anatomy, task, kind and metrics."""
    _show_entries(_select(catalogue, None, **filters), as_json)


@zoo_group.command("search")
@click.argument("query")
@_catalogue_option
@_filters
def search_command(query: str, catalogue: str, as_json: bool, **filters) -> None:  # noqa: ANN003
    """Entries whose id, title, tags, modality, anatomy, task or data contain every word of QUERY."""
    _show_entries(_select(catalogue, query, **filters), as_json)


@zoo_group.command("show")
@click.argument("repo_id")
@_catalogue_option
def show_command(repo_id: str, catalogue: str) -> None:
    """Print one entry (REPO_ID, or datasets/REPO_ID for a dataset) as JSON."""
    from hubtools.hub.zoo import ZooError, find_entry

    try:
        click.echo(json.dumps(asdict(find_entry(_load(catalogue), repo_id)), indent=2))
    except ZooError as err:
        raise ZooCommandError(str(err)) from None


@zoo_group.command("pull")
@click.argument("repo_id")
@_catalogue_option
@click.option(
    "--local-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Download into this folder (default: the Hub cache).",
)
@click.option("--revision", default=None, help="Default: the commit the catalogue indexed.")
@click.pass_context
def pull_command(
    ctx: click.Context, repo_id: str, catalogue: str, local_dir: Path | None, revision: str | None
) -> None:
    """Download an artifact of the catalogue with snapshot_download; prints its folder."""
    from huggingface_hub import HfApi

    from hubtools.hub.zoo import ZooError, find_entry, pull

    try:
        entry = find_entry(_load(catalogue), repo_id)
    except ZooError as err:
        raise ZooCommandError(str(err)) from None
    click.echo(pull(entry, local_dir=local_dir, revision=revision, api=HfApi(token=ctx.obj["token"])))


@zoo_group.command("collections")
@_catalogue_option
def collections_command(catalogue: str) -> None:
    """Print the catalogue's collections (one per modality) and their members."""
    from hubtools.hub.zoo import collections

    for name, members in collections(_load(catalogue)).items():
        click.echo(f"{name} ({len(members)})")
        for e in members:
            click.echo(f"  {e.repo_type:<8} {e.repo_id}")
