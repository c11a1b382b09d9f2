"""The model zoo against the real local Hub: entries read from real cards, filters, pull, catalogue round trip."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, HfApi
from safetensors.numpy import save_file

from hubtools.hashing import sha256_file
from hubtools.hub.cards import render_card
from hubtools.hub.publish import push_artifact
from hubtools.hub.zoo import (
    ZooError,
    build_index,
    collections,
    entry_from_card,
    filter_entries,
    find_entry,
    load_catalogue,
    publish_catalogue,
    pull,
    save_catalogue,
    sync_collections,
)

SEG_METRICS = {
    "task_type": "image-segmentation",
    "dataset": {"type": "org/nuclei", "name": "nuclei", "split": "test"},
    "values": {"dice": 0.71, "iou": 0.55},
}


def _front_matter(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---")[1])


def _artifact(root: Path, name: str, card, weights: bool = True, extra: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if weights:
        import numpy as np

        save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"model_type": "toy", "name": name}))
    for rel, text in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    if card is not None:
        (folder / "README.md").write_text(str(card))
    return folder


@pytest.fixture(scope="module")
def zoo_hub(hub, tmp_path_factory):
    """Four artifacts with real cards plus one repo with a garbled card, under a unique name prefix."""
    prefix = f"zoo{uuid.uuid4().hex[:6]}"
    root = tmp_path_factory.mktemp("zoo-artifacts")
    seg = render_card(
        "segmentation_model",
        card_data={"license": "mit", "library_name": "transformers", "datasets": ["org/nuclei"]},
        metrics=SEG_METRICS,
        repo_id=f"{hub.user}/{prefix}-seg",
        modality="fluorescence microscopy",
        anatomy="cell nuclei",
        reproduce="hubtools semiseg train --config seg.yaml",
    )
    backbone = render_card(
        "vision_backbone",
        card_data={"license": "apache-2.0", "base_model": "facebook/dinov2-small"},
        metrics={**SEG_METRICS, "task_type": "image-classification", "values": {"accuracy": 0.62}},
        repo_id=f"{hub.user}/{prefix}-backbone",
        reproduce="hubtools be-dinov2 pretrain --config be.yaml",
    )
    # An old-style card without the zoo fields: modality/anatomy come from tags, with warnings.
    legacy = render_card(
        "model",
        card_data={"license": "apache-2.0", "pipeline_tag": "image-classification", "tags": ["mri", "brain"]},
        metrics={**SEG_METRICS, "task_type": "image-classification", "values": {"dice": 0.4}},
        repo_id=f"{hub.user}/{prefix}-legacy",
    )
    data = render_card(
        "dataset",
        card_data={"license": "cc-by-4.0", "task_categories": ["image-classification"]},
        dataset_name=f"{prefix} data",
        modality="MRI",
        anatomy="brain",
        reproduce="hubtools longtail build mri_patches",
    )
    folders = {
        "seg": _artifact(root, "seg", seg, extra={"notes/train.txt": "steps: 150\n"}),
        "backbone": _artifact(root, "backbone", backbone),
        "legacy": _artifact(root, "legacy", legacy),
        "data": _artifact(root, "data", data, weights=False, extra={"data/train.csv": "x,y\n1,2\n"}),
    }
    repos = {
        "seg": f"{hub.user}/{prefix}-seg",
        "backbone": f"{hub.user}/{prefix}-backbone",
        "legacy": f"{hub.user}/{prefix}-legacy",
        "data": f"{hub.user}/{prefix}-data",
        "garbled": f"{hub.user}/{prefix}-garbled",
    }
    for key in ("seg", "backbone", "legacy"):
        push_artifact(folders[key], repos[key])
    push_artifact(folders["data"], repos["data"], repo_type="dataset")
    # push_artifact and upload_file refuse a README whose YAML does not parse; a server-side copy does not.
    api = HfApi()
    api.create_repo(repos["garbled"], exist_ok=True)
    api.create_commit(
        repos["garbled"],
        [
            CommitOperationAdd("broken.md", b"---\nlicense: [unclosed\n---\n# oops\n"),
            CommitOperationAdd("model.safetensors", (folders["seg"] / "model.safetensors").read_bytes()),
        ],
        commit_message="broken card",
    )
    api.create_commit(
        repos["garbled"],
        [CommitOperationCopy("broken.md", "README.md")],
        commit_message="broken card in place",
    )
    return {"prefix": prefix, "folders": folders, "repos": repos, "api": api}


@pytest.fixture(scope="module")
def entries(zoo_hub):
    return build_index("testuser", api=zoo_hub["api"], search=zoo_hub["prefix"])


def test_entries_carry_the_cards_values(zoo_hub, entries):
    repos, folders = zoo_hub["repos"], zoo_hub["folders"]
    by_id = {e.repo_id: e for e in entries}
    assert set(by_id) == set(repos.values())

    seg, card = by_id[repos["seg"]], _front_matter(folders["seg"])
    assert (seg.repo_type, seg.kind) == ("model", "model")
    assert (seg.modality, seg.anatomy, seg.reproduce) == (
        card["modality"],
        card["anatomy"],
        card["reproduce"],
    )
    assert seg.task == card["pipeline_tag"] == "image-segmentation"
    assert seg.license == "mit" and seg.training_data == ["org/nuclei"]
    assert seg.tags == card["tags"]
    card_values = {m["type"]: m["value"] for m in card["model-index"][0]["results"][0]["metrics"]}
    assert {m.name: m.value for m in seg.metrics} == card_values == {"dice": 0.71, "iou": 0.55}
    assert {(m.dataset, m.split, m.task) for m in seg.metrics} == {
        ("org/nuclei", "test", "image-segmentation")
    }
    assert seg.warnings == []
    assert seg.sha == zoo_hub["api"].model_info(repos["seg"]).sha

    backbone = by_id[repos["backbone"]]  # modality/anatomy from the vision_backbone kind's defaults
    assert (backbone.modality, backbone.anatomy) == ("fundus photography", "retina")
    assert backbone.base_model == ["facebook/dinov2-small"] and backbone.warnings == []

    data = by_id[repos["data"]]
    assert (data.repo_type, data.kind, data.modality, data.task, data.license) == (
        "dataset",
        "dataset",
        "MRI",
        "image-classification",
        "cc-by-4.0",
    )


def test_card_without_zoo_fields_is_inferred_with_warnings(zoo_hub, entries):
    legacy = next(e for e in entries if e.repo_id == zoo_hub["repos"]["legacy"])
    assert (legacy.modality, legacy.anatomy, legacy.task) == ("MRI", "brain", "image-classification")
    assert legacy.reproduce == ""
    assert set(legacy.warnings) == {
        "modality inferred from tags",
        "anatomy inferred from tags",
        "no reproduce command in the card",
    }


def test_garbled_card_is_listed_with_a_warning(zoo_hub, entries, caplog):
    garbled = next(e for e in entries if e.repo_id == zoo_hub["repos"]["garbled"])
    assert garbled.kind == "model" and garbled.license == "" and garbled.metrics == []
    assert garbled.warnings[0] == "README.md has no readable YAML metadata"
    with caplog.at_level(logging.WARNING, logger="hubtools.hub.zoo"):
        build_index("testuser", api=zoo_hub["api"], search=zoo_hub["prefix"] + "-garbled")
    assert any("README.md has no readable YAML metadata" in r.getMessage() for r in caplog.records)
    # no card at all, a malformed model-index, and an unknown file set: still an entry
    bare = entry_from_card("o/x", "model", None, ["weights.safetensors"])
    assert bare.warnings[0] == "no README.md card" and bare.kind == "model"
    broken = entry_from_card("o/y", "model", {"model-index": [{"results": "nope"}]}, ["a.safetensors"])
    assert broken.metrics == [] and any("model-index is malformed" in w for w in broken.warnings)


def test_kinds_from_files():
    assert (
        entry_from_card("o/a", "model", {"library_name": "peft"}, ["adapter_model.safetensors"]).kind
        == "adapter"
    )
    assert entry_from_card("o/p", "model", {}, ["model_index.json", "unet/x.safetensors"]).kind == "pipeline"
    assert entry_from_card("o/r", "model", {}, ["README.md", "mergekit_config.yml"]).kind == "recipe"
    assert entry_from_card("o/s", "space", {"sdk": "gradio"}, ["app.py"]).kind == "space"


def test_filters(zoo_hub, entries):
    repos = zoo_hub["repos"]

    def ids(found):
        return {e.repo_id for e in found}

    assert ids(filter_entries(entries, metrics=["dice>=0.7"])) == {repos["seg"]}
    assert ids(filter_entries(entries, metrics=["dice<0.7"])) == {repos["legacy"]}
    assert ids(filter_entries(entries, metrics=["dice>0.3", "iou>0.5"])) == {repos["seg"]}
    assert ids(filter_entries(entries, metrics=["accuracy=0.62"])) == {repos["backbone"]}
    assert ids(filter_entries(entries, modality="mri")) == {repos["legacy"], repos["data"]}
    assert ids(filter_entries(entries, modality="mri", kind="dataset")) == {repos["data"]}
    assert ids(filter_entries(entries, anatomy="retina", task="feature")) == {repos["backbone"]}
    assert ids(filter_entries(entries, query="nuclei microscopy")) == {repos["seg"]}
    with pytest.raises(ZooError, match="NAME OP NUMBER"):
        filter_entries(entries, metrics=["dice~0.7"])


def test_pull_downloads_byte_identical_files(zoo_hub, entries, tmp_path):
    entry = find_entry(entries, zoo_hub["repos"]["seg"])
    local = pull(entry, local_dir=tmp_path / "seg", api=zoo_hub["api"])
    src = zoo_hub["folders"]["seg"]
    expected = {p.relative_to(src).as_posix(): sha256_file(p) for p in src.rglob("*") if p.is_file()}
    got = {
        p.relative_to(local).as_posix(): sha256_file(p)
        for p in local.rglob("*")
        if p.is_file() and ".cache" not in p.parts and p.name != ".gitattributes"
    }
    assert got == expected and "notes/train.txt" in got
    data = pull(find_entry(entries, "datasets/" + zoo_hub["repos"]["data"]), local_dir=tmp_path / "d")
    assert (data / "data/train.csv").read_bytes() == (
        zoo_hub["folders"]["data"] / "data/train.csv"
    ).read_bytes()
    with pytest.raises(ZooError, match="not in the zoo"):
        find_entry(entries, "testuser/absent")


def test_catalogue_round_trips_through_load_dataset(hub, zoo_hub, entries, tmp_path):
    from datasets import load_dataset

    repo_id = f"{hub.user}/{zoo_hub['prefix']}-zoo"
    folder = save_catalogue(entries, tmp_path / "zoo", repo_id=repo_id)
    publish_catalogue(folder, repo_id)
    assert load_catalogue(repo_id) == entries
    assert load_catalogue(folder) == entries
    rows = load_dataset(repo_id, split="train")
    seg = next(r for r in rows if r["repo_id"] == zoo_hub["repos"]["seg"])
    assert {m["name"]: m["value"] for m in seg["metrics"]} == {"dice": 0.71, "iou": 0.55}
    coll = load_dataset(repo_id, "collections", split="train")
    assert {(r["collection"], r["repo_id"]) for r in coll} >= {
        ("mri", zoo_hub["repos"]["legacy"]),
        ("mri", zoo_hub["repos"]["data"]),
        ("fundus-photography", zoo_hub["repos"]["backbone"]),
    }
    assert len(coll) == len(entries)
    # the catalogue repo itself is not indexed
    again = build_index("testuser", api=zoo_hub["api"], search=zoo_hub["prefix"])
    assert {e.repo_id for e in again} == set(zoo_hub["repos"].values())
    with pytest.raises(ZooError, match="not a zoo catalogue"):
        load_catalogue(zoo_hub["repos"]["data"])


def test_cli_index_list_show_pull(hub, zoo_hub, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "cat"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hubtools.cli", "zoo", "--endpoint", hub.url, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    res = cli("index", "--author", "testuser", "--out", str(out), "--no-push")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "README.md has no readable YAML metadata" in res.stderr
    listed = cli("list", "--catalogue", str(out), "--metric", "dice>=0.7", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [e["repo_id"] for e in json.loads(listed.stdout)] == [zoo_hub["repos"]["seg"]]
    shown = json.loads(cli("show", zoo_hub["repos"]["seg"], "--catalogue", str(out)).stdout)
    assert shown["reproduce"] == "hubtools semiseg train --config seg.yaml"
    pulled = cli("pull", zoo_hub["repos"]["seg"], "--catalogue", str(out), "--local-dir", str(tmp_path / "p"))
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (tmp_path / "p" / "notes/train.txt").read_text() == "steps: 150\n"
    bad = cli("list", "--catalogue", str(out), "--metric", "dice")
    assert bad.returncode == 2 and "NAME OP NUMBER" in bad.stderr


def test_render_card_writes_zoo_fields_to_the_header():
    from hubtools.errors import CardError

    card = render_card(
        "vision_backbone", card_data={"license": "mit"}, anatomy="eye", task="image-classification"
    )
    meta = yaml.safe_load(str(card).split("---")[1])
    assert (meta["modality"], meta["anatomy"], meta["task"]) == (
        "fundus photography",
        "eye",
        "image-classification",
    )
    assert "reproduce" not in meta
    with pytest.raises(CardError, match="modality: given as 'CT' and as card_data"):
        render_card("model", card_data={"modality": "MRI"}, modality="CT")
    with pytest.raises(CardError, match="reproduce: expected a non-empty string"):
        render_card("model", reproduce=" ")


def test_sync_collections_mirrors_the_grouping(zoo_hub, entries):
    from huggingface_hub.errors import HfHubHTTPError

    api = zoo_hub["api"]
    groups = collections(entries)
    slugs = sync_collections(entries, "testuser", api=api)
    assert set(slugs) == {f"Zoo: {name}" for name in groups} and "Zoo: MRI" in slugs
    for name, members in groups.items():
        got = api.get_collection(slugs[f"Zoo: {name}"])
        assert {(i.item_type, i.item_id) for i in got.items} == {(e.repo_type, e.repo_id) for e in members}
    seg_item = next(i for i in api.get_collection(slugs["Zoo: fluorescence microscopy"]).items)
    assert seg_item.note == "model, image-segmentation, cell nuclei"

    without_mri = [e for e in entries if e.modality != "MRI" and e.repo_id != zoo_hub["repos"]["seg"]]
    again = sync_collections(without_mri, "testuser", api=api)
    assert "Zoo: MRI" not in again and again["Zoo: other"] == slugs["Zoo: other"]
    with pytest.raises(HfHubHTTPError):
        api.get_collection(slugs["Zoo: MRI"])
    assert "Zoo: fluorescence microscopy" not in again


def test_local_base_model_paths_are_flagged_and_long_lists_shortened():
    from hubtools.hub.zoo import table_rows

    entry = entry_from_card("o/m", "model", {"base_model": ["/tmp/a", "/tmp/b", "/tmp/c"]}, ["m.safetensors"])
    assert "base_model names local path(s), not Hub repos" in entry.warnings
    assert table_rows([entry])[0][5] == "/tmp/a, /tmp/b (+1)"
    hub_only = entry_from_card("o/n", "model", {"base_model": "org/base"}, ["m.safetensors"])
    assert not any("local path" in w for w in hub_only.warnings)
