"""Test helpers shared by the test suite: one policy for real data that is not installed.

Tests that read real data shipped by Debian or PyPI packages call :func:`data_missing` when the
data is absent. On a developer's machine that is a skip whose reason names the package; where
``HUBTOOLS_REQUIRE_DATA=1`` (CI sets it, after installing every data package) it is a failure,
so a broken install can never pass as a green run with silent skips.
"""

from __future__ import annotations

import os
from typing import NoReturn

REQUIRE_DATA_ENV = "HUBTOOLS_REQUIRE_DATA"


def data_required() -> bool:
    return os.environ.get(REQUIRE_DATA_ENV, "") == "1"


def data_missing(reason: object) -> NoReturn:
    """Skip (or, with ``HUBTOOLS_REQUIRE_DATA=1``, fail) the current test: real data is not installed."""
    import pytest

    text = str(reason)
    if data_required():
        pytest.fail(f"real data missing and {REQUIRE_DATA_ENV}=1: {text}", pytrace=False)
    pytest.skip(f"real data not installed: {text}", allow_module_level=True)
