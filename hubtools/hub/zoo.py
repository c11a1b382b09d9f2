"""The model zoo: a machine-readable catalogue of every artifact an author published on a Hub.

OpenMEDLab lists its foundation models in a hand-written README; here the catalogue is built
from the repos' own cards, so there is no second source of truth. :func:`build_index` lists an
author's models, datasets and Spaces through the ordinary ``HfApi`` listing calls (which carry
each card's YAML metadata), turns every repo into one :class:`ZooEntry` and
:func:`publish_catalogue` writes the entries as a Hub dataset (Parquet + card) that loads with
plain ``load_dataset("ORG/zoo")``.

What an entry holds and where it comes from:

- ``modality``, ``anatomy``, ``task``, ``reproduce``: the card's own keys
  (:data:`hubtools.hub.cards.ZOO_FIELDS`, written by ``render_card``). A card without them
  still gets an entry: modality and anatomy are inferred from the tags, the dataset features or
  the ``pipeline_tag``, ``task`` falls back to ``pipeline_tag`` / ``task_categories`` /
  the ``model-index`` task; every fallback and every missing field is named in ``warnings``.
- ``metrics``: one row per value of the card's ``model-index``.
- ``kind``: ``dataset`` and ``space`` from the repo type; among models ``adapter`` (PEFT),
  ``pipeline`` (diffusers ``model_index.json``), ``recipe`` (YAML but no weights) or ``model``.

Collections: one per modality, kept as Hub collections (``Zoo: <modality>``, through the
collections API, which the local Hub serves too) and as a second config ``collections`` of the
catalogue dataset, for Hubs without that API.
"""

from __future__ import annotations

import json
import logging
import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hubtools.errors import HubtoolsError

logger = logging.getLogger(__name__)

ZOO_TAG = "hubtools-zoo"  # marks the catalogue repo itself, which the index skips
CATALOGUE_NAME = "zoo"
COLLECTION_PREFIX = "Zoo: "  # title prefix of the Hub collections the zoo owns
CATALOGUE_FILE = "data/train-00000-of-00001.parquet"
COLLECTIONS_FILE = "collections/train-00000-of-00001.parquet"
UNKNOWN = ""

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".pt", ".pth", ".ckpt", ".h5")

# Tag (lower case) -> modality / anatomy, for cards written before the zoo fields existed.
MODALITY_TAGS: dict[str, str] = {
    "fundus": "fundus photography",
    "oct": "OCT",
    "mri": "MRI",
    "ct": "CT",
    "x-ray": "X-ray",
    "xray": "X-ray",
    "dermoscopy": "dermoscopy",
    "ultrasound": "ultrasound",
    "histopathology": "histopathology",
    "pathology": "histopathology",
    "microscopy": "microscopy",
    "endoscopy": "endoscopy",
}
ANATOMY_TAGS: dict[str, str] = {
    t: t for t in ("retina", "brain", "skin", "chest", "lung", "breast", "heart", "liver", "kidney", "knee")
}
# pipeline_tag -> modality: the coarsest fallback.
_TEXT_TASKS = {
    "text-generation",
    "text2text-generation",
    "feature-extraction",
    "fill-mask",
    "sentence-similarity",
    "text-classification",
    "token-classification",
    "question-answering",
    "summarization",
    "translation",
}


class ZooError(HubtoolsError):
    """A catalogue that cannot be read, a bad filter, or an unknown repo id."""


@dataclass
class ZooMetric:
    """One value of a card's ``model-index``."""

    name: str
    value: float | None
    text: str
    task: str
    dataset: str
    split: str


@dataclass
class ZooEntry:
    """One artifact of the zoo; every field is read from the repo's card and file list."""

    repo_id: str
    repo_type: str
    kind: str
    title: str = UNKNOWN
    modality: str = UNKNOWN
    anatomy: str = UNKNOWN
    task: str = UNKNOWN
    base_model: list[str] = field(default_factory=list)
    training_data: list[str] = field(default_factory=list)
    license: str = UNKNOWN
    library_name: str = UNKNOWN
    pipeline_tag: str = UNKNOWN
    tags: list[str] = field(default_factory=list)
    metrics: list[ZooMetric] = field(default_factory=list)
    reproduce: str = UNKNOWN
    sha: str = UNKNOWN
    last_modified: str = UNKNOWN
    private: bool = False
    warnings: list[str] = field(default_factory=list)

    def metric(self, name: str) -> list[float]:
        """The numeric values of metric ``name`` (one per dataset/split it was measured on)."""
        return [m.value for m in self.metrics if m.name == name and m.value is not None]

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ZooEntry:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["metrics"] = [ZooMetric(**m) for m in row.get("metrics") or []]
        return cls(**values)


def catalogue_features() -> Any:
    """The catalogue's ``datasets.Features``: explicit, so empty lists keep their type on a round trip."""
    from datasets import Features, List, Value

    text = Value("string")
    metric = {
        "name": text,
        "value": Value("float64"),
        "text": text,
        "task": text,
        "dataset": text,
        "split": text,
    }
    schema: dict[str, Any] = {}
    for f in fields(ZooEntry):
        if f.name == "metrics":
            schema[f.name] = List(metric)
        elif str(f.type).startswith("list"):
            schema[f.name] = List(text)
        elif f.name == "private":
            schema[f.name] = Value("bool")
        else:
            schema[f.name] = text
    return Features(schema)


# ---------------------------------------------------------------------------- reading cards


def _str_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _metrics(model_index: Any, warn: Callable[[str], None]) -> list[ZooMetric]:
    """Flatten a ``model-index`` (a list of models, each with results) into metric rows."""
    out: list[ZooMetric] = []
    if model_index is None:
        return out
    try:
        for model in model_index:
            for result in model.get("results") or []:
                task = (result.get("task") or {}).get("type") or UNKNOWN
                dataset = result.get("dataset") or {}
                for m in result.get("metrics") or []:
                    raw = m.get("value")
                    numeric = isinstance(raw, (int, float)) and not isinstance(raw, bool)
                    out.append(
                        ZooMetric(
                            name=str(m.get("type") or m.get("name") or UNKNOWN),
                            value=float(raw) if numeric else None,
                            text=str(raw),
                            task=str(task),
                            dataset=str(dataset.get("type") or dataset.get("name") or UNKNOWN),
                            split=str(dataset.get("split") or UNKNOWN),
                        )
                    )
    except (AttributeError, TypeError) as err:
        warn(f"model-index is malformed and was skipped ({type(err).__name__}: {err})")
        return []
    return out


def _dataset_features_modality(dataset_info: Any) -> str:
    """Image / audio / text / tabular from the ``dataset_info`` that ``datasets`` writes into a card."""
    infos = dataset_info if isinstance(dataset_info, list) else [dataset_info]
    dtypes: list[str] = []
    for info in infos:
        for feat in (info or {}).get("features") or [] if isinstance(info, Mapping) else []:
            if isinstance(feat, Mapping):
                dtype = feat.get("dtype")
                dtypes.append(dtype if isinstance(dtype, str) else "class_label" if dtype else "nested")
    if not dtypes:
        return UNKNOWN
    for special in ("image", "audio", "video"):
        if special in dtypes:
            return special
    if "string" in dtypes or "large_string" in dtypes:
        return "text"
    if all(d == "class_label" or re.fullmatch(r"(u?int|float)\d+|bool", d) for d in dtypes):
        return "tabular"
    return UNKNOWN


def _pipeline_modality(task: str) -> str:
    if not task:
        return UNKNOWN
    if task in _TEXT_TASKS:
        return "text"
    if "image" in task and "text" in task or task.startswith("zero-shot-image"):
        return "image + text"
    if "image" in task or task in ("object-detection", "depth-estimation"):
        return "image"
    if "audio" in task or "speech" in task:
        return "audio"
    return UNKNOWN


def _kind(repo_type: str, files: Sequence[str], card: Mapping[str, Any]) -> str:
    if repo_type in ("dataset", "space"):
        return repo_type
    names = {f.rsplit("/", 1)[-1] for f in files}
    if "adapter_config.json" in names or card.get("library_name") == "peft":
        return "adapter"
    if "model_index.json" in names:
        return "pipeline"
    has_weights = any(f.endswith(WEIGHT_SUFFIXES) for f in files)
    if not has_weights and any(f.endswith((".yml", ".yaml")) for f in files):
        return "recipe"
    return "model"


def entry_from_card(
    repo_id: str,
    repo_type: str,
    card: Mapping[str, Any] | None,
    files: Sequence[str],
    *,
    sha: str = UNKNOWN,
    last_modified: str = UNKNOWN,
) -> ZooEntry:
    """Build the catalogue entry of one repo from its card metadata and file list.

    ``card`` is the README's YAML front matter (``None`` when the repo has no card, or one
    whose metadata could not be parsed). Missing fields stay empty and are named in the
    entry's ``warnings``; inferred ones say what they were inferred from.
    """
    warnings: list[str] = []
    warn = warnings.append
    if card is None:
        warn("no README.md card" if "README.md" not in files else "README.md has no readable YAML metadata")
    card = dict(card or {})
    tags = _str_list(card.get("tags"))
    lower_tags = [t.lower() for t in tags]
    pipeline_tag = str(card.get("pipeline_tag") or UNKNOWN)
    metrics = _metrics(card.get("model-index"), warn)

    modality = str(card.get("modality") or UNKNOWN)
    if not modality:
        from_tags = next((MODALITY_TAGS[t] for t in lower_tags if t in MODALITY_TAGS), UNKNOWN)
        candidates = (
            ("tags", from_tags),
            ("dataset features", _dataset_features_modality(card.get("dataset_info"))),
            ("pipeline_tag", _pipeline_modality(pipeline_tag)),
        )
        source, modality = next(((s, m) for s, m in candidates if m), ("", UNKNOWN))
        warn(f"modality inferred from {source}" if modality else "no modality in the card")

    anatomy = str(card.get("anatomy") or UNKNOWN)
    if not anatomy:
        anatomy = next((ANATOMY_TAGS[t] for t in lower_tags if t in ANATOMY_TAGS), UNKNOWN)
        if anatomy:
            warn("anatomy inferred from tags")

    task = str(card.get("task") or UNKNOWN)
    if not task:
        categories = _str_list(card.get("task_categories"))
        task = (
            pipeline_tag
            or (categories[0] if categories else UNKNOWN)
            or (metrics[0].task if metrics else UNKNOWN)
        )
        if not task:
            warn("no task in the card (task, pipeline_tag, task_categories or model-index)")

    license_ = str(card.get("license") or UNKNOWN)
    if license_ == "other" and card.get("license_name"):
        license_ = f"other ({card['license_name']})"
    if not license_:
        warn("no license in the card")
    reproduce = str(card.get("reproduce") or UNKNOWN)
    if not reproduce and card:
        warn("no reproduce command in the card")

    base_model = _str_list(card.get("base_model"))
    if any(m.startswith(("/", "./", "../", "~")) for m in base_model):
        warn("base_model names local path(s), not Hub repos")
    title = card.get("model_name") or card.get("pretty_name") or card.get("title")
    if not title and isinstance(card.get("model-index"), list) and card["model-index"]:
        first = card["model-index"][0]
        title = first.get("name") if isinstance(first, Mapping) else None
    return ZooEntry(
        repo_id=repo_id,
        repo_type=repo_type,
        kind=_kind(repo_type, files, card),
        title=str(title or repo_id.rsplit("/", 1)[-1]),
        modality=modality,
        anatomy=anatomy,
        task=task,
        base_model=base_model,
        training_data=_str_list(card.get("datasets") or card.get("source_datasets")),
        license=license_,
        library_name=str(card.get("library_name") or UNKNOWN),
        pipeline_tag=pipeline_tag,
        tags=tags,
        metrics=metrics,
        reproduce=reproduce,
        sha=sha or UNKNOWN,
        last_modified=last_modified or UNKNOWN,
        warnings=warnings,
    )


def _entry_from_info(info: Any, repo_type: str) -> ZooEntry:
    card_data = getattr(info, "card_data", None)
    card = card_data.to_dict() if card_data is not None else None
    files = [s.rfilename for s in (getattr(info, "siblings", None) or [])]
    modified = getattr(info, "last_modified", None)
    entry = entry_from_card(
        info.id,
        repo_type,
        card,
        files,
        sha=getattr(info, "sha", None) or UNKNOWN,
        last_modified=modified.isoformat() if modified else UNKNOWN,
    )
    entry.private = bool(getattr(info, "private", False))
    return entry


def build_index(author: str, *, api: Any = None, search: str | None = None) -> list[ZooEntry]:
    """Catalogue every model, dataset and Space of ``author`` on the Hub ``api`` talks to.

    Args:
        author: the user or organisation whose repos are indexed.
        api: an ``HfApi`` (default: ``HfApi()``, i.e. ``HF_ENDPOINT`` and ``HF_TOKEN``).
        search: only repos whose id contains this text (the Hub's ``search`` filter).

    Returns:
        Entries sorted by repo type and id; the catalogue repo itself (tag ``hubtools-zoo``) is
        left out. A repo with no card or an unreadable one is listed with what is known, and a
        warning is logged for every entry whose ``warnings`` is not empty.
    """
    from huggingface_hub import HfApi

    api = api or HfApi()
    listings: list[tuple[str, Iterable[Any]]] = [
        ("model", api.list_models(author=author, search=search, full=True, cardData=True)),
        ("dataset", api.list_datasets(author=author, search=search, full=True)),
        ("space", api.list_spaces(author=author, search=search, full=True)),
    ]
    entries = []
    for repo_type, infos in listings:
        for info in infos:
            if ZOO_TAG in (getattr(info, "tags", None) or []):
                continue
            entry = _entry_from_info(info, repo_type)
            if entry.warnings:
                logger.warning("%s %s: %s", repo_type, entry.repo_id, "; ".join(entry.warnings))
            entries.append(entry)
    order = {"model": 0, "dataset": 1, "space": 2}
    return sorted(entries, key=lambda e: (order[e.repo_type], e.repo_id))


# ---------------------------------------------------------------------------- filters


_METRIC_FILTER = re.compile(r"^\s*([\w.\-/]+)\s*(>=|<=|==|=|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
    "==": operator.eq,
}


def parse_metric_filter(text: str) -> Callable[[ZooEntry], bool]:
    """``"dice>=0.6"`` -> a predicate true for entries with any ``dice`` value >= 0.6."""
    match = _METRIC_FILTER.match(text)
    if not match:
        raise ZooError(
            f"metric filter {text!r}: expected NAME OP NUMBER with OP one of >= <= > < = (e.g. dice>=0.6)"
        )
    name, op, number = match.group(1), _OPS[match.group(2)], float(match.group(3))
    return lambda e: any(op(v, number) for v in e.metric(name))


def filter_entries(
    entries: Iterable[ZooEntry],
    *,
    modality: str | None = None,
    anatomy: str | None = None,
    task: str | None = None,
    kind: str | None = None,
    metrics: Sequence[str] = (),
    query: str | None = None,
) -> list[ZooEntry]:
    """Entries matching every given filter.

    ``modality``/``anatomy``/``task``/``kind`` match case-insensitively as substrings;
    ``metrics`` are ``NAME OP NUMBER`` conditions (:func:`parse_metric_filter`), all required;
    ``query`` is free text searched in the id, title, tags, modality, anatomy, task, base models
    and training data.
    """
    predicates = [parse_metric_filter(m) for m in metrics]

    def has(value: str, wanted: str | None) -> bool:
        return wanted is None or wanted.lower() in value.lower()

    def text_of(e: ZooEntry) -> str:
        parts = [
            e.repo_id,
            e.title,
            e.modality,
            e.anatomy,
            e.task,
            e.kind,
            *e.tags,
            *e.base_model,
            *e.training_data,
        ]
        return " ".join(parts).lower()

    words = (query or "").lower().split()
    return [
        e
        for e in entries
        if has(e.modality, modality)
        and has(e.anatomy, anatomy)
        and has(e.task, task)
        and (kind is None or e.kind == kind)
        and all(p(e) for p in predicates)
        and all(w in text_of(e) for w in words)
    ]


def collections(entries: Iterable[ZooEntry]) -> dict[str, list[ZooEntry]]:
    """The zoo's collections: one per modality (entries without one go to ``other``), sorted."""
    groups: dict[str, list[ZooEntry]] = {}
    for e in entries:
        groups.setdefault(e.modality or "other", []).append(e)
    return dict(sorted(groups.items()))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "other"


# ---------------------------------------------------------------------------- tables


def _list_cell(items: Sequence[str], limit: int) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit})" if len(items) > limit else "")


def _metrics_cell(entry: ZooEntry, limit: int = 3) -> str:
    shown = [
        f"{m.name}={m.value:.4g}" if m.value is not None else f"{m.name}={m.text}" for m in entry.metrics
    ]
    return _list_cell(shown, limit)


TABLE_COLUMNS = (
    "repo",
    "kind",
    "modality",
    "anatomy",
    "task",
    "base model",
    "license",
    "metrics",
    "reproduce",
)


def table_rows(entries: Iterable[ZooEntry]) -> list[tuple[str, ...]]:
    """One tuple of :data:`TABLE_COLUMNS` cells per entry (``-`` for unknown)."""
    rows = []
    for e in entries:
        repo = e.repo_id if e.repo_type == "model" else f"{e.repo_type}s/{e.repo_id}"
        cells = (
            repo,
            e.kind,
            e.modality,
            e.anatomy,
            e.task,
            _list_cell(e.base_model, 2),
            e.license,
            _metrics_cell(e),
            e.reproduce,
        )
        rows.append(tuple(c or "-" for c in cells))
    return rows


def markdown_table(entries: Iterable[ZooEntry]) -> str:
    """The zoo as a Markdown table (for results.md and READMEs)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in table_rows(entries):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def print_table(entries: Sequence[ZooEntry], title: str = "hubtools zoo", width: int | None = None) -> None:
    """Print the zoo as a rich table (200 columns wide when stdout is not a terminal, not rich's 80)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} ({len(entries)} artifacts)", show_lines=False)
    for col in TABLE_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in table_rows(entries):
        table.add_row(*row)
    Console(width=width or (None if sys.stdout.isatty() else 200)).print(table)


# ---------------------------------------------------------------------------- catalogue dataset


def save_catalogue(entries: Sequence[ZooEntry], folder: str | Path, *, repo_id: str | None = None) -> Path:
    """Write the catalogue as a Hub dataset folder: Parquet entries, Parquet collections, card.

    The folder is byte-for-byte the dataset repo (written atomically); its card's ``configs``
    make ``load_dataset(repo)`` return the entries and ``load_dataset(repo, "collections")``
    the grouping.
    """
    from datasets import Dataset, Features, Value

    from hubtools.hub.artifacts import atomic_dir, save_card
    from hubtools.hub.cards import render_card

    table = Dataset.from_list([e.to_row() for e in entries], features=catalogue_features())
    groups = collections(entries)
    members = [
        {"collection": _slug(name), "title": name, "repo_id": e.repo_id, "repo_type": e.repo_type}
        for name, group in groups.items()
        for e in group
    ]
    text = Value("string")
    coll = Dataset.from_list(
        members, features=Features({"collection": text, "title": text, "repo_id": text, "repo_type": text})
    )
    card = render_card(
        "dataset",
        card_data={
            "license": "apache-2.0",
            "pretty_name": f"{repo_id or 'hubtools'} model zoo",
            "tags": [ZOO_TAG, "model-zoo", "catalogue"],
            "configs": [
                {"config_name": "default", "data_files": [{"split": "train", "path": CATALOGUE_FILE}]},
                {"config_name": "collections", "data_files": [{"split": "train", "path": COLLECTIONS_FILE}]},
            ],
        },
        repo_id=repo_id,
        summary="One row per artifact (model, pipeline, adapter, dataset, recipe, Space), read from each "
        "repo's card by `hubtools zoo index`; regenerate it rather than editing it.\n\n"
        + markdown_table(entries),
        features={
            f.name: str(t) for f, t in zip(fields(ZooEntry), catalogue_features().values(), strict=True)
        },
        splits={"train": table.num_rows},
        curation="Collections (`load_dataset(REPO, 'collections')`): one per modality, "
        + ", ".join(f"`{_slug(n)}` ({len(g)})" for n, g in groups.items())
        + ".",
    )
    with atomic_dir(folder) as tmp:
        for rel, ds in ((CATALOGUE_FILE, table), (COLLECTIONS_FILE, coll)):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(tmp / rel))
        (tmp / "zoo.json").write_text(json.dumps([e.to_row() for e in entries], indent=2) + "\n")
        save_card(tmp, card)
    return Path(folder)


def publish_catalogue(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Push a :func:`save_catalogue` folder as the dataset ``repo_id``; returns the commit URL.

    With ``private`` the repo is created private, or made private *before* the push when it exists,
    so a catalogue listing private repos is never readable by others, not even for a moment.
    It is never made public here: a catalogue someone made private stays private.
    """
    from huggingface_hub import HfApi

    from hubtools.hub.publish import push_artifact

    if private:
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        api.update_repo_settings(repo_id, repo_type="dataset", private=True)
    commit = push_artifact(
        folder,
        repo_id,
        repo_type="dataset",
        private=private,
        token=token,
        commit_message="Update the hubtools zoo catalogue",
    )
    return commit.commit_url


def load_catalogue(source: str | Path) -> list[ZooEntry]:
    """Entries of a catalogue: a local :func:`save_catalogue` folder, or a Hub dataset id.

    Raises:
        ZooError: the source holds no catalogue.
    """
    from datasets import Dataset, load_dataset

    path = Path(source)
    try:
        if path.is_dir():
            ds = Dataset.from_parquet(str(path / CATALOGUE_FILE), features=catalogue_features())
        else:
            ds = load_dataset(str(source), split="train")
    except (FileNotFoundError, ValueError, OSError) as err:
        raise ZooError(f"{source}: cannot read the zoo catalogue ({type(err).__name__}: {err})") from None
    missing = {"repo_id", "repo_type", "kind"} - set(ds.column_names)
    if missing:
        raise ZooError(f"{source}: is not a zoo catalogue (missing column(s) {sorted(missing)})")
    return [ZooEntry.from_row(row) for row in ds]


def find_entry(entries: Iterable[ZooEntry], repo_id: str) -> ZooEntry:
    """The entry of ``repo_id`` (``datasets/ns/name`` and ``spaces/ns/name`` select the type)."""
    repo_type = None
    for prefix, rtype in (("datasets/", "dataset"), ("spaces/", "space")):
        if repo_id.startswith(prefix):
            repo_id, repo_type = repo_id[len(prefix) :], rtype
    matches = [e for e in entries if e.repo_id == repo_id and (repo_type is None or e.repo_type == repo_type)]
    if not matches:
        raise ZooError(f"{repo_id}: not in the zoo catalogue")
    if len(matches) > 1:
        types = ", ".join(e.repo_type for e in matches)
        raise ZooError(f"{repo_id}: is a {types}; say which, e.g. datasets/{repo_id}")
    return matches[0]


def pull(
    entry: ZooEntry, *, local_dir: str | Path | None = None, revision: str | None = None, api: Any = None
) -> Path:
    """Download the artifact with ``snapshot_download``, at the commit the catalogue indexed by default."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    path = api.snapshot_download(
        entry.repo_id,
        repo_type=entry.repo_type,
        revision=revision or entry.sha or None,
        local_dir=str(local_dir) if local_dir is not None else None,
    )
    return Path(path)


def sync_collections(entries: Sequence[ZooEntry], author: str, *, api: Any = None) -> dict[str, str]:
    """Mirror :func:`collections` as Hub collections of ``author`` titled ``Zoo: <modality>``.

    Each collection ends up holding exactly its group's repos (stale items and collections of
    modalities no longer present are removed). A collection that lists a private repo is made
    private (before the item is added); none is made public here. Returns title -> collection
    slug, or ``{}`` when the Hub has no collections API; the catalogue's ``collections`` config
    still has the grouping.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()
    try:
        existing = {
            c.title: c.slug
            for c in api.list_collections(owner=author)
            if c.title.startswith(COLLECTION_PREFIX)
        }
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code in (404, 501):
            logger.info("this Hub has no collections API (%s); using the catalogue's collections config", err)
            return {}
        raise
    slugs: dict[str, str] = {}
    for name, members in collections(entries).items():
        title = (COLLECTION_PREFIX + name)[:60]
        private = any(e.private for e in members)
        coll = api.create_collection(
            title,
            namespace=author,
            description=f"hubtools zoo: artifacts whose modality is {name}.",
            private=private,
            exists_ok=True,
        )
        if private and not coll.private:
            api.update_collection_metadata(coll.slug, private=True)
        wanted = {(e.repo_type, e.repo_id): e for e in members}
        for item in coll.items:
            if (item.item_type, item.item_id) not in wanted:
                api.delete_collection_item(coll.slug, item.item_object_id, missing_ok=True)
        have = {(i.item_type, i.item_id) for i in coll.items}
        for key, e in wanted.items():
            if key not in have:
                note = ", ".join(x for x in (e.kind, e.task, e.anatomy) if x)[:500] or None
                api.add_collection_item(coll.slug, e.repo_id, e.repo_type, note=note, exists_ok=True)
        slugs[title] = coll.slug
    for title, slug in existing.items():
        if title not in slugs:
            api.delete_collection(slug, missing_ok=True)
    return slugs


@dataclass
class ZooIndex:
    """What :func:`index_and_publish` made: the entries, the catalogue folder, the Hub collections."""

    entries: list[ZooEntry]
    folder: Path
    collections: dict[str, str] = field(default_factory=dict)


def index_and_publish(
    author: str, *, repo_id: str | None = None, out_dir: str | Path, api: Any = None, push: bool = True
) -> ZooIndex:
    """:func:`build_index` + :func:`save_catalogue`; with ``push``, also :func:`publish_catalogue` to
    ``repo_id`` (default ``AUTHOR/zoo``) and :func:`sync_collections`.

    Private repos the token can list are catalogued with ``private=True``, and then the catalogue
    dataset is private too (see :func:`publish_catalogue`): it names them and copies their cards.
    """
    repo_id = repo_id or f"{author}/{CATALOGUE_NAME}"
    entries = build_index(author, api=api)
    index = ZooIndex(entries, save_catalogue(entries, out_dir, repo_id=repo_id))
    if push:
        publish_catalogue(index.folder, repo_id, token=getattr(api, "token", None),
                          private=any(e.private for e in entries))
        index.collections = sync_collections(entries, author, api=api)
    return index
