"""Repo settings: what the local Hub cannot honour is refused with a 4xx, never a silent 200."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import BadRequestError, HfHubHTTPError


@pytest.fixture
def api(hub):
    return HfApi(token=hub.write_token)


@pytest.mark.parametrize("gated", ["auto", "manual"])
def test_gating_is_refused_and_the_repo_stays_as_it_was(hub, api, repo_id, gated):
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.txt", repo_id=repo_id)
    with pytest.raises(BadRequestError, match="Gated repos are not supported by hubtools hub"):
        api.update_repo_settings(repo_id, gated=gated)
    # Refused as a whole: the visibility sent with it is not applied either.
    with pytest.raises(BadRequestError):
        api.update_repo_settings(repo_id, gated=gated, private=True)
    info = HfApi(token=False).model_info(repo_id)
    assert info.gated is False and info.private is False
    assert open(hf_hub_download(repo_id, "w.txt", token=False), "rb").read() == b"weights"


def test_gated_false_and_visibility_still_work(api, repo_id):
    api.create_repo(repo_id)
    api.update_repo_settings(repo_id, gated=False, private=True)
    assert api.model_info(repo_id).private is True
    api.update_repo_settings(repo_id, visibility="public")
    assert api.model_info(repo_id).private is False


def test_unknown_settings_are_refused(hub, api, repo_id):
    api.create_repo(repo_id)
    r = httpx2.put(f"{hub.url}/api/models/{repo_id}/settings", json={"discussionsDisabled": True},
                   headers={"Authorization": f"Bearer {hub.write_token}"})
    assert r.status_code == 400 and "discussionsDisabled" in r.json()["error"]
    space = api.create_repo(f"{repo_id}-space", repo_type="space", space_sdk="static").repo_id
    with pytest.raises(HfHubHTTPError) as err:  # protected Spaces are not implemented
        api.update_repo_settings(space, repo_type="space", visibility="protected")
    assert err.value.response.status_code == 400
