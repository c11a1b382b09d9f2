"""list_models / list_datasets: search, filter, pipeline_tag, sort, direction and limit as on the Hub."""

from __future__ import annotations

import uuid

import httpx2
import pytest
from huggingface_hub import HfApi

from hubtools.hub.server import add_token


@pytest.fixture(scope="module")
def catalog(hub):
    """A fresh author with three models and two datasets, committed in a known order."""
    name = f"Lister-{uuid.uuid4().hex[:6]}"
    api = HfApi(token=add_token(hub.data_dir, name))
    cards = {
        "vision": "license: mit\nlibrary_name: transformers\npipeline_tag: image-classification\n"
                  "datasets: [org/isic]\nlanguage: [en]\ntags: [dermoscopy]\n",
        "writer": "license: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-generation\n",
        "bare": None,
    }
    for model, card in cards.items():
        api.create_repo(f"{name}/{model}")
        if card is not None:
            api.upload_file(path_or_fileobj=f"---\n{card}---\n# {model}\n".encode(), path_in_repo="README.md",
                            repo_id=f"{name}/{model}")
    api.upload_file(path_or_fileobj=b"late", path_in_repo="late.txt", repo_id=f"{name}/vision")  # newest now
    for ds, task in (("lesions", "image-classification"), ("stories", "text-generation")):
        api.create_repo(f"{name}/{ds}", repo_type="dataset")
        api.upload_file(path_or_fileobj=f"---\nlicense: cc-by-4.0\ntask_categories: [{task}]\n---\n".encode(),
                        path_in_repo="README.md", repo_id=f"{name}/{ds}", repo_type="dataset")
    return name, api


def ids(infos) -> list[str]:
    return [i.id.split("/", 1)[1] for i in infos]


def test_pipeline_tag_and_filter(catalog):
    name, api = catalog
    assert ids(api.list_models(author=name, pipeline_tag="image-classification")) == ["vision"]
    assert ids(api.list_models(author=name, filter="image-classification")) == ["vision"]
    assert ids(api.list_models(author=name, filter="text-generation")) == ["writer"]
    assert sorted(ids(api.list_models(author=name, filter="transformers"))) == ["vision", "writer"]
    assert ids(api.list_models(author=name, filter=["transformers", "license:mit"])) == ["vision"]
    assert ids(api.list_models(author=name, filter=["transformers", "license:gpl"])) == []
    assert ids(api.list_models(author=name, trained_dataset="org/isic")) == ["vision"]
    assert ids(api.list_models(author=name, filter=["dermoscopy", "en"])) == ["vision"]
    info = api.model_info(f"{name}/vision")
    assert info.tags[0] == "dermoscopy" and {"image-classification", "license:mit", "dataset:org/isic"} <= set(
        info.tags)
    assert ids(api.list_datasets(author=name, filter="task_categories:image-classification")) == ["lesions"]
    assert sorted(ids(api.list_datasets(author=name, filter="license:cc-by-4.0"))) == ["lesions", "stories"]


def test_search_author_and_gated(catalog):
    name, api = catalog
    assert ids(api.list_models(author=name.lower(), search="VIS")) == ["vision"]
    assert ids(api.list_models(search=f"{name}/wri")) == ["writer"]
    assert ids(api.list_models(author=name, gated=True)) == []
    assert len(ids(api.list_models(author=name, gated=False))) == 3


def test_sort_direction_and_limit(hub, catalog):
    name, api = catalog
    assert ids(api.list_models(author=name, sort="last_modified")) == ["vision", "bare", "writer"]
    assert ids(api.list_models(author=name, sort="created_at")) == ["bare", "writer", "vision"]
    assert ids(api.list_models(author=name, sort="last_modified", limit=2)) == ["vision", "bare"]
    assert ids(api.list_models(author=name, sort="id")) == ["writer", "vision", "bare"]
    # direction=1 (ascending) is still accepted by the Hub's API; the 2.x client no longer sends it.
    r = httpx2.get(f"{hub.url}/api/models", params={"author": name, "sort": "lastModified", "direction": "1"})
    assert [m["id"].split("/")[1] for m in r.json()] == ["writer", "bare", "vision"]
    r = httpx2.get(f"{hub.url}/api/models", params={"author": name, "sort": "bogus"})
    assert r.status_code == 400 and "sort" in r.json()["error"]
    r = httpx2.get(f"{hub.url}/api/models", params={"author": name, "limit": "-1"})
    assert r.status_code == 400
