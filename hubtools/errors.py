"""One exception type per kind of bad input, so callers (and the CLI) can report
the file, key and value instead of a traceback from deep inside a library."""

from __future__ import annotations


class HubtoolsError(Exception):
    """Base class: every error hubtools raises on purpose derives from it."""


class ConfigError(HubtoolsError, ValueError):
    """A YAML/JSON config is malformed, has an unknown key or a value of the wrong type."""


class ArtifactError(HubtoolsError, ValueError):
    """An artifact folder is incomplete or corrupt (missing card, truncated weights, ...)."""


class CardError(HubtoolsError, ValueError):
    """A model/dataset/space card cannot be rendered: unknown kind, malformed metrics or metadata."""
