"""Private repos never show to someone who cannot read them: listings, collections, the zoo catalogue.

Each test uses a fresh author (a token registered while the server runs), so the listings
hold exactly that author's repos.
"""

from __future__ import annotations

import uuid

import pytest
from datasets import load_dataset
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubtools.hub.server import add_token
from hubtools.hub.zoo import index_and_publish

CARD = b"---\nlicense: mit\ntags: [mri, brain]\npipeline_tag: image-classification\n---\n# A model\n"


@pytest.fixture
def author(hub):
    """(name, HfApi with its write token) of a new user owning one public and one private model."""
    name = f"author-{uuid.uuid4().hex[:6]}"
    api = HfApi(token=add_token(hub.data_dir, name))
    for repo, private in ((f"{name}/public-model", False), (f"{name}/secret-model", True)):
        api.create_repo(repo, private=private)
        api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id=repo)
    return name, api


def test_listings_show_private_repos_to_their_owner_only(hub, author):
    name, owner = author
    anonymous, mallory = HfApi(token=False), HfApi(token=hub.mallory_token)
    assert sorted(m.id for m in owner.list_models(author=name)) == [f"{name}/public-model", f"{name}/secret-model"]
    for viewer in (anonymous, mallory):
        assert [m.id for m in viewer.list_models(author=name)] == [f"{name}/public-model"]
        assert [m.id for m in viewer.list_models(search="secret-model")] == []
        with pytest.raises(RepositoryNotFoundError):
            viewer.model_info(f"{name}/secret-model")


def test_collections_hide_private_items_from_other_viewers(hub, author):
    name, owner = author
    coll = owner.create_collection(f"mixed {name}")
    owner.add_collection_item(coll.slug, f"{name}/public-model", "model")
    owner.add_collection_item(coll.slug, f"{name}/secret-model", "model")
    assert [i.item_id for i in owner.get_collection(coll.slug).items] == [f"{name}/public-model",
                                                                          f"{name}/secret-model"]
    anonymous, mallory = HfApi(token=False), HfApi(token=hub.mallory_token)
    for viewer in (anonymous, mallory):
        assert [i.item_id for i in viewer.get_collection(coll.slug).items] == [f"{name}/public-model"]
        listed = list(viewer.list_collections(owner=name))
        assert [c.slug for c in listed] == [coll.slug]
        assert [i.item_id for i in listed[0].items] == [f"{name}/public-model"]
        # Filtering by the private item reveals nothing either.
        assert list(viewer.list_collections(item=f"models/{name}/secret-model")) == []
    assert [c.slug for c in owner.list_collections(item=f"models/{name}/secret-model")] == [coll.slug]


def test_zoo_catalogue_and_collections_listing_a_private_repo_are_private(hub, author, tmp_path):
    name, owner = author
    index = index_and_publish(name, out_dir=tmp_path / "zoo", api=owner)
    by_id = {e.repo_id: e for e in index.entries}
    assert by_id[f"{name}/secret-model"].private and not by_id[f"{name}/public-model"].private

    anonymous, mallory = HfApi(token=False), HfApi(token=hub.mallory_token)
    for viewer in (anonymous, mallory):
        with pytest.raises(RepositoryNotFoundError):
            viewer.dataset_info(f"{name}/zoo")
        with pytest.raises(HfHubHTTPError) as err:
            viewer.get_collection(next(iter(index.collections.values())))
        assert err.value.response.status_code == 404
        assert list(viewer.list_collections(owner=name)) == []
    with pytest.raises(Exception, match="(?i)not found|doesn't exist|cannot be found"):
        load_dataset(f"{name}/zoo", split="train", token=mallory.token)

    assert owner.dataset_info(f"{name}/zoo").private
    rows = load_dataset(f"{name}/zoo", split="train", token=owner.token)
    assert {(r["repo_id"], r["private"]) for r in rows} == {(f"{name}/public-model", False),
                                                            (f"{name}/secret-model", True)}
    assert all(c.private for c in owner.list_collections(owner=name))

    # Re-indexing after the repo became public keeps the catalogue private (never made public here).
    owner.update_repo_settings(f"{name}/secret-model", private=False)
    index_and_publish(name, out_dir=tmp_path / "zoo2", api=owner)
    assert owner.dataset_info(f"{name}/zoo").private


def test_zoo_of_public_repos_stays_public(hub, tmp_path):
    name = f"author-{uuid.uuid4().hex[:6]}"
    owner = HfApi(token=add_token(hub.data_dir, name))
    owner.create_repo(f"{name}/open-model")
    owner.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id=f"{name}/open-model")
    index_and_publish(name, out_dir=tmp_path / "zoo", api=owner)
    rows = load_dataset(f"{name}/zoo", split="train", token=False)
    assert [(r["repo_id"], r["private"]) for r in rows] == [(f"{name}/open-model", False)]
