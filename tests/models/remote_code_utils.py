"""Shared by the remote-code tests: the start of a child script that cannot import hubtools."""

import textwrap

# Drops every route to hubtools (editable-install finder, repo root on the path) and proves it; a child script
# appends its own code and is formatted with ``repo`` (the repository root) among its fields.
HIDE_HUBTOOLS = textwrap.dedent(
    """
    import importlib.util, os, sys
    sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                     and "editable" not in getattr(f, "__name__", "")]
    sys.path_hooks = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
    sys.path_importer_cache.clear()
    sys.path = [p for p in sys.path if p and os.path.abspath(p) != {repo!r}]
    assert importlib.util.find_spec("hubtools") is None, "hubtools is still importable"
    """
)
