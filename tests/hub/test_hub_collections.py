"""The local Hub's collections API, driven by the real huggingface_hub client."""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError


@pytest.fixture
def repos(hub):
    api = HfApi(token=hub.write_token)
    tag = uuid.uuid4().hex[:6]
    model = api.create_repo(f"{hub.user}/coll-model-{tag}").repo_id
    data = api.create_repo(f"{hub.user}/coll-data-{tag}", repo_type="dataset").repo_id
    return api, model, data, tag


def test_create_add_get_update_delete(hub, repos):
    api, model, data, tag = repos
    title = f"Zoo {tag}: retina"
    coll = api.create_collection(title, description="retinal models")
    assert coll.slug.startswith(f"{hub.user}/zoo-{tag}-retina-") and coll.title == title
    assert coll.owner == {"name": hub.user, "type": "user"} and coll.items == []
    assert api.create_collection(title, exists_ok=True).slug == coll.slug
    with pytest.raises(HfHubHTTPError) as err:
        api.create_collection(title)
    assert err.value.response.status_code == 409

    api.add_collection_item(coll.slug, model, "model")
    after = api.add_collection_item(coll.slug, data, "dataset", note="training data")
    assert [(i.item_id, i.item_type, i.position, i.note) for i in after.items] == [
        (model, "model", 0, None),
        (data, "dataset", 1, "training data"),
    ]
    with pytest.raises(HfHubHTTPError) as err:
        api.add_collection_item(coll.slug, model, "model")
    assert err.value.response.status_code == 409
    assert len(api.add_collection_item(coll.slug, model, "model", exists_ok=True).items) == 2
    with pytest.raises(RepositoryNotFoundError):
        api.add_collection_item(coll.slug, f"{hub.user}/absent-{tag}", "model")
    with pytest.raises(HfHubHTTPError) as err:
        api.add_collection_item(coll.slug, "2311.12983", "paper")
    assert err.value.response.status_code == 400

    got = api.get_collection(coll.slug)
    assert [i.item_id for i in got.items] == [model, data] and got.description == "retinal models"
    listed = [c.slug for c in api.list_collections(owner=hub.user)]
    assert coll.slug in listed
    assert [c.slug for c in api.list_collections(owner=hub.user, item=f"datasets/{data}")] == [coll.slug]

    api.delete_collection_item(coll.slug, got.items[0].item_object_id)
    assert [i.item_id for i in api.get_collection(coll.slug).items] == [data]
    renamed = api.update_collection_metadata(coll.slug, title=f"Zoo {tag}: fundus")
    assert renamed.title == f"Zoo {tag}: fundus"

    api.delete_collection(coll.slug)
    with pytest.raises(HfHubHTTPError) as err:
        api.get_collection(coll.slug)
    assert err.value.response.status_code == 404
    api.delete_collection(coll.slug, missing_ok=True)


def test_private_collections_and_other_users(hub, repos):
    api, model, _, tag = repos
    private = api.create_collection(f"private {tag}", private=True)
    public = api.create_collection(f"public {tag}")
    mallory = HfApi(token=hub.mallory_token)
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as err:
        mallory.get_collection(private.slug)
    assert err.value.response.status_code == 404
    anon_slugs = {c.slug for c in anonymous.list_collections(owner=hub.user)}
    assert public.slug in anon_slugs and private.slug not in anon_slugs
    assert private.slug in {c.slug for c in api.list_collections(owner=hub.user)}
    with pytest.raises(HfHubHTTPError) as err:
        mallory.add_collection_item(public.slug, model, "model")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        mallory.create_collection(f"squat {tag}", namespace=hub.user)
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=hub.read_token).create_collection(f"read-only {tag}")
    assert err.value.response.status_code == 403


def test_bad_collection_requests_are_4xx(hub, repos):
    api, model, _, tag = repos
    with pytest.raises(HfHubHTTPError) as err:
        api.create_collection("x" * 61)
    assert err.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_collection(f"anon {tag}", namespace=hub.user)
    assert err.value.response.status_code == 401
    coll = api.create_collection(f"bad {tag}")
    with pytest.raises(RepositoryNotFoundError):
        api.add_collection_item(coll.slug, "no-namespace", "model")
    with pytest.raises(HfHubHTTPError) as err:
        api.add_collection_item(coll.slug, model, "model", note="n" * 501)
    assert err.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as err:
        api.get_collection(f"{hub.user}/nothing-{tag}")
    assert err.value.response.status_code == 404
    assert api.get_collection(coll.slug).items == []


def test_theme_is_stored_and_position_is_refused(hub, repos):
    api, _, _, tag = repos
    coll = api.create_collection(f"themed {tag}")
    assert coll.theme == "default"
    assert api.update_collection_metadata(coll.slug, theme="pink").theme == "pink"
    assert api.get_collection(coll.slug).theme == "pink"
    with pytest.raises(HfHubHTTPError) as err:
        api.update_collection_metadata(coll.slug, position=2)
    assert err.value.response.status_code == 400
