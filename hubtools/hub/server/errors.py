"""The one exception the server raises for every client mistake.

Handlers raise :class:`HubError`; a middleware turns it into the JSON body and the
``X-Error-Message`` / ``X-Error-Code`` headers that ``hf_raise_for_status`` reads, so
no deterministic error ever becomes a 5xx (the client retries those five times).
"""

from __future__ import annotations


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def bad_request(message: str) -> HubError:
    return HubError(400, message)


def repo_not_found(status: int = 404) -> HubError:
    return HubError(status, "Repository not found", "RepoNotFound")


def revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def entry_not_found(path: str, commit: str | None = None, message: str | None = None) -> HubError:
    headers = {"X-Repo-Commit": commit} if commit else {}
    return HubError(404, message or f"Entry not found: {path}", "EntryNotFound", headers)
