"""Every committed benchmark result validates, is fresh, and the generated docs page matches it.

A result is *stale* when a source file it was produced from changed after it (the envelope
records the sha256 of each): rerun its command (printed below) and commit the new result.
"""

import pytest

from hubtools.bench.catalog import DOCS_PAGE, benchmarks_page, check, result_files

ENTRIES = check()


def test_there_are_committed_results():
    assert len(result_files()) >= 10


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.path.name for e in ENTRIES])
def test_result_validates_and_is_fresh(entry):
    assert entry.error is None, f"{entry.path.name} does not validate: {entry.error}"
    r = entry.result
    assert not r.smoke, f"{entry.path.name} is a smoke run"
    assert r.name == entry.path.stem
    assert not entry.stale, (
        f"{entry.path.name} is stale: {', '.join(entry.stale)} changed after commit {r.git.commit[:10]}; "
        f"rerun `{r.command}`"
    )
    for f in r.figures:
        assert (entry.path.parent / f.file).is_file(), f"{f.file} missing: run `hubtools bench render`"
    assert (entry.path.with_suffix(".md")).is_file()


def test_docs_page_is_generated_from_the_results():
    assert DOCS_PAGE.read_text() == benchmarks_page(), "docs/benchmarks.md is out of date: run `hubtools bench docs`"
