"""Commit storage: a one-file commit stores O(changed files), and data dirs of the previous
format (a full file list per commit) are upgraded in place, all or nothing."""

from __future__ import annotations

import fcntl
import sqlite3

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubtools.hub.server.store import CHUNK_ENTRIES, CommitOp, Store


def _commit_files(store, repo, files: dict[str, bytes], title: str) -> str:
    ops, blobs = [], store.blob_batch()
    for path, data in files.items():
        sha, oid = blobs.add(data)
        ops.append(CommitOp("file", path, sha256=sha, size=len(data), git_oid=oid))
    blobs.publish()
    return store.commit(repo, "main", ops, title=title, message="", author="alice")[0]


def _rows(store, table: str) -> int:
    return store.read().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608


def test_a_one_file_commit_stores_only_what_changed(tmp_path):
    store = Store(tmp_path / "hub")
    try:
        repo = store.create_repo("model", "alice", "big", False, None, "alice")
        _commit_files(store, repo, {f"d{i % 20}/f{i}.txt": f"{i}\n".encode() for i in range(3000)}, "3000 files")
        before = _rows(store, "chunk_entries")
        shas = [_commit_files(store, repo, {f"d{k % 20}/f{k}.txt": f"new {k}\n".encode()}, f"c{k}")
                for k in range(40)]
        per_commit = (_rows(store, "chunk_entries") - before) / 40
        assert per_commit < 8 * CHUNK_ENTRIES, per_commit  # a full copy would be 3001 rows each
        for k in (0, 17, 39):
            manifest = store.manifest(repo, shas[k])
            assert len(manifest) == 3001
            assert store.read_blob(manifest[f"d{k % 20}/f{k}.txt"].sha256) == f"new {k}\n".encode()
            assert store.read_blob(manifest["d1/f41.txt"].sha256) == b"41\n"
        assert store.changes(repo, shas[:2]) == {shas[0]: {"d0/f0.txt"}, shas[1]: {"d1/f1.txt"}}
    finally:
        store.close()


def _downgrade_to_schema_1(data_dir) -> None:
    """Rewrite a data dir the way hubtools wrote it before chunked manifests."""
    conn = sqlite3.connect(data_dir / "hub.db")
    store = Store(data_dir)
    try:
        conn.execute(
            "CREATE TABLE entries(repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, "
            "commit_sha TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
            "is_lfs INTEGER NOT NULL, git_oid TEXT NOT NULL, PRIMARY KEY(repo_pk, commit_sha, path))"
        )
        for repo_pk, sha in conn.execute("SELECT repo_pk, sha FROM commits").fetchall():
            repo = next(r for t in ("model", "dataset", "space") for r in store.list_repos(t) if r.pk == repo_pk)
            conn.executemany(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(repo_pk, sha, e.path, e.sha256, e.size, int(e.is_lfs), e.git_oid)
                 for e in store.manifest(repo, sha).values()],
            )
    finally:
        store.close()
    for table in ("chunk_entries", "commit_manifests", "commit_changes"):
        conn.execute(f"DROP TABLE {table}")  # noqa: S608
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_data_dir_of_the_previous_format_is_upgraded(hub_proc, tmp_path):
    data = tmp_path / "hub"
    server = hub_proc(data)
    api = HfApi(endpoint=server.url, token=server.token)
    repo = api.create_repo("testuser/old-format").repo_id
    for k in range(3):
        api.upload_file(path_or_fileobj=f"v{k}".encode(), path_in_repo="v.txt", repo_id=repo)
        api.upload_file(path_or_fileobj=f"n{k}".encode(), path_in_repo=f"sub/n{k}.txt", repo_id=repo)
    api.upload_file(path_or_fileobj=b"\0weights", path_in_repo="w.bin", repo_id=repo)
    commits = [c.commit_id for c in api.list_repo_commits(repo)]
    tree = {e.path: (e.blob_id if hasattr(e, "blob_id") else e.tree_id)
            for e in api.list_repo_tree(repo, recursive=True)}
    last = {e.path: e.last_commit.oid for e in api.list_repo_tree(repo, expand=True)}
    server.stop()

    _downgrade_to_schema_1(data)
    restarted = hub_proc(data)
    api = HfApi(endpoint=restarted.url, token=restarted.token)
    assert [c.commit_id for c in api.list_repo_commits(repo)] == commits
    assert {e.path: (e.blob_id if hasattr(e, "blob_id") else e.tree_id)
            for e in api.list_repo_tree(repo, recursive=True)} == tree
    assert {e.path: e.last_commit.oid for e in api.list_repo_tree(repo, expand=True)} == last
    assert open(hf_hub_download(repo, "v.txt", revision=commits[3], cache_dir=tmp_path / "c",
                                endpoint=restarted.url, token=restarted.token), "rb").read() == b"v1"
    api.upload_file(path_or_fileobj=b"after", path_in_repo="after.txt", repo_id=repo)
    assert "after.txt" in api.list_repo_files(repo)
    restarted.stop()
    conn = sqlite3.connect(data / "hub.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone() is None
    conn.close()


def test_the_upgrade_never_runs_beside_a_server(tmp_path):
    data = tmp_path / "hub"
    Store(data).close()
    _downgrade_to_schema_1(data)
    with open(data / ".lock", "a+") as held:  # a server of the previous version holds the data dir
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="needs upgrading"):
            Store(data)
    Store(data).close()  # once it has stopped, the upgrade runs
    conn = sqlite3.connect(data / "hub.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    conn.close()
