"""Atomic artifact folders, publishing refusals, and real pushes to the local Hub."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.numpy import save_file

from hubtools.errors import ArtifactError
from hubtools.hub.artifacts import atomic_dir, save_card
from hubtools.hub.cards import render_card
from hubtools.hub.publish import check_artifact, detect_repo_type, push_artifact, push_command

METRICS = {
    "task_type": "image-classification",
    "dataset": {"type": "testuser/isic-lt", "name": "ISIC LT", "split": "test"},
    "values": {"balanced_accuracy": 0.8125, "tail_accuracy": 0.62},
}


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by its POSIX path relative to it."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_model_artifact(folder: Path, repo_id: str = "testuser/model") -> object:
    """A small but real model artifact: config, safetensors weights, a nested file and a card."""
    rng = np.random.default_rng(0)
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 8}), encoding="utf-8")
    save_file({"weight": rng.standard_normal((64, 32)).astype(np.float32)}, str(folder / "model.safetensors"))
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("nested file\n", encoding="utf-8")
    card = render_card(
        "longtail_classifier",
        card_data={"license": "apache-2.0", "model_name": "toy-lt", "datasets": ["testuser/isic-lt"]},
        metrics=METRICS,
        repo_id=repo_id,
        method="ldam_drw",
    )
    save_card(folder, card)
    return card


# ----------------------------------------------------------------------------- atomic_dir


def test_atomic_dir_success_creates_the_folder_and_leaves_no_temp(tmp_path):
    final = tmp_path / "out" / "artifact"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        assert not final.exists()  # nothing visible until complete
        (tmp / "config.json").write_text("{}")
    assert tree_digest(final) == {"config.json": hashlib.sha256(b"{}").hexdigest()}
    assert sorted(p.name for p in final.parent.iterdir()) == ["artifact"]
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_dir_success_replaces_an_existing_artifact(tmp_path):
    final = tmp_path / "artifact"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert tree_digest(final) == {"new.txt": hashlib.sha256(b"new").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_failure_keeps_the_old_artifact_byte_identical(tmp_path, exc_type):
    final = tmp_path / "artifact"
    final.mkdir()
    (final / "model.safetensors").write_bytes(os.urandom(4096))
    (final / "README.md").write_text("---\nlicense: mit\n---\nold card\n")
    before = tree_digest(final)
    with pytest.raises(exc_type):
        with atomic_dir(final) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise exc_type("interrupted while writing")
    assert tree_digest(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_atomic_dir_failure_without_previous_artifact_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "artifact") as tmp:
            (tmp / "x").write_text("x")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    target = tmp_path / "artifact"
    target.write_text("a file")
    with pytest.raises(ArtifactError, match=str(target)):
        with atomic_dir(target):
            pass
    assert target.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


# ----------------------------------------------------------------------------- refusals


def test_push_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact folder") as err:
        push_artifact(tmp_path / "nope", "testuser/never-created")
    assert str(tmp_path / "nope") in str(err.value)


def test_push_refuses_a_folder_without_card(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="README.md") as err:
        push_artifact(tmp_path, "testuser/never-created")
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    "readme",
    [
        "# A card with no metadata\n",
        "---\n---\n# empty metadata\n",
        "---\n- a\n- list\n---\n",
        "---\nlicense: [unclosed\n---\n",
        "text first\n---\nlicense: mit\n---\n",
    ],
)
def test_push_refuses_a_card_without_yaml_front_matter(tmp_path, readme):
    (tmp_path / "README.md").write_text(readme)
    with pytest.raises(ArtifactError) as err:
        push_artifact(tmp_path, "testuser/never-created")
    assert str(tmp_path / "README.md") in str(err.value)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "sub/ckpt.pt", "w.pth", "state.PKL", "last.ckpt"])
def test_push_refuses_pickled_weights(tmp_path, name):
    write_model_artifact(tmp_path)
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ArtifactError, match="safetensors only") as err:
        push_artifact(tmp_path, "testuser/never-created")
    assert str(tmp_path / name) in str(err.value)


def test_refused_folders_create_no_repo(hub, tmp_path, repo_id):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError):
        push_artifact(tmp_path, repo_id)
    assert not HfApi().repo_exists(repo_id)


def test_repo_type_detection():
    assert detect_repo_type(render_card("model", card_data={}).data.to_dict()) == "model"
    assert (
        detect_repo_type(render_card("dataset", card_data={"pretty_name": "d"}).data.to_dict()) == "dataset"
    )
    assert detect_repo_type(render_card("space", card_data={}).data.to_dict()) == "space"
    assert detect_repo_type({"configs": [{"config_name": "default"}], "license": "mit"}) == "dataset"


# ----------------------------------------------------------------------------- real pushes


def test_push_then_download_is_byte_identical(hub, tmp_path, repo_id, monkeypatch):
    folder = tmp_path / "artifact"
    folder.mkdir()
    card = write_model_artifact(folder, repo_id)
    # A push must switch Xet off by itself: with Xet on, the LFS safetensors upload fails.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)

    commit = push_artifact(folder, repo_id)

    assert constants.HF_HUB_DISABLE_XET is True
    assert commit.commit_url.startswith(hub.url) and commit.oid in commit.commit_url
    local = Path(snapshot_download(repo_id, cache_dir=tmp_path / "cache"))
    downloaded = {k: v for k, v in tree_digest(local).items() if k != ".gitattributes"}
    assert downloaded == tree_digest(folder)
    info = HfApi().model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid
    assert info.card_data.to_dict() == card.data.to_dict()
    assert info.pipeline_tag == "image-classification"
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["model.safetensors"] is not None
    assert lfs["model.safetensors"].sha256 == tree_digest(folder)["model.safetensors"]


def test_second_push_mirrors_the_folder(hub, tmp_path, repo_id):
    folder = tmp_path / "artifact"
    folder.mkdir()
    write_model_artifact(folder, repo_id)
    push_artifact(folder, repo_id)

    (folder / "sub" / "notes.txt").unlink()
    (folder / "sub").rmdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 16}))
    push_artifact(folder, repo_id, commit_message="second version")

    files = set(HfApi().list_repo_files(repo_id))
    assert files == {".gitattributes", "README.md", "config.json", "model.safetensors"}
    local = Path(snapshot_download(repo_id, cache_dir=tmp_path / "cache"))
    assert {k: v for k, v in tree_digest(local).items() if k != ".gitattributes"} == tree_digest(folder)
    assert HfApi().list_repo_commits(repo_id)[0].title == "second version"


def test_push_to_a_new_branch_and_private(hub, tmp_path, repo_id):
    folder = tmp_path / "artifact"
    folder.mkdir()
    write_model_artifact(folder, repo_id)
    push_artifact(folder, repo_id, revision="dev", private=True)

    api = HfApi()
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id, token=False)
    assert "dev" in {b.name for b in api.list_repo_refs(repo_id).branches}
    assert "README.md" in api.list_repo_files(repo_id, revision="dev")
    assert "README.md" not in api.list_repo_files(repo_id, revision="main")
    local = Path(snapshot_download(repo_id, revision="dev", cache_dir=tmp_path / "cache"))
    assert {k: v for k, v in tree_digest(local).items() if k != ".gitattributes"} == tree_digest(folder)


def test_push_dataset_and_space_cards_pick_their_repo_type(hub, tmp_path, repo_id):
    data_dir = tmp_path / "dataset"
    with atomic_dir(data_dir) as tmp:
        card = render_card(
            "dataset", card_data={"license": "cc-by-4.0"}, dataset_name="Tiny", repo_id=repo_id
        )
        save_card(tmp, card)
        (tmp / "data").mkdir()
        (tmp / "data" / "train.csv").write_text("x,y\n1,2\n")
    push_artifact(data_dir, repo_id)
    info = HfApi().dataset_info(repo_id)
    assert info.card_data.to_dict() == card.data.to_dict()

    space_dir = tmp_path / "space"
    with atomic_dir(space_dir) as tmp:
        save_card(tmp, render_card("space", card_data={"title": "Demo"}))
        (tmp / "app.py").write_text("print('hello')\n")
    push_artifact(space_dir, repo_id)  # same name, other repo type
    assert HfApi().space_info(repo_id).sdk == "gradio"


# ----------------------------------------------------------------------------- CLI


def test_cli_push_prints_the_commit_url(hub, tmp_path, repo_id):
    folder = tmp_path / "artifact"
    folder.mkdir()
    write_model_artifact(folder, repo_id)
    result = CliRunner().invoke(
        push_command, [str(folder), repo_id, "--revision", "v1", "-m", "from the cli"]
    )
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert url.startswith(f"{hub.url}/{repo_id}/commit/")
    commits = HfApi().list_repo_commits(repo_id, revision="v1")
    assert commits[0].commit_id in url and commits[0].title == "from the cli"


@pytest.mark.parametrize("case", ["no-card", "missing", "pickle"])
def test_cli_push_refusals_exit_2_with_one_line(hub, tmp_path, repo_id, case):
    folder = tmp_path / "artifact"
    folder.mkdir()
    if case == "no-card":
        (folder / "config.json").write_text("{}")
        fragment = "README.md"
    elif case == "missing":
        folder = tmp_path / "absent"
        fragment = "no such artifact folder"
    else:
        write_model_artifact(folder, repo_id)
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
        fragment = "safetensors only"
    result = CliRunner().invoke(push_command, [str(folder), repo_id])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not HfApi().repo_exists(repo_id)


def test_cli_push_reports_hub_errors_in_one_line(hub, tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    write_model_artifact(folder)
    # Another user's namespace: the hub answers 403.
    result = CliRunner().invoke(push_command, [str(folder), "mallory/not-yours", "--token", hub.write_token])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_check_artifact_accepts_a_rendered_artifact(tmp_path):
    write_model_artifact(tmp_path)
    assert check_artifact(tmp_path)["license"] == "apache-2.0"
