"""Bad inputs, sent as raw HTTP with
httpx so the client cannot refuse them first.

Each test asserts the status, the error code or message (``X-Error-Code``,
``X-Error-Message`` and the JSON ``{"error": ...}`` body) and that the repo
head did not move. A response hook records every answer: none may be a 5xx, since the
client retries those five times.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from huggingface_hub import HfApi

LFS_HEADERS = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

BAD_PATHS = [
    "../x",
    "a/../../b",
    "/abs",
    "a//b",
    ".git/config",
    "a\\..\\b",
    "a\x00b",
    "x" * 2000,
    "dir/",
    "./x",
    "a/.cache/b",
    "tab\there",
]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def ndjson(*lines: dict) -> bytes:
    return b"\n".join(json.dumps(line).encode() for line in lines)


def header_line(summary: str = "bad input", **extra) -> dict:
    return {"key": "header", "value": {"summary": summary, "description": "", **extra}}


def file_line(path: str, data: bytes = b"x\n") -> dict:
    return {
        "key": "file",
        "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"},
    }


def assert_error(response: httpx.Response, status: int, code: str | None = None, message: str | None = None):
    """The error contract: status, X-Error-Code, and the same one-line message in
    X-Error-Message and in the JSON body (HEAD answers carry the headers only)."""
    context = (
        f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:300]!r}"
    )
    assert response.status_code == status, context
    if code is not None:
        assert response.headers.get("X-Error-Code") == code, context
    header_message = response.headers.get("X-Error-Message")
    assert header_message, context
    assert header_message.isascii() and "\n" not in header_message, context
    if response.request.method != "HEAD":
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], context
        assert body["error"] == header_message, context
    if message is not None:
        assert message in header_message, context


@pytest.fixture(scope="module")
def seen_5xx() -> list[str]:
    return []


@pytest.fixture(scope="module")
def http(hub, seen_5xx):
    """A raw client on the session hub. No default token: each request says which one it uses."""

    def record(response: httpx.Response) -> None:
        if response.status_code >= 500 and response.status_code != 501:
            seen_5xx.append(f"{response.request.method} {response.request.url} -> {response.status_code}")

    with httpx.Client(base_url=hub.url, timeout=30, event_hooks={"response": [record]}) as client:
        yield client


@pytest.fixture(autouse=True)
def no_5xx(seen_5xx):
    start = len(seen_5xx)
    yield
    assert seen_5xx[start:] == [], "the server answered a 5xx (never for a deterministic error)"


@pytest.fixture(scope="module")
def repo(hub) -> str:
    """A public repo with one regular and one LFS file, shared by the tests of this module."""
    repo_id = f"{hub.user}/bad-{uuid.uuid4().hex[:8]}"
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="a.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=os.urandom(4096), path_in_repo="w.bin", repo_id=repo_id)
    return repo_id


@pytest.fixture(scope="module")
def private_repo(hub) -> str:
    repo_id = f"{hub.user}/badp-{uuid.uuid4().hex[:8]}"
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret\n", path_in_repo="s.txt", repo_id=repo_id)
    return repo_id


def refs_of(http: httpx.Client, hub, repo_id: str) -> dict:
    response = http.get(f"/api/models/{repo_id}/refs", headers=bearer(hub.write_token))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def head(http, hub, repo):
    """Yields the head of `repo` and checks after the test that no ref of it moved."""
    before = refs_of(http, hub, repo)
    (main,) = [b["targetCommit"] for b in before["branches"] if b["name"] == "main"]
    yield main
    assert refs_of(http, hub, repo) == before, "a rejected request moved a ref"


def commit(http, hub, repo_id: str, body: bytes, token: str | None = "write", rev: str = "main"):
    token = hub.write_token if token == "write" else token
    return http.post(f"/api/models/{repo_id}/commit/{rev}", headers={**bearer(token), **NDJSON}, content=body)


def lfs_batch(http, hub, repo_id: str, objects: list[dict], token: str | None = "write", operation="upload"):
    token = hub.write_token if token == "write" else token
    payload = {
        "operation": operation,
        "transfers": ["basic", "multipart"],
        "objects": objects,
        "hash_algo": "sha256",
        "ref": {"name": "main"},
    }
    return http.post(
        f"/{repo_id}.git/info/lfs/objects/batch", headers={**bearer(token), **LFS_HEADERS}, json=payload
    )


def preupload(http, hub, repo_id: str, files: list[dict], token: str | None = "write", rev: str = "main"):
    token = hub.write_token if token == "write" else token
    return http.post(f"/api/models/{repo_id}/preupload/{rev}", headers=bearer(token), json={"files": files})


def upload_actions(http, hub, repo_id: str, data: bytes) -> dict:
    response = lfs_batch(http, hub, repo_id, [{"oid": sha256_hex(data), "size": len(data)}])
    assert response.status_code == 200, response.text
    (obj,) = response.json()["objects"]
    assert "actions" in obj, obj
    return obj["actions"]


def with_query(href: str, **changes) -> str:
    parts = urlsplit(href)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: str(v) for k, v in changes.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def flip_hex(value: str) -> str:
    return ("0" if value[0] != "0" else "1") + value[1:]


def blob_exists(hub, oid: str) -> bool:
    return (Path(hub.data_dir) / "blobs" / oid[:2] / oid[2:4] / oid).exists()


def tmp_entries(hub) -> set[str]:
    tmp = Path(hub.data_dir) / "tmp"
    return {p.name for p in tmp.iterdir()} if tmp.exists() else set()


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda p: repr(p)[:16])
def test_bad_path_in_commit_file(http, hub, repo, head, path):
    response = commit(http, hub, repo, ndjson(header_line(), file_line(path)))
    assert_error(response, 400)


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda p: repr(p)[:16])
def test_bad_path_in_commit_delete(http, hub, repo, head, path):
    response = commit(http, hub, repo, ndjson(header_line(), {"key": "deletedFile", "value": {"path": path}}))
    assert_error(response, 400)


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda p: repr(p)[:16])
def test_bad_path_in_preupload(http, hub, repo, head, path):
    response = preupload(
        http, hub, repo, [{"path": path, "sample": base64.b64encode(b"x").decode(), "size": 1}]
    )
    assert_error(response, 400)


def test_bad_path_among_good_ones_rejects_whole_commit(http, hub, repo, head):
    body = ndjson(header_line(), file_line("fine.txt"), file_line("../escape.txt"), file_line("fine2.txt"))
    assert_error(commit(http, hub, repo, body), 400)


@pytest.mark.parametrize("kind", ["resolve", "tree"])
def test_traversal_after_percent_decoding(http, hub, repo, head, kind):
    encoded = quote("../../etc/passwd", safe="")
    url = (
        f"/{repo}/resolve/main/{encoded}" if kind == "resolve" else f"/api/models/{repo}/tree/main/{encoded}"
    )
    request = http.build_request("GET", url, headers=bearer(hub.write_token))
    assert "..%2F..%2Fetc%2Fpasswd" in request.url.raw_path.decode()
    assert_error(http.send(request), 400)


# --------------------------------------------------------------------------- repo ids


@pytest.mark.parametrize(
    ("organization", "name"),
    [(None, "a--b"), (None, "x.git"), (None, "n" * 97), ("datasets", "x"), (None, "-lead"), (None, "sp ace")],
    ids=["double-dash", "dot-git", "97-chars", "reserved-namespace", "leading-dash", "space"],
)
def test_bad_repo_id_on_create(http, hub, organization, name):
    response = http.post(
        "/api/repos/create",
        headers=bearer(hub.write_token),
        json={"name": name, "organization": organization},
    )
    assert_error(response, 400)
    namespace = organization or hub.user
    lookup = http.get(f"/api/models/{namespace}/{quote(name, safe='')}", headers=bearer(hub.write_token))
    assert lookup.status_code in (400, 404), "the invalid repo was created"


# --------------------------------------------------------------------------- malformed bodies


def test_create_repo_bad_json(http, hub):
    response = http.post(
        "/api/repos/create",
        headers={**bearer(hub.write_token), "Content-Type": "application/json"},
        content=b'{"name": "oops",',
    )
    assert_error(response, 400)


def test_preupload_bad_json(http, hub, repo, head):
    response = http.post(
        f"/api/models/{repo}/preupload/main",
        headers={**bearer(hub.write_token), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_error(response, 400)


def test_preupload_bad_base64_sample(http, hub, repo, head):
    response = preupload(http, hub, repo, [{"path": "ok.txt", "sample": "!!not base64!!", "size": 3}])
    assert_error(response, 400)


def test_lfs_batch_bad_json(http, hub, repo, head):
    response = http.post(
        f"/{repo}.git/info/lfs/objects/batch",
        headers={**bearer(hub.write_token), **LFS_HEADERS},
        content=b"[1,",
    )
    assert_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(ndjson(header_line()) + b"\n{bad json", id="bad-json-line"),
        pytest.param(ndjson(file_line("x.txt")), id="no-header"),
        pytest.param(ndjson(file_line("x.txt"), header_line()), id="header-not-first"),
        pytest.param(
            ndjson(header_line(), {"key": "frobnicate", "value": {"path": "x.txt"}}), id="unknown-op"
        ),
        pytest.param(
            ndjson(
                header_line(),
                {"key": "file", "value": {"path": "x", "content": "!!!!", "encoding": "base64"}},
            ),
            id="bad-base64-chars",
        ),
        pytest.param(
            ndjson(
                header_line(), {"key": "file", "value": {"path": "x", "content": "YQ", "encoding": "base64"}}
            ),
            id="bad-base64-padding",
        ),
        pytest.param(ndjson(header_line()), id="no-operations"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"[]\n", id="not-an-object"),
    ],
)
def test_malformed_commit_body(http, hub, repo, head, body):
    assert_error(commit(http, hub, repo, body), 400)


# --------------------------------------------------------------------------- LFS objects in commits


def lfs_line(path: str, oid: str, size: int) -> dict:
    return {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}


def test_commit_unknown_lfs_oid(http, hub, repo, head):
    data = os.urandom(64)
    response = commit(
        http, hub, repo, ndjson(header_line(), lfs_line("ghost.bin", sha256_hex(data), len(data)))
    )
    assert_error(response, 422)


def test_commit_lfs_oid_of_another_repo(http, hub, repo, head):
    """Spec 2.8: a commit may reference only objects uploaded through its own repo."""
    other = f"{hub.user}/bad-other-{uuid.uuid4().hex[:8]}"
    api = HfApi(token=hub.write_token)
    api.create_repo(other, private=True)
    data = os.urandom(2048)
    api.upload_file(path_or_fileobj=data, path_in_repo="private.bin", repo_id=other)
    assert blob_exists(hub, sha256_hex(data))
    response = commit(
        http, hub, repo, ndjson(header_line(), lfs_line("stolen.bin", sha256_hex(data), len(data)))
    )
    assert_error(response, 422)


def test_commit_lfs_wrong_size(http, hub, repo, head):
    lfs_oid = next(
        e["lfs"]["oid"]
        for e in http.get(f"/api/models/{repo}/tree/main", headers=bearer(hub.write_token)).json()
        if e["path"] == "w.bin"
    )
    response = commit(http, hub, repo, ndjson(header_line(), lfs_line("copy.bin", lfs_oid, 4097)))
    assert_error(response, 422)


# --------------------------------------------------------------------------- LFS batch, PUT, verify


def test_lfs_batch_download_operation(http, hub, repo, head):
    response = lfs_batch(http, hub, repo, [{"oid": sha256_hex(b"x"), "size": 1}], operation="download")
    assert_error(response, 400)


def test_lfs_batch_bad_object_gets_per_object_error(http, hub, repo, head):
    response = lfs_batch(
        http, hub, repo, [{"oid": "not-a-sha", "size": 3}, {"oid": sha256_hex(b"abc"), "size": -1}]
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/vnd.git-lfs+json")
    objects = response.json()["objects"]
    assert len(objects) == 2
    for obj in objects:
        assert obj["error"]["code"] == 422 and obj["error"]["message"]
        assert "actions" not in obj


def test_lfs_batch_too_many_objects(http, hub, repo, head):
    objects = [{"oid": sha256_hex(str(i).encode()), "size": 10} for i in range(1001)]
    assert_error(lfs_batch(http, hub, repo, objects), 413)


def test_preupload_too_many_files(http, hub, repo, head):
    files = [{"path": f"f{i}.txt", "sample": "", "size": 0} for i in range(1001)]
    assert_error(preupload(http, hub, repo, files), 413)


def in_chunks(data: bytes, size: int = 8192):
    # A generator body makes httpx send Transfer-Encoding: chunked, without Content-Length,
    # so the server must count the bytes while it streams them.
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("mistake", ["wrong-sha256", "too-short", "too-long"])
def test_put_with_wrong_content(http, hub, repo, head, mistake, chunked):
    data = os.urandom(70_000)
    actions = upload_actions(http, hub, repo, data)
    body = {
        "wrong-sha256": os.urandom(len(data)),
        "too-short": data[:-1],
        "too-long": data + b"!",
    }[mistake]
    tmp_before = tmp_entries(hub)
    response = http.put(actions["upload"]["href"], content=in_chunks(body) if chunked else body)
    assert_error(response, 400)
    assert not blob_exists(hub, sha256_hex(data))
    assert tmp_entries(hub) - tmp_before == set(), "the rejected upload left a temp file"
    verify = http.post(
        actions["verify"]["href"],
        headers={**bearer(hub.write_token), **LFS_HEADERS},
        json={"oid": sha256_hex(data), "size": len(data)},
    )
    assert_error(verify, 422)
    response = commit(
        http, hub, repo, ndjson(header_line(), lfs_line("never.bin", sha256_hex(data), len(data)))
    )
    assert_error(response, 422)


def test_put_abandoned_mid_body_leaves_no_temp_file(http, hub, repo, head):
    data = os.urandom(2 * 2**20)
    href = upload_actions(http, hub, repo, data)["upload"]["href"]
    parts = urlsplit(href)
    tmp_before = tmp_entries(hub)
    request_head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request_head + data[: len(data) // 2])
    # The client is gone: the partial temp file must go too, and the server must keep serving.
    deadline = time.monotonic() + 10
    while tmp_entries(hub) - tmp_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tmp_entries(hub) - tmp_before == set(), "an abandoned upload left its temp file"
    assert not blob_exists(hub, sha256_hex(data))
    assert http.put(href, content=data).status_code == 200
    assert blob_exists(hub, sha256_hex(data))


@pytest.mark.parametrize("forgery", ["sig", "expired", "size", "repo", "no-sig"])
def test_put_with_forged_or_expired_signature(http, hub, repo, head, forgery):
    data = os.urandom(1000)
    href = upload_actions(http, hub, repo, data)["upload"]["href"]
    query = dict(parse_qsl(urlsplit(href).query))
    if forgery == "sig":
        forged = with_query(href, sig=flip_hex(query["sig"]))
    elif forgery == "expired":
        forged = with_query(href, exp=int(time.time()) - 60)
    elif forgery == "size":
        forged = with_query(href, size=len(data) + 1)
    elif forgery == "repo":
        forged = with_query(href, repo=f"{hub.user}/someone-else")
    else:
        parts = urlsplit(href)
        kept = [(k, v) for k, v in parse_qsl(parts.query) if k != "sig"]
        forged = urlunsplit(parts._replace(query=urlencode(kept)))
    response = http.put(forged, content=data if forgery != "size" else data + b"!")
    assert_error(response, 403)
    assert not blob_exists(hub, sha256_hex(data))


def test_verify_with_forged_signature(http, hub, repo, head):
    data = os.urandom(500)
    actions = upload_actions(http, hub, repo, data)
    assert http.put(actions["upload"]["href"], content=data).status_code == 200
    href = actions["verify"]["href"]
    forged = with_query(href, sig=flip_hex(dict(parse_qsl(urlsplit(href).query))["sig"]))
    response = http.post(
        forged,
        headers={**bearer(hub.write_token), **LFS_HEADERS},
        json={"oid": sha256_hex(data), "size": len(data)},
    )
    assert_error(response, 403)
    ok = http.post(
        href,
        headers={**bearer(hub.write_token), **LFS_HEADERS},
        json={"oid": sha256_hex(data), "size": len(data)},
    )
    assert ok.status_code == 200, ok.text


# --------------------------------------------------------------------------- body over the limit


@pytest.fixture(scope="module")
def small_hub(hub, tmp_path_factory):
    """An in-process server whose NDJSON lines may be at most 1024 bytes."""
    from hubtools.hub.server import HubConfig, HubServer, add_token

    data_dir = tmp_path_factory.mktemp("small-hub")
    add_token(data_dir, hub.user, role="write", token=hub.write_token)
    with HubServer(HubConfig(data_dir=data_dir, host="127.0.0.1", port=0, max_line_bytes=1024)) as server:
        yield server


def test_commit_line_over_limit(small_hub, hub):
    repo_id = f"{hub.user}/small-{uuid.uuid4().hex[:8]}"
    HfApi(endpoint=small_hub.url, token=hub.write_token).create_repo(repo_id)
    with httpx.Client(base_url=small_hub.url, timeout=30) as client:

        def main_head():
            response = client.get(f"/api/models/{repo_id}/revision/main", headers=bearer(hub.write_token))
            assert response.status_code == 200, response.text
            return response.json()["sha"]

        before = main_head()
        body = ndjson(header_line(), file_line("big.txt", b"y" * 2000))
        response = client.post(
            f"/api/models/{repo_id}/commit/main", headers={**bearer(hub.write_token), **NDJSON}, content=body
        )
        assert_error(response, 413)
        small = ndjson(header_line(), file_line("small.txt", b"y" * 100))
        response = client.post(
            f"/api/models/{repo_id}/commit/main", headers={**bearer(hub.write_token), **NDJSON}, content=small
        )
        assert response.status_code == 200, response.text
        assert main_head() == response.json()["commitOid"] != before


# --------------------------------------------------------------------------- not found


def test_unknown_repo(http, hub):
    response = http.get(
        f"/api/models/{hub.user}/no-such-repo-{uuid.uuid4().hex[:6]}", headers=bearer(hub.write_token)
    )
    assert_error(response, 404, "RepoNotFound")
    response = http.head(f"/{hub.user}/no-such-repo-{uuid.uuid4().hex[:6]}/resolve/main/a.txt")
    assert_error(response, 401, "RepoNotFound")


def test_unknown_revision(http, hub, repo, head):
    assert_error(
        http.get(f"/api/models/{repo}/revision/no-such-branch", headers=bearer(hub.write_token)),
        404,
        "RevisionNotFound",
    )
    assert_error(http.get(f"/{repo}/resolve/no-such-branch/a.txt"), 404, "RevisionNotFound")
    assert_error(http.get(f"/api/models/{repo}/tree/{'0' * 40}"), 404, "RevisionNotFound")
    assert_error(
        preupload(http, hub, repo, [{"path": "x.txt", "sample": "", "size": 0}], rev="nope"),
        404,
        "RevisionNotFound",
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_unknown_file(http, hub, repo, head, method):
    response = http.request(method, f"/{repo}/resolve/main/missing.txt")
    assert_error(response, 404, "EntryNotFound")
    assert response.headers.get("X-Repo-Commit") == head
    if method == "HEAD":
        assert response.content == b""


def test_unknown_tree_path(http, hub, repo, head):
    assert_error(http.get(f"/api/models/{repo}/tree/main/no-such-dir"), 404, "EntryNotFound")


def test_delete_missing_file(http, hub, repo, head):
    response = commit(
        http, hub, repo, ndjson(header_line(), {"key": "deletedFile", "value": {"path": "nope.txt"}})
    )
    assert_error(response, 404, "EntryNotFound")
    assert response.headers["X-Error-Message"].startswith("A file with this name doesn't exist")


def test_delete_missing_folder(http, hub, repo, head):
    response = commit(
        http, hub, repo, ndjson(header_line(), {"key": "deletedFolder", "value": {"path": "nope/"}})
    )
    assert_error(response, 404, "EntryNotFound")


# --------------------------------------------------------------------------- auth


WRITE_CALLS = ["commit", "preupload", "lfs-batch", "branch", "tag", "settings"]


def write_call(http, hub, repo_id: str, kind: str, token: str | None) -> httpx.Response:
    headers = bearer(token)
    if kind == "commit":
        return http.post(
            f"/api/models/{repo_id}/commit/main",
            headers={**headers, **NDJSON},
            content=ndjson(header_line(), file_line("intruder.txt")),
        )
    if kind == "preupload":
        return http.post(
            f"/api/models/{repo_id}/preupload/main",
            headers=headers,
            json={"files": [{"path": "i.txt", "sample": "", "size": 0}]},
        )
    if kind == "lfs-batch":
        return http.post(
            f"/{repo_id}.git/info/lfs/objects/batch",
            headers={**headers, **LFS_HEADERS},
            json={
                "operation": "upload",
                "objects": [{"oid": sha256_hex(b"i"), "size": 1}],
                "hash_algo": "sha256",
            },
        )
    if kind == "branch":
        return http.post(f"/api/models/{repo_id}/branch/intruder", headers=headers, json={})
    if kind == "tag":
        return http.post(f"/api/models/{repo_id}/tag/main", headers=headers, json={"tag": "intruder"})
    if kind == "settings":
        return http.put(f"/api/models/{repo_id}/settings", headers=headers, json={"private": True})
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", WRITE_CALLS)
@pytest.mark.parametrize("who", ["no-token", "unknown-token", "read-token", "other-user"])
def test_write_auth_matrix_public_repo(http, hub, repo, head, kind, who):
    token = {
        "no-token": None,
        "unknown-token": "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00",
        "read-token": hub.read_token,
        "other-user": hub.mallory_token,
    }[who]
    response = write_call(http, hub, repo, kind, token)
    if who == "no-token":
        assert_error(response, 401)
    elif who == "unknown-token":
        assert_error(response, 401)
        assert response.headers["X-Error-Message"] == INVALID_CREDENTIALS
    else:
        assert_error(response, 403)
    info = http.get(f"/api/models/{repo}", headers=bearer(hub.write_token)).json()
    assert info["private"] is False


@pytest.mark.parametrize("kind", WRITE_CALLS)
def test_write_to_other_users_private_repo_hides_it(http, hub, private_repo, kind):
    before = refs_of(http, hub, private_repo)
    response = write_call(http, hub, private_repo, kind, hub.mallory_token)
    assert_error(response, 404, "RepoNotFound")
    assert refs_of(http, hub, private_repo) == before


@pytest.mark.parametrize(
    ("who", "status"), [("no-token", 401), ("unknown-token", 401), ("other-user", 404), ("read-token", 200)]
)
def test_read_auth_matrix_private_repo(http, hub, private_repo, who, status):
    token = {
        "no-token": None,
        "unknown-token": "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00",
        "read-token": hub.read_token,
        "other-user": hub.mallory_token,
    }[who]
    for url in (f"/api/models/{private_repo}", f"/{private_repo}/resolve/main/s.txt"):
        response = http.get(url, headers=bearer(token))
        if status == 200:
            assert response.status_code == 200, response.text
        elif who == "unknown-token":
            assert_error(response, 401, message=INVALID_CREDENTIALS)
        else:
            assert_error(response, status, "RepoNotFound")


def test_create_repo_in_other_namespace(http, hub):
    name = f"t-{uuid.uuid4().hex[:8]}"
    response = http.post(
        "/api/repos/create", headers=bearer(hub.mallory_token), json={"name": name, "organization": hub.user}
    )
    assert_error(response, 403)
    assert http.get(f"/api/models/{hub.user}/{name}", headers=bearer(hub.write_token)).status_code == 404


def test_create_repo_without_token(http, hub):
    response = http.post(
        "/api/repos/create", json={"name": f"t-{uuid.uuid4().hex[:8]}", "organization": None}
    )
    assert_error(response, 401)


# --------------------------------------------------------------------------- refs


def test_delete_main_is_forbidden(http, hub, repo, head):
    response = http.delete(f"/api/models/{repo}/branch/main", headers=bearer(hub.write_token))
    assert_error(response, 403)


@pytest.mark.parametrize(
    "name", ["a..b", "-lead", "trail/", "x.lock", "sp ace", "a:b", "refs/pr/7", "0" * 40]
)
def test_bad_branch_name(http, hub, repo, head, name):
    response = http.post(
        f"/api/models/{repo}/branch/{quote(name, safe='')}", headers=bearer(hub.write_token), json={}
    )
    assert_error(response, 400)


# --------------------------------------------------------------------------- other routes


def test_xet_token_routes_say_how_to_fix(http, hub, repo, head):
    for kind in ("read", "write"):
        response = http.get(f"/api/models/{repo}/xet-{kind}-token/main", headers=bearer(hub.write_token))
        assert_error(response, 404, message="HF_HUB_DISABLE_XET=1")


def test_unimplemented_route_is_501(http, hub):
    response = http.get("/api/papers/2311.12983", headers=bearer(hub.write_token))  # collections are served now
    assert_error(response, 501)
