"""A self-hostable Hub-compatible HTTP server (shared/specs/local_hub.md).

It stands in for huggingface.co in tests, the quickstart and air-gapped labs: the
unmodified huggingface_hub, transformers, peft and datasets clients push to it and
load from it. Run ``hubtools hub serve --data DIR`` or use :class:`HubServer`.
"""

from hubtools.hub.server.app import HubConfig, create_app
from hubtools.hub.server.errors import HubError
from hubtools.hub.server.runner import HubServer, add_token, fsck, serve_forever
from hubtools.hub.server.store import FsckReport, Store

__all__ = ["FsckReport", "HubConfig", "HubError", "HubServer", "Store", "add_token", "create_app", "fsck",
           "serve_forever"]
