"""One policy for missing real data: a skip on a developer's machine, a failure where CI requires the data."""

import os
import subprocess
import sys


def _run(tmp_path, require: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_data.py").write_text(
        "from hubtools.testing import data_missing\n\n"
        "def test_needs_data():\n    data_missing('Debian example-data')\n"
    )
    env = {**os.environ, "HUBTOOLS_REQUIRE_DATA": require}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_needs_data.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_data_skips_by_default_and_fails_when_required(tmp_path):
    relaxed = _run(tmp_path, "0")
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout
    assert "real data not installed: Debian example-data" in relaxed.stdout
    strict = _run(tmp_path, "1")
    assert strict.returncode == 1 and "1 failed" in strict.stdout
    assert "HUBTOOLS_REQUIRE_DATA=1: Debian example-data" in strict.stdout
