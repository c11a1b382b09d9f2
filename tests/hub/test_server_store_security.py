"""The data dir on a shared machine: private file modes, keyed token hashes (old databases still
readable), validated user names, and token commands that never create a hub by mistake."""

from __future__ import annotations

import hashlib
import os
import stat
import uuid

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi

from hubtools.hub.server.cli import hub_group
from hubtools.hub.server.store import Store, hash_token


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_data_dirs_are_private(tmp_path):
    store = Store(tmp_path / "hub", serving=True)
    try:
        token = store.add_token("alice")
        assert store.principal(token).user == "alice"
        sha, _ = store.put_blob_bytes(b"private weights")
        root = tmp_path / "hub"
        assert mode(root) == 0o700 and mode(root / "blobs") == 0o700 and mode(root / "tmp") == 0o700
        assert mode(store.blob_path(sha).parent) == 0o700 and mode(store.blob_path(sha)) == 0o400
        for name in ("hub.db", "hub.db-wal", "hub.db-shm", "secret.key", "FORMAT", ".lock"):
            assert mode(root / name) & 0o077 == 0, name
    finally:
        store.close()


def test_an_existing_world_readable_data_dir_is_closed(tmp_path):
    root = tmp_path / "old"
    Store(root).close()
    root.chmod(0o755)
    Store(root).close()
    assert mode(root) == 0o700


def test_tokens_are_stored_keyed_and_old_unsalted_rows_still_work(hub_proc, tmp_path):
    data = tmp_path / "hub"
    store = Store(data)
    chosen = "hf_ci-token-chosen-by-a-person"
    store.add_token("alice", token=chosen)
    legacy = f"hf_{uuid.uuid4().hex}"
    with store.transaction() as conn:  # a row as an older hubtools wrote it: plain sha256
        conn.execute("INSERT INTO tokens(hash, user, role, name, created_at) VALUES (?, 'bob', 'write', 'old', 'x')",
                     (hashlib.sha256(legacy.encode()).hexdigest(),))
    hashes = {r[0] for r in store.read().execute("SELECT hash FROM tokens")}
    assert hashlib.sha256(chosen.encode()).hexdigest() not in hashes
    assert hash_token(store.secret, chosen) in hashes
    store.close()

    server = hub_proc(data)
    assert HfApi(endpoint=server.url, token=legacy).whoami()["name"] == "bob"
    assert HfApi(endpoint=server.url, token=chosen).whoami()["name"] == "alice"
    server.stop()
    store = Store(data)
    try:  # the old row was upgraded on first use
        hashes = {r[0] for r in store.read().execute("SELECT hash FROM tokens")}
        assert hashlib.sha256(legacy.encode()).hexdigest() not in hashes
        assert hash_token(store.secret, legacy) in hashes
        assert store.revoke_token(legacy) == 1 and store.principal(legacy) is None
    finally:
        store.close()


@pytest.mark.parametrize("user", ["../evil user", "a--b", "api", "x" * 97, "-lead", "ünï"])
def test_bad_user_names_are_refused(tmp_path, user):
    store = Store(tmp_path / "hub")
    try:
        with pytest.raises(ValueError, match="invalid user name"):
            store.add_token(user)
        with pytest.raises(ValueError, match="invalid org name"):
            store.add_token("alice", org=user)
        assert not store.has_tokens()
    finally:
        store.close()
    result = CliRunner().invoke(hub_group, ["token", "create", "--data", str(tmp_path / "hub"), "--user", user])
    assert result.exit_code == 1 and "invalid user name" in result.output and "Traceback" not in result.output


def test_token_commands_never_create_a_hub(tmp_path):
    typo = tmp_path / "hbu"
    for args in (["create", "--user", "alice"], ["list"], ["revoke", "hf_x"]):
        result = CliRunner().invoke(hub_group, ["token", *args, "--data", str(typo)])
        assert result.exit_code == 1 and "no hub data dir" in result.output, args
    assert not typo.exists()
    Store(tmp_path / "hub").close()
    result = CliRunner().invoke(hub_group, ["token", "create", "--data", str(tmp_path / "hub"), "--user", "alice"])
    assert result.exit_code == 0 and result.output.startswith("hf_")
