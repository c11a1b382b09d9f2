"""The Hub's collections API (``HfApi.create_collection``, ``add_collection_item``, ``get_collection``, ...).

A collection is a titled, ordered list of repos owned by a user or an org; the model zoo uses
them to group its catalogue. Shapes follow what huggingface_hub 2.4's ``Collection`` and
``CollectionItem`` parse: a slug ``ns/<title-slug>-<24 hex>``, ``owner``, ``items`` with ``_id``
(the item object id used to update or delete it), ``id``, ``type``, ``position`` and
``note.text``. Only repo items (model, dataset, space) are supported; papers, buckets and
nested collections answer 400. A create whose title already exists in the namespace answers
409 with the existing ``slug`` (the client's ``exists_ok`` reads it).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from typing import Any

from aiohttp import web

from hubtools.hub.server.errors import HubError, bad_request, repo_not_found
from hubtools.hub.server.naming import check_namespace
from hubtools.hub.server.store import Principal, Store, object_id, utc_iso

ITEM_TYPES = ("model", "dataset", "space")
MAX_TITLE = 60  # the Hub's limit on collection titles
MAX_NOTE = 500  # the Hub's limit on item notes


def _not_found(slug: str) -> HubError:
    return HubError(404, f"Collection {slug} not found")


def collection_slug(ns: str, title: str) -> str:
    """``ns/<title words>-<24 random hex>``: random, so a renamed collection's old title can be reused."""
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "collection"
    return f"{ns}/{words}-{secrets.token_hex(12)}"


class CollectionStore:
    """SQL for the ``collections`` and ``collection_items`` tables (blocking; run in the pool)."""

    def __init__(self, store: Store):
        self.store = store

    def row(self, slug: str) -> tuple | None:
        return (
            self.store.read()
            .execute(
                "SELECT slug, ns, title, description, private, updated_at, theme FROM collections WHERE slug = ?",
                (slug,),
            )
            .fetchone()
        )

    def create(self, ns: str, title: str, description: str | None, private: bool) -> tuple[str, bool]:
        """``(slug, created)``; ``created`` is False when the namespace already has this title."""
        slug, now = collection_slug(ns, title), utc_iso()
        with self.store.transaction() as conn:
            existing = conn.execute(
                "SELECT slug FROM collections WHERE ns = ? AND title = ?", (ns, title)
            ).fetchone()
            if existing:
                return existing[0], False
            conn.execute(
                "INSERT INTO collections(slug, ns, title, description, private, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (slug, ns, title, description, int(private), now, now),
            )
        return slug, True

    def update(self, slug: str, changes: dict[str, Any]) -> None:
        """Raises a 409 :class:`HubError` if the new title is taken in the namespace."""
        try:
            with self.store.transaction() as conn:
                for column, value in changes.items():  # column names come from a fixed list in the handler
                    conn.execute(f"UPDATE collections SET {column} = ? WHERE slug = ?", (value, slug))  # noqa: S608
                conn.execute("UPDATE collections SET updated_at = ? WHERE slug = ?", (utc_iso(), slug))
        except sqlite3.IntegrityError:
            raise HubError(409, f"A collection titled {changes.get('title')!r} already exists") from None

    def delete(self, slug: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM collections WHERE slug = ?", (slug,))

    def items(self, slug: str) -> list[tuple]:
        return list(
            self.store.read().execute(
                "SELECT object_id, item_type, item_id, position, note FROM collection_items "
                "WHERE slug = ? ORDER BY position",
                (slug,),
            )
        )

    def add_item(self, slug: str, item_type: str, item_id: str, note: str | None) -> bool:
        """False if the item is already in the collection."""
        oid = object_id("collection-item", f"{slug}/{item_type}/{item_id}")
        try:
            with self.store.transaction() as conn:
                (last,) = conn.execute(
                    "SELECT COALESCE(MAX(position), -1) FROM collection_items WHERE slug = ?", (slug,)
                ).fetchone()
                conn.execute(
                    "INSERT INTO collection_items(slug, object_id, item_type, item_id, position, note) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (slug, oid, item_type, item_id, last + 1, note),
                )
                conn.execute("UPDATE collections SET updated_at = ? WHERE slug = ?", (utc_iso(), slug))
        except sqlite3.IntegrityError:
            return False
        return True

    def delete_item(self, slug: str, oid: str) -> bool:
        with self.store.transaction() as conn:
            cur = conn.execute("DELETE FROM collection_items WHERE slug = ? AND object_id = ?", (slug, oid))
            conn.execute("UPDATE collections SET updated_at = ? WHERE slug = ?", (utc_iso(), slug))
        return cur.rowcount > 0

    def slugs(self, owners: list[str]) -> list[str]:
        sql, args = "SELECT slug FROM collections", []
        if owners:
            sql += f" WHERE ns IN ({', '.join('?' * len(owners))})"
            args = owners
        return [r[0] for r in self.store.read().execute(sql + " ORDER BY updated_at DESC, slug", args)]

    def is_org(self, ns: str) -> bool:
        return self.store.read().execute("SELECT 1 FROM orgs WHERE name = ?", (ns,)).fetchone() is not None

    def visible(self, item_type: str, item_id: str, viewer: Principal | None) -> bool:
        """Whether ``viewer`` may see that the repo exists: like the Hub, a collection never shows
        a private repo (or a deleted one) to someone who cannot read it."""
        ns, _, name = item_id.partition("/")
        repo = self.store.get_repo(item_type, ns, name)
        return repo is not None and (not repo.private or (viewer is not None and viewer.owns(repo.ns)))

    def as_json(self, slug: str, viewer: Principal | None, *, with_position: bool = True) -> dict | None:
        """The collection as ``viewer`` (None: anonymous) may see it."""
        row = self.row(slug)
        if row is None:
            return None
        _, ns, title, description, private, updated, theme = row
        out: dict[str, Any] = {
            "slug": slug,
            "title": title,
            "description": description,
            "owner": {"name": ns, "type": "org" if self.is_org(ns) else "user"},
            "items": [
                {
                    "_id": oid,
                    "id": item_id,
                    "type": item_type,
                    "position": position,
                    **({"note": {"text": note, "html": note}} if note else {}),
                }
                for oid, item_type, item_id, position, note in self.items(slug)
                if self.visible(item_type, item_id, viewer)
            ],
            "lastUpdated": updated,
            "private": bool(private),
            "theme": theme,
            "upvotes": 0,
            "isUpvotedByUser": False,
        }
        if with_position:  # list_collections passes its own position= to Collection()
            out["position"] = 0
        return out


def add_collection_routes(router: web.UrlDispatcher, hub: Any) -> None:
    """Register the collection routes on ``router``; ``hub`` is the server's ``HubApp``.

    Must run before the generic ``/api/{t}/...`` repo routes, which would otherwise take
    ``/api/collections``.
    """
    db = CollectionStore(hub.store)

    async def readable(request: web.Request) -> tuple[str, Principal | None, tuple]:
        slug = f"{request.match_info['ns']}/{request.match_info['cslug']}"
        principal = await hub.principal(request)
        row = await hub.run(db.row, slug)
        if row is None or (row[4] and not (principal and principal.owns(row[1]))):
            raise _not_found(slug)
        return slug, principal, row

    async def writable(request: web.Request) -> tuple[str, Principal]:
        slug, principal, row = await readable(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to change a collection")
        if not principal.owns(row[1]) or principal.role != "write":
            raise HubError(403, f"You don't have the rights to change {slug}")
        return slug, principal

    async def create(request: web.Request) -> web.Response:
        principal = await hub.principal(request)
        if principal is None:
            raise HubError(401, "You must be authenticated to create a collection")
        body = await hub.json_body(request)
        title, description = body.get("title"), body.get("description")
        ns = body.get("namespace") or principal.user
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise bad_request(f"'title' must be a non-empty string of at most {MAX_TITLE} characters")
        if description is not None and not isinstance(description, str):
            raise bad_request("'description' must be a string")
        if not isinstance(ns, str):
            raise bad_request("'namespace' must be a string")
        check_namespace(ns)
        if not principal.owns(ns) or principal.role != "write":
            raise HubError(403, f"You don't have the rights to create a collection in {ns}")
        slug, created = await hub.run(db.create, ns, title, description, bool(body.get("private", False)))
        if not created:
            return web.json_response(
                {"error": f"A collection titled {title!r} already exists in {ns}", "slug": slug},
                status=409,
                headers={"X-Error-Message": "Collection already exists"},
            )
        return web.json_response(await hub.run(db.as_json, slug, principal))

    async def get(request: web.Request) -> web.Response:
        slug, principal, _ = await readable(request)
        return web.json_response(await hub.run(db.as_json, slug, principal))

    async def listing(request: web.Request) -> web.Response:
        principal = await hub.principal(request)
        owners = request.query.getall("owner", [])
        wanted_items = set(request.query.getall("item", []))

        def collect() -> list[dict]:
            out = []
            for slug in db.slugs(owners):
                data = db.as_json(slug, principal, with_position=False)
                if data is None or (
                    data["private"] and not (principal and principal.owns(data["owner"]["name"]))
                ):
                    continue
                refs = {f"{i['type']}s/{i['id']}" for i in data["items"]}
                if wanted_items and not wanted_items & refs:
                    continue
                out.append(data)
            return out

        return web.json_response(await hub.run(collect))

    async def update(request: web.Request) -> web.Response:
        slug, principal = await writable(request)
        body = await hub.json_body(request)
        changes: dict[str, Any] = {}
        if "position" in body:
            raise bad_request("Reordering collections ('position') is not supported by hubtools hub")
        for key, column, kind in (
            ("title", "title", str),
            ("description", "description", str),
            ("private", "private", bool),
            ("theme", "theme", str),
        ):
            if key in body:
                if not isinstance(body[key], kind):
                    raise bad_request(f"'{key}' must be a {kind.__name__}")
                changes[column] = int(body[key]) if kind is bool else body[key]
        await hub.run(db.update, slug, changes)
        return web.json_response({"data": await hub.run(db.as_json, slug, principal)})  # the Hub wraps this one answer

    async def delete(request: web.Request) -> web.Response:
        slug, _ = await writable(request)
        await hub.run(db.delete, slug)
        return web.json_response({})

    async def add_item(request: web.Request) -> web.Response:
        slug, principal = await writable(request)
        body = await hub.json_body(request)
        item, note = body.get("item"), body.get("note")
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("type"), str)
        ):
            raise bad_request("'item' must be {'id': str, 'type': str}")
        if item["type"] not in ITEM_TYPES:
            raise bad_request(
                f"item type {item['type']!r} is not supported by hubtools hub (only {ITEM_TYPES})"
            )
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise bad_request(f"'note' must be a string of at most {MAX_NOTE} characters")
        ns, _, name = item["id"].partition("/")
        repo = await hub.run(hub.store.get_repo, item["type"], ns, name) if name else None
        if repo is None or (repo.private and not principal.owns(repo.ns)):
            raise repo_not_found(404)
        if not await hub.run(db.add_item, slug, item["type"], repo.id, note):
            raise HubError(409, f"{item['type']} {repo.id} is already in {slug}")
        return web.json_response(await hub.run(db.as_json, slug, principal))

    async def delete_item(request: web.Request) -> web.Response:
        slug, _ = await writable(request)
        if not await hub.run(db.delete_item, slug, request.match_info["oid"]):
            raise HubError(404, f"Item {request.match_info['oid']} not found in {slug}")
        return web.json_response({})

    one = "/api/collections/{ns}/{cslug}"
    router.add_post("/api/collections", create)
    router.add_get("/api/collections", listing)
    router.add_get(one, get)
    router.add_patch(one, update)
    router.add_delete(one, delete)
    router.add_post(one + "/items", add_item)
    router.add_delete(one + "/items/{oid}", delete_item)
