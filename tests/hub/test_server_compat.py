"""Client-compatibility details of the local Hub, each checked with the unmodified client as the public Hub
answers it: tree of a file, namespace-less ids, folder deletes, case-insensitive ids, request ids,
and a lost blob answered with an error status before any body."""

from __future__ import annotations

import hashlib
import os
import time

import httpx2
import pytest
from huggingface_hub import CommitOperationDelete, HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError


@pytest.fixture
def api(hub):
    return HfApi(token=hub.write_token)


@pytest.fixture
def filled(api, repo_id):
    api.create_repo(repo_id)
    for path in ("config.json", "sub/a.txt", "sub/deeper/b.txt", "other/c.txt"):
        api.upload_file(path_or_fileobj=path.encode(), path_in_repo=path, repo_id=repo_id)
    return repo_id


def test_tree_of_a_file_is_404_so_hffilesystem_can_ls_and_find_files(hub, api, filled):
    r = httpx2.get(f"{hub.url}/api/models/{filled}/tree/main/sub%2Fa.txt")
    assert r.status_code == 404 and r.headers["x-error-code"] == "EntryNotFound"
    fs = HfFileSystem(token=hub.write_token)
    assert fs.ls(f"{filled}/sub/a.txt", detail=False) == [f"{filled}/sub/a.txt"]
    assert fs.find(f"{filled}/sub/a.txt") == [f"{filled}/sub/a.txt"]
    assert fs.info(f"{filled}/sub/a.txt")["type"] == "file"
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{filled}/sub/absent.txt")


def test_ids_without_a_namespace_do_not_exist(hub, api):
    for token in (hub.write_token, False):
        viewer = HfApi(token=token)
        assert viewer.repo_exists("no-namespace") is False
        assert viewer.repo_exists("no-namespace", repo_type="dataset") is False
        assert viewer.file_exists("no-namespace", "config.json") is False
        assert viewer.file_exists("no-namespace", "README.md", repo_type="dataset") is False
        assert viewer.revision_exists("no-namespace", "main") is False
        with pytest.raises(RepositoryNotFoundError):
            viewer.model_info("no-namespace")
    r = httpx2.get(f"{hub.url}/api/models/no-namespace", headers={"Authorization": "Bearer hf_unknown"})
    assert r.status_code == 401 and r.headers["x-error-message"] == "Invalid credentials in Authorization header"
    r = httpx2.get(f"{hub.url}/api/papers/2311.12983")
    assert r.status_code == 501


def test_deleting_a_folder_without_trailing_slash(api, filled):
    api.create_commit(filled, [CommitOperationDelete("sub")], commit_message="drop sub")
    assert sorted(api.list_repo_files(filled)) == [".gitattributes", "config.json", "other/c.txt"]
    api.delete_folder("other", repo_id=filled)  # the client's own folder delete still works
    assert sorted(api.list_repo_files(filled)) == [".gitattributes", "config.json"]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(filled, [CommitOperationDelete("gone")], commit_message="nothing")
    assert err.value.response.status_code == 404


def test_repo_ids_are_case_insensitive(hub, api, repo_id):
    api.create_repo(repo_id)
    upper = repo_id.upper().replace("TESTUSER", "TestUser")
    commit = api.upload_file(path_or_fileobj=b"hi", path_in_repo="hi.txt", repo_id=upper)
    assert api.model_info(upper).id == repo_id  # the canonical id comes back
    assert api.model_info(repo_id).sha == commit.oid
    assert open(hf_hub_download(upper, "hi.txt"), "rb").read() == b"hi"
    assert api.repo_exists(upper) and api.file_exists(upper, "hi.txt")
    api.delete_repo(upper)
    assert not api.repo_exists(repo_id)


def test_every_answer_carries_a_request_id(hub, api, repo_id):
    api.create_repo(repo_id)
    ok = httpx2.get(f"{hub.url}/api/models/{repo_id}")
    missing = httpx2.get(f"{hub.url}/api/models/{repo_id}-absent")
    download = httpx2.get(f"{hub.url}/{repo_id}/resolve/main/.gitattributes")
    ids = [r.headers.get("x-request-id") for r in (ok, missing, download)]
    assert all(ids) and len(set(ids)) == 3
    echoed = httpx2.get(f"{hub.url}/api/models/{repo_id}", headers={"X-Request-Id": "trace-me-1"})
    assert echoed.headers["x-request-id"] == "trace-me-1"


def test_a_lost_blob_is_an_error_status_before_any_body(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    regular, lfs = os.urandom(5000), os.urandom(3000)
    api.upload_file(path_or_fileobj=regular, path_in_repo="lost.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=lfs, path_in_repo="short.bin", repo_id=repo_id)  # *.bin goes through LFS
    blobs = hub.data_dir / "blobs"

    def blob(data: bytes):
        sha = hashlib.sha256(data).hexdigest()
        return blobs / sha[:2] / sha[2:4] / sha

    blob(regular).unlink()
    damaged = blob(lfs)
    damaged.chmod(0o644)
    damaged.write_bytes(lfs[:100])
    for path in ("lost.txt", "short.bin"):
        for method in ("HEAD", "GET"):
            r = httpx2.request(method, f"{hub.url}/{repo_id}/resolve/main/{path}",
                               headers={"Authorization": f"Bearer {hub.write_token}"})
            assert r.status_code == 507, (path, method)
            assert "hubtools hub fsck" in r.headers["x-error-message"]
            if method == "GET":
                assert r.json()["error"]  # a complete JSON error, not a cut-off file
    started = time.perf_counter()
    with pytest.raises(LocalEntryNotFoundError) as err:  # the client's wrapping of a failed HEAD
        hf_hub_download(repo_id, "lost.txt", cache_dir=tmp_path)
    assert err.value.__cause__.response.status_code == 507
    assert "hubtools hub fsck" in str(err.value.__cause__)
    assert time.perf_counter() - started < 5  # answered at once: 507 is not a status the client retries


def test_formatted_commits_and_tag_on_an_unknown_revision(hub, api, repo_id):
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, commit_message="Add <x>",
                    commit_description="First line & more.\n\nSecond paragraph.")
    newest = api.list_repo_commits(repo_id, formatted=True)[0]
    assert newest.formatted_title == "Add &lt;x&gt;"
    assert newest.formatted_message == "<p>First line &amp; more.</p><p>Second paragraph.</p>"
    assert api.list_repo_commits(repo_id)[0].formatted_title is None
    r = httpx2.post(f"{hub.url}/api/models/{repo_id}/tag/no-such-rev", json={"tag": "bad name"},
                    headers={"Authorization": f"Bearer {hub.write_token}"})
    assert r.status_code == 404 and r.headers["x-error-code"] == "RevisionNotFound"
