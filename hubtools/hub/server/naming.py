"""Validation of repo ids, file paths and ref names.

Repo paths are database keys, never filesystem paths, but clients write them under a
``local_dir``: rejecting traversal and control characters here protects every user
of the server, not just the server's own disk (spec section 2.12).
"""

from __future__ import annotations

import re

from hubtools.hub.server.errors import bad_request

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
RESERVED_NAMESPACES = {"api", "datasets", "spaces", "models", "kernels", "buckets", "_hub"}

_PART = re.compile(r"^[A-Za-z0-9._-]{1,96}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_repo_part(part: str, what: str) -> str:
    if (
        not isinstance(part, str)
        or not _PART.match(part)
        or part[0] in "-."
        or part[-1] in "-."
        or "--" in part
        or ".." in part
        or part.endswith(".git")
    ):
        raise bad_request(f"Invalid {what} '{part}': 1-96 characters from [A-Za-z0-9._-], no leading or "
                          "trailing '-' or '.', no '--' or '..', not ending in '.git'")
    return part


def check_namespace(ns: str) -> str:
    check_repo_part(ns, "namespace")
    if ns.lower() in RESERVED_NAMESPACES:
        raise bad_request(f"Invalid namespace '{ns}': reserved")
    return ns


def check_path(path: str) -> str:
    """A file path inside a repo: relative, clean, at most 1024 bytes."""
    if not isinstance(path, str) or path == "":
        raise bad_request("Invalid path: empty")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("Invalid path: not valid UTF-8") from None
    if len(raw) > 1024:
        raise bad_request("Invalid path: longer than 1024 bytes")
    if path.startswith("/") or path.endswith("/") or "//" in path or "\\" in path:
        raise bad_request(f"Invalid path {path!r}: must be relative, without '//', trailing '/' or backslashes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise bad_request("Invalid path: control characters are not allowed")
    for seg in path.split("/"):
        if seg in (".", ".."):
            raise bad_request(f"Invalid path {path!r}: '.' and '..' segments are not allowed")
        if seg in (".git", ".cache"):
            raise bad_request(f"Invalid path {path!r}: '{seg}' segments are reserved")
        if len(seg.encode("utf-8")) > 255:
            raise bad_request("Invalid path: a segment is longer than 255 bytes")
    return path


def check_folder(path: str) -> str:
    """A folder prefix, as used by ``deletedFolder``: a path whose trailing '/' is optional."""
    folder = path.rstrip("/") if isinstance(path, str) else path
    if not folder:
        raise bad_request("Invalid folder path: empty")
    return check_path(folder)


def check_ref_name(name: str) -> str:
    """Branch and tag names follow git's ref rules; PR and convert refs are reserved."""
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode("utf-8")) > 255
        or ".." in name
        or _BAD_REF_CHARS.search(name)
        or name.startswith(("-", "/"))
        or name.endswith(("/", ".lock"))
        or "//" in name
        or _HEX40.match(name)
        or name.startswith(("refs/pr/", "refs/convert/"))
    ):
        raise bad_request(f"Invalid reference name '{name}'")
    return name


def is_commit_id(rev: str) -> bool:
    return bool(_HEX40.match(rev))


def is_sha256(oid: object) -> bool:
    return isinstance(oid, str) and bool(_SHA256.match(oid))
