"""Inline files of a commit are made durable together; gc never runs beside a server and spares
blobs that a commit has just reused."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid

import httpx2
import pytest
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from hubtools.hub.server import fsck
from hubtools.hub.server.cli import hub_group
from hubtools.hub.server.store import DataDirInUse, Store


def blob(data_dir, content: bytes):
    sha = hashlib.sha256(content).hexdigest()
    return data_dir / "blobs" / sha[:2] / sha[2:4] / sha


def test_many_small_files_in_one_commit(hub, repo_id, tmp_path):
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    files = {f"d{i % 7}/f{i}.txt": f"{uuid.uuid4()} {i}\n".encode() * 3 for i in range(300)}
    files["d0/dup.txt"] = files["d0/f0.txt"]  # the same content twice is one blob
    api.create_commit(repo_id, [CommitOperationAdd(p, c) for p, c in files.items()], commit_message="many")
    assert len(api.list_repo_files(repo_id)) == len(files) + 1
    for path in ("d0/f0.txt", "d3/f3.txt", "d0/dup.txt"):
        assert open(hf_hub_download(repo_id, path, cache_dir=tmp_path), "rb").read() == files[path]
    for content in files.values():
        assert blob(hub.data_dir, content).stat().st_mode & 0o777 == 0o400


def test_a_refused_commit_leaves_no_blob_and_no_temp_file(hub, repo_id):
    HfApi(token=hub.write_token).create_repo(repo_id)
    content = f"never committed {uuid.uuid4()}".encode()
    lines = [
        {"key": "header", "value": {"summary": "bad"}},
        {"key": "file", "value": {"path": "ok.txt", "content": base64.b64encode(content).decode(),
                                  "encoding": "base64"}},
        {"key": "bogus", "value": {}},
    ]
    r = httpx2.post(f"{hub.url}/api/models/{repo_id}/commit/main",
                    content="\n".join(json.dumps(line) for line in lines).encode(),
                    headers={"Authorization": f"Bearer {hub.write_token}", "Content-Type": "application/x-ndjson"})
    assert r.status_code == 400
    assert not blob(hub.data_dir, content).exists()
    assert not any(p.name.endswith(".part") and content in p.read_bytes() for p in (hub.data_dir / "tmp").iterdir())


def test_gc_refuses_to_run_beside_a_server_and_spares_reused_blobs(hub_proc, tmp_path):
    data = tmp_path / "hub"
    content = f"orphan then reused {uuid.uuid4()}".encode()
    store = Store(data)
    store.put_blob_bytes(content)  # an orphan, two hours old
    store.close()
    old = time.time() - 2 * 3600
    os.utime(blob(data, content), (old, old))

    server = hub_proc(data)
    with pytest.raises(DataDirInUse):
        fsck(data, gc=True)
    result = CliRunner().invoke(hub_group, ["fsck", "--data", str(data), "--gc"])
    assert result.exit_code == 1 and "stop the server" in result.output
    assert blob(data, content).exists() and fsck(data).orphans  # the read-only check runs beside the server

    api = HfApi(endpoint=server.url, token=server.token)
    api.create_repo("testuser/reuse")
    api.upload_file(path_or_fileobj=content, path_in_repo="again.txt", repo_id="testuser/reuse")
    assert blob(data, content).stat().st_mtime > time.time() - 600  # reuse renewed the grace period
    server.stop()
    report = fsck(data, gc=True)
    assert report.ok and report.orphans == [] and blob(data, content).exists()
