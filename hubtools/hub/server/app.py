"""HTTP routes of the local Hub: the part of the Hub REST and git-LFS API that huggingface_hub 2.x uses.

Each handler validates input, checks the token, then does its blocking work (SQLite,
hashing, fsync) in the store's thread pool. Every answer a client can cause is a 4xx
with the headers ``hf_raise_for_status`` reads (see errors.py); routes the Hub has
and this server lacks answer 501 so the client's best-effort probes give up quietly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import html
import json
import logging
import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from hubtools.hub.server.collections import add_collection_routes
from hubtools.hub.server.errors import HubError, bad_request, entry_not_found, repo_not_found
from hubtools.hub.server.metadata import CardCache, ParsedCard, metadata_errors, parser_process_init
from hubtools.hub.server.naming import (
    REPO_TYPES,
    URL_PREFIX,
    check_folder,
    check_namespace,
    check_path,
    check_ref_name,
    check_repo_part,
    is_sha256,
)
from hubtools.hub.server.store import (
    CHUNK,
    BlobBatch,
    CommitOp,
    Entry,
    Principal,
    Repo,
    Store,
    gitattributes_lfs_patterns,
    matches_any,
    object_id,
)

log = logging.getLogger("hubtools.hub")

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
IDLE_READ_S = 60.0
NO_XET = "hubtools hub has no Xet storage: set HF_HUB_DISABLE_XET=1"
# validate-yaml takes whole cards, unauthenticated: no bigger than the largest regular (non-LFS)
# file huggingface.co accepts. The YAML header inside is capped again, at metadata.MAX_YAML_BYTES.
MAX_CARD_BYTES = 10 * 2**20


@dataclass
class HubConfig:
    """Settings of one server (spec section 1)."""

    data_dir: Path | str
    host: str = "127.0.0.1"
    port: int = 8765
    lfs_threshold: int = 10 * 2**20
    regular_only: bool = False
    public_url: str | None = None
    max_line_bytes: int = 64 * 2**20
    upload_url_ttl_s: int = 3600
    page_size: int = 1000


def _error_response(err: HubError, head: bool) -> web.Response:
    message = " ".join(err.message.split()).encode("ascii", "replace").decode()
    headers = {"X-Error-Message": message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    if head:
        return web.Response(status=err.status, headers=headers)
    return web.json_response({"error": err.message}, status=err.status, headers=headers)


# The Hub's sort names (as the client sends them) -> the info key they order by.
LIST_SORT_KEYS = {"lastModified": "lastModified", "createdAt": "createdAt", "id": "id", "downloads": "downloads",
                  "likes": "likes", "trendingScore": "trendingScore"}
# Card keys a dataset's tags are derived from, as on the Hub ("task_categories:text-classification").
DATASET_TAG_KEYS = ("task_categories", "task_ids", "language", "license", "size_categories", "multilinguality",
                    "source_datasets", "annotations_creators", "language_creators")


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _hub_tags(repo_type: str, card: dict) -> list[str]:
    """A repo's tags as the Hub lists them: the card's own, then those derived from its metadata
    (what ``filter=`` matches: a model's pipeline tag, library, languages, ``license:X``,
    ``dataset:X``, ``base_model:X``; a dataset's ``task_categories:X``, ``language:X``, ...)."""
    tags = _as_list(card.get("tags"))
    if repo_type == "model":
        tags += _as_list(card.get("library_name")) + _as_list(card.get("pipeline_tag"))
        tags += _as_list(card.get("language"))
        tags += [f"license:{v}" for v in _as_list(card.get("license"))]
        tags += [f"dataset:{v}" for v in _as_list(card.get("datasets"))]
        tags += [f"base_model:{v}" for v in _as_list(card.get("base_model"))]
    elif repo_type == "dataset":
        for key in DATASET_TAG_KEYS:
            tags += [f"{key}:{v}" for v in _as_list(card.get(key))]
    else:
        tags += [f"license:{v}" for v in _as_list(card.get("license"))]
    return list(dict.fromkeys(tags))


def _formatted(title: str, message: str) -> dict:
    """``list_repo_commits(formatted=True)``: title and message as HTML (escaped text, one
    paragraph per blank-line-separated block of the message)."""
    paragraphs = [p.strip() for p in message.split("\n\n") if p.strip()]
    return {"title": html.escape(title),
            "message": "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)}


def _no_namespace_repo(request: web.Request) -> HubError:
    return repo_not_found(404 if request.headers.get("Authorization") else 401)


def _as_bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class HubApp:
    """The route handlers bound to one :class:`Store`."""

    def __init__(self, cfg: HubConfig, store: Store):
        self.cfg = cfg
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hubtools-hub")
        self.commit_locks: dict[tuple[int, str], asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.request_log: collections.deque = collections.deque(maxlen=100_000)
        # Card parsing is CPU-bound and validate-yaml is open to anyone: two threads of its own keep a
        # flood of such calls from occupying the pool every other request needs, and large headers
        # are parsed in one worker process (started on first use) so they never hold this process's GIL.
        self.yaml_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hubtools-hub-yaml")
        self.yaml_process = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=parser_process_init, initargs=(os.getpid(),))
        self.cards = CardCache(executor=self.yaml_process)
        self._dir_cache: dict[tuple[int, str], dict[str, str]] = {}
        self._dir_cache_lock = threading.Lock()

    async def run(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def middleware(self, request: web.Request, handler):
        self.request_log.append((request.method, request.raw_path.split("?", 1)[0]))
        head = request.method == "HEAD"
        try:
            return await handler(request)
        except HubError as err:
            return _error_response(err, head)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(HubError(413, "Request body too large"), head)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return _error_response(HubError(501, f"Not implemented by hubtools hub: {request.method} "
                                                     f"{request.path}"), head)
            raise
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error_response(bad_request(f"Malformed request body: {exc}"), head)

    def origin(self, request: web.Request) -> str:
        if self.cfg.public_url:
            return self.cfg.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    def repo_url(self, request: web.Request, repo: Repo) -> str:
        return f"{self.origin(request)}/{URL_PREFIX[repo.type]}{repo.id}"

    async def principal(self, request: web.Request) -> Principal | None:
        auth = request.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HubError(401, INVALID_CREDENTIALS)
        principal = await self.run(self.store.principal, token.strip())
        if principal is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return principal

    def _repo_key(self, request: web.Request) -> tuple[str, str, str]:
        info = request.match_info
        t = info.get("t")
        if t is not None:
            if t not in REPO_TYPES:
                raise HubError(501, f"Not implemented by hubtools hub: {request.path}")
            rtype = REPO_TYPES[t]
        else:
            rtype = info.get("rtype", "model")
        ns, name = info["ns"], info["name"]
        if rtype == "model" and ns in ("datasets", "spaces"):
            raise _no_namespace_repo(request)  # /datasets/NAME/resolve/...: a dataset id without namespace
        return rtype, check_namespace(ns), check_repo_part(name, "repo name")

    async def repo_for_read(self, request: web.Request) -> tuple[Repo, Principal | None]:
        rtype, ns, name = self._repo_key(request)
        principal = await self.principal(request)
        repo = await self.run(self.store.get_repo, rtype, ns, name)
        if repo is None or (repo.private and not (principal and principal.owns(repo.ns))):
            raise repo_not_found(401 if principal is None else 404)
        return repo, principal

    async def repo_for_write(self, request: web.Request) -> tuple[Repo, Principal]:
        rtype, ns, name = self._repo_key(request)
        principal = await self.principal(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to write to this repo")
        repo = await self.run(self.store.get_repo, rtype, ns, name)
        if repo is None:
            raise repo_not_found(404)
        if not principal.owns(repo.ns):
            if repo.private:
                raise repo_not_found(404)
            raise HubError(403, f"You don't have the rights to write to {repo.id}")
        if principal.role != "write":
            raise HubError(403, "This token has read access only; a write token is needed")
        return repo, principal

    async def json_body(self, request: web.Request, limit: int | None = None) -> dict:
        limit = limit or self.cfg.max_line_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HubError(413, f"Request body larger than {limit} bytes")
        raw = await self.read_body(request, limit)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"Malformed JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise bad_request("JSON body must be an object")
        return data

    async def read_body(self, request: web.Request, limit: int) -> bytes:
        buf = bytearray()
        while True:
            chunk = await self._read_chunk(request)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise HubError(413, f"Request body larger than {limit} bytes")
        if request.content_length is not None and len(buf) != request.content_length:
            raise bad_request("Content-Length does not match the body")
        return bytes(buf)

    async def _read_chunk(self, request: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(request.content.readany(), IDLE_READ_S)
        except TimeoutError:
            raise HubError(408, "No data received for 60 s") from None

    # ------------------------------------------------------------------ account
    async def whoami(self, request: web.Request) -> web.Response:
        principal = await self.principal(request)
        if principal is None:
            raise HubError(401, "Authorization header is required")
        return web.json_response({
            "type": "user",
            "id": object_id("user", principal.user),
            "name": principal.user,
            "fullname": principal.user,
            "email": None,
            "emailVerified": False,
            "isPro": False,
            "orgs": [{"name": o, "type": "org", "id": object_id("org", o), "fullname": o} for o in principal.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": f"{principal.user}-{principal.role}",
                                                              "role": principal.role}},
        })

    async def validate_yaml(self, request: web.Request) -> web.Response:
        """``RepoCard.validate`` and ``create_commit`` of a README: 200, or 400 with the Hub's error list.

        The client reads the body as JSON before it checks the status, so every answer is JSON.
        """
        if request.content_length is not None and request.content_length > MAX_CARD_BYTES:
            raise HubError(413, f"Card larger than {MAX_CARD_BYTES} bytes")
        raw = await self.read_body(request, MAX_CARD_BYTES)
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"Malformed JSON body: {exc}") from None
        content = body.get("content", "") if isinstance(body, dict) else ""
        repo_type = body.get("repoType") if isinstance(body, dict) else None
        if not isinstance(content, str):
            raise bad_request("'content' must be a string")
        if repo_type not in (None, "model", "dataset", "space"):
            raise bad_request(f"Invalid repoType '{repo_type}'")
        key = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
        loop = asyncio.get_running_loop()
        card = await loop.run_in_executor(self.yaml_pool, self.cards.parse, key, lambda: content)
        if card.too_large:
            raise HubError(413, card.error)
        errors = [card.error] if card.error else metadata_errors(card.meta or {}, repo_type or "model")
        if errors:
            return web.json_response({"errors": [{"message": m} for m in errors], "warnings": []}, status=400,
                                     headers={"X-Error-Message": " ".join(errors[0].split())[:500]})
        return web.json_response({"errors": [], "warnings": []})

    # ------------------------------------------------------------------ repos
    async def create_repo(self, request: web.Request) -> web.Response:
        principal = await self.principal(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to create a repo")
        body = await self.json_body(request)
        name = body.get("name")
        ns = body.get("organization") or principal.user
        rtype = body.get("type") or "model"
        if rtype not in URL_PREFIX:
            raise bad_request(f"Invalid repo type '{rtype}'")
        if not isinstance(name, str) or not isinstance(ns, str):
            raise bad_request("'name' and 'organization' must be strings")
        check_namespace(ns)
        check_repo_part(name, "repo name")
        if not principal.owns(ns):
            raise HubError(403, f"You don't have the rights to create a repo under '{ns}'")
        if principal.role != "write":
            raise HubError(403, "This token has read access only; a write token is needed")
        private = body.get("private")
        if private is None:
            private = body.get("visibility") == "private"
        if not isinstance(private, bool):
            raise bad_request("'private' must be a boolean")
        sdk = body.get("sdk")
        if rtype == "space" and sdk not in ("gradio", "docker", "static", "streamlit"):
            raise bad_request(f"Invalid space sdk '{sdk}': one of gradio, docker, static, streamlit")
        existing = await self.run(self.store.get_repo, rtype, ns, name)
        if existing is None:
            try:
                repo = await self.run(self.store.create_repo, rtype, ns, name, private, sdk, principal.user)
            except HubError as err:
                if err.status != 409:
                    raise
                existing = await self.run(self.store.get_repo, rtype, ns, name)
            else:
                url = self.repo_url(request, repo)
                return web.json_response({"url": url, "name": repo.id, "id": repo.id})
        url = self.repo_url(request, existing)
        return web.json_response({"error": "You already created this repo", "url": url}, status=409,
                                 headers={"X-Error-Message": "You already created this repo"})

    async def delete_repo(self, request: web.Request) -> web.Response:
        principal = await self.principal(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to delete a repo")
        body = await self.json_body(request)
        rtype = body.get("type") or "model"
        ns = body.get("organization") or principal.user
        name = body.get("name")
        if rtype not in URL_PREFIX or not isinstance(name, str) or not isinstance(ns, str):
            raise bad_request("Invalid delete request")
        repo = await self.run(self.store.get_repo, rtype, ns, name)
        if repo is None or (repo.private and not principal.owns(repo.ns)):
            raise repo_not_found()
        if not principal.owns(repo.ns) or principal.role != "write":
            raise HubError(403, f"You don't have the rights to delete {repo.id}")
        await self.run(self.store.delete_repo, repo)
        return web.json_response({})

    async def settings(self, request: web.Request) -> web.Response:
        """``update_repo_settings``: visibility. Every setting is checked before any is applied, and
        one this server cannot honour is refused with 400 rather than accepted and ignored."""
        repo, _ = await self.repo_for_write(request)
        body = await self.json_body(request)
        unknown = sorted(set(body) - {"private", "visibility", "gated"})
        if unknown:
            raise bad_request(f"Unsupported repo setting(s) {', '.join(unknown)}: hubtools hub supports "
                              "'private', 'visibility' and 'gated': false")
        if body.get("gated", False) is not False:
            # Access requests and their approval are not implemented: a gated repo would be readable
            # by everyone, so the setting is refused instead.
            raise bad_request(f"Gated repos are not supported by hubtools hub (got gated={body['gated']!r}); "
                              "keep the repo private and share it through an organization instead")
        private = body.get("private")
        if "visibility" in body:  # huggingface_hub 2.x sends {"visibility": "private" | "public"}
            if body["visibility"] not in ("private", "public"):
                raise bad_request("'visibility' must be 'private' or 'public'")
            private = body["visibility"] == "private"
        if private is not None:
            if not isinstance(private, bool):
                raise bad_request("'private' must be a boolean")
            await self.run(self.store.set_private, repo, private)
        return web.json_response({})

    def _info(self, request: web.Request, repo: Repo, sha: str) -> tuple[dict, str | None]:
        """The info object without ``cardData``, and ``cardData`` already JSON-encoded (or None):
        :meth:`_info_json` joins them, so a cached card is never encoded twice."""
        manifest = self.store.manifest(repo, sha)
        commit = self.store.commit_row(repo, sha)
        parsed = self._card(manifest.get("README.md"))
        card = parsed.meta if parsed else None
        info = {
            "_id": object_id("repo", f"{repo.type}/{repo.id}"),
            "id": repo.id,
            "author": repo.ns,
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": _hub_tags(repo.type, card or {}),
            "siblings": [self._sibling(e) for e in manifest.values()],
        }
        if repo.type == "model":
            info["modelId"] = repo.id
            if card:
                for key, out in (("library_name", "library_name"), ("pipeline_tag", "pipeline_tag")):
                    if isinstance(card.get(key), str):
                        info[out] = card[key]
        if repo.type == "space":
            info["sdk"] = repo.sdk
        return info, parsed.meta_json if parsed else None

    @staticmethod
    def _info_json(info: dict, card_json: str | None) -> str:
        body = json.dumps(info)
        return body if card_json is None else f'{body[:-1]}, "cardData": {card_json}}}'

    def _card(self, readme: Entry | None) -> ParsedCard | None:
        """The README's parsed metadata (cached by content hash); None without a readable README."""
        if readme is None or readme.size > MAX_CARD_BYTES:
            return None
        try:
            return self.cards.parse(readme.sha256, lambda: self.store.read_blob(readme.sha256).decode("utf-8"))
        except OSError:
            return None

    @staticmethod
    def _sibling(e: Entry) -> dict:
        s = {"rfilename": e.path, "size": e.size, "blobId": e.git_oid}
        if e.is_lfs:
            s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
        return s

    async def repo_info(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_read(request)
        rev = request.match_info.get("rev", "main")
        sha = await self.run(self.store.resolve, repo, rev)
        info, card_json = await self.run(self._info, request, repo, sha)
        return web.Response(text=self._info_json(info, card_json), content_type="application/json")

    async def list_repos(self, request: web.Request) -> web.Response:
        """``list_models`` / ``list_datasets`` / ``list_spaces`` with the Hub's query semantics.

        ``author`` (case-insensitive), ``search`` (a case-insensitive substring of the id),
        ``filter`` (repeatable; every one must be among the repo's tags, which include the
        pipeline tag, library, ``license:X``, ``dataset:X`` and, for datasets, ``task_categories:X``
        and the like, as on the Hub), ``pipeline_tag``, ``gated``, then ``sort`` (``lastModified``,
        ``createdAt``, ``id``, ``downloads``, ``likes``, ``trendingScore``; descending unless
        ``direction=1``) and ``limit``. Only repos the caller may read are listed.
        """
        t = request.match_info["t"]
        if t not in REPO_TYPES:
            raise HubError(501, f"Not implemented by hubtools hub: {request.path}")
        principal = await self.principal(request)
        q = request.query
        author = (q.get("author") or "").lower()
        search = (q.get("search") or "").lower()
        wanted_tags = set(q.getall("filter", []))
        pipeline_tag = q.get("pipeline_tag")
        sort, direction = q.get("sort"), q.get("direction", "-1")
        if sort is not None and sort not in LIST_SORT_KEYS:
            raise bad_request(f"Invalid sort '{sort}': one of {', '.join(LIST_SORT_KEYS)}")
        if direction not in ("-1", "1"):
            raise bad_request("'direction' must be -1 or 1")
        limit = None
        if q.get("limit"):
            if not q["limit"].isdigit():
                raise bad_request("'limit' must be a non-negative integer")
            limit = int(q["limit"])
        gated = q.get("gated")
        if gated is not None and gated.lower() not in ("true", "false"):
            raise bad_request("'gated' must be true or false")

        def collect() -> str:
            found: list[tuple[dict, str | None]] = []
            if gated is not None and gated.lower() == "true":
                return "[]"  # no repo here is gated
            for repo in self.store.list_repos(REPO_TYPES[t]):
                if repo.private and not (principal and principal.owns(repo.ns)):
                    continue
                if (author and repo.ns.lower() != author) or (search and search not in repo.id.lower()):
                    continue
                info, card_json = self._info(request, repo, self.store.resolve(repo, "main"))
                if wanted_tags and not wanted_tags <= set(info["tags"]):
                    continue
                if pipeline_tag and info.get("pipeline_tag") != pipeline_tag:
                    continue
                found.append((info, card_json))
                if sort is None and limit is not None and len(found) >= limit:
                    break
            if sort is not None:
                key = LIST_SORT_KEYS[sort]
                found.sort(key=lambda f: f[0]["id"])  # ties in id order, whatever the direction
                found.sort(key=lambda f: f[0].get(key) or 0, reverse=direction == "-1")
            if limit is not None:
                found = found[:limit]
            return f"[{', '.join(self._info_json(info, card_json) for info, card_json in found)}]"

        return web.Response(text=await self.run(collect), content_type="application/json")

    # ------------------------------------------------------------------ trees
    def _dirs(self, repo: Repo, sha: str, manifest: dict[str, Entry]) -> dict[str, str]:
        """:meth:`_dir_oids` of commit ``sha``, cached: commits never change."""
        key = (repo.pk, sha)
        with self._dir_cache_lock:
            oids = self._dir_cache.get(key)
        if oids is None:
            oids = self._dir_oids(manifest)
            with self._dir_cache_lock:
                self._dir_cache[key] = oids
                while len(self._dir_cache) > 32:
                    self._dir_cache.pop(next(iter(self._dir_cache)))
        return oids

    @staticmethod
    def _dir_oids(manifest: dict[str, Entry]) -> dict[str, str]:
        """Directory oid = sha1 of its sorted (name, child oid) pairs, computed deepest first."""
        children: dict[str, dict[str, str]] = collections.defaultdict(dict)
        dirs = {""}
        for path, e in manifest.items():
            parts = path.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            children["/".join(parts[:-1])][parts[-1]] = e.git_oid
        oids: dict[str, str] = {}
        for d in sorted(dirs, key=lambda p: p.count("/") + 1 if p else 0, reverse=True):
            h = hashlib.sha1()
            for name in sorted(children[d]):
                h.update(f"{name}\0{children[d][name]}\n".encode())
            oids[d] = h.hexdigest()
            if d:
                parent, _, base = d.rpartition("/")
                children[parent][base] = oids[d]
        return oids

    def _tree(self, repo: Repo, sha: str, path: str, recursive: bool) -> list[dict]:
        manifest = self.store.manifest(repo, sha)
        dirs = self._dirs(repo, sha, manifest)
        if path:
            if path not in dirs:  # a file too: the Hub answers 404, and the client then lists the parent
                raise entry_not_found(path, sha)
        prefix = f"{path}/" if path else ""
        out = []
        for d, oid in dirs.items():
            if d and d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                out.append({"type": "directory", "path": d, "oid": oid})
        for p, e in manifest.items():
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]):
                out.append(self._file_entry(e))
        out.sort(key=lambda x: (x["type"] != "directory", x["path"]))
        return out

    @staticmethod
    def _file_entry(e: Entry) -> dict:
        entry = {"type": "file", "path": e.path, "size": e.size, "oid": e.git_oid}
        if e.is_lfs:
            entry["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
        return entry

    def _add_last_commits(self, repo: Repo, sha: str, entries: list[dict]) -> None:
        """``expand=true``: the newest first-parent commit that changed each entry (walks ≤1000 commits).

        Each commit records the paths it changed, so this reads one row per changed path instead of
        comparing whole file lists commit by commit."""
        chain = self.store.history(repo, sha, limit=1000)
        changes = self.store.changes(repo, [c["sha"] for c in chain])
        touched: list[set[str]] = []  # per commit: the changed paths and every folder above them
        for commit in chain:
            paths = set(changes[commit["sha"]])
            for p in list(paths):
                parts = p.split("/")
                paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
            touched.append(paths)
        for entry in entries:
            chosen = next((c for c, paths in zip(chain, touched, strict=True) if entry["path"] in paths), chain[-1])
            entry["lastCommit"] = {"id": chosen["sha"], "title": chosen["title"], "date": chosen["date"]}

    def _page(self, request: web.Request, items: list, page_size: int) -> tuple[list, dict[str, str]]:
        """One page of ``items`` and the ``Link: <...>; rel="next"`` header the client follows."""
        cursor = request.query.get("cursor")
        start = 0
        if cursor:
            try:
                start = int(base64.urlsafe_b64decode(cursor.encode()).decode())
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise bad_request("Invalid cursor") from None
        page = items[start:start + page_size]
        headers = {}
        if start + page_size < len(items):
            nxt = base64.urlsafe_b64encode(str(start + page_size).encode()).decode()
            url = self.origin(request) + str(request.rel_url.update_query(cursor=nxt))
            headers["Link"] = f'<{url}>; rel="next"'
        return page, headers

    async def tree(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_read(request)
        rev = request.match_info["rev"]
        path = request.match_info.get("path", "").strip("/")
        if path:
            check_path(path)
        sha = await self.run(self.store.resolve, repo, rev)
        recursive = _as_bool(request.query.get("recursive"))
        expand = _as_bool(request.query.get("expand"))
        entries = await self.run(self._tree, repo, sha, path, recursive)
        page_size = min(self.cfg.page_size, 50) if expand else self.cfg.page_size
        page, headers = self._page(request, entries, page_size)
        if expand:
            await self.run(self._add_last_commits, repo, sha, page)
        return web.json_response(page, headers=headers)

    async def paths_info(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_read(request)
        sha = await self.run(self.store.resolve, repo, request.match_info["rev"])
        if request.content_type == "application/json":
            body = await self.json_body(request)
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:
            form = await request.post()
            paths, expand = form.getall("paths", []), _as_bool(form.get("expand"))
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise bad_request("'paths' must be a list of strings")
        wanted = [check_path(p.strip("/")) for p in paths if p.strip("/")]

        def collect() -> list[dict]:
            manifest = self.store.manifest(repo, sha)
            dirs = self._dirs(repo, sha, manifest)
            out = []
            for p in wanted:
                if p in manifest:
                    out.append(self._file_entry(manifest[p]))
                elif p in dirs:
                    out.append({"type": "directory", "path": p, "oid": dirs[p]})
            if expand:
                self._add_last_commits(repo, sha, out)
            return out

        return web.json_response(await self.run(collect))

    async def commits(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_read(request)
        sha = await self.run(self.store.resolve, repo, request.match_info["rev"])
        chain = await self.run(self.store.history, repo, sha)
        formatted = "formatted" in request.query.getall("expand[]", [])
        items = [{"id": c["sha"], "title": c["title"], "message": c["message"], "date": c["date"],
                  "authors": [{"user": c["author"]}],
                  **({"formatted": _formatted(c["title"], c["message"])} if formatted else {})} for c in chain]
        page, headers = self._page(request, items, self.cfg.page_size)
        return web.json_response(page, headers=headers)

    async def refs(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_read(request)
        rows = await self.run(self.store.refs, repo)
        out: dict[str, list] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        for kind, name, target in rows:
            if kind == "branch":
                out["branches"].append({"name": name, "ref": f"refs/heads/{name}", "targetCommit": target})
            elif kind == "tag":
                out["tags"].append({"name": name, "ref": f"refs/tags/{name}", "targetCommit": target})
            elif _as_bool(request.query.get("include_prs")):
                out["pullRequests"].append({"name": f"refs/pr/{name}", "ref": f"refs/pr/{name}",
                                            "targetCommit": target})
        return web.json_response(out)

    async def branch(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_write(request)
        name = check_ref_name(request.match_info["branch"].removeprefix("refs/heads/"))
        if request.method == "DELETE":
            if name == "main":
                raise HubError(403, "Cannot delete the default branch 'main'")
            await self.run(self.store.delete_ref, repo, "branch", name)
            return web.json_response({})
        body = await self.json_body(request)
        start = body.get("startingPoint") or "main"
        if not isinstance(start, str):
            raise bad_request("'startingPoint' must be a string")
        target = await self.run(self.store.resolve, repo, start)
        await self.run(self.store.create_ref, repo, "branch", name, target)
        return web.json_response({})

    async def create_tag(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_write(request)
        body = await self.json_body(request)
        tag = body.get("tag")
        # The revision first, as on the Hub: an unknown one is 404 whatever the tag's name.
        target = await self.run(self.store.resolve, repo, request.match_info["rev"])
        if not isinstance(tag, str):
            raise bad_request("'tag' must be a string")
        check_ref_name(tag)
        await self.run(self.store.create_ref, repo, "tag", tag, target)
        return web.json_response({})

    async def delete_tag(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_write(request)
        await self.run(self.store.delete_ref, repo, "tag", request.match_info["tag"])
        return web.json_response({})

    async def xet_token(self, request: web.Request) -> web.Response:
        log.warning("%s %s: %s", request.method, request.path, NO_XET)
        raise HubError(404, NO_XET)

    # ------------------------------------------------------------------ uploads
    async def preupload(self, request: web.Request) -> web.Response:
        repo, _ = await self.repo_for_write(request)
        body = await self.json_body(request)
        files = body.get("files")
        if not isinstance(files, list):
            raise bad_request("'files' must be a list")
        if len(files) > 1000:
            raise HubError(413, "At most 1000 files per preupload call")
        git_ignore = body.get("gitIgnore")
        sha = await self.run(self.store.resolve, repo, request.match_info["rev"])

        def decide() -> list[dict]:
            manifest = self.store.manifest(repo, sha)
            attrs = manifest.get(".gitattributes")
            lfs_patterns = gitattributes_lfs_patterns(self.store.read_blob(attrs.sha256)) if attrs else []
            if isinstance(git_ignore, str):
                ignore_patterns = git_ignore.splitlines()
            else:
                gi = manifest.get(".gitignore")
                ignore_patterns = self.store.read_blob(gi.sha256).decode("utf-8", "replace").splitlines() if gi else []
            out = []
            for f in files:
                if not isinstance(f, dict):
                    raise bad_request("each file must be an object with 'path', 'sample' and 'size'")
                path, size, sample = f.get("path"), f.get("size"), f.get("sample", "")
                check_path(path)
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise bad_request(f"Invalid 'size' for {path}")
                try:
                    raw = base64.b64decode(sample or "", validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise bad_request(f"Invalid base64 'sample' for {path}") from None
                if self.cfg.regular_only or size == 0:
                    mode = "regular"
                elif size >= self.cfg.lfs_threshold or b"\0" in raw or matches_any(path, lfs_patterns):
                    mode = "lfs"
                else:
                    mode = "regular"
                existing = manifest.get(path)
                oid = None if existing is None else (existing.sha256 if existing.is_lfs else existing.git_oid)
                out.append({"path": path, "uploadMode": mode, "shouldIgnore": matches_any(path, ignore_patterns),
                            "oid": oid})
            return out

        return web.json_response({"files": await self.run(decide), "commitOid": sha})

    def _sign(self, verb: str, repo_key: str, oid: str, size: int, exp: int) -> str:
        msg = f"{verb}\n{repo_key}\n{oid}\n{size}\n{exp}".encode()
        return hmac.new(self.store.secret, msg, hashlib.sha256).hexdigest()

    def _signed_url(self, request: web.Request, verb: str, repo: Repo, oid: str, size: int) -> str:
        exp = int(time.time()) + self.cfg.upload_url_ttl_s
        key = f"{repo.type}/{repo.id}"
        sig = self._sign(verb, key, oid, size, exp)
        suffix = "/verify" if verb == "VERIFY" else ""
        return (f"{self.origin(request)}/_hub/lfs/{oid}{suffix}?repo={quote(key, safe='')}&size={size}"
                f"&exp={exp}&sig={sig}")

    async def lfs_batch(self, request: web.Request) -> web.Response:
        gitname = request.match_info["gitname"]
        if not gitname.endswith(".git"):
            raise HubError(501, f"Not implemented by hubtools hub: {request.path}")
        request.match_info["name"] = gitname[: -len(".git")]
        repo, _ = await self.repo_for_write(request)
        body = await self.json_body(request)
        if body.get("operation") != "upload":
            raise bad_request("Only the 'upload' operation is supported")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise bad_request("'objects' must be a list")
        if len(objects) > 1000:
            raise HubError(413, "At most 1000 objects per LFS batch")
        out = []
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            if not is_sha256(oid) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                out.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            known = await self.run(self.store.lfs_known, repo, oid)
            if known == size and self.store.blob_path(oid).exists():
                out.append({"oid": oid, "size": size})
                continue
            out.append({
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {"href": self._signed_url(request, "PUT", repo, oid, size),
                               "expires_in": self.cfg.upload_url_ttl_s},
                    "verify": {"href": self._signed_url(request, "VERIFY", repo, oid, size),
                               "expires_in": self.cfg.upload_url_ttl_s},
                },
            })
        return web.json_response({"transfer": "basic", "hash_algo": "sha256", "objects": out},
                                 content_type="application/vnd.git-lfs+json")

    async def _signed_repo(self, request: web.Request, verb: str) -> tuple[Repo, str, int]:
        q = request.query
        oid = request.match_info["oid"]
        try:
            size, exp = int(q["size"]), int(q["exp"])
            key, sig = q["repo"], q["sig"]
        except (KeyError, ValueError):
            raise HubError(403, "Missing or malformed upload signature") from None
        expected = self._sign(verb, key, oid, size, exp)
        if not hmac.compare_digest(expected, sig) or exp < time.time():
            raise HubError(403, "Invalid or expired upload signature")
        rtype, _, rid = key.partition("/")
        ns, _, name = rid.partition("/")
        repo = await self.run(self.store.get_repo, rtype, ns, name)
        if repo is None:
            raise repo_not_found()
        return repo, oid, size

    async def lfs_put(self, request: web.Request) -> web.Response:
        repo, oid, size = await self._signed_repo(request, "PUT")
        if request.content_length is not None and request.content_length != size:
            raise bad_request(f"Content-Length {request.content_length} does not match the signed size {size}")
        tmp = self.store.new_temp()
        h = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as f:
                while True:
                    chunk = await self._read_chunk(request)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > size:
                        raise bad_request(f"Body is larger than the announced size {size}")
                    h.update(chunk)
                    f.write(chunk)
                if received != size or h.hexdigest() != oid:
                    raise bad_request(f"Uploaded content does not match: got {received} bytes with sha256 "
                                      f"{h.hexdigest()}, expected {size} bytes with sha256 {oid}")
                f.flush()
                await self.run(os.fsync, f.fileno())
            await self.run(self.store.publish_blob, tmp, oid)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await self.run(self.store.associate_lfs, repo, oid, size)
        return web.Response(status=200)

    async def lfs_verify(self, request: web.Request) -> web.Response:
        repo, oid, size = await self._signed_repo(request, "VERIFY")
        principal = await self.principal(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to verify an upload")
        known = await self.run(self.store.lfs_known, repo, oid)
        if known != size or not self.store.blob_path(oid).exists():
            raise HubError(422, f"LFS object {oid} of size {size} was not uploaded to {repo.id}")
        return web.json_response({})

    async def _ndjson_lines(self, request: web.Request):
        """Yield the non-empty lines of the body one at a time, never buffering more than one line."""
        buf = bytearray()
        scanned = 0
        limit = self.cfg.max_line_bytes
        while True:
            chunk = await self._read_chunk(request)
            if not chunk:
                break
            buf += chunk
            while True:
                i = buf.find(b"\n", scanned)
                if i < 0:
                    scanned = len(buf)
                    break
                line = bytes(buf[:i])
                del buf[: i + 1]
                scanned = 0
                if len(line) > limit:
                    raise HubError(413, f"A commit line is larger than {limit} bytes; upload big files via LFS")
                if line.strip():
                    yield line
            if len(buf) > limit:
                raise HubError(413, f"A commit line is larger than {limit} bytes; upload big files via LFS")
        if buf.strip():
            yield bytes(buf)

    async def commit(self, request: web.Request) -> web.Response:
        repo, principal = await self.repo_for_write(request)
        rev = request.match_info["rev"]
        create_pr = _as_bool(request.query.get("create_pr"))
        blobs = self.store.blob_batch()
        try:
            return await self._commit(request, repo, principal, rev, create_pr, blobs)
        finally:
            await self.run(blobs.discard)  # whatever a refused commit staged; nothing after publish()

    async def _commit(self, request: web.Request, repo: Repo, principal: Principal, rev: str, create_pr: bool,
                      blobs: BlobBatch) -> web.Response:
        header = None
        ops: list[CommitOp] = []
        async for raw in self._ndjson_lines(request):
            try:
                line = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise bad_request(f"Malformed NDJSON line: {exc}") from None
            if not isinstance(line, dict) or not isinstance(line.get("value"), dict):
                raise bad_request("Each NDJSON line must be an object with 'key' and 'value'")
            key, value = line.get("key"), line["value"]
            if header is None:
                if key != "header":
                    raise bad_request("The first NDJSON line must be the header")
                header = value
                continue
            ops.append(await self._parse_op(key, value, blobs))
        if header is None:
            raise bad_request("Empty commit payload: the header line is missing")
        if not ops:
            raise bad_request("A commit needs at least one operation")
        title = header.get("summary") or "Upload files"
        message = header.get("description") or ""
        parent = header.get("parentCommit")
        if not isinstance(title, str) or not isinstance(message, str) or (parent is not None
                                                                          and not isinstance(parent, str)):
            raise bad_request("'summary', 'description' and 'parentCommit' must be strings")
        if create_pr and rev.startswith("refs/pr/"):
            raise bad_request("A pull request must start from a branch")
        await self.run(blobs.publish)  # durable before the transaction that references them
        async with self.commit_locks[(repo.pk, rev)]:
            sha, pr_num = await self.run(
                self.store.commit, repo, rev, ops, title=title, message=message, author=principal.user,
                parent_commit=parent, create_pr=create_pr,
            )
        url = self.repo_url(request, repo)
        out = {"success": True, "commitOid": sha, "commitUrl": f"{url}/commit/{sha}", "hookOutput": ""}
        if pr_num is not None:
            out["pullRequestUrl"] = f"{url}/discussions/{pr_num}"
        return web.json_response(out)

    async def _parse_op(self, key: str, value: dict, blobs: BlobBatch) -> CommitOp:
        if key == "file":
            path = check_path(value.get("path"))
            if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                raise bad_request(f"File {path}: 'content' must be a base64 string")
            try:
                data = base64.b64decode(value["content"], validate=True)
            except (binascii.Error, ValueError):
                raise bad_request(f"File {path}: invalid base64 content") from None
            sha256, git_oid = await self.run(blobs.add, data)
            return CommitOp("file", path, sha256=sha256, size=len(data), git_oid=git_oid)
        if key == "lfsFile":
            path = check_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")
            if value.get("algo", "sha256") != "sha256" or not is_sha256(oid):
                raise bad_request(f"LFS file {path}: 'oid' must be a sha256")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise bad_request(f"LFS file {path}: invalid 'size'")
            return CommitOp("lfs", path, sha256=oid, size=size)
        if key == "deletedFile":
            return CommitOp("delete_file", check_path(value.get("path")))
        if key == "deletedFolder":
            return CommitOp("delete_folder", check_folder(value.get("path")))
        raise bad_request(f"Unknown commit operation '{key}'")

    # ------------------------------------------------------------------ downloads
    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo, _ = await self.repo_for_read(request)
        rev = request.match_info["rev"]
        path = check_path(request.match_info["path"])
        sha = await self.run(self.store.resolve, repo, rev)
        entry = await self.run(self.store.entry, repo, sha, path)
        if entry is None:
            raise entry_not_found(path, sha)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{entry.sha256 if entry.is_lfs else entry.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.is_lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        start, end, status = 0, entry.size - 1, 200
        rng = request.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, entry.size)
            if parsed == "unsatisfiable":
                miss = {k: v for k, v in headers.items() if k != "Content-Type"}
                miss["Content-Range"] = f"bytes */{entry.size}"
                raise HubError(416, f"Range {rng} not satisfiable for {entry.size} bytes", headers=miss)
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        # Open the blob before any header goes out: a blob lost from the data dir must be an error
        # status, not a 200 whose body breaks off.
        blob = await self.run(self._open_blob, entry, path)
        if request.method == "HEAD":
            blob.close()
            return web.Response(status=status, headers=headers)
        with blob as f:
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = length
            await resp.prepare(request)
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = await self.run(f.read, min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    def _open_blob(self, entry: Entry, path: str):
        """The blob of ``entry``, open for reading; 507 if it is missing or has the wrong size.

        507 rather than 500: the client retries 500 five times with backoff, and retrying cannot
        bring a lost blob back. ``hubtools hub fsck`` names every such blob.
        """
        try:
            f = open(self.store.blob_path(entry.sha256), "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            log.error("blob %s of %s is missing from %s", entry.sha256, path, self.store.root)
            raise HubError(507, f"The content of {path} is missing from the server's storage "
                                "(run: hubtools hub fsck)") from None
        if os.fstat(f.fileno()).st_size != entry.size:
            f.close()
            log.error("blob %s of %s does not have its size %d", entry.sha256, path, entry.size)
            raise HubError(507, f"The content of {path} is damaged in the server's storage "
                                "(run: hubtools hub fsck)")
        return f

    async def no_namespace(self, request: web.Request) -> web.Response:
        """Repo ids without a namespace (the Hub's legacy ids such as ``gpt2``): none exist here, so
        404 RepoNotFound, which ``repo_exists`` / ``file_exists`` / ``revision_exists`` read as False."""
        t = request.match_info.get("t")
        if t is not None and t not in REPO_TYPES:
            raise HubError(501, f"Not implemented by hubtools hub: {request.method} {request.path}")
        await self.principal(request)  # an unknown token is still 401 "Invalid credentials"
        raise _no_namespace_repo(request)

    async def not_implemented(self, request: web.Request) -> web.Response:
        raise HubError(501, f"Not implemented by hubtools hub: {request.method} {request.path}")


HUB_KEY = web.AppKey("hub", HubApp)


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One byte range -> (start, end); several ranges -> None (serve the whole file)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def create_app(cfg: HubConfig, store: Store | None = None) -> web.Application:
    """The aiohttp application; opens (and locks) ``cfg.data_dir`` unless a store is given."""
    store = store or Store(cfg.data_dir, serving=True)
    hub = HubApp(cfg, store)
    app = web.Application(middlewares=[hub.middleware], client_max_size=cfg.max_line_bytes + 2**20)
    app[HUB_KEY] = hub
    r = app.router
    api = "/api/{t}/{ns}/{name}"
    r.add_get("/api/whoami-v2", hub.whoami)
    r.add_post("/api/validate-yaml", hub.validate_yaml)
    r.add_post("/api/repos/create", hub.create_repo)
    r.add_delete("/api/repos/delete", hub.delete_repo)
    add_collection_routes(r, hub)  # before /api/{t}, which would take /api/collections
    r.add_put("/_hub/lfs/{oid}", hub.lfs_put)
    r.add_post("/_hub/lfs/{oid}/verify", hub.lfs_verify)
    r.add_get("/api/{t}", hub.list_repos)
    r.add_get(api, hub.repo_info)
    r.add_get(api + "/revision/{rev}", hub.repo_info)
    r.add_get(api + "/tree/{rev}", hub.tree)
    r.add_get(api + "/tree/{rev}/{path:.*}", hub.tree)
    r.add_post(api + "/paths-info/{rev}", hub.paths_info)
    r.add_post(api + "/preupload/{rev}", hub.preupload)
    r.add_post(api + "/commit/{rev}", hub.commit)
    r.add_get(api + "/commits/{rev}", hub.commits)
    r.add_get(api + "/refs", hub.refs)
    r.add_post(api + "/branch/{branch}", hub.branch)
    r.add_delete(api + "/branch/{branch}", hub.branch)
    r.add_post(api + "/tag/{rev}", hub.create_tag)
    r.add_delete(api + "/tag/{tag}", hub.delete_tag)
    r.add_put(api + "/settings", hub.settings)
    r.add_get(api + "/xet-read-token/{rev}", hub.xet_token)
    r.add_get(api + "/xet-write-token/{rev}", hub.xet_token)
    for prefix, rtype in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
        kw = {"rtype": rtype}
        r.add_post(prefix + "/{ns}/{gitname}/info/lfs/objects/batch", _bind(hub.lfs_batch, kw))
        r.add_get(prefix + "/{ns}/{name}/resolve/{rev}/{path:.+}", _bind(hub.resolve, kw))
    # Namespace-less ids, after every namespaced route (aiohttp tries routes in this order).
    for suffix in ("", "/revision/{rev}", "/tree/{rev}", "/tree/{rev}/{path:.*}", "/refs", "/commits/{rev}"):
        r.add_get("/api/{t}/{name}" + suffix, hub.no_namespace)
    for prefix in ("/datasets", "/spaces", ""):
        r.add_get(prefix + "/{name}/resolve/{rev}/{path:.+}", hub.no_namespace)
    r.add_route("*", "/{tail:.*}", hub.not_implemented)
    app.on_response_prepare.append(_add_request_id)
    app.on_cleanup.append(lambda _app: _shutdown(hub))
    return app


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries ``X-Request-Id`` (the caller's own, if it sent one), as the Hub's do:
    the client quotes it in its error messages."""
    response.headers["X-Request-Id"] = request.headers.get("X-Request-Id") or uuid.uuid4().hex


def _bind(handler, extra: dict):
    """Route the same handler for models, datasets and spaces by putting the type into match_info."""

    async def bound(request: web.Request):
        for k, v in extra.items():
            request.match_info[k] = v
        return await handler(request)

    return bound


async def _shutdown(hub: HubApp) -> None:
    hub.yaml_pool.shutdown(wait=True)
    hub.yaml_process.shutdown(wait=True, cancel_futures=True)
    hub.pool.shutdown(wait=True)
    hub.store.close()
