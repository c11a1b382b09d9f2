"""Every committed benchmark result validates, is fresh, and the generated docs page matches it.

A result is *stale* when a source file it was produced from changed after it (the envelope
records the sha256 of each): rerun its command (printed below) and commit the new result.
"""

import pytest

from hubtools.bench.catalog import check, docs_pages, result_files

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


@pytest.mark.parametrize("page", sorted(docs_pages()), ids=lambda p: p.name)
def test_docs_figures_are_generated_from_the_results(page):
    assert page.is_file() and page.read_text() == docs_pages()[page], (
        f"{page.name} is out of date with benchmarks/results: run `hubtools bench docs`"
    )
