"""Model, dataset and Space cards rendered from the Jinja templates in ``model_cards/``.

One template per artifact kind (:data:`CARD_KINDS`). A template follows huggingface_hub's
``RepoCard.from_template`` convention: it starts with ``---\\n{{ card_data }}\\n---`` and
receives the card metadata's keys plus the caller's template variables.

Where the templates live: ``model_cards/`` at the repository root, found from this
file (``Path(__file__).resolve().parents[2] / "model_cards"``, which holds for an
editable install), or the folder named by the ``HUBTOOLS_MODEL_CARDS`` environment variable.

Metrics become the card's ``model-index`` (via :class:`huggingface_hub.EvalResult`). The
accepted shape is one mapping, or a list of them (one per task and dataset split)::

    {
        "task_type": "image-classification",      # Hub task id (required)
        "task_name": "Image Classification",      # optional pretty name
        "dataset": {                              # required
            "type": "org/isic2019-lt",            # dataset id (required)
            "name": "ISIC 2019 LT (r100)",        # pretty name (defaults to type)
            "split": "test",                      # optional
            "config": "r100",                     # optional
            "revision": "abc123...",              # optional
        },
        "values": {"accuracy": 0.91, "tail_accuracy": 0.62},  # metric id -> number or string (required)
        "source": {"name": "hubtools benchmark", "url": "https://..."},  # optional
    }

Catalogue fields (:data:`ZOO_FIELDS`) are optional metadata the model zoo (``hubtools.hub.zoo``)
reads from every card, so the card stays the one source of truth: ``modality`` (e.g. "fundus
photography", "MRI"), ``anatomy`` ("retina", "brain"), ``task`` (a Hub task id, for kinds without a
``pipeline_tag``) and ``reproduce`` (the command that rebuilds the artifact). Pass them to
:func:`render_card` as keywords; they land in the YAML header next to ``license`` and ``tags``.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import (
    DatasetCard,
    DatasetCardData,
    EvalResult,
    ModelCard,
    ModelCardData,
    SpaceCard,
    SpaceCardData,
)
from huggingface_hub.repocard import RepoCard

from hubtools.errors import CardError

MODEL_CARDS_ENV = "HUBTOOLS_MODEL_CARDS"

CARD_KINDS: tuple[str, ...] = (
    "model",
    "dataset",
    "merged_model",
    "longtail_classifier",
    "vision_backbone",
    "vision_language",
    "parameter_generator",
    "diffusion_model",
    "segmentation_model",
    "space",
)

_CARD_CLASSES: dict[str, type[RepoCard]] = {"dataset": DatasetCard, "space": SpaceCard}
_CARD_DATA_CLASSES = {DatasetCard: DatasetCardData, SpaceCard: SpaceCardData, ModelCard: ModelCardData}

# Metadata each kind gets unless the caller's card_data sets the key (tags are merged).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"tags": ["hubtools"]},
    "dataset": {"tags": ["hubtools"]},
    "merged_model": {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "base_model_relation": "merge",
        "tags": ["hubtools", "merge", "mergekit", "model-glue"],
    },
    "longtail_classifier": {
        "pipeline_tag": "image-classification",
        "tags": ["hubtools", "long-tailed", "medical", "monica"],
    },
    "vision_backbone": {
        "library_name": "transformers",
        "pipeline_tag": "image-feature-extraction",
        "modality": "fundus photography",
        "anatomy": "retina",
        "tags": ["hubtools", "dinov2", "block-expansion", "retina", "medical"],
    },
    "vision_language": {
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-image-classification",
        "tags": ["hubtools", "clip", "retina", "fundus", "medical"],
    },
    "parameter_generator": {
        "library_name": "diffusers",
        "modality": "model parameters",
        "task": "parameter-generation",
        "tags": ["hubtools", "p-diff", "parameter-generation"],
    },
    "diffusion_model": {
        "library_name": "diffusers",
        "pipeline_tag": "unconditional-image-generation",
        "tags": ["hubtools", "ddpm", "speed"],
    },
    "segmentation_model": {
        "pipeline_tag": "image-segmentation",
        "tags": ["hubtools", "semi-supervised", "pseudo-labels"],
    },
    "space": {"sdk": "gradio", "app_file": "app.py", "tags": ["hubtools"]},
}

# Optional catalogue metadata the zoo reads from every card (see the module docstring).
ZOO_FIELDS: tuple[str, ...] = ("modality", "anatomy", "task", "reproduce")

# Names render_card passes to the template itself, or that RepoCard.from_template takes.
_RESERVED_TEMPLATE_VARS = {"kind", "evaluations", "card_data", "template_path", "template_str"}
_METRICS_KEYS = {"task_type", "task_name", "dataset", "values", "source"}
_DATASET_KEYS = {"type", "name", "split", "config", "revision"}


def templates_dir() -> Path:
    """The folder holding ``<kind>.md`` templates.

    ``$HUBTOOLS_MODEL_CARDS`` if set; else ``<repo>/model_cards`` for a source checkout
    (editable install); else ``<prefix>/share/hubtools/model_cards``, where a wheel
    install puts them (pyproject's data-files).
    """
    override = os.environ.get(MODEL_CARDS_ENV)
    if override:
        return Path(override)
    source = Path(__file__).resolve().parents[2] / "model_cards"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "hubtools" / "model_cards"


def template_path(kind: str) -> Path:
    """Path of the template for ``kind``; :class:`CardError` if the kind is unknown or the file missing."""
    if kind not in CARD_KINDS:
        raise CardError(f"unknown card kind {kind!r}; valid kinds: {', '.join(CARD_KINDS)}")
    path = templates_dir() / f"{kind}.md"
    if not path.is_file():
        raise CardError(
            f"{path}: card template for kind {kind!r} not found "
            f"(set {MODEL_CARDS_ENV} to the folder holding the model_cards templates)"
        )
    return path


def card_class(kind: str) -> type[RepoCard]:
    """``DatasetCard`` for ``dataset``, ``SpaceCard`` for ``space``, ``ModelCard`` for every other kind."""
    if kind not in CARD_KINDS:
        raise CardError(f"unknown card kind {kind!r}; valid kinds: {', '.join(CARD_KINDS)}")
    return _CARD_CLASSES.get(kind, ModelCard)


def _metric_value(value: Any, where: str) -> Any:
    # numpy scalars would be dumped as python objects that safe_load (and the Hub) reject.
    if isinstance(value, bool):
        raise CardError(f"{where}: expected a number or a string, got a bool ({value!r})")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    raise CardError(f"{where}: expected a number or a string, got {type(value).__name__} ({value!r})")


def normalize_metrics(metrics: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check a metrics mapping (or list of them, see the module docstring) and return flat entries.

    Each entry has ``task_type``, ``task_name``, ``dataset_type``, ``dataset_name``, ``split``,
    ``config``, ``revision``, ``source_name``, ``source_url`` and ``scores`` (metric id -> value);
    templates loop over these to draw their evaluation tables.
    """
    entries = [metrics] if isinstance(metrics, Mapping) else metrics
    if not isinstance(entries, list) or not entries:
        raise CardError(f"metrics: expected a mapping or a non-empty list of mappings, got {metrics!r}")
    out = []
    for i, entry in enumerate(entries):
        where = "metrics" if isinstance(metrics, Mapping) else f"metrics[{i}]"
        if not isinstance(entry, Mapping):
            raise CardError(f"{where}: expected a mapping, got {type(entry).__name__}")
        unknown = set(entry) - _METRICS_KEYS
        if unknown:
            raise CardError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_METRICS_KEYS)}")
        for key in ("task_type", "dataset", "values"):
            if key not in entry:
                raise CardError(f"{where}: missing required key '{key}'")
        if not isinstance(entry["task_type"], str) or not entry["task_type"]:
            raise CardError(f"{where}.task_type: expected a task id string, got {entry['task_type']!r}")
        dataset = entry["dataset"]
        if not isinstance(dataset, Mapping):
            raise CardError(f"{where}.dataset: expected a mapping, got {dataset!r}")
        unknown = set(dataset) - _DATASET_KEYS
        if unknown:
            raise CardError(
                f"{where}.dataset: unknown key(s) {sorted(unknown)}; allowed: {sorted(_DATASET_KEYS)}"
            )
        if not isinstance(dataset.get("type"), str) or not dataset["type"]:
            raise CardError(
                f"{where}.dataset.type: expected a dataset id string, got {dataset.get('type')!r}"
            )
        values = entry["values"]
        if not isinstance(values, Mapping) or not values:
            raise CardError(
                f"{where}.values: expected a non-empty mapping of metric id -> value, got {values!r}"
            )
        source = entry.get("source") or {}
        if source and not (isinstance(source, Mapping) and source.get("url")):
            raise CardError(
                f"{where}.source: expected a mapping with a 'url' (and optional 'name'), got {source!r}"
            )
        out.append(
            {
                "task_type": entry["task_type"],
                "task_name": entry.get("task_name"),
                "dataset_type": dataset["type"],
                "dataset_name": dataset.get("name") or dataset["type"],
                "split": dataset.get("split"),
                "config": dataset.get("config"),
                "revision": dataset.get("revision"),
                "source_name": source.get("name"),
                "source_url": source.get("url"),
                "scores": {
                    str(name): _metric_value(value, f"{where}.values.{name}")
                    for name, value in values.items()
                },
            }
        )
    return out


def _eval_results(entries: list[dict[str, Any]]) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=e["task_type"],
            task_name=e["task_name"],
            dataset_type=e["dataset_type"],
            dataset_name=e["dataset_name"],
            dataset_split=e["split"],
            dataset_config=e["config"],
            dataset_revision=e["revision"],
            source_name=e["source_name"],
            source_url=e["source_url"],
            metric_type=name,
            metric_value=value,
        )
        for e in entries
        for name, value in e["scores"].items()
    ]


def _merged_card_data(kind: str, card_data: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in KIND_DEFAULTS[kind].items() if k != "tags"}
    merged.update(card_data)
    tags = card_data.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    merged["tags"] = list(dict.fromkeys([*tags, *KIND_DEFAULTS[kind].get("tags", [])])) or None
    return merged


def render_card(
    kind: str,
    *,
    card_data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    modality: str | None = None,
    anatomy: str | None = None,
    task: str | None = None,
    reproduce: str | None = None,
    **template_vars: Any,
) -> RepoCard:
    """Render the ``model_cards/<kind>.md`` template into a card.

    Args:
        kind: one of :data:`CARD_KINDS`.
        card_data: the YAML metadata, passed to ``ModelCardData`` (``DatasetCardData`` for
            ``dataset``, ``SpaceCardData`` for ``space``): ``license``, ``tags``, ``base_model``,
            ``datasets``, ``library_name``, ``pipeline_tag``, ``model_name``, ... and any extra key.
            The kind's :data:`KIND_DEFAULTS` fill keys left out; tags are merged.
        metrics: evaluation results (shape in the module docstring), written as ``model-index``
            and drawn as the card's evaluation table. Model kinds only. Needs a model name:
            ``card_data["model_name"]``, else ``model_name=``, else the name part of ``repo_id=``.
        **template_vars: free-text and structured variables used by the template (``summary``,
            ``repo_id``, ``citation``, ...; each template's header comment lists its own). Every
            one is optional unless the template says otherwise.

    Returns:
        A ``ModelCard``, ``DatasetCard`` or ``SpaceCard``; ``str(card)`` is the README.md text.

    Raises:
        CardError: unknown kind, missing template, malformed metrics or metadata.
    """
    cls = card_class(kind)
    path = template_path(kind)
    reserved = _RESERVED_TEMPLATE_VARS.intersection(template_vars)
    if reserved:
        raise CardError(f"template variable(s) {sorted(reserved)} are set by render_card itself")
    if card_data is not None and not isinstance(card_data, Mapping):
        raise CardError(f"card_data: expected a mapping, got {type(card_data).__name__}")
    data = _merged_card_data(kind, card_data or {})
    zoo_fields = {"modality": modality, "anatomy": anatomy, "task": task, "reproduce": reproduce}
    for key, value in zoo_fields.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise CardError(f"{key}: expected a non-empty string, got {value!r}")
        if card_data and key in card_data and card_data[key] != value:
            raise CardError(f"{key}: given as {value!r} and as card_data[{key!r}]={card_data[key]!r}")
        data[key] = value

    evaluations: list[dict[str, Any]] = []
    if metrics is not None:
        if cls is not ModelCard:
            raise CardError(f"metrics: only model cards carry a model-index, not a {kind!r} card")
        if data.get("eval_results") or data.get("model-index"):
            raise CardError("card_data: pass evaluation results either as metrics= or in card_data, not both")
        model_name = data.get("model_name") or template_vars.get("model_name")
        if not model_name and template_vars.get("repo_id"):
            model_name = str(template_vars["repo_id"]).rsplit("/", 1)[-1]
        if not model_name:
            raise CardError(
                "metrics: a model-index needs a model name (card_data['model_name'], model_name= or repo_id=)"
            )
        data["model_name"] = model_name
        evaluations = normalize_metrics(metrics)
        data["eval_results"] = _eval_results(evaluations)

    if kind == "dataset":
        data["pretty_name"] = data.get("pretty_name") or template_vars.get("dataset_name")
        if not data["pretty_name"]:
            raise CardError("dataset cards need a name: card_data['pretty_name'] or dataset_name=")

    try:
        card_data_obj = _CARD_DATA_CLASSES[cls](**data)
    except (TypeError, ValueError) as err:
        raise CardError(f"card_data for a {kind!r} card is invalid: {err}") from None

    template_vars.setdefault("model_name", data.get("model_name"))
    try:
        card = cls.from_template(
            card_data_obj, template_path=str(path), kind=kind, evaluations=evaluations, **template_vars
        )
    except ValueError as err:
        raise CardError(f"{path}: the rendered card's metadata is not a valid YAML mapping: {err}") from None
    return card
