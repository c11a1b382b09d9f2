"""Restart persistence, crash safety and concurrency of the local Hub server
(the robustness cases a Hub server must survive), the known hashes it must report, and the
smoke run of the throughput benchmark.

Servers started with ``hub_proc`` run in their own process and their clients pass
``endpoint=`` explicitly; everything else talks to the session ``hub``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile

REPO_ROOT = Path(__file__).resolve().parents[2]

# Known answers, computed in Python and checked with `git hash-object`.
EMPTY_GIT_SHA1 = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
HELLO_GIT_SHA1 = "ce013625030ba8dba906f756967f9e9ca394464a"
ZEROS_1MIB_SHA256 = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"
ZEROS_1MIB_POINTER_SIZE = 132
ZEROS_1MIB_POINTER_OID = "9bf2820abd0acc86f31fc02ce312debf25384d12"

STALE_PARENT_MESSAGE = "A commit has happened since. Please refresh and try again."


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def blob_path(data_dir: Path, oid: str) -> Path:
    return Path(data_dir) / "blobs" / oid[:2] / oid[2:4] / oid


def blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (Path(data_dir) / "blobs").rglob("*") if p.is_file()]


def tmp_entries(data_dir: Path) -> set[str]:
    tmp = Path(data_dir) / "tmp"
    return {p.name for p in tmp.iterdir()} if tmp.exists() else set()


def new_repo_id(user: str) -> str:
    return f"{user}/r-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lfs_upload_href(url: str, token: str, repo: str, oid: str, size: int) -> str:
    """A real LFS batch call, as the client makes it, for one object; returns its upload href."""
    response = httpx.post(
        f"{url}/{repo}.git/info/lfs/objects/batch",
        headers={
            **auth(token),
            "Accept": "application/vnd.git-lfs+json",
            "Content-Type": "application/vnd.git-lfs+json",
        },
        content=json.dumps(
            {
                "operation": "upload",
                "transfers": ["basic", "multipart"],
                "objects": [{"oid": oid, "size": size}],
                "hash_algo": "sha256",
                "ref": {"name": "main"},
            }
        ),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (obj,) = response.json()["objects"]
    return obj["actions"]["upload"]["href"]


def commit_ndjson(url: str, token: str, repo: str, lines: list[dict]) -> httpx.Response:
    return httpx.post(
        f"{url}/api/models/{repo}/commit/main",
        headers={**auth(token), "Content-Type": "application/x-ndjson"},
        content=b"\n".join(json.dumps(line).encode() for line in lines),
        timeout=30,
    )


def snapshot(api: HfApi, repo: str, endpoint: str, token: str, cache_dir: Path) -> dict:
    """Everything a client can observe about a repo, file bytes included (as sha256)."""
    info = api.model_info(repo, files_metadata=True)
    refs = api.list_repo_refs(repo, include_pull_requests=True)
    revisions = ["main", "dev", "v1", "refs/pr/1"]
    state = {
        "sha": info.sha,
        "private": info.private,
        "last_modified": info.last_modified,
        "card": info.card_data.to_dict() if info.card_data is not None else None,
        "siblings": sorted(
            (s.rfilename, s.size, s.blob_id, dict(s.lfs) if s.lfs else None) for s in info.siblings
        ),
        "branches": sorted((b.name, b.target_commit) for b in refs.branches),
        "tags": sorted((t.name, t.target_commit) for t in refs.tags),
        "pull_requests": sorted((p.name, p.ref, p.target_commit) for p in refs.pull_requests or []),
        "commits": {},
        "trees": {},
        "bytes": {},
    }
    for rev in revisions:
        state["commits"][rev] = [
            (c.commit_id, c.title, c.created_at) for c in api.list_repo_commits(repo, revision=rev)
        ]
        entries = list(api.list_repo_tree(repo, revision=rev, recursive=True))
        state["trees"][rev] = sorted(
            (
                e.path,
                type(e).__name__,
                getattr(e, "size", None),
                getattr(e, "blob_id", None) or getattr(e, "tree_id", None),
                dict(e.lfs) if getattr(e, "lfs", None) else None,
            )
            for e in entries
        )
        state["bytes"][rev] = {
            e.path: file_sha256(
                hf_hub_download(
                    repo, e.path, revision=rev, cache_dir=cache_dir, endpoint=endpoint, token=token
                )
            )
            for e in entries
            if isinstance(e, RepoFile)
        }
    return state


# --------------------------------------------------------------------------- restart


def test_restart_keeps_everything(hub_proc, hub, tmp_path):
    data = tmp_path / "data"
    server = hub_proc(data)
    api = HfApi(endpoint=server.url, token=server.token)
    repo = new_repo_id(hub.user)
    api.create_repo(repo, private=True)

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 32}\n')
    (folder / "weights.bin").write_bytes(os.urandom(300_000))  # LFS through .gitattributes
    (folder / "sub" / "notes.txt").write_text("regular file\n")
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- restart-test\n---\n# Restart test\n")
    api.upload_folder(folder_path=folder, repo_id=repo, commit_message="first")
    api.create_branch(repo, branch="dev")
    api.upload_file(path_or_fileobj=b"dev only\n", path_in_repo="dev.txt", repo_id=repo, revision="dev")
    api.create_tag(repo, tag="v1")
    api.upload_file(
        path_or_fileobj=b"later\n", path_in_repo="later.txt", repo_id=repo, commit_message="second"
    )
    api.upload_file(
        path_or_fileobj=b"proposal\n",
        path_in_repo="pr.txt",
        repo_id=repo,
        create_pr=True,
        commit_message="a PR",
    )
    # A setting changed after creation must persist too.
    flipped = new_repo_id(hub.user)
    api.create_repo(flipped)
    response = httpx.put(
        f"{server.url}/api/models/{flipped}/settings",
        headers=auth(server.token),
        json={"private": True},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert api.model_info(flipped).private is True

    before = snapshot(api, repo, server.url, server.token, tmp_path / "cache-before")
    assert before["private"] is True
    assert [p[0] for p in before["pull_requests"]] == ["refs/pr/1"]
    assert before["card"]["license"] == "mit"
    assert len(before["commits"]["main"]) >= 3
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.url, token=False).model_info(repo)

    exit_status = server.stop(signal.SIGTERM)
    restarted = hub_proc(data)
    api = HfApi(endpoint=restarted.url, token=restarted.token)
    after = snapshot(api, repo, restarted.url, restarted.token, tmp_path / "cache-after")
    assert after == before

    anonymous = HfApi(endpoint=restarted.url, token=False)
    for private_repo in (repo, flipped):
        with pytest.raises(RepositoryNotFoundError):
            anonymous.model_info(private_repo)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            repo, "config.json", cache_dir=tmp_path / "cache-anon", endpoint=restarted.url, token=False
        )

    # The next commit builds on the old head: parent_commit is accepted, and the history extends it.
    old_head = before["sha"]
    info = api.upload_file(
        path_or_fileobj=b"after restart\n",
        path_in_repo="after.txt",
        repo_id=repo,
        parent_commit=old_head,
        commit_message="third",
    )
    commits = [c.commit_id for c in api.list_repo_commits(repo)]
    assert commits == [info.oid] + [c[0] for c in before["commits"]["main"]]
    # PR numbers continue where they stopped.
    pr = api.upload_file(
        path_or_fileobj=b"second proposal\n", path_in_repo="pr2.txt", repo_id=repo, create_pr=True
    )
    assert pr.pr_num == 2
    assert exit_status == 0, f"SIGTERM should stop the server cleanly, got exit status {exit_status}"


def test_sigkill_during_lfs_put_leaves_no_trace(hub_proc, hub, tmp_path):
    data = tmp_path / "data"
    server = hub_proc(data)
    api = HfApi(endpoint=server.url, token=server.token)
    repo = new_repo_id(hub.user)
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"before\n", path_in_repo="before.txt", repo_id=repo)
    head = api.model_info(repo).sha

    payload = os.urandom(4 * 2**20)
    oid = sha256_hex(payload)
    href = lfs_upload_href(server.url, server.token, repo, oid, len(payload))
    parts = urlsplit(href)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request_head = (
        f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request_head + payload[: len(payload) // 2])
        # The body streams into tmp/ first: kill once the partial file is there.
        streamed = wait_until(lambda: tmp_entries(data) != set(), timeout=5)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    assert streamed, "the PUT body was not streamed into tmp/"

    restarted = hub_proc(data)
    assert tmp_entries(data) == set(), "tmp/ must be emptied at startup"
    assert not blob_path(data, oid).exists()
    assert [p for p in blob_files(data) if p.name == oid] == []
    api = HfApi(endpoint=restarted.url, token=restarted.token)
    assert api.model_info(repo).sha == head
    # The half-sent object is not associated with the repo either: a commit naming it is refused.
    response = commit_ndjson(
        restarted.url,
        restarted.token,
        repo,
        [
            {"key": "header", "value": {"summary": "use the lost object", "description": ""}},
            {
                "key": "lfsFile",
                "value": {"path": "lost.bin", "algo": "sha256", "oid": oid, "size": len(payload)},
            },
        ],
    )
    assert response.status_code == 422, response.text
    assert api.model_info(repo).sha == head

    # secret.key survives the restart, so the href signed before the crash is still good.
    moved = urlsplit(restarted.url)
    retry = httpx.put(urlsplit(href)._replace(netloc=moved.netloc).geturl(), content=payload, timeout=30)
    assert retry.status_code == 200, retry.text
    assert blob_path(data, oid).exists()
    assert (data / "secret.key").stat().st_mode & 0o777 == 0o600


def test_second_server_on_same_data_dir_is_refused(hub_proc, hub, tmp_path):
    data = tmp_path / "data"
    server = hub_proc(data)
    # Same token, default --user: had it started, it would have served that token as user "local".
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubtools.hub.server",
            "--port",
            "0",
            "--data",
            str(data),
            "--token",
            hub.write_token,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert f"data dir in use by pid {server.process.pid}" in second.stdout + second.stderr
    # The refused server must leave the data dir as it found it: the token still belongs to testuser.
    owner = HfApi(endpoint=server.url, token=server.token).whoami()["name"]
    assert owner == hub.user, f"a refused second server re-assigned the token to {owner!r}"


def test_unknown_data_format_is_refused(hub_proc, hub, tmp_path):
    data = tmp_path / "data"
    hub_proc(data).stop()
    (data / "FORMAT").write_text("hubtools-hub 99\n")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubtools.hub.server",
            "--port",
            "0",
            "--data",
            str(data),
            "--token",
            hub.write_token,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    assert "hubtools-hub 99" in refused.stdout + refused.stderr
    assert not refused.stdout.startswith("hubtools-hub listening")
    assert (data / "FORMAT").read_text() == "hubtools-hub 99\n"


def test_crash_before_db_commit_keeps_head(hub_proc, hub, tmp_path):
    from hubtools.hub.server import fsck

    data = tmp_path / "data"
    server = hub_proc(data)
    api = HfApi(endpoint=server.url, token=server.token)
    repo = new_repo_id(hub.user)
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"before\n", path_in_repo="before.txt", repo_id=repo)
    head = api.model_info(repo).sha
    commits = [c.commit_id for c in api.list_repo_commits(repo)]
    assert server.stop(signal.SIGTERM) == 0

    faulty = hub_proc(data, env={"HUBTOOLS_HUB_FAULT": "before_db_commit"})
    lost = b"written before the crash " + uuid.uuid4().hex.encode() + b"\n"
    with pytest.raises(httpx2.TransportError):
        HfApi(endpoint=faulty.url, token=faulty.token).upload_file(
            path_or_fileobj=lost, path_in_repo="crash.txt", repo_id=repo
        )
    assert faulty.process.wait(20) == 70

    restarted = hub_proc(data)
    api = HfApi(endpoint=restarted.url, token=restarted.token)
    assert api.model_info(repo).sha == head
    assert [c.commit_id for c in api.list_repo_commits(repo)] == commits
    assert "crash.txt" not in api.list_repo_files(repo)
    assert tmp_entries(data) == set()
    assert restarted.stop(signal.SIGTERM) == 0

    lost_oid = sha256_hex(lost)
    report = fsck(data)
    assert report.missing == []
    assert report.corrupt == []
    assert lost_oid in report.orphans
    assert blob_path(data, lost_oid).exists()

    # --gc removes only orphans older than an hour.
    report = fsck(data, gc=True)
    assert report.removed == []
    assert blob_path(data, lost_oid).exists()
    two_hours_ago = time.time() - 2 * 3600
    os.utime(blob_path(data, lost_oid), (two_hours_ago, two_hours_ago))
    report = fsck(data, gc=True)
    assert lost_oid in report.removed
    assert not blob_path(data, lost_oid).exists()
    report = fsck(data)
    assert (report.missing, report.corrupt, report.orphans) == ([], [], [])


def test_deleted_repo_leaves_orphans_and_fsck_finds_damage(hub_proc, hub, tmp_path):
    from hubtools.hub.server import fsck

    data = tmp_path / "data"
    server = hub_proc(data)
    api = HfApi(endpoint=server.url, token=server.token)
    doomed, kept = new_repo_id(hub.user), new_repo_id(hub.user)
    shared, own, regular = os.urandom(5000), os.urandom(6000), b"only in the deleted repo\n"
    for repo in (doomed, kept):
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=shared, path_in_repo="shared.bin", repo_id=repo)
    api.upload_file(path_or_fileobj=own, path_in_repo="own.bin", repo_id=doomed)
    api.upload_file(path_or_fileobj=regular, path_in_repo="regular.txt", repo_id=doomed)
    kept_text = b"only in the kept repo " + uuid.uuid4().hex.encode()
    api.upload_file(path_or_fileobj=kept_text, path_in_repo="kept.txt", repo_id=kept)
    old_head = api.model_info(doomed).sha
    api.delete_repo(doomed)

    # A repo re-created under the same name starts afresh: no old history, no old LFS objects.
    api.create_repo(doomed)
    assert api.list_repo_files(doomed) == [".gitattributes"]
    assert not api.revision_exists(doomed, old_head)
    response = commit_ndjson(
        server.url,
        server.token,
        doomed,
        [
            {"key": "header", "value": {"summary": "reuse", "description": ""}},
            {
                "key": "lfsFile",
                "value": {"path": "own.bin", "algo": "sha256", "oid": sha256_hex(own), "size": 6000},
            },
        ],
    )
    assert response.status_code == 422, response.text
    assert server.stop() == 0

    report = fsck(data)
    assert (report.missing, report.corrupt) == ([], [])
    assert sorted(report.orphans) == sorted([sha256_hex(own), sha256_hex(regular)])

    # Damage two referenced blobs: one loses a byte, one disappears.
    damaged, vanished = blob_path(data, sha256_hex(shared)), blob_path(data, sha256_hex(kept_text))
    damaged.chmod(0o644)
    damaged.write_bytes(shared[:-1])
    vanished.chmod(0o644)
    vanished.unlink()
    report = fsck(data)
    assert report.corrupt == [sha256_hex(shared)]
    assert report.missing == [vanished.name]


# --------------------------------------------------------------------------- concurrency


def test_parallel_upload_file_makes_one_linear_chain(hub, repo_id):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    before = [c.commit_id for c in api.list_repo_commits(repo_id)]
    contents = {f"p/f{i}.txt": f"file {i}\n".encode() for i in range(8)}
    barrier = threading.Barrier(len(contents))

    def upload(path: str) -> str:
        barrier.wait(30)
        return api.upload_file(
            path_or_fileobj=contents[path], path_in_repo=path, repo_id=repo_id, commit_message=f"add {path}"
        ).oid

    with ThreadPoolExecutor(len(contents)) as pool:
        oids = list(pool.map(upload, contents))

    commits = [c.commit_id for c in api.list_repo_commits(repo_id)]
    assert len(set(oids)) == 8
    assert len(commits) == len(before) + 8
    assert commits[8:] == before
    assert set(commits[:8]) == set(oids)
    # Each new commit contains all files of the one before it plus exactly one more: no lost update.
    for k, commit in enumerate(reversed(commits[:8]), start=1):
        present = [f for f in api.list_repo_files(repo_id, revision=commit) if f in contents]
        assert len(present) == k, (commit, present)
    tree = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True) if isinstance(e, RepoFile)}
    for path, data in contents.items():
        assert tree[path].blob_id == git_blob_sha1(data)


def test_parallel_create_repo_case_variants_one_wins(hub):
    name = f"Race-{uuid.uuid4().hex[:8]}"
    variants = [name, name.lower(), name.upper(), name.swapcase()]
    barrier = threading.Barrier(len(variants))

    def create(variant: str) -> httpx.Response:
        barrier.wait(30)
        return httpx.post(
            f"{hub.url}/api/repos/create",
            headers=auth(hub.write_token),
            json={"name": variant, "organization": None},
            timeout=30,
        )

    with ThreadPoolExecutor(len(variants)) as pool:
        responses = list(pool.map(create, variants))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409], [(r.status_code, r.text) for r in responses]
    for response in responses:
        assert response.json()["url"]
    (winner,) = [v for v, r in zip(variants, responses, strict=True) if r.status_code == 200]
    api = HfApi(token=hub.write_token)
    assert api.repo_exists(f"{hub.user}/{winner}")
    assert api.model_info(f"{hub.user}/{winner}").sha


def test_update_repo_settings_changes_visibility(hub, repo_id):
    """huggingface_hub 2.4.0 sends ``{"visibility": "private"|"public"}`` to the settings route."""
    api = HfApi(token=hub.write_token)
    anonymous = HfApi(token=False)
    api.create_repo(repo_id)
    api.update_repo_settings(repo_id, private=True)
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(repo_id)
    api.update_repo_settings(repo_id, visibility="public")
    assert api.model_info(repo_id).private is False
    assert anonymous.model_info(repo_id).id == repo_id


def test_same_content_uploaded_in_parallel_is_one_blob(hub, repo_id, tmp_path):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    payload = os.urandom(5 * 2**20)
    oid = sha256_hex(payload)
    tmp_before = tmp_entries(hub.data_dir)
    barrier = threading.Barrier(4)

    def upload(i: int) -> str:
        barrier.wait(30)
        return api.upload_file(path_or_fileobj=payload, path_in_repo=f"same/w{i}.bin", repo_id=repo_id).oid

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(upload, range(4)))

    assert [p for p in blob_files(hub.data_dir) if p.name == oid] == [blob_path(hub.data_dir, oid)]
    assert blob_path(hub.data_dir, oid).stat().st_mode & 0o777 == 0o400  # read-only, and private to the server's user
    assert tmp_entries(hub.data_dir) - tmp_before == set(), "temp files left behind"
    tree = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True) if isinstance(e, RepoFile)}
    for i in range(4):
        entry = tree[f"same/w{i}.bin"]
        assert entry.lfs is not None and entry.lfs.sha256 == oid and entry.size == len(payload)
    path = hf_hub_download(repo_id, "same/w3.bin", cache_dir=tmp_path / "cache")
    assert file_sha256(path) == oid


def test_stale_parent_commit_exactly_one_wins(hub, repo_id):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    head0 = api.model_info(repo_id).sha
    barrier = threading.Barrier(2)

    def commit(i: int):
        barrier.wait(30)
        try:
            return api.create_commit(
                repo_id,
                operations=[CommitOperationAdd(f"race{i}.txt", f"racer {i}\n".encode())],
                commit_message=f"race {i}",
                parent_commit=head0,
            )
        except HfHubHTTPError as error:
            return error

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(commit, range(2)))
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].response.status_code == 412
    assert lost[0].response.headers.get("X-Error-Message") == STALE_PARENT_MESSAGE
    commits = [c.commit_id for c in api.list_repo_commits(repo_id)]
    assert commits[:2] == [won[0].oid, head0]

    # A stale parent stays stale: a later commit on top of head0 is refused too.
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(
            path_or_fileobj=b"late\n", path_in_repo="late.txt", repo_id=repo_id, parent_commit=head0
        )
    assert excinfo.value.response.status_code == 412
    assert api.model_info(repo_id).sha == won[0].oid


def test_pinned_download_is_stable_while_main_moves(hub, repo_id, tmp_path):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    original = {"data.txt": b"version 0\n", "data.bin": os.urandom(256 * 1024)}
    pinned = api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(p, d) for p, d in original.items()],
        commit_message="v0",
    ).oid
    expected = {path: sha256_hex(data) for path, data in original.items()}
    stop = threading.Event()
    seen: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        rounds = 0
        try:
            while not stop.is_set() or rounds < 3:
                for path in expected:
                    local = hf_hub_download(
                        repo_id, path, revision=pinned, cache_dir=tmp_path / "cache", force_download=True
                    )
                    seen.append((path, file_sha256(local)))
                rounds += 1
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    # Both files of one commit change together: a listing of main must never mix two commits.
    versions = {(git_blob_sha1(original["data.txt"]), expected["data.bin"])}
    listings: list[tuple[str, str]] = []

    def lister() -> None:
        try:
            while not stop.is_set():
                tree = {e.path: e for e in api.list_repo_tree(repo_id) if isinstance(e, RepoFile)}
                listings.append((tree["data.txt"].blob_id, tree["data.bin"].lfs.sha256))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=lister, daemon=True)]
    for thread in threads:
        thread.start()
    last = {}
    for k in range(1, 6):
        last = {"data.txt": f"version {k}\n".encode(), "data.bin": os.urandom(256 * 1024)}
        versions.add((git_blob_sha1(last["data.txt"]), sha256_hex(last["data.bin"])))
        api.create_commit(
            repo_id, operations=[CommitOperationAdd(p, d) for p, d in last.items()], commit_message=f"v{k}"
        )
    stop.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert errors == []
    assert len(seen) >= 6
    assert set(seen) == set(expected.items())
    assert listings and set(listings) <= versions
    for path, data in last.items():
        assert file_sha256(hf_hub_download(repo_id, path, cache_dir=tmp_path / "cache-main")) == sha256_hex(
            data
        )


def test_two_repos_pushed_in_parallel(hub, tmp_path):
    api = HfApi(token=hub.write_token)
    shared = os.urandom(1 * 2**20)  # the same LFS object in both repos
    plans = {}
    for name in ("a", "b"):
        repo = new_repo_id(hub.user)
        api.create_repo(repo)
        folder = tmp_path / name
        folder.mkdir()
        files = {
            "shared.bin": shared,
            f"own-{name}.bin": os.urandom(600_000),
            f"own-{name}.txt": f"repo {name}\n".encode(),
        }
        for path, data in files.items():
            (folder / path).write_bytes(data)
        plans[repo] = (folder, files)

    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(api.upload_folder, folder_path=folder, repo_id=repo, commit_message="parallel push")
            for repo, (folder, _) in plans.items()
        ]
        for future in futures:
            future.result()

    for repo, (_, files) in plans.items():
        tree = {e.path: e for e in api.list_repo_tree(repo, recursive=True) if isinstance(e, RepoFile)}
        assert set(tree) == set(files) | {".gitattributes"}
        for path, data in files.items():
            local = hf_hub_download(repo, path, cache_dir=tmp_path / "cache")
            assert file_sha256(local) == sha256_hex(data)


# --------------------------------------------------------------------------- known answers


def test_known_answers(hub, repo_id, tmp_path):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    folder = tmp_path / "known"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "hello.txt").write_bytes(b"hello\n")
    (folder / "zeros.bin").write_bytes(bytes(2**20))
    api.upload_folder(folder_path=folder, repo_id=repo_id)
    sha = api.model_info(repo_id).sha

    expected = {
        "empty.txt": (0, EMPTY_GIT_SHA1, None),
        "hello.txt": (6, HELLO_GIT_SHA1, None),
        "zeros.bin": (2**20, ZEROS_1MIB_POINTER_OID, (ZEROS_1MIB_SHA256, 2**20, ZEROS_1MIB_POINTER_SIZE)),
    }

    def lfs_triple(lfs):
        return None if lfs is None else (lfs.sha256, lfs.size, lfs.pointer_size)

    tree = {e.path: e for e in api.list_repo_tree(repo_id) if isinstance(e, RepoFile)}
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    for path, (size, git_oid, lfs) in expected.items():
        assert (tree[path].size, tree[path].blob_id, lfs_triple(tree[path].lfs)) == (size, git_oid, lfs), path
        sibling = siblings[path]
        assert (sibling.size, sibling.blob_id, lfs_triple(sibling.lfs)) == (size, git_oid, lfs), path

    with httpx.Client(base_url=hub.url, headers=auth(hub.write_token), timeout=30) as http:
        for path, (size, git_oid, lfs) in expected.items():
            content_hash = lfs[0] if lfs else git_oid
            for method in ("HEAD", "GET"):
                response = http.request(method, f"/{repo_id}/resolve/main/{path}")
                assert response.status_code == 200, (method, path)
                headers = response.headers
                assert headers["X-Repo-Commit"] == sha
                assert headers["ETag"] == f'"{content_hash}"', (method, path)
                assert headers["Content-Length"] == str(size), (method, path)
                assert headers.get("Accept-Ranges") == "bytes"
                assert "Content-Encoding" not in headers and "X-Xet-Hash" not in headers
                if lfs:
                    assert headers["X-Linked-Etag"] == f'"{content_hash}"'
                    assert headers["X-Linked-Size"] == str(size)
                if method == "GET":
                    assert (
                        hashlib.sha256(response.content).hexdigest()
                        == hashlib.sha256((folder / path).read_bytes()).hexdigest()
                    )
            metadata = get_hf_file_metadata(hf_hub_url(repo_id, path), token=hub.write_token)
            assert (metadata.etag, metadata.commit_hash, metadata.size) == (content_hash, sha, size)


# --------------------------------------------------------------------------- benchmark


def test_hub_throughput_smoke(tmp_path):
    out = tmp_path / "out"
    # The benchmark sets its own HF_* environment before importing huggingface_hub.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "hub_throughput.py"), "--smoke", "--out", str(out),
         "--work", str(tmp_path / "work")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "hub_throughput.json").read_text())
    assert result["smoke"] is True and result["name"] == "hub_throughput"
    assert result["config"]["size_bytes"] == 8 * 2**20 and result["config"]["repeat"] == 1
    assert result["config"]["small_files"] == 100
    assert result["command"].startswith("python benchmarks/hub_throughput.py --smoke")
    # one run per round and case; the seed is the round index
    runs = {r["arm"]: r for r in result["runs"]}
    assert len(runs) == len(result["runs"])
    assert set(runs) == {"big_file", "big_file_process", "small_files", "validate_yaml", "model_info"}
    assert all(r["seed"] == 0 for r in result["runs"]) and result["seeds"] == [0]
    m = runs["big_file"]["metrics"]
    assert m["sha256_match"] is True and result["details"]["sha256_match"] is True
    for step in ("upload", "download", "copy", "copy_fsync"):
        assert m[f"{step}_s"] > 0
        assert m[f"{step}_mib_s"] == pytest.approx(8 / m[f"{step}_s"], rel=1e-6)
        assert m[f"{step}_vs_copy"] == pytest.approx(m[f"{step}_mib_s"] / m["copy_mib_s"], rel=1e-6)
    assert m["copy_vs_copy"] == 1.0
    # the same file against a server in its own process
    p = runs["big_file_process"]["metrics"]
    assert p["sha256_match"] is True
    for step in ("upload", "download"):
        assert p[f"{step}_s"] > 0
        assert p[f"{step}_mib_s"] == pytest.approx(8 / p[f"{step}_s"], rel=1e-6)
        assert p[f"{step}_vs_in_process"] == pytest.approx(p[f"{step}_mib_s"] / m[f"{step}_mib_s"], rel=1e-6)
    # many small files: every one comes back byte-identical
    s = runs["small_files"]["metrics"]
    assert s["files"] == 100 and s["sha256_match"] is True and s["files_differing"] == 0
    assert s["files_in_snapshot"] >= 100  # the uploaded files, and the repo's .gitattributes
    assert s["upload_s"] > 0 and s["download_s"] > 0
    assert s["upload_files_per_s"] == pytest.approx(100 / s["upload_s"], rel=1e-6)
    # validate-yaml: accepted, and GETs were timed while it ran
    v = runs["validate_yaml"]["metrics"]
    assert v["validate_yaml_status"] == 200 and 0.9e6 < v["yaml_bytes"] < 2**20
    assert v["validate_yaml_s"] > 0 and v["get_idle_median_ms"] > 0
    assert v["get_during_n"] >= 1 and v["get_during_max_ms"] > 0
    assert v["get_delay_ms"] == pytest.approx(v["get_during_max_ms"] - v["get_idle_median_ms"], rel=1e-6)
    i = runs["model_info"]["metrics"]
    assert i["card_bytes"] > 4 * 10**6 and i["commit_s"] > 0
    for key in ("first_ms", "cached_ms", "after_restart_first_ms", "after_restart_cached_ms"):
        assert i[key] > 0
    big, small, latency = result["tables"]
    assert [row[0].split()[0] for row in big["rows"]] == ["upload", "download", "copy", "copy", "upload", "download"]
    assert big["rows"][0][2] == pytest.approx(m["upload_mib_s"], abs=0.05)  # median of one round
    assert big["rows"][4][2] == pytest.approx(p["upload_mib_s"], abs=0.05)
    assert small["rows"][0][2] == pytest.approx(s["upload_s"], abs=5e-4)
    assert latency["rows"][2][2] == pytest.approx(v["get_delay_ms"], abs=0.05)
    md = (out / "hub_throughput.md").read_text()
    assert "| upload (HfApi.upload_file) | 1 |" in md
    assert "| upload (HfApi.upload_folder) | 1 |" in md
    assert "| upload (HfApi.upload_file), server in its own process | 1 |" in md
    assert not list((tmp_path / "work").iterdir())  # the temporary hub and files are removed
