"""Durable storage of the local Hub: SQLite for metadata, content-addressed blob files.

Why this shape (spec section 2.10): blobs are immutable files named by their sha256
and written (temp file, fsync, rename) *before* the database transaction that
references them; a ref moves only inside that transaction. A crash at any point
therefore leaves the previous head intact, at worst with orphan blobs for ``fsck``.

A commit's file list (its manifest) is stored as content-addressed chunks of about
:data:`CHUNK_ENTRIES` entries, cut where a hash of the path says so, plus the list of its chunk
ids and the paths it changed. A commit that changes one file of a 10k-file repo thus adds one
chunk and a short list, not 10k rows, and "which commit last changed this path" reads the
changed paths instead of comparing file lists.
Every method here is blocking and is called from the server's thread pool; each
thread gets its own SQLite connection.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import hmac
import os
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hubtools.hashing import sha256_file
from hubtools.hub.server.errors import HubError, bad_request, entry_not_found, revision_not_found
from hubtools.hub.server.naming import check_namespace, is_commit_id

FORMAT_LINE = "hubtools-hub 1"
SCHEMA_VERSION = "2"  # 1: a full file list per commit (table ``entries``); 2: chunked manifests
# A manifest (a commit's sorted file list) is stored as content-addressed chunks whose boundaries
# depend only on the paths, so a commit that changes one file stores one new chunk (about this
# many entries) plus the list of chunk ids, not a copy of every entry.
CHUNK_ENTRIES = 64
CHUNK = 1 << 20

# The patterns a new repo's .gitattributes marks as LFS (spec 2.4).
DEFAULT_LFS_PATTERNS = (
    "*.bin *.safetensors *.pt *.pth *.ckpt *.h5 *.onnx *.gguf *.parquet *.arrow *.npy *.npz *.zip *.tar.* *.gz"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orgs(name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memberships(org TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY(org, user));
CREATE TABLE IF NOT EXISTS tokens(
    hash TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('read', 'write')),
    name TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repos(
    pk INTEGER PRIMARY KEY, type TEXT NOT NULL, ns TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE, private INTEGER NOT NULL, sdk TEXT, created_at TEXT NOT NULL,
    UNIQUE(type, ns, name));
CREATE TABLE IF NOT EXISTS commits(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, sha TEXT NOT NULL,
    parent_sha TEXT, seq INTEGER NOT NULL, title TEXT NOT NULL, message TEXT NOT NULL,
    author TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY(repo_pk, sha));
CREATE TABLE IF NOT EXISTS chunk_entries(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, chunk_oid TEXT NOT NULL,
    path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, is_lfs INTEGER NOT NULL,
    git_oid TEXT NOT NULL, PRIMARY KEY(repo_pk, chunk_oid, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commit_manifests(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, commit_sha TEXT NOT NULL,
    chunks TEXT NOT NULL, PRIMARY KEY(repo_pk, commit_sha)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commit_changes(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, commit_sha TEXT NOT NULL,
    path TEXT NOT NULL, PRIMARY KEY(repo_pk, commit_sha, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refs(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('branch', 'tag', 'pr')), name TEXT NOT NULL,
    target_sha TEXT NOT NULL, PRIMARY KEY(repo_pk, kind, name));
CREATE TABLE IF NOT EXISTS repo_lfs(
    repo_pk INTEGER NOT NULL REFERENCES repos(pk) ON DELETE CASCADE, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY(repo_pk, sha256));
CREATE TABLE IF NOT EXISTS collections(
    slug TEXT PRIMARY KEY, ns TEXT NOT NULL, title TEXT NOT NULL, description TEXT, private INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, theme TEXT NOT NULL DEFAULT 'default', UNIQUE(ns, title));
CREATE TABLE IF NOT EXISTS collection_items(
    slug TEXT NOT NULL REFERENCES collections(slug) ON DELETE CASCADE, object_id TEXT NOT NULL,
    item_type TEXT NOT NULL, item_id TEXT NOT NULL, position INTEGER NOT NULL, note TEXT,
    PRIMARY KEY(slug, object_id), UNIQUE(slug, item_type, item_id));
"""


def utc_iso(ts: float | None = None) -> str:
    """The one date format huggingface_hub's ``parse_datetime`` accepts."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def legacy_token_hash(token: str) -> str:
    """How tokens were stored before: plain sha256. Still accepted, and replaced on first use."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_token(secret: bytes, token: str) -> str:
    """HMAC-SHA256 of the token keyed with the data dir's ``secret.key``: a token chosen by a user
    (``--token``) cannot be looked up in precomputed tables or guessed from ``hub.db`` alone."""
    return hmac.new(secret, b"token\n" + token.encode(), hashlib.sha256).hexdigest()


def object_id(kind: str, name: str) -> str:
    """A stable 24-hex id, the shape the Hub uses for users and repos."""
    return hashlib.sha1(f"{kind}:{name}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Entry:
    """One file of one commit. ``git_oid`` is the git-blob sha1 of the content, or of the LFS pointer."""

    path: str
    sha256: str
    size: int
    is_lfs: bool
    git_oid: str

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Repo:
    pk: int
    type: str
    ns: str
    name: str
    private: bool
    sdk: str | None
    created_at: str

    @property
    def id(self) -> str:
        return f"{self.ns}/{self.name}"


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    orgs: tuple[str, ...] = ()

    def owns(self, ns: str) -> bool:
        return ns == self.user or ns in self.orgs


@dataclass
class CommitOp:
    """One operation of a commit payload, already validated. ``kind``: file | lfs | delete_file | delete_folder."""

    kind: str
    path: str
    sha256: str | None = None
    size: int | None = None
    git_oid: str | None = None


@dataclass
class FsckReport:
    blobs: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


class DataDirInUse(RuntimeError):
    pass


class Store:
    """The data directory. ``serving=True`` takes the exclusive lock and empties ``tmp/``."""

    def __init__(self, data_dir: str | Path, serving: bool = False):
        self.root = Path(data_dir).resolve()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Tokens' hashes, private repos and their blobs live here: only the owner may enter, also
        # for a data dir made before this rule (files inside kept the modes of the umask then).
        with contextlib.suppress(PermissionError):
            if self.root.stat().st_mode & 0o077:
                self.root.chmod(0o700)
        fmt = self.root / "FORMAT"
        if fmt.exists():
            found = fmt.read_text().strip()
            if found != FORMAT_LINE:
                raise RuntimeError(f"{self.root}: unknown data format {found!r} (expected {FORMAT_LINE!r})")
        else:
            _write_private(fmt, (FORMAT_LINE + "\n").encode())
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blobs_dir.mkdir(mode=0o700, exist_ok=True)
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        db = self.root / "hub.db"
        if not db.exists():  # SQLite gives its -wal and -shm files the database's mode
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock_file = None
        if serving:
            self._take_lock()
            shutil.rmtree(self.tmp_dir)
            self.tmp_dir.mkdir(mode=0o700)
        self.secret = self._load_secret()
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._manifests: collections.OrderedDict[tuple[int, str], dict[str, Entry]] = collections.OrderedDict()
        self._manifests_lock = threading.Lock()
        self._cached_entries = 0
        conn = self._conn()
        fresh = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None
        conn.executescript(_SCHEMA)  # idempotent DDL; executescript manages its own transaction
        if fresh:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        if "theme" not in {r[1] for r in conn.execute("PRAGMA table_info(collections)")}:  # added in schema 2
            conn.execute("ALTER TABLE collections ADD COLUMN theme TEXT NOT NULL DEFAULT 'default'")
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or version[0] == "1":
            self._migrate_from_1()
        elif version[0] != SCHEMA_VERSION:
            raise RuntimeError(f"{self.root}: database schema {version[0]} is newer than this hubtools "
                               f"(schema {SCHEMA_VERSION})")

    # ------------------------------------------------------------------ set-up
    def _take_lock(self) -> None:
        import fcntl

        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        f = os.fdopen(fd, "a+")  # held for the server's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise DataDirInUse(f"data dir in use by pid {pid}: {self.root}") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def _load_secret(self) -> bytes:
        path = self.root / "secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
        return path.read_bytes()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.root / "hub.db", timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the real guard against concurrent writers."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            if os.environ.get("HUBTOOLS_HUB_FAULT") == "before_db_commit" and getattr(self._local, "fault", False):
                os._exit(70)
            conn.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._conn()

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._all_conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all_conns.clear()
        self._local = threading.local()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ------------------------------------------------------------------ tokens
    def add_token(self, user: str, role: str = "write", token: str | None = None, name: str | None = None,
                  org: str | None = None) -> str:
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', got {role!r}")
        for what, name_ in (("user", user), ("org", org)):
            if name_ is not None:
                try:
                    check_namespace(name_)  # a user or org name is a repo namespace
                except HubError as err:
                    raise ValueError(f"invalid {what} name {name_!r}: {err.message}") from None
        if token is not None and (not token.strip() or token != token.strip() or any(c.isspace() for c in token)):
            raise ValueError("a token must be non-empty and contain no whitespace")
        token = token or new_token()
        now = utc_iso()
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO users(name, created_at) VALUES (?, ?)", (user, now))
            conn.execute(
                "INSERT INTO tokens(hash, user, role, name, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET user=excluded.user, role=excluded.role",
                (hash_token(self.secret, token), user, role, name or f"{user}-{role}", now),
            )
            conn.execute("DELETE FROM tokens WHERE hash = ?", (legacy_token_hash(token),))
            if org:
                conn.execute("INSERT OR IGNORE INTO orgs(name, created_at) VALUES (?, ?)", (org, now))
                conn.execute("INSERT OR IGNORE INTO memberships(org, user) VALUES (?, ?)", (org, user))
        return token

    def list_tokens(self) -> list[dict]:
        rows = self.read().execute("SELECT hash, user, role, name, created_at FROM tokens ORDER BY created_at")
        return [dict(zip(("hash_prefix", "user", "role", "name", "created_at"), (r[0][:12], *r[1:]), strict=True))
                for r in rows]

    def revoke_token(self, token_or_prefix: str) -> int:
        with self.transaction() as conn:
            if token_or_prefix.startswith("hf_"):
                cur = conn.execute("DELETE FROM tokens WHERE hash IN (?, ?)",
                                   (hash_token(self.secret, token_or_prefix), legacy_token_hash(token_or_prefix)))
            else:
                cur = conn.execute("DELETE FROM tokens WHERE hash LIKE ? || '%' OR name = ?",
                                   (token_or_prefix, token_or_prefix))
            return cur.rowcount

    def has_tokens(self) -> bool:
        return self.read().execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None

    def principal(self, token: str) -> Principal | None:
        conn = self.read()
        keyed = hash_token(self.secret, token)
        row = conn.execute("SELECT user, role FROM tokens WHERE hash = ?", (keyed,)).fetchone()
        if row is None:
            legacy = legacy_token_hash(token)
            row = conn.execute("SELECT user, role FROM tokens WHERE hash = ?", (legacy,)).fetchone()
            if row is None:
                return None
            with self.transaction() as tx:  # a data dir from before keyed hashes: upgrade this row
                tx.execute("UPDATE OR IGNORE tokens SET hash = ? WHERE hash = ?", (keyed, legacy))
        orgs = tuple(r[0] for r in conn.execute("SELECT org FROM memberships WHERE user = ? ORDER BY org", (row[0],)))
        return Principal(user=row[0], role=row[1], orgs=orgs)

    # ------------------------------------------------------------------ repos
    def get_repo(self, repo_type: str, ns: str, name: str) -> Repo | None:
        """The repo, looked up case-insensitively as on the Hub (names are unique that way too)."""
        row = self.read().execute(
            "SELECT pk, type, ns, name, private, sdk, created_at FROM repos WHERE type = ? AND ns = ? AND name = ?",
            (repo_type, ns, name),
        ).fetchone()
        return None if row is None else Repo(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    def list_repos(self, repo_type: str) -> list[Repo]:
        rows = self.read().execute(
            "SELECT pk, type, ns, name, private, sdk, created_at FROM repos WHERE type = ? ORDER BY pk", (repo_type,)
        )
        return [Repo(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def create_repo(self, repo_type: str, ns: str, name: str, private: bool, sdk: str | None, author: str) -> Repo:
        """Create a repo whose initial commit holds ``.gitattributes``; a concurrent duplicate gets 409."""
        blob = self.put_blob_bytes(DEFAULT_GITATTRIBUTES)
        now = time.time()
        with self.transaction() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO repos(type, ns, name, private, sdk, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (repo_type, ns, name, int(private), sdk, utc_iso(now)),
                )
            except sqlite3.IntegrityError:
                raise HubError(409, f"You already created this {repo_type} repo: {ns}/{name}") from None
            pk = cur.lastrowid
            sha = _commit_sha(f"{ns}/{name}", None, "", "initial commit", "", author, time.time_ns())
            conn.execute(
                "INSERT INTO commits(repo_pk, sha, parent_sha, seq, title, message, author, created_at) "
                "VALUES (?, ?, NULL, 0, 'initial commit', '', ?, ?)",
                (pk, sha, author, utc_iso(now)),
            )
            attrs = Entry(".gitattributes", blob[0], len(DEFAULT_GITATTRIBUTES), False, blob[1])
            _write_manifest(conn, pk, sha, {attrs.path: attrs}, {})
            conn.execute("INSERT INTO refs(repo_pk, kind, name, target_sha) VALUES (?, 'branch', 'main', ?)", (pk, sha))
        repo = self.get_repo(repo_type, ns, name)
        assert repo is not None
        return repo

    def delete_repo(self, repo: Repo) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM repos WHERE pk = ?", (repo.pk,))

    def set_private(self, repo: Repo, private: bool) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE repos SET private = ? WHERE pk = ?", (int(private), repo.pk))

    # ------------------------------------------------------------------ refs and commits
    def refs(self, repo: Repo) -> list[tuple[str, str, str]]:
        return list(self.read().execute(
            "SELECT kind, name, target_sha FROM refs WHERE repo_pk = ? ORDER BY kind, name", (repo.pk,)))

    def ref_target(self, repo: Repo, kind: str, name: str, conn: sqlite3.Connection | None = None) -> str | None:
        row = (conn or self.read()).execute(
            "SELECT target_sha FROM refs WHERE repo_pk = ? AND kind = ? AND name = ?", (repo.pk, kind, name)
        ).fetchone()
        return row[0] if row else None

    def resolve(self, repo: Repo, rev: str) -> str:
        """Revision -> commit sha, in the order of spec 2.4; unknown revisions are 404 RevisionNotFound."""
        conn = self.read()
        for kind, name in (
            ("branch", rev.removeprefix("refs/heads/")),
            ("tag", rev.removeprefix("refs/tags/")),
        ):
            sha = self.ref_target(repo, kind, name, conn)
            if sha:
                return sha
        if rev.startswith("refs/pr/"):
            sha = self.ref_target(repo, "pr", rev.removeprefix("refs/pr/"), conn)
            if sha:
                return sha
        if is_commit_id(rev):
            if conn.execute("SELECT 1 FROM commits WHERE repo_pk = ? AND sha = ?", (repo.pk, rev)).fetchone():
                return rev
        elif 7 <= len(rev) < 40 and all(c in "0123456789abcdef" for c in rev):
            rows = conn.execute(
                "SELECT sha FROM commits WHERE repo_pk = ? AND substr(sha, 1, ?) = ? LIMIT 2", (repo.pk, len(rev), rev)
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
        raise revision_not_found(rev)

    def commit_row(self, repo: Repo, sha: str) -> dict:
        row = self.read().execute(
            "SELECT sha, parent_sha, seq, title, message, author, created_at FROM commits WHERE repo_pk = ? AND sha = ?",
            (repo.pk, sha),
        ).fetchone()
        return dict(zip(("sha", "parent", "seq", "title", "message", "author", "date"), row, strict=True))

    def history(self, repo: Repo, sha: str, limit: int | None = None) -> list[dict]:
        """First-parent chain from ``sha``, newest first."""
        out: list[dict] = []
        cur: str | None = sha
        while cur and (limit is None or len(out) < limit):
            row = self.commit_row(repo, cur)
            out.append(row)
            cur = row["parent"]
        return out

    def manifest(self, repo: Repo, sha: str, conn: sqlite3.Connection | None = None) -> dict[str, Entry]:
        """The files of commit ``sha``, sorted by path. Commits never change, so recent manifests
        are kept in memory (read-only: callers copy before changing one)."""
        key = (repo.pk, sha)
        with self._manifests_lock:
            hit = self._manifests.get(key)
            if hit is not None:
                self._manifests.move_to_end(key)
                return hit
        manifest = _read_manifest(conn or self.read(), repo.pk, sha)
        with self._manifests_lock:
            if key not in self._manifests:
                self._manifests[key] = manifest
                self._cached_entries += len(manifest)
            while self._cached_entries > MANIFEST_CACHE_ENTRIES and len(self._manifests) > 1:
                _, dropped = self._manifests.popitem(last=False)
                self._cached_entries -= len(dropped)
        return manifest

    def entry(self, repo: Repo, sha: str, path: str) -> Entry | None:
        return self.manifest(repo, sha).get(path)

    def changes(self, repo: Repo, shas: list[str]) -> dict[str, set[str]]:
        """commit sha -> the paths it added, changed or deleted (compared with its parent)."""
        out: dict[str, set[str]] = {sha: set() for sha in shas}
        conn = self.read()
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            rows = conn.execute(
                f"SELECT commit_sha, path FROM commit_changes WHERE repo_pk = ? AND commit_sha IN "  # noqa: S608
                f"({', '.join('?' * len(part))})",
                (repo.pk, *part),
            )
            for sha, path in rows:
                out[sha].add(path)
        return out

    def create_ref(self, repo: Repo, kind: str, name: str, target: str) -> None:
        with self.transaction() as conn:
            try:
                conn.execute("INSERT INTO refs(repo_pk, kind, name, target_sha) VALUES (?, ?, ?, ?)",
                             (repo.pk, kind, name, target))
            except sqlite3.IntegrityError:
                raise HubError(409, f"Reference already exists: {name}") from None

    def delete_ref(self, repo: Repo, kind: str, name: str) -> None:
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM refs WHERE repo_pk = ? AND kind = ? AND name = ?", (repo.pk, kind, name))
            if cur.rowcount == 0:
                raise revision_not_found(name)

    def lfs_known(self, repo: Repo, sha256: str) -> int | None:
        row = self.read().execute("SELECT size FROM repo_lfs WHERE repo_pk = ? AND sha256 = ?",
                                  (repo.pk, sha256)).fetchone()
        return row[0] if row else None

    def associate_lfs(self, repo: Repo, sha256: str, size: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO repo_lfs(repo_pk, sha256, size) VALUES (?, ?, ?)",
                         (repo.pk, sha256, size))

    def commit(
        self,
        repo: Repo,
        branch: str,
        ops: list[CommitOp],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[str, int | None]:
        """Apply ``ops`` on top of ``branch`` atomically. Returns (commit sha, PR number or None)."""
        self._local.fault = True
        try:
            with self.transaction() as conn:
                head = self._branch_head(conn, repo, branch)
                if parent_commit and not head.startswith(parent_commit):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
                manifest = self._apply(conn, repo, head, ops)
                sha = _commit_sha(repo.id, head, _manifest_digest(manifest), title, message, author, time.time_ns())
                seq = conn.execute("SELECT seq FROM commits WHERE repo_pk = ? AND sha = ?", (repo.pk, head)).fetchone()[0]
                conn.execute(
                    "INSERT INTO commits(repo_pk, sha, parent_sha, seq, title, message, author, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (repo.pk, sha, head, seq + 1, title, message, author, utc_iso()),
                )
                _write_manifest(conn, repo.pk, sha, manifest, self.manifest(repo, head, conn))
                conn.executemany(
                    "INSERT OR IGNORE INTO repo_lfs(repo_pk, sha256, size) VALUES (?, ?, ?)",
                    [(repo.pk, e.sha256, e.size) for e in manifest.values() if e.is_lfs],
                )
                pr_num = None
                if create_pr:
                    nums = [int(r[0]) for r in conn.execute(
                        "SELECT name FROM refs WHERE repo_pk = ? AND kind = 'pr'", (repo.pk,))]
                    pr_num = max(nums, default=0) + 1
                    conn.execute("INSERT INTO refs(repo_pk, kind, name, target_sha) VALUES (?, 'pr', ?, ?)",
                                 (repo.pk, str(pr_num), sha))
                else:
                    kind, name = self._branch_key(branch)
                    cur = conn.execute(
                        "UPDATE refs SET target_sha = ? WHERE repo_pk = ? AND kind = ? AND name = ? AND target_sha = ?",
                        (sha, repo.pk, kind, name, head),
                    )
                    if cur.rowcount != 1:
                        raise HubError(412, "A commit has happened since. Please refresh and try again.")
            return sha, pr_num
        finally:
            self._local.fault = False

    @staticmethod
    def _branch_key(branch: str) -> tuple[str, str]:
        if branch.startswith("refs/pr/"):
            return "pr", branch.removeprefix("refs/pr/")
        return "branch", branch.removeprefix("refs/heads/")

    def _branch_head(self, conn: sqlite3.Connection, repo: Repo, branch: str) -> str:
        kind, name = self._branch_key(branch)
        sha = self.ref_target(repo, kind, name, conn)
        if sha is None:
            raise revision_not_found(branch)
        return sha

    def _apply(self, conn: sqlite3.Connection, repo: Repo, head: str, ops: list[CommitOp]) -> dict[str, Entry]:
        manifest = dict(self.manifest(repo, head, conn))
        for op in ops:
            if op.kind == "file":
                manifest[op.path] = Entry(op.path, op.sha256, op.size, False, op.git_oid)
            elif op.kind == "lfs":
                row = conn.execute("SELECT size FROM repo_lfs WHERE repo_pk = ? AND sha256 = ?",
                                   (repo.pk, op.sha256)).fetchone()
                if row is None or not self.blob_path(op.sha256).exists():
                    raise HubError(422, f"LFS object {op.sha256} for {op.path} was not uploaded to this repo")
                if op.size is not None and op.size != row[0]:
                    raise HubError(422, f"LFS object {op.sha256} has size {row[0]}, not {op.size}")
                size = row[0]
                manifest[op.path] = Entry(op.path, op.sha256, size, True, git_blob_sha1(lfs_pointer(op.sha256, size)))
            elif op.kind == "delete_file":
                if manifest.pop(op.path, None) is None:
                    # The client sends a path without a trailing '/' as a file; the Hub then deletes
                    # the folder of that name if there is one.
                    doomed = [p for p in manifest if p.startswith(op.path + "/")]
                    if not doomed:
                        raise entry_not_found(op.path, message=f"A file with this name doesn't exist: {op.path}")
                    for p in doomed:
                        del manifest[p]
            elif op.kind == "delete_folder":
                prefix = op.path.rstrip("/") + "/"
                doomed = [p for p in manifest if p.startswith(prefix)]
                if not doomed:
                    raise entry_not_found(op.path, message=f"A folder with this name doesn't exist: {op.path}")
                for p in doomed:
                    del manifest[p]
            else:  # pragma: no cover - the parser only produces the four kinds
                raise bad_request(f"unknown operation {op.kind}")
        paths = set(manifest)
        for p in paths:
            parts = p.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in paths:
                    raise HubError(409, f"'{'/'.join(parts[:i])}' is a file; cannot create '{p}' under it")
        return manifest

    # ------------------------------------------------------------------ migration
    def _migrate_from_1(self) -> None:
        """Schema 1 (a full file list per commit) -> 2 (chunked manifests and per-commit changes), in
        one transaction, under the data-dir lock: all or nothing, never beside a server."""
        took_lock = self._lock_file is None
        if took_lock:
            try:
                self._take_lock()
            except DataDirInUse as exc:
                raise RuntimeError(f"{exc}: its database needs upgrading to this hubtools' storage format; "
                                   "stop that server, then start this version") from None
        try:
            with self.transaction() as conn:
                has_old = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone()
                if has_old:
                    commits = conn.execute("SELECT repo_pk, sha, parent_sha FROM commits ORDER BY repo_pk, seq")
                    for repo_pk, sha, parent in commits.fetchall():
                        old = _read_old_manifest(conn, repo_pk, parent) if parent else {}
                        _write_manifest(conn, repo_pk, sha, _read_old_manifest(conn, repo_pk, sha), old)
                    conn.execute("DROP TABLE entries")
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                             (SCHEMA_VERSION,))
        finally:
            if took_lock and self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    # ------------------------------------------------------------------ blobs
    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256[2:4] / sha256

    def new_temp(self) -> Path:
        return self.tmp_dir / f"{secrets.token_hex(16)}.part"

    def reuse_blob(self, sha256: str) -> bool:
        """True if the blob is stored already. Its mtime is then renewed: ``fsck --gc`` deletes only
        orphans older than its grace period, so a blob a commit is about to reference again is safe."""
        final = self.blob_path(sha256)
        try:
            os.utime(final)
        except FileNotFoundError:
            return False
        return True

    def blob_batch(self) -> BlobBatch:
        return BlobBatch(self)

    def publish_blob(self, tmp: Path, sha256: str) -> None:
        """fsync'd temp file -> immutable blob; drops the temp file if the blob already exists."""
        final = self.blob_path(sha256)
        if self.reuse_blob(sha256):
            tmp.unlink(missing_ok=True)
            return
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(tmp, 0o400)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def put_blob_bytes(self, data: bytes) -> tuple[str, str]:
        """Store ``data``; returns (sha256, git-blob sha1)."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.reuse_blob(sha256):
            tmp = self.new_temp()
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.publish_blob(tmp, sha256)
        return sha256, git_blob_sha1(data)

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # ------------------------------------------------------------------ maintenance
    def fsck(self, gc: bool = False, min_age_s: float = 3600.0) -> FsckReport:
        report = FsckReport()
        conn = self.read()
        referenced = {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM chunk_entries")}
        referenced |= {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM repo_lfs")}
        stored = {p.name: p for p in self.blobs_dir.glob("*/*/*") if p.is_file()}
        report.blobs = len(stored)
        for sha in sorted(referenced):
            path = stored.get(sha)
            if path is None:
                report.missing.append(sha)
            elif sha256_file(path) != sha:
                report.corrupt.append(sha)
        now = time.time()
        for sha, path in sorted(stored.items()):
            if sha in referenced:
                continue
            report.orphans.append(sha)
            if gc and now - path.stat().st_mtime >= min_age_s:
                path.unlink()
                report.removed.append(sha)
        return report


class BlobBatch:
    """The inline files of one commit, written to ``tmp/`` without a sync each and made durable
    together by :meth:`publish` before the commit's transaction: one ``syncfs`` for the data and
    one for the renames (Linux), instead of two fsyncs per file. Until then nothing is in
    ``blobs/``, so a crash leaves only temp files, which the next start removes."""

    def __init__(self, store: Store):
        self.store = store
        self.staged: dict[str, Path] = {}

    def add(self, data: bytes) -> tuple[str, str]:
        """Stage ``data``; returns (sha256, git-blob sha1)."""
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 not in self.staged and not self.store.reuse_blob(sha256):
            tmp = self.store.new_temp()
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
            self.staged[sha256] = tmp
        return sha256, git_blob_sha1(data)

    def publish(self) -> None:
        """Sync the staged files, rename them into the blob store, sync the directories."""
        if not self.staged:
            return
        if not _syncfs(self.store.root):
            for tmp in self.staged.values():
                _fsync_path(tmp)
        dirs: set[Path] = set()
        for sha256, tmp in self.staged.items():
            final = self.store.blob_path(sha256)
            if final.exists():
                tmp.unlink(missing_ok=True)
                continue
            if not final.parent.exists():
                final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                dirs.update((final.parent.parent, self.store.blobs_dir))
            os.chmod(tmp, 0o400)
            os.replace(tmp, final)
            dirs.add(final.parent)
        self.staged.clear()
        if dirs and not _syncfs(self.store.root):
            for d in dirs:
                _fsync_dir(d)

    def discard(self) -> None:
        for tmp in self.staged.values():
            tmp.unlink(missing_ok=True)
        self.staged.clear()


_LIBC = None


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the filesystem holding ``path``: every file written there reaches the disk in
    one call. False where it is unavailable (not Linux); the caller then fsyncs file by file."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _LIBC = libc if sys.platform.startswith("linux") and hasattr(libc, "syncfs") else False
        except OSError:
            _LIBC = False
    if not _LIBC:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _LIBC.syncfs(fd) == 0
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_token() -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "hf_" + "".join(secrets.choice(alphabet) for _ in range(34))


def _commit_sha(repo: str, parent: str | None, digest: str, title: str, message: str, author: str, ns: int) -> str:
    parts = [repo, parent or "", digest, title, message, author, str(ns), secrets.token_hex(16)]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


MANIFEST_CACHE_ENTRIES = 200_000  # entries of all cached manifests together: some 80 MB at most


def _chunk_ends_after(path: str) -> bool:
    """Whether a chunk ends after ``path``: decided by the path alone, so a change to one file
    leaves every other chunk as it was."""
    return int.from_bytes(hashlib.sha1(path.encode()).digest()[:4], "big") % CHUNK_ENTRIES == 0


def _chunks(manifest: dict[str, Entry]) -> list[tuple[str, list[Entry]]]:
    """The sorted manifest cut into (chunk id, entries); the id is a hash of the entries."""
    out: list[tuple[str, list[Entry]]] = []
    current: list[Entry] = []
    for path in sorted(manifest):
        current.append(manifest[path])
        if _chunk_ends_after(path):
            out.append((_chunk_oid(current), current))
            current = []
    if current:
        out.append((_chunk_oid(current), current))
    return out


def _chunk_oid(entries: list[Entry]) -> str:
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.path}\0{e.sha256}\0{e.size}\0{int(e.is_lfs)}\0{e.git_oid}\n".encode())
    return h.hexdigest()[:32]


def _write_manifest(conn: sqlite3.Connection, repo_pk: int, sha: str, manifest: dict[str, Entry],
                    parent: dict[str, Entry]) -> None:
    """Store commit ``sha``'s manifest (new chunks only) and the paths it changed from ``parent``."""
    chunks = _chunks(manifest)
    conn.executemany(
        "INSERT OR IGNORE INTO chunk_entries(repo_pk, chunk_oid, path, sha256, size, is_lfs, git_oid) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(repo_pk, oid, e.path, e.sha256, e.size, int(e.is_lfs), e.git_oid)
         for oid, entries in chunks
         if conn.execute("SELECT 1 FROM chunk_entries WHERE repo_pk = ? AND chunk_oid = ? LIMIT 1",
                         (repo_pk, oid)).fetchone() is None
         for e in entries],
    )
    conn.execute("INSERT INTO commit_manifests(repo_pk, commit_sha, chunks) VALUES (?, ?, ?)",
                 (repo_pk, sha, " ".join(oid for oid, _ in chunks)))
    changed = [p for p in manifest.keys() | parent.keys() if manifest.get(p) != parent.get(p)]
    conn.executemany("INSERT INTO commit_changes(repo_pk, commit_sha, path) VALUES (?, ?, ?)",
                     [(repo_pk, sha, p) for p in changed])


def _read_manifest(conn: sqlite3.Connection, repo_pk: int, sha: str) -> dict[str, Entry]:
    row = conn.execute("SELECT chunks FROM commit_manifests WHERE repo_pk = ? AND commit_sha = ?",
                       (repo_pk, sha)).fetchone()
    oids = row[0].split() if row else []
    entries: list[Entry] = []
    for i in range(0, len(oids), 500):
        part = oids[i : i + 500]
        rows = conn.execute(
            "SELECT path, sha256, size, is_lfs, git_oid FROM chunk_entries WHERE repo_pk = ? AND chunk_oid IN "  # noqa: S608
            f"({', '.join('?' * len(part))})",
            (repo_pk, *part),
        )
        entries += [Entry(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]
    entries.sort(key=lambda e: e.path)
    return {e.path: e for e in entries}


def _read_old_manifest(conn: sqlite3.Connection, repo_pk: int, sha: str) -> dict[str, Entry]:
    rows = conn.execute("SELECT path, sha256, size, is_lfs, git_oid FROM entries WHERE repo_pk = ? AND commit_sha = ?",
                        (repo_pk, sha))
    return {r[0]: Entry(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows}


def _manifest_digest(manifest: dict[str, Entry]) -> str:
    h = hashlib.sha256()
    for path in sorted(manifest):
        e = manifest[path]
        h.update(f"{path}\0{e.sha256}\0{e.size}\0{int(e.is_lfs)}\n".encode())
    return h.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def gitattributes_lfs_patterns(content: bytes) -> list[str]:
    """Patterns that a .gitattributes file routes through LFS (``filter=lfs``)."""
    out = []
    for line in content.decode("utf-8", "replace").splitlines():
        parts = line.strip().split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            out.append(parts[0])
    return out


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    """gitattributes/gitignore-style match: basename for patterns without '/', full path otherwise."""
    base = path.rsplit("/", 1)[-1]
    for pat in patterns:
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        if "/" in pat.rstrip("/"):
            if fnmatch.fnmatchcase(path, pat.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(base, pat.rstrip("/")) or (
            pat.endswith("/") and any(fnmatch.fnmatchcase(seg, pat.rstrip("/")) for seg in path.split("/")[:-1])
        ):
            return True
    return False
