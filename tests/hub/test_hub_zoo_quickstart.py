"""The quickstart's closing zoo step: every artifact a demo reports must be in the published catalogue."""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi

from hubtools import quickstart
from hubtools.hub.cards import render_card
from hubtools.hub.publish import push_artifact


@pytest.fixture
def published(hub, tmp_path):
    repo = f"{hub.user}/zooqs-{uuid.uuid4().hex[:6]}"
    folder = tmp_path / "art"
    folder.mkdir()
    card = render_card(
        "model",
        card_data={"license": "mit"},
        repo_id=repo,
        modality="text",
        reproduce="hubtools quickstart --only hub",
    )
    (folder / "README.md").write_text(str(card))
    push_artifact(folder, repo)
    return repo


def test_zoo_step_indexes_reported_artifacts_and_flags_missing_ones(hub, published, tmp_path, monkeypatch):
    monkeypatch.setattr(quickstart, "QUICKSTART_USER", hub.user)
    ok = quickstart.Row("demo", "t", "ok", 0.1, artifacts=[published])
    report = quickstart.index_zoo([ok], tmp_path / "a", hub.write_token)
    assert report.error == "" and report.missing == []
    assert published in {i.item_id for i in HfApi().get_collection(report.collections["Zoo: text"]).items}
    entry = next(e for e in report.entries if e.repo_id == published)
    assert (entry.modality, entry.reproduce, entry.license) == (
        "text",
        "hubtools quickstart --only hub",
        "mit",
    )

    md, js = quickstart.write_report([ok], tmp_path / "a", hub.url, report)
    text = md.read_text()
    assert f"## Model zoo (`datasets/{hub.user}/zoo`" in text
    assert f"| {published} | model | text | - | - | - | mit | - | hubtools quickstart --only hub |" in text

    ghost = f"datasets/{hub.user}/never-published-{uuid.uuid4().hex[:6]} (cfg)"
    bad = quickstart.index_zoo(
        [quickstart.Row("demo", "t", "ok", 0.1, artifacts=[published, ghost])],
        tmp_path / "b",
        hub.write_token,
    )
    assert bad.missing == [ghost] and "published but not in the zoo" in bad.error
    text = quickstart.write_report([], tmp_path / "b", hub.url, bad)[0].read_text()
    assert "**Zoo check failed:** published but not in the zoo" in text and f"| {published} | model |" in text
