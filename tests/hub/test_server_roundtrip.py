"""Round trips the local Hub must pass with the real huggingface_hub client (eleven scenarios).

Every test drives the local Hub with the unmodified clients (huggingface_hub 2.4, transformers,
peft, datasets and the ``hf`` CLI) over real HTTP, with Xet disabled (``HF_HUB_DISABLE_XET=1``
from tests/conftest.py) except in item 11, which switches it on in child processes. Every
download is compared by sha256; ids, counts and statuses are asserted exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    DatasetCard,
    DatasetCardData,
    HfApi,
    HfFileSystem,
    ModelCard,
    ModelCardData,
    ModelHubMixin,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
MiB = 2**20

# Known answers, checked with `git hash-object`.
EMPTY_BLOB_SHA1 = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
HELLO_BLOB_SHA1 = "ce013625030ba8dba906f756967f9e9ca394464a"
ZEROS_1MIB_SHA256 = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"
ZEROS_1MIB_POINTER_SIZE = 132
ZEROS_1MIB_POINTER_OID = "9bf2820abd0acc86f31fc02ce312debf25384d12"

UNICODE_PATH = "dir with space/ünï #%.txt"


# ----------------------------------------------------------------------------- helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    return sha256(Path(path).read_bytes())


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(data)}\nsize {len(data)}\n".encode()
    )


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


_TEXT_ALPHABET = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,\n"
_TEXT_TABLE = bytes(_TEXT_ALPHABET[i % len(_TEXT_ALPHABET)] for i in range(256))


def random_text(n: int, seed: int) -> bytes:
    """n bytes of printable ASCII with newlines and no NUL, so only the size can make it LFS."""
    return random_bytes(n, seed).translate(_TEXT_TABLE)


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def new_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def tree_by_path(api: HfApi, repo_id: str, **kwargs) -> dict[str, RepoFile | RepoFolder]:
    entries = list(api.list_repo_tree(repo_id, **kwargs))
    paths = [e.path for e in entries]
    assert len(paths) == len(set(paths)), f"duplicate tree entries: {sorted(paths)}"
    return {e.path: e for e in entries}


def assert_file_entry(entry, data: bytes, lfs: bool) -> None:
    """A tree / paths-info entry describes `data` exactly (as the Hub's tree entries do)."""
    assert isinstance(entry, RepoFile), entry
    assert entry.size == len(data)
    if lfs:
        assert entry.lfs is not None, f"{entry.path} should be stored as LFS"
        assert entry.lfs.sha256 == sha256(data)
        assert entry.lfs.size == len(data)
        pointer = lfs_pointer(data)
        assert entry.lfs.pointer_size == len(pointer)
        assert entry.blob_id == git_blob_sha1(pointer)
    else:
        assert entry.lfs is None, f"{entry.path} should be a regular file"
        assert entry.blob_id == git_blob_sha1(data)
    assert entry.xet_hash is None


def commit_ids(api: HfApi, repo_id: str, **kwargs) -> list[str]:
    return [c.commit_id for c in api.list_repo_commits(repo_id, **kwargs)]


def resolve_url(base: str, repo_id: str, path: str, revision: str = "main", prefix: str = "") -> str:
    from urllib.parse import quote

    return f"{base}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}


def child_env(endpoint: str, token: str) -> dict[str, str]:
    """Environment for a child client process: the test environment with Xet switched back on."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
    env.update(HF_ENDPOINT=endpoint, HF_TOKEN=token, PYTHONUNBUFFERED="1")
    return env


def run_child(script: str, args: list[str], env: dict[str, str], timeout: float = 90) -> dict:
    """Run `script` in a fresh interpreter; it prints one JSON object as its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"child failed rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    return json.loads(lines[-1])


# The file set of round trip 2.
def folder_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"architectures": ["Tiny"], "hidden_size": 32}\n',
        "sub/notes.txt": b"some notes\n",
        "weights.bin": random_bytes(3 * MiB, seed=2),
        "empty.txt": b"",
        UNICODE_PATH: "ünïcödé path, spaces, hash and percent\n".encode(),
        "big.txt": random_text(12 * MiB, seed=12),
    }


FOLDER_LFS = {"weights.bin", "big.txt"}


# The file set of the listing tests (round trip 3), with its known answers (git hash-object).
def listing_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"hidden_size": 32}\n',
        "hello.txt": b"hello\n",
        "empty.txt": b"",
        "zeros.bin": b"\0" * MiB,
        "weights.bin": random_bytes(256 * 1024, seed=3),
        "sub/notes.txt": b"notes\n",
        "sub/deep/data.txt": b"deep data\n",
        UNICODE_PATH: "ünï text\n".encode(),
    }


LISTING_LFS = {"zeros.bin", "weights.bin"}
LISTING_DIRS = {"sub", "sub/deep", "dir with space"}


@pytest.fixture(scope="module")
def aux_hub(hub, tmp_path_factory):
    """A second in-process server with a 1 MiB LFS threshold and tree/commit pages of 3 entries."""
    from hubtools.hub.server import HubConfig, HubServer, add_token

    data_dir = tmp_path_factory.mktemp("aux-hub") / "data"
    add_token(data_dir, hub.user, role="write", token=hub.write_token)
    server = HubServer(
        HubConfig(data_dir=data_dir, host="127.0.0.1", port=0, lfs_threshold=1 * MiB, page_size=3)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.write_token)


# ----------------------------------------------------------------------------- 1. create_repo


@pytest.mark.parametrize("repo_type", ["model", "dataset", "space"])
def test_01_create_repo_public_and_private(hub, api, repo_type):
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    sdk = "static" if repo_type == "space" else None
    anonymous = HfApi(endpoint=hub.url, token=False)
    for private in (False, True):
        repo_id = f"{hub.user}/{new_name()}"
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, space_sdk=sdk)
        assert str(url) == f"{hub.url}/{prefix}{repo_id}"
        assert url.repo_id == repo_id
        assert url.repo_type == repo_type

        # exist_ok swallows the 409 and reads "url" from its body; without it the 409 surfaces.
        again = api.create_repo(repo_id, repo_type=repo_type, private=private, space_sdk=sdk, exist_ok=True)
        assert str(again) == str(url)
        with pytest.raises(HfHubHTTPError) as exc:
            api.create_repo(repo_id, repo_type=repo_type, private=private, space_sdk=sdk)
        assert exc.value.response.status_code == 409

        info = api.repo_info(repo_id, repo_type=repo_type)
        assert info.id == repo_id
        assert info.private is private
        assert SHA1_RE.match(info.sha), info.sha
        if repo_type == "space":
            assert info.sdk == "static"
        # The initial commit holds only .gitattributes, as on the Hub, and the listing shows it.
        assert api.list_repo_files(repo_id, repo_type=repo_type) == [".gitattributes"]
        assert commit_ids(api, repo_id, repo_type=repo_type) == [info.sha]

        if private:
            with pytest.raises(RepositoryNotFoundError):
                anonymous.repo_info(repo_id, repo_type=repo_type)
            assert api.repo_exists(repo_id, repo_type=repo_type) is True
            assert anonymous.repo_exists(repo_id, repo_type=repo_type) is False
        else:
            assert anonymous.repo_info(repo_id, repo_type=repo_type).sha == info.sha


def test_01_create_repo_bare_name_and_foreign_namespace(hub, api):
    name = new_name()
    url = api.create_repo(name)
    assert url.repo_id == f"{hub.user}/{name}"
    assert str(url) == f"{hub.url}/{hub.user}/{name}"
    assert api.repo_exists(f"{hub.user}/{name}")

    # Another user's namespace: 403, and nothing is created.
    mallory = HfApi(endpoint=hub.url, token=hub.mallory_token)
    target = f"{hub.user}/{new_name()}"
    with pytest.raises(HfHubHTTPError) as exc:
        mallory.create_repo(target)
    assert exc.value.response.status_code == 403
    assert api.repo_exists(target) is False

    foreign = f"mallory/{new_name()}"
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(foreign, repo_type="dataset")
    assert exc.value.response.status_code == 403
    assert mallory.repo_exists(foreign, repo_type="dataset") is False


# ----------------------------------------------------------------------------- 2. upload_folder


def test_02_upload_folder_lfs_noop_and_delete_patterns(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    files = folder_files()
    folder = write_files(tmp_path / "folder", files)

    first = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="upload folder")
    assert SHA1_RE.match(first.oid)
    assert first.commit_url == f"{hub.url}/{repo_id}/commit/{first.oid}"
    assert api.model_info(repo_id).sha == first.oid
    history = commit_ids(api, repo_id)
    assert len(history) == 2 and history[0] == first.oid

    tree = tree_by_path(api, repo_id, recursive=True)
    assert {p for p, e in tree.items() if isinstance(e, RepoFile)} == set(files) | {".gitattributes"}
    assert {p for p, e in tree.items() if isinstance(e, RepoFolder)} == {"sub", "dir with space"}
    for path, data in files.items():
        assert_file_entry(tree[path], data, lfs=path in FOLDER_LFS)

    for path, data in files.items():
        local = hf_hub_download(repo_id, path)
        assert file_sha256(local) == sha256(data), path

    # An identical second upload is a no-op: same commit id, same number of commits.
    second = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="upload again")
    assert second.oid == first.oid
    assert commit_ids(api, repo_id) == history

    # delete_patterns removes every remote *.txt (sub/ and the unicode path included).
    other = write_files(tmp_path / "other", {"extra.json": b'{"extra": true}\n'})
    third = api.upload_folder(
        folder_path=other, repo_id=repo_id, delete_patterns=["*.txt"], commit_message="prune txt"
    )
    assert third.oid != first.oid
    assert sorted(api.list_repo_files(repo_id)) == sorted(
        [".gitattributes", "config.json", "extra.json", "weights.bin"]
    )
    assert commit_ids(api, repo_id) == [third.oid, *history]
    # The old commit still serves the deleted files.
    old = hf_hub_download(repo_id, "big.txt", revision=first.oid, cache_dir=tmp_path / "cache")
    assert file_sha256(old) == sha256(files["big.txt"])


def test_02_lfs_threshold_1mib(hub, aux_hub, tmp_path):
    aux = HfApi(endpoint=aux_hub.url, token=hub.write_token)
    repo_id = aux.create_repo(new_name()).repo_id
    files = {"medium.txt": random_text(2 * MiB, seed=21), "small.txt": random_text(MiB // 2, seed=22)}
    info = aux.upload_folder(folder_path=write_files(tmp_path / "f", files), repo_id=repo_id)
    tree = tree_by_path(aux, repo_id)
    assert_file_entry(tree["medium.txt"], files["medium.txt"], lfs=True)
    assert_file_entry(tree["small.txt"], files["small.txt"], lfs=False)
    for path, data in files.items():
        local = hf_hub_download(
            repo_id, path, endpoint=aux_hub.url, token=hub.write_token, cache_dir=tmp_path / "c"
        )
        assert file_sha256(local) == sha256(data)
    assert aux.model_info(repo_id).sha == info.oid


# ----------------------------------------------------------------------------- 3. listings


def make_listing_repo(api: HfApi, repo_id: str, root: Path) -> dict:
    """Two commits: "add files" (listing_files) then "update config" (config.json changed)."""
    api.create_repo(repo_id)
    initial = api.model_info(repo_id).sha
    files = listing_files()
    c1 = api.upload_folder(
        folder_path=write_files(root, files), repo_id=repo_id, commit_message="add files"
    ).oid
    files["config.json"] = b'{"hidden_size": 64}\n'
    c2 = api.upload_file(
        path_or_fileobj=files["config.json"],
        path_in_repo="config.json",
        repo_id=repo_id,
        commit_message="update config",
    ).oid
    return {"files": files, "initial": initial, "c1": c1, "c2": c2}


def test_03_listings(hub, api, repo_id, tmp_path):
    repo = make_listing_repo(api, repo_id, tmp_path / "files")
    files, c1, c2 = repo["files"], repo["c1"], repo["c2"]
    all_files = set(files) | {".gitattributes"}

    assert sorted(api.list_repo_files(repo_id)) == sorted(all_files)
    assert commit_ids(api, repo_id) == [c2, c1, repo["initial"]]

    # Recursive: every file and every directory.
    tree = tree_by_path(api, repo_id, recursive=True)
    assert set(tree) == all_files | LISTING_DIRS
    assert {p for p, e in tree.items() if isinstance(e, RepoFolder)} == LISTING_DIRS
    for path, data in files.items():
        assert_file_entry(tree[path], data, lfs=path in LISTING_LFS)
    for d in LISTING_DIRS:
        assert SHA1_RE.match(tree[d].tree_id)
    # Known answers.
    assert tree["empty.txt"].blob_id == EMPTY_BLOB_SHA1
    assert tree["hello.txt"].blob_id == HELLO_BLOB_SHA1
    zeros = tree["zeros.bin"]
    assert (zeros.lfs.sha256, zeros.lfs.pointer_size, zeros.blob_id, zeros.size) == (
        ZEROS_1MIB_SHA256,
        ZEROS_1MIB_POINTER_SIZE,
        ZEROS_1MIB_POINTER_OID,
        MiB,
    )

    # Flat: direct children only.
    flat = tree_by_path(api, repo_id)
    assert set(flat) == {
        ".gitattributes",
        "config.json",
        "hello.txt",
        "empty.txt",
        "zeros.bin",
        "weights.bin",
    } | {
        "sub",
        "dir with space",
    }
    assert isinstance(flat["sub"], RepoFolder) and flat["sub"].tree_id == tree["sub"].tree_id

    # With path_in_repo (full paths come back), flat and recursive.
    assert set(tree_by_path(api, repo_id, path_in_repo="sub")) == {"sub/notes.txt", "sub/deep"}
    assert set(tree_by_path(api, repo_id, path_in_repo="sub", recursive=True)) == {
        "sub/notes.txt",
        "sub/deep",
        "sub/deep/data.txt",
    }
    assert set(tree_by_path(api, repo_id, path_in_repo="dir with space")) == {UNICODE_PATH}
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="missing"))
    with pytest.raises(RemoteEntryNotFoundError):  # a file is not a folder: 404, as on the Hub
        list(api.list_repo_tree(repo_id, path_in_repo="hello.txt"))

    # A directory unchanged between c1 and c2 keeps its oid; one pinned at c1 shows the old config.
    old_tree = tree_by_path(api, repo_id, recursive=True, revision=c1)
    assert old_tree["sub"].tree_id == tree["sub"].tree_id
    assert old_tree["config.json"].blob_id == git_blob_sha1(b'{"hidden_size": 32}\n')

    # expand=True adds the last commit that touched each entry.
    expanded = tree_by_path(api, repo_id, recursive=True, expand=True)
    assert set(expanded) == set(tree)
    expected_last = {p: c1 for p in (set(files) | LISTING_DIRS)}
    expected_last["config.json"] = c2
    expected_last[".gitattributes"] = repo["initial"]
    titles = {c1: "add files", c2: "update config"}
    for path, entry in expanded.items():
        assert entry.last_commit is not None, path
        assert entry.last_commit.oid == expected_last[path], path
        if expected_last[path] in titles:
            assert entry.last_commit.title == titles[expected_last[path]], path
        assert entry.last_commit.date is not None

    # get_paths_info: existing paths only, files and folders.
    infos = {
        e.path: e for e in api.get_paths_info(repo_id, ["config.json", "sub", "missing.txt", "zeros.bin"])
    }
    assert set(infos) == {"config.json", "sub", "zeros.bin"}
    assert_file_entry(infos["config.json"], files["config.json"], lfs=False)
    assert_file_entry(infos["zeros.bin"], files["zeros.bin"], lfs=True)
    assert isinstance(infos["sub"], RepoFolder) and infos["sub"].tree_id == tree["sub"].tree_id

    # model_info(files_metadata=True): siblings with sizes, blob ids and LFS sha256.
    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == c2
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == all_files
    for path, data in files.items():
        s = siblings[path]
        assert s.size == len(data), path
        assert s.blob_id == tree[path].blob_id, path
        if path in LISTING_LFS:
            assert s.lfs is not None and s.lfs.sha256 == sha256(data) and s.lfs.size == len(data), path
        else:
            assert s.lfs is None, path

    # repo_exists / file_exists / revision_exists, True and False.
    assert api.repo_exists(repo_id) is True
    assert api.repo_exists(f"{hub.user}/{new_name()}") is False
    assert api.repo_exists(repo_id, repo_type="dataset") is False
    assert api.file_exists(repo_id, "config.json") is True
    assert api.file_exists(repo_id, UNICODE_PATH) is True
    assert api.file_exists(repo_id, "nope.txt") is False
    assert api.revision_exists(repo_id, "main") is True
    assert api.revision_exists(repo_id, c1) is True
    assert api.revision_exists(repo_id, "no-such-branch") is False


def test_03_pagination_page_size_3(hub, aux_hub, tmp_path):
    aux = HfApi(endpoint=aux_hub.url, token=hub.write_token)
    repo_id = f"{hub.user}/{new_name()}"
    repo = make_listing_repo(aux, repo_id, tmp_path / "files")
    files = repo["files"]
    all_entries = set(files) | {".gitattributes"} | LISTING_DIRS
    tree_path = f"/api/models/{repo_id}/tree/main"

    aux_hub.request_log.clear()
    entries = list(aux.list_repo_tree(repo_id, recursive=True))
    assert len(entries) == len(all_entries) == 12
    assert sorted(e.path for e in entries) == sorted(all_entries)  # each exactly once
    pages = [r for r in list(aux_hub.request_log) if r == ("GET", tree_path)]
    assert len(pages) >= math.ceil(12 / 3)

    flat = [e.path for e in aux.list_repo_tree(repo_id)]
    assert sorted(flat) == sorted(
        [
            ".gitattributes",
            "config.json",
            "hello.txt",
            "empty.txt",
            "zeros.bin",
            "weights.bin",
            "sub",
            "dir with space",
        ]
    )

    # The raw first page holds at most 3 entries and announces the next one.
    r = httpx2.get(f"{aux_hub.url}{tree_path}", params={"recursive": "true"}, headers=auth(hub.write_token))
    assert r.status_code == 200
    assert 1 <= len(r.json()) <= 3
    assert 'rel="next"' in r.headers.get("link", "")

    # Commits page the same way: 2 more commits make 5, each listed once, newest first.
    extra = [
        aux.upload_file(path_or_fileobj=f"{i}\n".encode(), path_in_repo=f"n{i}.txt", repo_id=repo_id).oid
        for i in range(2)
    ]
    assert commit_ids(aux, repo_id) == [extra[1], extra[0], repo["c2"], repo["c1"], repo["initial"]]


# ----------------------------------------------------------------------------- 4. downloads


def test_04_downloads(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    v1 = {"a.txt": b"version one\n", "w.bin": random_bytes(200 * 1024, seed=4), "sub/b.txt": b"bee\n"}
    c1 = api.upload_folder(folder_path=write_files(tmp_path / "v1", v1), repo_id=repo_id).oid

    # Into the cache.
    cached = hf_hub_download(repo_id, "a.txt")
    assert file_sha256(cached) == sha256(v1["a.txt"])
    assert Path(cached).parts[-3:] == ("snapshots", c1, "a.txt")
    assert str(Path(os.environ["HF_HOME"]) / "hub") in cached
    cached_lfs = hf_hub_download(repo_id, "w.bin")
    assert file_sha256(cached_lfs) == sha256(v1["w.bin"])

    # Into a local_dir.
    local_dir = tmp_path / "local"
    got = hf_hub_download(repo_id, "w.bin", local_dir=local_dir)
    assert Path(got) == local_dir / "w.bin"
    assert file_sha256(got) == sha256(v1["w.bin"])
    got_sub = hf_hub_download(repo_id, "sub/b.txt", local_dir=local_dir)
    assert Path(got_sub) == local_dir / "sub" / "b.txt" and file_sha256(got_sub) == sha256(v1["sub/b.txt"])

    # A repeated download sends a HEAD and no GET (cache and local_dir alike).
    hub.server.request_log.clear()
    assert file_sha256(hf_hub_download(repo_id, "a.txt")) == sha256(v1["a.txt"])
    assert file_sha256(hf_hub_download(repo_id, "w.bin")) == sha256(v1["w.bin"])
    assert file_sha256(hf_hub_download(repo_id, "w.bin", local_dir=local_dir)) == sha256(v1["w.bin"])
    log = list(hub.server.request_log)
    assert [m for m, _ in log if m == "GET"] == [], log
    assert log.count(("HEAD", f"/{repo_id}/resolve/main/a.txt")) == 1, log
    assert log.count(("HEAD", f"/{repo_id}/resolve/main/w.bin")) == 2, log

    # Those HEADs really answer 200 with the metadata the client caches by.
    h = httpx2.head(resolve_url(hub.url, repo_id, "a.txt"), headers=auth(hub.write_token))
    assert h.status_code == 200
    assert h.headers["x-repo-commit"] == c1
    assert h.headers["etag"] == f'"{git_blob_sha1(v1["a.txt"])}"'
    assert h.headers["content-length"] == str(len(v1["a.txt"]))
    assert h.headers["accept-ranges"] == "bytes"
    assert "content-encoding" not in h.headers and "x-xet-hash" not in h.headers
    h = httpx2.head(resolve_url(hub.url, repo_id, "w.bin"), headers=auth(hub.write_token))
    assert h.status_code == 200
    assert h.headers["x-repo-commit"] == c1
    assert h.headers["x-linked-etag"] == f'"{sha256(v1["w.bin"])}"'
    assert h.headers["x-linked-size"] == str(len(v1["w.bin"]))
    assert h.headers["content-length"] == str(len(v1["w.bin"]))
    # A miss is 404 EntryNotFound with X-Repo-Commit, which the client caches.
    h = httpx2.head(resolve_url(hub.url, repo_id, "nope.txt"), headers=auth(hub.write_token))
    assert h.status_code == 404
    assert h.headers["x-error-code"] == "EntryNotFound"
    assert h.headers["x-repo-commit"] == c1
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "nope.txt")

    # main moves on; a download pinned to the old commit still returns the old bytes.
    v2 = b"version two\n"
    c2 = api.upload_file(path_or_fileobj=v2, path_in_repo="a.txt", repo_id=repo_id).oid
    assert c2 != c1
    fresh = tmp_path / "fresh-cache"
    assert file_sha256(hf_hub_download(repo_id, "a.txt", revision=c1, cache_dir=fresh)) == sha256(v1["a.txt"])
    assert file_sha256(hf_hub_download(repo_id, "a.txt", revision=c2, cache_dir=fresh)) == sha256(v2)
    assert file_sha256(hf_hub_download(repo_id, "a.txt")) == sha256(v2)
    assert file_sha256(hf_hub_download(repo_id, "a.txt", revision=c1)) == sha256(v1["a.txt"])

    # snapshot_download with allow_patterns.
    snap = Path(snapshot_download(repo_id, allow_patterns=["*.txt"], cache_dir=tmp_path / "snap"))
    assert snap.parts[-2:] == ("snapshots", c2)
    got_files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    assert got_files == ["a.txt", "sub/b.txt"]
    assert file_sha256(snap / "a.txt") == sha256(v2)
    assert file_sha256(snap / "sub/b.txt") == sha256(v1["sub/b.txt"])
    old_snap = Path(snapshot_download(repo_id, revision=c1, local_dir=tmp_path / "snap-old"))
    for path, data in v1.items():
        assert file_sha256(old_snap / path) == sha256(data), path


# ----------------------------------------------------------------------------- 5. HfFileSystem


def test_05_hf_file_system(hub, api, repo_id, tmp_path, monkeypatch):
    import huggingface_hub.hf_file_system as hffs_module

    api.create_repo(repo_id)
    data = random_bytes(64 * 1024, seed=5)
    files = {
        "data.bin": data,
        "a.txt": b"a\n",
        "docs/b.txt": b"b\n",
        "docs/deep/c.txt": b"c\n",
        "docs/d.md": b"d\n",
    }
    api.upload_folder(folder_path=write_files(tmp_path / "f", files), repo_id=repo_id)
    fs = HfFileSystem(endpoint=hub.url, token=hub.write_token, skip_instance_cache=True)

    assert sorted(fs.ls(repo_id, detail=False)) == sorted(
        f"{repo_id}/{p}" for p in (".gitattributes", "data.bin", "a.txt", "docs")
    )
    detail = {e["name"]: e for e in fs.ls(f"{repo_id}/docs", detail=True)}
    assert detail[f"{repo_id}/docs/b.txt"]["type"] == "file" and detail[f"{repo_id}/docs/b.txt"]["size"] == 2
    assert detail[f"{repo_id}/docs/deep"]["type"] == "directory"
    assert sorted(fs.glob(f"{repo_id}/**/*.txt")) == sorted(
        f"{repo_id}/{p}" for p in ("a.txt", "docs/b.txt", "docs/deep/c.txt")
    )

    # open(..., "w") commits on close.
    before = api.model_info(repo_id).sha
    with fs.open(f"{repo_id}/written/by-fs.txt", "w") as f:
        f.write("written through fsspec\n")
    after = api.model_info(repo_id).sha
    assert after != before and commit_ids(api, repo_id)[:2] == [after, before]
    written = hf_hub_download(repo_id, "written/by-fs.txt", cache_dir=tmp_path / "c")
    assert file_sha256(written) == sha256(b"written through fsspec\n")
    assert fs.cat(f"{repo_id}/written/by-fs.txt") == b"written through fsspec\n"

    # Seek to 1000 and read 4096 bytes: a ranged GET answered with 206.
    responses = []
    real_backoff = hffs_module.http_backoff

    def recording_backoff(method, url, *args, **kwargs):
        response = real_backoff(method, url, *args, **kwargs)
        responses.append((method, kwargs.get("headers", {}).get("range"), response))
        return response

    monkeypatch.setattr(hffs_module, "http_backoff", recording_backoff)
    with fs.open(f"{repo_id}/data.bin", "rb", block_size=4096) as f:
        f.seek(1000)
        chunk = f.read(4096)
    assert sha256(chunk) == sha256(data[1000:5096])
    ranged = [(rng, r) for m, rng, r in responses if m == "GET" and rng is not None]
    assert ranged, responses
    rng, response = ranged[0]
    start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
    assert start <= 1000 and end >= 5095
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.content == data[start : end + 1]

    # Raw ranges: suffix range, and a start at EOF is unsatisfiable.
    url = resolve_url(hub.url, repo_id, "data.bin")
    r = httpx2.get(url, headers={**auth(hub.write_token), "Range": "bytes=-10"})
    assert r.status_code == 206
    assert r.content == data[-10:]
    assert r.headers["content-range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
    assert r.headers["content-length"] == "10"
    r = httpx2.get(url, headers={**auth(hub.write_token), "Range": "bytes=1000-5095"})
    assert r.status_code == 206 and r.content == data[1000:5096]
    assert r.headers["content-range"] == f"bytes 1000-5095/{len(data)}"
    r = httpx2.get(url, headers={**auth(hub.write_token), "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(data)}"


# ----------------------------------------------------------------------------- 6. cards


def test_06_cards(hub, api, repo_id):
    api.create_repo(repo_id)
    card_data = ModelCardData(
        language="en",
        license="mit",
        library_name="hubtools",
        pipeline_tag="text-classification",
        tags=["roundtrip", "tiny"],
    )
    card = ModelCard.from_template(
        card_data, model_id=repo_id.split("/")[1], model_description="A round trip."
    )
    commit_url = card.push_to_hub(repo_id, commit_message="add card")
    head = api.model_info(repo_id).sha
    assert str(commit_url).endswith(f"/commit/{head}")

    loaded = ModelCard.load(repo_id)
    assert str(loaded) == str(card)
    assert loaded.data.to_dict() == card.data.to_dict()
    readme = hf_hub_download(repo_id, "README.md")
    assert file_sha256(readme) == sha256(str(card).encode())

    info = api.model_info(repo_id)
    assert info.card_data is not None
    assert info.card_data.to_dict() == card.data.to_dict()
    assert {"roundtrip", "tiny"} <= set(info.tags)
    assert info.library_name == "hubtools"
    assert info.pipeline_tag == "text-classification"

    # Dataset card.
    ds_repo = api.create_repo(new_name(), repo_type="dataset").repo_id
    ds_data = DatasetCardData(
        language=["en"], license="mit", pretty_name="Round trip", task_categories=["text-classification"]
    )
    ds_card = DatasetCard.from_template(ds_data, pretty_name="Round trip", dataset_summary="Rows for a test.")
    ds_card.push_to_hub(ds_repo)
    ds_loaded = DatasetCard.load(ds_repo)
    assert str(ds_loaded) == str(ds_card)
    assert ds_loaded.data.to_dict() == ds_card.data.to_dict()
    assert api.dataset_info(ds_repo).card_data.to_dict() == ds_card.data.to_dict()

    # Unparseable YAML, and front matter that is not a mapping, are refused (ValueError),
    # before anything is committed.
    for bad in (b"---\nlicense: [mit\n---\n# broken\n", b"---\n- a\n- b\n---\n# a list\n"):
        with pytest.raises(ValueError, match="Invalid metadata in README.md"):
            api.upload_file(path_or_fileobj=bad, path_in_repo="README.md", repo_id=repo_id)
    assert api.model_info(repo_id).sha == head
    # The endpoint itself always answers JSON.
    r = httpx2.post(
        f"{hub.url}/api/validate-yaml", json={"content": "---\nlicense: [mit\n---\n", "repoType": "model"}
    )
    assert r.status_code == 400 and r.json()["errors"] and r.json()["errors"][0]["message"]
    r = httpx2.post(f"{hub.url}/api/validate-yaml", json={"content": str(card), "repoType": "model"})
    assert r.status_code == 200 and r.json() == {"errors": [], "warnings": []}


# ----------------------------------------------------------------------------- 7. ModelHubMixin


class BytesModel(ModelHubMixin, library_name="hubtools-roundtrip", tags=["mixin-roundtrip"]):
    """A torch-free model: its weights are a byte string in payload.bin."""

    def __init__(self, size: int = 16, seed: int = 0):
        self.size = size
        self.seed = seed
        self.payload = random_bytes(size, seed)

    def _save_pretrained(self, save_directory: Path) -> None:
        (Path(save_directory) / "payload.bin").write_bytes(self.payload)

    @classmethod
    def _from_pretrained(
        cls, *, model_id, revision, cache_dir, force_download, local_files_only, token, **kwargs
    ):
        model = cls(**kwargs)
        path = hf_hub_download(
            model_id,
            "payload.bin",
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        model.payload = Path(path).read_bytes()
        return model


def test_07_model_hub_mixin(hub, api, repo_id, tmp_path):
    model = BytesModel(size=100_000, seed=7)
    model.payload = random_bytes(100_000, seed=70)  # differs from what __init__ would regenerate
    commit_url = model.push_to_hub(repo_id, commit_message="push mixin")
    head = api.model_info(repo_id).sha
    assert str(commit_url).endswith(f"/commit/{head}")

    local = tmp_path / "saved"
    model.save_pretrained(local)
    for name in ("payload.bin", "config.json"):
        remote = hf_hub_download(repo_id, name)
        assert file_sha256(remote) == file_sha256(local / name), name
    assert json.loads((local / "config.json").read_text()) == {"size": 100_000, "seed": 7}
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "README.md", "config.json", "payload.bin"}

    reloaded = BytesModel.from_pretrained(repo_id)
    assert (reloaded.size, reloaded.seed) == (100_000, 7)
    assert sha256(reloaded.payload) == sha256(model.payload)
    card = ModelCard.load(repo_id)
    assert card.data.library_name == "hubtools-roundtrip"
    assert "mixin-roundtrip" in card.data.tags


# ----------------------------------------------------------------------------- 8. transformers, peft


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(special + [f"w{i}" for i in range(100 - len(special))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def test_08_transformers_and_peft(hub, api, repo_id):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    tokenizer = _tiny_tokenizer()
    model.push_to_hub(repo_id, commit_message="push model")
    tokenizer.push_to_hub(repo_id, commit_message="push tokenizer")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        api.list_repo_files(repo_id)
    )
    assert [c.title for c in api.list_repo_commits(repo_id)][:2] == ["push tokenizer", "push model"]

    loaded = AutoModel.from_pretrained(repo_id).eval()
    loaded_tok = AutoTokenizer.from_pretrained(repo_id)
    assert type(loaded) is BertModel
    assert loaded_tok.get_vocab() == tokenizer.get_vocab()

    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key

    text = ["w1 w2 w3 unknown w94", "w5 w6"]
    enc = tokenizer(text, return_tensors="pt", padding=True)
    enc_loaded = loaded_tok(text, return_tensors="pt", padding=True)
    assert torch.equal(enc["input_ids"], enc_loaded["input_ids"])
    with torch.no_grad():
        out = model(**enc)
        out_loaded = loaded(**enc_loaded)
    assert (out.last_hidden_state - out_loaded.last_hidden_state).abs().max().item() == 0.0
    assert (out.pooler_output - out_loaded.pooler_output).abs().max().item() == 0.0

    # A LoRA adapter with non-zero B matrices, pushed and reloaded on a fresh base.
    adapter_repo = f"{hub.user}/{new_name()}"
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(8)
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    peft_model.push_to_hub(adapter_repo, commit_message="push adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(api.list_repo_files(adapter_repo))

    base = AutoModel.from_pretrained(repo_id).eval()
    reloaded = PeftModel.from_pretrained(base, adapter_repo).eval()
    lora_expected = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    lora_got = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert len(lora_expected) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    assert lora_expected.keys() == lora_got.keys()
    for key in lora_expected:
        assert torch.equal(lora_expected[key], lora_got[key]), key
    with torch.no_grad():
        assert torch.equal(peft_model(**enc).last_hidden_state, reloaded(**enc).last_hidden_state)


# ----------------------------------------------------------------------------- 9. datasets


def test_09_datasets_push_and_load(hub, api, repo_id):
    from datasets import Dataset, load_dataset

    rows = {
        "idx": list(range(30)),
        "text": [f"row number {i}" for i in range(30)],
        "score": [i / 4 for i in range(30)],
    }
    ds = Dataset.from_dict(rows)
    ds.push_to_hub(repo_id, commit_message="push default")
    second = Dataset.from_dict({"idx": list(range(7)), "label": [f"L{i % 3}" for i in range(7)]})
    second.push_to_hub(repo_id, config_name="second", commit_message="push second")

    loaded = load_dataset(repo_id, split="train")
    assert loaded.num_rows == 30
    assert loaded.to_dict() == rows
    loaded_second = load_dataset(repo_id, "second", split="train")
    assert loaded_second.to_dict() == second.to_dict()

    info = api.dataset_info(repo_id)
    configs = {c["config_name"] for c in info.card_data.to_dict()["configs"]}
    assert configs == {"default", "second"}
    files = api.list_repo_files(repo_id, repo_type="dataset")
    assert "README.md" in files
    assert len([f for f in files if f.endswith(".parquet")]) == 2


# ----------------------------------------------------------------------------- 10. other operations


def test_10_file_branch_tag_pr_operations(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    base = {
        "a.txt": b"alpha\n",
        "w.bin": random_bytes(100 * 1024, seed=10),
        "dir/x.txt": b"x\n",
        "dir/y.txt": b"y\n",
        "keep.txt": b"keep\n",
    }
    c0 = api.upload_folder(
        folder_path=write_files(tmp_path / "base", base), repo_id=repo_id, commit_message="base"
    ).oid
    initial = commit_ids(api, repo_id)[-1]

    c1 = api.upload_file(
        path_or_fileobj=b"new\n", path_in_repo="new.txt", repo_id=repo_id, commit_message="add new"
    )
    assert c1.oid != c0
    c2 = api.delete_file("keep.txt", repo_id, commit_message="delete keep").oid
    assert api.file_exists(repo_id, "keep.txt") is False
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("keep.txt", repo_id)
    c3 = api.delete_folder("dir", repo_id, commit_message="delete dir").oid
    c4 = api.create_commit(
        repo_id,
        operations=[
            CommitOperationCopy(src_path_in_repo="w.bin", path_in_repo="copies/w.bin"),
            CommitOperationCopy(src_path_in_repo="a.txt", path_in_repo="copies/a.txt"),
        ],
        commit_message="copy files",
    ).oid
    assert sorted(api.list_repo_files(repo_id)) == sorted(
        [".gitattributes", "a.txt", "w.bin", "new.txt", "copies/w.bin", "copies/a.txt"]
    )
    tree = tree_by_path(api, repo_id, path_in_repo="copies")
    assert_file_entry(tree["copies/w.bin"], base["w.bin"], lfs=True)
    assert_file_entry(tree["copies/a.txt"], base["a.txt"], lfs=False)
    for path, data in (
        ("copies/w.bin", base["w.bin"]),
        ("copies/a.txt", base["a.txt"]),
        ("new.txt", b"new\n"),
    ):
        assert file_sha256(hf_hub_download(repo_id, path)) == sha256(data), path

    commits = list(api.list_repo_commits(repo_id))
    assert [c.commit_id for c in commits] == [c4, c3, c2, c1.oid, c0, initial]
    assert [c.title for c in commits[:5]] == ["copy files", "delete dir", "delete keep", "add new", "base"]

    # A branch, an upload to it, a download by branch name.
    api.create_branch(repo_id, branch="dev")
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_branch(repo_id, branch="dev")
    assert exc.value.response.status_code == 409
    dev = api.upload_file(
        path_or_fileobj=b"on dev\n", path_in_repo="branch.txt", repo_id=repo_id, revision="dev"
    ).oid
    assert file_sha256(hf_hub_download(repo_id, "branch.txt", revision="dev")) == sha256(b"on dev\n")
    assert api.file_exists(repo_id, "branch.txt") is False
    assert commit_ids(api, repo_id, revision="dev")[:2] == [dev, c4]

    # A tag at c4, still serving the old bytes after main moves.
    api.create_tag(repo_id, tag="v1", revision=c4, tag_message="first release")
    c5 = api.upload_file(path_or_fileobj=b"alpha two\n", path_in_repo="a.txt", repo_id=repo_id).oid
    assert file_sha256(hf_hub_download(repo_id, "a.txt", revision="v1")) == sha256(base["a.txt"])
    assert file_sha256(hf_hub_download(repo_id, "a.txt")) == sha256(b"alpha two\n")

    # A pull request: create_commit(create_pr=True) lands on refs/pr/1, main is untouched.
    pr = api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(path_in_repo="pr.txt", path_or_fileobj=b"from a PR\n")],
        commit_message="open PR",
        create_pr=True,
    )
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    assert pr.pr_url == f"{hub.url}/{repo_id}/discussions/1"
    assert file_sha256(hf_hub_download(repo_id, "pr.txt", revision="refs/pr/1")) == sha256(b"from a PR\n")
    assert api.file_exists(repo_id, "pr.txt") is False
    assert commit_ids(api, repo_id, revision="refs/pr/1")[:2] == [pr.oid, c5]
    assert api.model_info(repo_id).sha == c5

    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert {(b.name, b.ref, b.target_commit) for b in refs.branches} == {
        ("main", "refs/heads/main", c5),
        ("dev", "refs/heads/dev", dev),
    }
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1", "refs/tags/v1", c4)]
    assert refs.converts == []
    assert [(p.ref, p.target_commit) for p in refs.pull_requests] == [("refs/pr/1", pr.oid)]


def test_10_hf_cli_upload_and_download(hub, api, repo_id, tmp_path):
    hf = Path(sys.executable).parent / "hf"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.write_token, "HF_HUB_DISABLE_XET": "1"}
    files = {
        "cli/a.txt": b"from the CLI\n",
        "cli/w.bin": random_bytes(150 * 1024, seed=11),
        "top.json": b"{}\n",
    }
    src = write_files(tmp_path / "src", files)

    up = subprocess.run(
        [str(hf), "upload", repo_id, str(src), ".", "--commit-message", "cli upload"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    commits = list(api.list_repo_commits(repo_id))
    assert commits[0].title == "cli upload" and len(commits) == 2
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *files])

    single = subprocess.run(
        [
            str(hf),
            "upload",
            repo_id,
            str(src / "top.json"),
            "renamed/top.json",
            "--commit-message",
            "one file",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert single.returncode == 0, single.stdout + single.stderr
    assert api.list_repo_commits(repo_id)[0].title == "one file"

    dest = tmp_path / "dest"
    down = subprocess.run(
        [str(hf), "download", repo_id, "--local-dir", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == sorted([".gitattributes", "renamed/top.json", *files])
    for path, data in files.items():
        assert file_sha256(dest / path) == sha256(data), path
    assert file_sha256(dest / "renamed/top.json") == sha256(files["top.json"])

    one = subprocess.run(
        [str(hf), "download", repo_id, "cli/w.bin", "--local-dir", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert file_sha256(tmp_path / "one" / "cli/w.bin") == sha256(files["cli/w.bin"])


# ----------------------------------------------------------------------------- 11. Xet switched on

XET_UPLOAD_FAILS = r"""
import json, sys
from huggingface_hub import HfApi, constants
from huggingface_hub.utils._runtime import is_xet_available
out = {"xet_disabled": constants.HF_HUB_DISABLE_XET, "xet_available": is_xet_available()}
try:
    HfApi().upload_folder(folder_path=sys.argv[2], repo_id=sys.argv[1], commit_message="xet upload")
    out["error"] = None
except Exception as exc:
    out["error"] = {"type": type(exc).__name__, "connection": isinstance(exc, ConnectionError), "msg": str(exc)}
print(json.dumps(out))
"""

XET_REGULAR_ONLY_ROUNDTRIP = r"""
import hashlib, json, sys, uuid
from pathlib import Path
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.utils._runtime import is_xet_available
folder, other = sys.argv[1], sys.argv[2]
api = HfApi()
repo_id = api.create_repo("xet-" + uuid.uuid4().hex[:8]).repo_id
first = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="regular only")
n1 = len(api.list_repo_commits(repo_id))
second = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="again")
n2 = len(api.list_repo_commits(repo_id))
tree = {e.path: {"size": e.size, "lfs": e.lfs is not None, "oid": e.blob_id}
        for e in api.list_repo_tree(repo_id, recursive=True) if hasattr(e, "size")}
digests = {}
for path in tree:
    digests[path] = hashlib.sha256(Path(hf_hub_download(repo_id, path)).read_bytes()).hexdigest()
third = api.upload_folder(folder_path=other, repo_id=repo_id, delete_patterns=["*.txt"], commit_message="prune")
print(json.dumps({
    "xet_disabled": constants.HF_HUB_DISABLE_XET, "xet_available": is_xet_available(),
    "repo_id": repo_id, "first": first.oid, "second": second.oid, "third": third.oid,
    "commits": [n1, n2], "tree": tree, "sha256": digests,
    "files_after_prune": sorted(api.list_repo_files(repo_id)),
}))
"""


def test_11_xet_on_default_server_fails_with_hint(hub, api, repo_id, tmp_path, caplog):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    folder = write_files(
        tmp_path / "bin", {"model.bin": random_bytes(4096, seed=111), "notes.md": b"# notes\n"}
    )

    with caplog.at_level(logging.WARNING):
        out = run_child(XET_UPLOAD_FAILS, [repo_id, str(folder)], child_env(hub.url, hub.write_token))
    assert out["xet_disabled"] is False and out["xet_available"] is True, out
    assert out["error"] is not None, "upload with Xet on should fail against a server without Xet"
    assert out["error"]["connection"] is True, out["error"]
    assert "xet-write-token" in out["error"]["msg"], out["error"]
    # Nothing was committed, and the server logged the hint (hf_xet shows only status and URL).
    assert api.model_info(repo_id).sha == head
    hints = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "HF_HUB_DISABLE_XET" in r.getMessage()
    ]
    assert hints, [r.getMessage() for r in caplog.records]

    # The token route itself: 404 with the hint, never a 5xx.
    r = httpx2.get(f"{hub.url}/api/models/{repo_id}/xet-write-token/main", headers=auth(hub.write_token))
    assert r.status_code == 404
    assert "HF_HUB_DISABLE_XET=1" in r.headers["x-error-message"]
    assert "HF_HUB_DISABLE_XET=1" in r.json()["error"]


def test_11_xet_on_regular_only_server_round_trip_2(hub, hub_proc, tmp_path):
    server = hub_proc(tmp_path / "regular-data", "--regular-only")
    files = folder_files()
    folder = write_files(tmp_path / "folder", files)
    other = write_files(tmp_path / "other", {"extra.json": b'{"extra": true}\n'})

    out = run_child(
        XET_REGULAR_ONLY_ROUNDTRIP,
        [str(folder), str(other)],
        child_env(server.url, server.token),
        timeout=110,
    )
    assert out["xet_disabled"] is False and out["xet_available"] is True, out
    assert out["repo_id"].startswith(f"{hub.user}/xet-")
    assert SHA1_RE.match(out["first"])
    assert out["second"] == out["first"]  # identical re-upload: same commit id
    assert out["commits"] == [2, 2]
    assert set(out["tree"]) == set(files) | {".gitattributes"}
    for path, data in files.items():
        entry = out["tree"][path]
        assert entry["lfs"] is False, f"{path} must be regular on a --regular-only server"
        assert entry["size"] == len(data) and entry["oid"] == git_blob_sha1(data), path
        assert out["sha256"][path] == sha256(data), path
    assert out["third"] != out["first"]
    assert out["files_after_prune"] == sorted([".gitattributes", "config.json", "extra.json", "weights.bin"])
