"""A trained long-tail model's card inherits the catalogue fields (modality, anatomy) of its training set."""

from pathlib import Path

from huggingface_hub import DatasetCard, HfApi

from hubtools.longtail.trainer import LongTailTrainConfig, _zoo_fields

CARD = "---\nmodality: MRI (T1)\nanatomy: brain\nlicense: other\n---\n# patches\n"


def test_fields_come_from_a_local_build_card(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(CARD)
    fields = _zoo_fields(LongTailTrainConfig(dataset=str(tmp_path), method="ldam_drw", config="r100"))
    assert fields == {
        "task": "image-classification",
        "modality": "MRI (T1)",
        "anatomy": "brain",
        "reproduce": f"hubtools longtail train --dataset {tmp_path} --method ldam_drw --config r100",
    }


def test_fields_come_from_a_hub_dataset_card(hub, repo_id: str) -> None:
    api = HfApi(endpoint=hub.url, token=hub.write_token)
    api.create_repo(repo_id, repo_type="dataset")
    DatasetCard(CARD).push_to_hub(repo_id, repo_type="dataset", token=hub.write_token)
    fields = _zoo_fields(LongTailTrainConfig(dataset=repo_id, method="erm"))
    assert (fields["modality"], fields["anatomy"]) == ("MRI (T1)", "brain")


def test_a_folder_without_card_gives_only_task_and_command(tmp_path: Path) -> None:
    fields = _zoo_fields(LongTailTrainConfig(dataset=str(tmp_path), method="erm"))
    assert set(fields) == {"task", "reproduce"}
