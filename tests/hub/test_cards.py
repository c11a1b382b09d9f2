"""Card templates: every kind renders with full and with minimal variables, its YAML header
parses and round-trips, metrics become a model-index that converts back, and the local
Hub's validate-yaml accepts it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, SpaceCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import model_index_to_eval_results

from hubtools.errors import CardError
from hubtools.hub.cards import CARD_KINDS, KIND_DEFAULTS, render_card, templates_dir

MODEL_KINDS = [k for k in CARD_KINDS if k not in ("dataset", "space")]
MEDICAL_KINDS = ["longtail_classifier", "vision_backbone", "vision_language", "segmentation_model"]
EXPECTED_CLASS = {"dataset": DatasetCard, "space": SpaceCard}

CITATION = "@article{hubtools_test_2025,\n  title = {A Test Citation},\n  year = {2025}\n}"
SUMMARY = "Summary sentence written by the test."

METRICS = [
    {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset": {"type": "testuser/isic-lt", "name": "ISIC LT", "split": "test", "config": "r100"},
        "values": {
            "balanced_accuracy": 0.8125,
            "head_accuracy": 0.93,
            "medium_accuracy": 0.71,
            "tail_accuracy": 0.62,
        },
        "source": {"name": "hubtools test", "url": "https://example.org/run/1"},
    },
    {
        "task_type": "image-classification",
        "dataset": {"type": "testuser/isic-lt", "split": "validation"},
        "values": {"balanced_accuracy": 0.79, "top1": "79.0 ± 1.2"},
    },
]

COMMON_MODEL_VARS = {
    "repo_id": "testuser/full-model",
    "summary": SUMMARY,
    "intended_use": "Intended-use text from the test.",
    "limitations": "Limitations text from the test.",
    "training_data": "Training-data text from the test.",
    "training_procedure": "Training-procedure text from the test.",
    "hyperparameters": {"learning_rate": 0.0003, "epochs": 2},
    "evaluation_notes": "Evaluation notes from the test.",
    "citation": CITATION,
}

FULL_CARD_DATA = {
    "license": "apache-2.0",
    "tags": ["test-tag"],
    "base_model": ["testuser/base-a", "testuser/base-b"],
    "datasets": ["testuser/isic-lt"],
    "library_name": "transformers",
    "pipeline_tag": "image-classification",
    "model_name": "full-model",
    "language": "en",
}

KIND_VARS = {
    "model": {"model_class": "AutoModelForImageClassification", "trust_remote_code": True, "medical": True},
    "merged_model": {
        "merge_method": "task_arithmetic",
        "merge_recipe": "merge_method: linear\nmodels:\n  - model: testuser/base-a\n  - model: testuser/base-b\n",
    },
    "longtail_classifier": {
        "method": "ldam_drw",
        "backbone": "resnet50",
        "class_names": ["nevus", "melanoma", "bcc", "ak"],
        "imbalance_ratio": 100,
        "head_cutoff": 1,
        "medium_cutoff": 3,
        "selection_rule": "best validation balanced_accuracy",
    },
    "vision_backbone": {
        "expansion": {"positions": [3, 7, 11], "init": "layerscale_zero", "expanded_depth": 15}
    },
    "vision_language": {
        "candidate_labels": ["normal", "glaucoma"],
        "hypothesis_template": "A retinal image showing {}",
        "vision_tower": "testuser/vit",
        "text_tower": "testuser/bert",
    },
    "parameter_generator": {
        "conditional": True,
        "host_model": "testuser/host",
        "param_subset": "LoRA A/B of every attention projection",
        "num_params": 2048,
        "num_checkpoints": 200,
        "tasks": ["sst2", "rte"],
        "example_condition": 1,
    },
    "diffusion_model": {
        "speed": {"k": 5.0, "tau": 700, "lam": 0.6, "dual": True},
        "image_size": 32,
        "num_train_timesteps": 1000,
        "train_steps": 5000,
    },
    "segmentation_model": {
        "method": "bpl",
        "prior": {"mu0": 0.5, "sigma0": 0.1},
        "labelled_fraction": 0.1,
        "class_names": ["brain"],
        "dims": 2,
    },
}


def full_render(kind: str):
    if kind == "dataset":
        return render_card(
            kind,
            card_data={
                "license": "cc-by-nc-4.0",
                "pretty_name": "ISIC 2019 LT",
                "task_categories": ["image-classification"],
                "size_categories": ["1K<n<10K"],
                "source_datasets": ["testuser/isic2019"],
                "tags": ["test-tag"],
            },
            repo_id="testuser/isic-lt",
            summary=SUMMARY,
            config_name="r100",
            features={"image": "Image", "label": "ClassLabel"},
            splits={"train": 1200, "test": 300},
            source_data="Source-data text from the test.",
            curation="Curation text from the test.",
            medical=True,
            intended_use="Intended-use text from the test.",
            limitations="Limitations text from the test.",
            citation=CITATION,
        )
    if kind == "space":
        return render_card(
            kind,
            card_data={
                "title": "Retina demo",
                "emoji": "👁",
                "colorFrom": "blue",
                "colorTo": "green",
                "sdk_version": "5.0.0",
                "models": ["testuser/full-model"],
                "datasets": ["testuser/isic-lt"],
                "license": "apache-2.0",
            },
            repo_id="testuser/retina-demo",
            summary=SUMMARY,
            usage="Usage text from the test.",
            medical=True,
            intended_use="Intended-use text from the test.",
            limitations="Limitations text from the test.",
            citation=CITATION,
        )
    return render_card(
        kind, card_data=FULL_CARD_DATA, metrics=METRICS, **COMMON_MODEL_VARS, **KIND_VARS.get(kind, {})
    )


def minimal_render(kind: str):
    if kind == "dataset":
        return render_card(kind, card_data={"pretty_name": "Tiny"})
    return render_card(kind, card_data={})


RENDERERS = {"full": full_render, "minimal": minimal_render}


def front_matter(text: str) -> dict:
    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None, text[:200]
    return yaml.safe_load(match.group(2))


def test_one_template_per_kind():
    on_disk = sorted(p.stem for p in templates_dir().glob("*.md"))
    assert on_disk == sorted(CARD_KINDS)
    for kind in CARD_KINDS:
        text = (templates_dir() / f"{kind}.md").read_text(encoding="utf-8")
        # huggingface_hub's RepoCard.from_template convention.
        assert text.startswith("---\n{{ card_data }}\n---\n"), kind


@pytest.mark.parametrize("variant", sorted(RENDERERS))
@pytest.mark.parametrize("kind", CARD_KINDS)
def test_card_renders_and_round_trips(kind, variant):
    card = RENDERERS[variant](kind)
    assert type(card) is EXPECTED_CLASS.get(kind, ModelCard)
    text = str(card)

    header = front_matter(text)
    assert isinstance(header, dict) and header
    assert header == card.data.to_dict()
    reloaded = type(card)(text)
    assert reloaded.data.to_dict() == card.data.to_dict()
    assert str(reloaded) == text

    # Sensible output: no unrendered Jinja, no Python None, balanced code fences, no runs of blank lines.
    body = card.text
    for junk in ("{{", "}}", "{%", "%}", "{#", "None", "Undefined"):
        assert junk not in body, (kind, variant, junk)
    assert body.count("```") % 2 == 0
    assert "\n\n\n" not in body
    assert re.search(r"^# \S", body, re.M), "card has a title"
    for section in ("## How to use", "## Limitations", "## Intended use", "## Citation"):
        assert section in body, (kind, section)
    if kind in MODEL_KINDS:
        procedure = "## Merge procedure" if kind == "merged_model" else "## Training procedure"
        for section in ("## Training data", procedure, "## Evaluation"):
            assert section in body, (kind, section)

    for tag in KIND_DEFAULTS[kind].get("tags", []):
        assert tag in header["tags"]
    if kind in MEDICAL_KINDS or variant == "full" and kind in ("model", "dataset", "space"):
        assert "Not for clinical use" in body
    if kind == "space":
        assert header["sdk"] == "gradio" and header["app_file"] == "app.py"


@pytest.mark.parametrize("kind", CARD_KINDS)
def test_full_card_uses_every_variable(kind):
    card = full_render(kind)
    body = card.text
    assert SUMMARY in body
    assert "Intended-use text from the test." in body
    assert "Limitations text from the test." in body
    assert "```bibtex\n" + CITATION + "\n```" in body
    assert 'from_pretrained("' in body or 'load_dataset("' in body or "python app.py" in body
    if kind in MODEL_KINDS:
        assert "testuser/full-model" in body  # repo_id in the usage snippet
        assert "Training-procedure text from the test." in body
        assert "Evaluation notes from the test." in body
        header = card.data.to_dict()
        for key in ("license", "base_model", "datasets", "library_name", "pipeline_tag"):
            assert header[key] == FULL_CARD_DATA[key], key
        assert "test-tag" in header["tags"]
    for name, value in KIND_VARS.get(kind, {}).items():
        if isinstance(value, str) and name not in ("model_class",):
            assert value.strip() in body, (kind, name)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_metrics_become_a_model_index_that_converts_back(kind):
    card = full_render(kind)
    header = front_matter(str(card))
    name, results = model_index_to_eval_results(header["model-index"])
    assert name == "full-model"
    got = {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in results}
    want = {
        (m["dataset"]["type"], m["dataset"]["split"], metric): value
        for m in METRICS
        for metric, value in m["values"].items()
    }
    assert got == want
    test_result = next(r for r in results if r.dataset_split == "test")
    assert test_result.dataset_name == "ISIC LT"
    assert test_result.dataset_config == "r100"
    assert test_result.task_name == "Image Classification"
    assert test_result.source_url == "https://example.org/run/1"
    val_result = next(r for r in results if r.dataset_split == "validation")
    assert val_result.dataset_name == "testuser/isic-lt"  # name defaults to the dataset id
    # The evaluation table shows every value.
    assert "| ISIC LT | test | tail_accuracy | 0.62 |" in card.text
    assert "| testuser/isic-lt | validation | top1 | 79.0 ± 1.2 |" in card.text


def test_longtail_card_draws_head_medium_tail_table():
    card = full_render("longtail_classifier")
    assert "| Dataset | Split | Head (many-shot) | Medium | Tail (few-shot) |" in card.text
    assert "| ISIC LT | test | 0.93 | 0.71 | 0.62 |" in card.text
    assert "| testuser/isic-lt | validation | - | - | - |" in card.text
    assert "head = classes [0, 1), medium = [1, 3), tail = [3, 4)" in card.text


def test_model_name_falls_back_to_repo_name():
    card = render_card("model", card_data={}, metrics=METRICS[0], repo_id="testuser/from-repo")
    name, _ = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "from-repo"
    assert card.text.startswith("\n# from-repo\n")
    with pytest.raises(CardError, match="model name"):
        render_card("model", card_data={}, metrics=METRICS[0])


def test_numpy_metric_values_are_plain_yaml():
    metrics = {
        "task_type": "image-segmentation",
        "dataset": {"type": "testuser/mni"},
        "values": {"dice": np.float32(0.75), "n": np.int64(3)},
    }
    card = render_card("segmentation_model", card_data={"model_name": "seg"}, metrics=metrics)
    header = front_matter(str(card))  # safe_load would refuse numpy objects
    values = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert values == {"dice": 0.75, "n": 3}
    assert type(values["n"]) is int


def test_unknown_kind_lists_the_valid_kinds():
    with pytest.raises(CardError) as err:
        render_card("llm", card_data={})
    for kind in CARD_KINDS:
        assert kind in str(err.value)


@pytest.mark.parametrize(
    "metrics, fragment",
    [
        ({"dataset": {"type": "d"}, "values": {"a": 1}}, "missing required key 'task_type'"),
        ({"task_type": "t", "values": {"a": 1}}, "missing required key 'dataset'"),
        ({"task_type": "t", "dataset": {"type": "d"}}, "missing required key 'values'"),
        ({"task_type": "t", "dataset": {"type": "d"}, "values": {}}, "metrics.values"),
        ({"task_type": "t", "dataset": {"name": "D"}, "values": {"a": 1}}, "metrics.dataset.type"),
        ({"task_type": "t", "dataset": {"type": "d", "splt": "x"}, "values": {"a": 1}}, "'splt'"),
        ({"task_type": "t", "dataset": {"type": "d"}, "values": {"a": 1}, "extra": 1}, "'extra'"),
        ({"task_type": "t", "dataset": {"type": "d"}, "values": {"a": [1, 2]}}, "metrics.values.a"),
        ({"task_type": "t", "dataset": {"type": "d"}, "values": {"a": True}}, "metrics.values.a"),
        ([], "non-empty list"),
        ([{"task_type": "t", "dataset": "d", "values": {"a": 1}}], "metrics[0].dataset"),
    ],
)
def test_malformed_metrics_are_card_errors_naming_the_key(metrics, fragment):
    with pytest.raises(CardError) as err:
        render_card("model", card_data={"model_name": "m"}, metrics=metrics)
    assert fragment in str(err.value)


def test_metrics_only_on_model_cards_and_datasets_need_a_name():
    with pytest.raises(CardError, match="model-index"):
        render_card("dataset", card_data={"pretty_name": "x"}, metrics=METRICS)
    with pytest.raises(CardError, match="pretty_name"):
        render_card("dataset", card_data={})
    card = render_card("dataset", card_data={}, dataset_name="From variable")
    assert card.data.pretty_name == "From variable"


def test_templates_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "model.md").write_text(
        "---\n{{ card_data }}\n---\n# Custom {{ model_name }}\n", encoding="utf-8"
    )
    monkeypatch.setenv("HUBTOOLS_MODEL_CARDS", str(tmp_path))
    assert templates_dir() == tmp_path
    card = render_card("model", card_data={"model_name": "x", "license": "mit"})
    assert card.text == "# Custom x"
    assert card.data.license == "mit"
    with pytest.raises(CardError) as err:
        render_card("space", card_data={})
    assert str(tmp_path / "space.md") in str(err.value)


def test_default_templates_dir_is_repo_model_cards():
    assert templates_dir() == Path(__file__).resolve().parents[2] / "model_cards"


@pytest.mark.parametrize("variant", sorted(RENDERERS))
@pytest.mark.parametrize("kind", CARD_KINDS)
def test_card_validates_on_the_local_hub(hub, kind, variant):
    card = RENDERERS[variant](kind)
    card.validate()  # POST {HF_ENDPOINT}/api/validate-yaml with the card's repo type; raises on errors


def test_reserved_template_variables_are_refused():
    with pytest.raises(CardError, match="evaluations"):
        render_card("model", card_data={}, evaluations=[])
