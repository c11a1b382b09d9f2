"""COND P-DIFF on a user's own text-classification tasks: a YAML tasks file in, usable classifiers out.

A tasks file names a BERT-family base encoder, a head task and several tasks, each with a
written description and ``text,label`` files. The classifier is
``AutoModelForSequenceClassification`` of the base with LoRA on the attention projections and
one classification head **shared and frozen** across tasks: it is fitted once on the head task
with the backbone frozen, so only the LoRA adapter can adapt the model to a task (a trainable
head per task would let the head, not the generated adapter, do the work). Because that head
ships inside every adapter folder (``modules_to_save=["classifier"]``), a generated adapter
loads as a complete classifier with one PEFT call::

    from peft import AutoPeftModelForSequenceClassification
    model = AutoPeftModelForSequenceClassification.from_pretrained(adapter_dir)  # num_labels=K if K != 2

Collection folder (``collect_text_tasks``): ``manifest.json``, ``head.safetensors`` (the frozen
head under the classifier's own state-dict keys), ``conditions.safetensors`` (mean-pooled
base-encoder embeddings of the task descriptions) and ``tasks/<name>/`` checkpoint sets.
"""

from __future__ import annotations

import copy
import csv
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from hubtools.config import StrictModel, load_config
from hubtools.errors import ArtifactError, ConfigError
from hubtools.hub.artifacts import atomic_dir
from hubtools.paramgen.collect import CheckpointSet
from hubtools.paramgen.spec import ParamSpec

HEAD_MODULE = "classifier"  # BERT-family name of the sequence-classification head
PEFT_PREFIX = "base_model.model."  # saved-adapter keys: PEFT prefix + the base model's own key
MANIFEST = "manifest.json"
HEAD_FILE = "head.safetensors"
CONDITIONS_FILE = "conditions.safetensors"
TASKS_DIR = "tasks"
COLLECTION_FORMAT = "hubtools-cond-textcls"
TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# ---------------------------------------------------------------------------------------------- tasks file


class TaskEntry(StrictModel):
    """One task of the tasks file; ``train``/``test`` paths are relative to the tasks file."""

    name: str = Field(pattern=TASK_NAME_PATTERN)
    description: str = Field(min_length=1)
    train: Path | None = None
    test: Path
    held_out: bool = Field(False, description="never trained; generated from the description only")
    lora: bool = Field(True, description="false: no adapter is trained (e.g. a task only for the head)")


class TasksFile(StrictModel):
    base_model: str = Field(min_length=1)
    head_task: str
    num_labels: int | None = Field(None, ge=2)
    tasks: list[TaskEntry] = Field(min_length=1)


@dataclass
class Split:
    """Texts and integer labels of one split, with the file they came from (for error messages)."""

    texts: list[str]
    labels: list[int]
    path: Path

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TextTask:
    name: str
    description: str
    test: Split
    train: Split | None = None
    held_out: bool = False
    lora: bool = True

    @property
    def trained(self) -> bool:
        """A LoRA adapter is collected for this task."""
        return self.lora and not self.held_out


@dataclass
class TextClsTasks:
    """A validated tasks file with its data loaded."""

    path: Path
    base_model: str
    head_task: str
    num_labels: int
    tasks: dict[str, TextTask] = field(default_factory=dict)

    @property
    def train_tasks(self) -> list[TextTask]:
        return [t for t in self.tasks.values() if t.trained]

    @property
    def held_out_tasks(self) -> list[TextTask]:
        return [t for t in self.tasks.values() if t.held_out]

    @property
    def evaluated_tasks(self) -> list[TextTask]:
        """Training and held-out tasks in file order (head-only tasks are neither trained nor generated)."""
        return [t for t in self.tasks.values() if t.trained or t.held_out]


def read_examples(path: str | Path) -> tuple[list[str], list[int]]:
    """``text,label`` rows of a ``.jsonl`` or ``.csv`` file; errors name the file and line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ConfigError(
            f"{path}: unsupported data file type {suffix!r}; use .jsonl or .csv with text,label"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read data file: {err.strerror}") from None
    rows: list[tuple[int, Any]] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{lineno}: not a JSON object: {err.msg}") from None
            if not isinstance(record, dict) or not {"text", "label"} <= set(record):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ConfigError(f"{path}:{lineno}: needs columns text,label; found {keys}")
            rows.append((lineno, record))
    else:
        reader = csv.DictReader(raw.splitlines())
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: needs columns text,label; found {reader.fieldnames or []}")
        rows = [(i + 2, r) for i, r in enumerate(reader)]  # line 1 is the header
    if not rows:
        raise ConfigError(f"{path}: no examples")
    texts, labels = [], []
    for lineno, record in rows:
        text, label = record["text"], record["label"]
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}:{lineno}: 'text' must be a non-empty string, got {text!r}")
        if isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int):
            raise ConfigError(f"{path}:{lineno}: 'label' must be an integer class index, got {label!r}")
        texts.append(text)
        labels.append(label)
    return texts, labels


def _resolve_base(base_model: str, root: Path) -> str:
    """A path relative to the tasks file if one exists there; otherwise the string as given (hub id or path)."""
    local = root / base_model
    return str(local.resolve()) if local.exists() else base_model


def load_tasks(path: str | Path) -> TextClsTasks:
    """Read and validate a tasks file and all its data files.

    Raises :class:`ConfigError` naming the file and key (or data file and line) for unknown
    keys, missing files, bad columns, labels out of ``0..num_labels-1`` and tasks whose
    training labels do not span the same ``num_labels`` classes (one shared head needs one).
    """
    path = Path(path)
    cfg = load_config(path, TasksFile)
    root = path.parent
    names = [t.name for t in cfg.tasks]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{path}: tasks[{i}].name {name!r} is used by tasks[{names.index(name)}] too")
    if cfg.head_task not in names:
        raise ConfigError(f"{path}: key 'head_task' names {cfg.head_task!r}, which is not a task ({names})")
    splits: dict[tuple[int, str], Split] = {}
    for i, entry in enumerate(cfg.tasks):
        if entry.held_out and not entry.lora:
            raise ConfigError(
                f"{path}: tasks[{i}] ({entry.name}): held_out tasks are generated and evaluated, "
                "lora: false tasks are neither; set only one"
            )
        if entry.name == cfg.head_task and entry.held_out:
            raise ConfigError(
                f"{path}: head_task {entry.name!r} is held_out: the head is fitted on it, so it would not be unseen"
            )
        if entry.train is None and not entry.held_out:
            raise ConfigError(
                f"{path}: tasks[{i}].train ({entry.name}) is required for a task that is not held_out"
            )
        for split in ("train", "test"):
            rel = getattr(entry, split)
            if rel is None:
                continue
            file = rel if rel.is_absolute() else root / rel
            if not file.is_file():
                raise ConfigError(f"{path}: tasks[{i}].{split} ({entry.name}): file {file} not found")
            texts, labels = read_examples(file)
            splits[(i, split)] = Split(texts, labels, file)
    num_labels = cfg.num_labels
    if num_labels is None:
        num_labels = 1 + max(max(s.labels) for s in splits.values())
    for (i, split_name), split in splits.items():
        for lineno, label in enumerate(split.labels, 1):
            if not 0 <= label < num_labels:
                raise ConfigError(
                    f"{split.path}: example {lineno} has label {label}, out of range 0..{num_labels - 1} "
                    f"({path}: tasks[{i}].{split_name})"
                )
        if split_name == "train":
            present = sorted(set(split.labels))
            if present != list(range(num_labels)):
                raise ConfigError(
                    f"{path}: tasks[{i}].train ({cfg.tasks[i].name}) has labels {present} but num_labels is "
                    f"{num_labels}: all tasks share one head, so every training split must use labels "
                    f"0..{num_labels - 1}"
                )
    tasks = {
        e.name: TextTask(
            name=e.name,
            description=e.description,
            test=splits[(i, "test")],
            train=splits.get((i, "train")),
            held_out=e.held_out,
            lora=e.lora,
        )
        for i, e in enumerate(cfg.tasks)
    }
    result = TextClsTasks(path, _resolve_base(cfg.base_model, root), cfg.head_task, num_labels, tasks)
    if not result.train_tasks:
        raise ConfigError(f"{path}: no task to train (every task is held_out or lora: false)")
    return result


def write_fortunes_tasks(
    out_dir: str | Path,
    pairs: Sequence[tuple[str, str]],
    n_train: int = 64,
    n_test: int = 32,
    seed: int = 0,
    *,
    held_out: Sequence[tuple[str, str]] = (),
    head_pair: tuple[str, str] = ("literature", "science"),
    base_model: str | None = None,
) -> Path:
    """Write ``tasks.yaml`` + jsonl files of Debian fortunes category-pair tasks; return the YAML path.

    Task ``a-vs-b``: label 0 = a quote from category ``a``, 1 = from ``b`` (``n_*`` quotes per
    class, balanced). A category's quotes are split the same way in every task, so no test quote
    is a training quote of any task. ``head_pair`` becomes the head-only
    task (``lora: false``); ``held_out`` pairs are written with ``held_out: true``. ``base_model``
    defaults to the real all-MiniLM-L6-v2 when installed. Real text, so the CLI has an offline
    example and tests have real data.
    """
    from hubtools.data.offline import fortunes

    out = Path(out_dir)
    if base_model is None:
        from hubtools.data.offline import minilm_path

        base_model = str(minilm_path())
    entries = []
    roles = [(head_pair, "head"), *((p, "train") for p in pairs), *((p, "held_out") for p in held_out)]
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir()
        for (cat_a, cat_b), role in roles:
            name = f"{cat_a}-vs-{cat_b}"
            rng = random.Random(f"{seed}-{name}")
            rows: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
            for label, cat in enumerate((cat_a, cat_b)):
                quotes = [q for q in fortunes(cat) if len(q) >= 20]
                if len(quotes) < n_train + n_test:
                    raise ConfigError(
                        f"fortunes category {cat!r} has {len(quotes)} quotes of >= 20 characters; "
                        f"need {n_train + n_test}"
                    )
                # shuffled per category, not per task: a quote is in the same split in every task, so a
                # held-out task's test quotes were never trained on through another task
                random.Random(f"{seed}-{cat}").shuffle(quotes)
                rows["train"] += [{"text": q, "label": label} for q in quotes[:n_train]]
                rows["test"] += [{"text": q, "label": label} for q in quotes[n_train : n_train + n_test]]
            entry: dict[str, Any] = {
                "name": name,
                "description": f"Decide whether a quotation is about {cat_a} (first class) or about {cat_b} "
                "(second class).",
            }
            for split, items in rows.items():
                rng.shuffle(items)
                file = tmp / "data" / f"{name}-{split}.jsonl"
                file.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
                entry[split] = f"data/{file.name}"
            if role == "held_out":
                entry["held_out"] = True
            if role == "head":
                entry["lora"] = False
            entries.append(entry)
        doc = {"base_model": base_model, "head_task": f"{head_pair[0]}-vs-{head_pair[1]}", "tasks": entries}
        (tmp / "tasks.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, width=1000), encoding="utf-8")
    return out / "tasks.yaml"


# ---------------------------------------------------------------------------------------------- the model


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the load report that lists the (expected) newly initialised head, and its progress bar."""
    from transformers.utils import logging as hf_logging

    before, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier(base_model: str, num_labels: int, seed: int = 0) -> nn.Module:
    """``AutoModelForSequenceClassification`` of the base (eval mode), refusing bases a saved adapter cannot reproduce.

    Every weight except the ``classifier`` head must come from the checkpoint: anything else
    transformers initialises at random (e.g. a BERT pooler missing from the file) would differ
    at every load, so a generated adapter would not load into the classifier it was made for.
    """
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                base_model, num_labels=num_labels, output_loading_info=True
            )
    except (OSError, ValueError) as err:
        raise ConfigError(f"base_model {base_model!r}: cannot load a sequence classifier: {err}") from None
    if not isinstance(getattr(model, HEAD_MODULE, None), nn.Module):
        raise ConfigError(
            f"base_model {base_model!r} ({type(model).__name__}) has no '{HEAD_MODULE}' head module; "
            "use a BERT-family encoder"
        )
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(f"{HEAD_MODULE}."))
    if missing:
        raise ConfigError(
            f"base_model {base_model!r}: its checkpoint lacks {missing[:4]}; transformers would initialise "
            "them at random at every load, so an adapter could not reproduce the classifier (save the base "
            "with those weights, e.g. a BertModel with its pooler)"
        )
    return model.eval()


def load_text_encoder(base_model: str) -> nn.Module:
    """The plain base encoder (``AutoModel``, eval mode): its mean-pooled output embeds task descriptions."""
    from transformers import AutoModel

    try:
        with _quiet_transformers():
            return AutoModel.from_pretrained(base_model).eval()
    except (OSError, ValueError) as err:
        raise ConfigError(f"base_model {base_model!r}: cannot load the encoder: {err}") from None


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError) as err:
        raise ConfigError(f"base_model {base_model!r}: cannot load its tokenizer: {err}") from None


def encode(tokenizer, split: Split, max_length: int) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels of a split (padded to its longest example, truncated)."""
    enc = tokenizer(split.texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor(split.labels),
    }


@torch.no_grad()
def predict_logits(model: nn.Module, batch: Mapping[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Logits [N, num_labels] in eval mode, in chunks."""
    model.eval()
    n = len(batch["input_ids"])
    out = [
        model(
            input_ids=batch["input_ids"][i : i + batch_size],
            attention_mask=batch["attention_mask"][i : i + batch_size],
        ).logits
        for i in range(0, n, batch_size)
    ]
    return torch.cat(out).float()


def accuracy(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> float:
    """Accuracy (%) of ``model`` on an encoded split."""
    pred = predict_logits(model, batch).argmax(1)
    return float((pred == batch["labels"]).float().mean()) * 100.0


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's tensors under the classifier's own state-dict keys (``classifier.weight``, ...)."""
    return {
        f"{HEAD_MODULE}.{k}": v.detach().clone() for k, v in getattr(model, HEAD_MODULE).state_dict().items()
    }


def fit_head(
    model: nn.Module, batch: Mapping[str, torch.Tensor], epochs: int = 300, lr: float = 1e-2, seed: int = 0
) -> float:
    """Fit ``model.classifier`` on frozen backbone features of one task, then freeze it; returns train accuracy (%).

    The backbone runs once (eval mode, no dropout): the head's input is captured by a hook and
    the head is trained full-batch on those cached features.
    """
    head = getattr(model, HEAD_MODULE)
    cached: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: cached.append(args[0].detach()))
    try:
        predict_logits(model, batch)
    finally:
        hook.remove()
    feats, labels = torch.cat(cached), batch["labels"]
    torch.manual_seed(seed)
    head.train()
    head.requires_grad_(True)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        loss = F.cross_entropy(head(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.requires_grad_(False).eval()
    with torch.no_grad():
        return float((head(feats).argmax(1) == labels).float().mean()) * 100.0


def lora_config(
    r: int = 1,
    alpha: int = 8,
    target_modules: Sequence[str] = ("query", "value"),
    layers: Sequence[int] | None = None,
):
    """The collection LoRA: dropout 0, no bias, BERT module names; the head stays a frozen base weight."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(target_modules),
        layers_to_transform=list(layers) if layers else None,
    )


def classifier_adapter_config(config: Any):
    """``config`` as a sequence-classification adapter whose saved tensors carry the head (``modules_to_save``)."""
    out = copy.deepcopy(config)
    out.task_type = "SEQ_CLS"
    out.modules_to_save = [HEAD_MODULE]
    out.inference_mode = True
    return out


def write_classifier_adapter(
    vec: torch.Tensor,
    spec: ParamSpec,
    config: Any,
    head: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    base_model: str,
    *,
    tokenizer: Any = None,
    card: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """A PEFT folder that loads as a complete classifier: LoRA ``vec`` plus the shared frozen ``head``.

    The head goes in as a ``modules_to_save`` module: its tensors are saved under
    ``base_model.model.classifier.*`` (the keys PEFT writes for a saved module), so
    ``AutoPeftModelForSequenceClassification.from_pretrained(out_dir)`` (or ``PeftModel`` on the
    base classifier) restores LoRA and head in one call. ``tokenizer`` is saved alongside so the
    folder is self-contained; ``extra_files`` are text files (name -> content). Written whole or
    not at all.
    """
    from hubtools.paramgen.lora import write_peft_adapter

    extra = {PEFT_PREFIX + k: v for k, v in head.items()}
    with atomic_dir(out_dir) as tmp:
        write_peft_adapter(
            vec, spec, classifier_adapter_config(config), tmp, base_model, extra_tensors=extra, card=card
        )
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(out_dir)


def make_lora_trainer(
    data: Mapping[str, Mapping[str, torch.Tensor]],
    steps: int = 80,
    lr: float = 5e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> Callable[[nn.Module, str, Callable[[int], None]], None]:
    """``train_task(peft_classifier, task_name, on_step)`` for :func:`hubtools.paramgen.lora.collect_lora_checkpoints`.

    A plain AdamW loop rather than the shared trainer: ``on_step`` must see the adapter after
    every single step, and a run of tens of steps needs no checkpoints or resume.
    """

    def train_task(model: nn.Module, task: str, on_step: Callable[[int], None]) -> None:
        train = data[task]
        n = len(train["labels"])
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        model.train()
        order, pos = torch.randperm(n, generator=gen), 0
        for step in tqdm(range(steps), desc=f"LoRA {task}", leave=False):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            logits = model(
                input_ids=train["input_ids"][idx], attention_mask=train["attention_mask"][idx]
            ).logits
            loss = F.cross_entropy(logits, train["labels"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            on_step(steps - 1 - step)
        model.eval()

    return train_task


# ---------------------------------------------------------------------------------------------- collect


@dataclass
class Collection:
    """A collection folder read back: manifest, frozen head, condition vectors and per-task checkpoint sets."""

    path: Path
    manifest: dict[str, Any]
    head: dict[str, torch.Tensor]
    conditions: torch.Tensor
    sets: dict[str, CheckpointSet]

    @property
    def base_model(self) -> str:
        return self.manifest["base_model"]

    @property
    def num_labels(self) -> int:
        return int(self.manifest["num_labels"])

    @property
    def condition_tasks(self) -> list[str]:
        return list(self.manifest["condition_tasks"])

    def lora_config(self):
        lora = self.manifest["lora"]
        return lora_config(lora["r"], lora["alpha"], lora["target_modules"], lora["layers"])

    def classifier(self) -> nn.Module:
        """The base classifier holding the frozen head (no adapter)."""
        model = load_classifier(self.base_model, self.num_labels)
        mismatch = set(head_state(model)) ^ set(self.head)
        if mismatch:
            raise ArtifactError(
                f"{self.path / HEAD_FILE}: head keys {sorted(mismatch)} do not fit the classifier"
            )
        model.load_state_dict(self.head, strict=False)
        return model.requires_grad_(False).eval()

    @classmethod
    def load(cls, path: str | Path) -> Collection:
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactError(
                f"{path}: no readable {MANIFEST} (not a cond collect folder?): {err}"
            ) from None
        if manifest.get("format") != COLLECTION_FORMAT:
            raise ArtifactError(
                f"{path / MANIFEST}: format is {manifest.get('format')!r}, not {COLLECTION_FORMAT!r}"
            )
        try:
            head = load_file(str(path / HEAD_FILE))
            conditions = load_file(str(path / CONDITIONS_FILE))["conditions"]
        except Exception as err:  # missing, truncated or foreign safetensors files
            raise ArtifactError(f"{path}: cannot read {HEAD_FILE} / {CONDITIONS_FILE}: {err}") from None
        sets = {
            t["name"]: CheckpointSet.load_from_disk(path / t["checkpoints"])
            for t in manifest["tasks"]
            if t.get("checkpoints")
        }
        return cls(path, manifest, head, conditions, sets)


def collect_text_tasks(
    tasks: TextClsTasks,
    out: str | Path,
    *,
    lora_steps: int = 80,
    last_n_steps: int = 40,
    lr: float = 5e-3,
    batch_size: int = 16,
    rank: int = 1,
    alpha: int = 8,
    target_modules: Sequence[str] = ("query", "value"),
    layers: Sequence[int] | None = None,
    seed: int = 0,
    max_length: int = 64,
) -> Collection:
    """Fit the shared head on the head task, then collect each training task's LoRA over its last steps.

    All tasks start from the same LoRA init (``seed``), so their vectors share one
    parameterisation. Conditions are the mean-pooled base-encoder embeddings of the
    descriptions of the training and held-out tasks. Writes the collection folder whole or not at all.
    """
    from hubtools.paramgen.lora import collect_lora_checkpoints
    from hubtools.paramgen.pipelines import embed_texts
    from hubtools.paramgen.publish import checkpoint_card

    if not 1 <= last_n_steps <= lora_steps:
        raise ConfigError(f"last_n_steps must be in 1..lora_steps ({lora_steps}), got {last_n_steps}")
    tokenizer = load_tokenizer(tasks.base_model)
    model = load_classifier(tasks.base_model, tasks.num_labels, seed)
    encoded = {
        (t.name, s): encode(tokenizer, getattr(t, s), max_length)
        for t in tasks.tasks.values()
        for s in ("train", "test")
        if getattr(t, s) is not None
    }
    head_task = tasks.head_task
    head_train_acc = fit_head(model, encoded[(head_task, "train")], seed=seed)
    head_test_acc = accuracy(model, encoded[(head_task, "test")])
    config = lora_config(rank, alpha, target_modules, layers)
    trainer = make_lora_trainer(
        {t.name: encoded[(t.name, "train")] for t in tasks.train_tasks},
        steps=lora_steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    sets = collect_lora_checkpoints(
        model, config, {t.name: t.name for t in tasks.train_tasks}, trainer, last_n_steps, init_seed=seed
    )
    encoder = load_text_encoder(tasks.base_model)
    cond_tasks = tasks.evaluated_tasks
    conditions = embed_texts(encoder, tokenizer, [t.description for t in cond_tasks]).float().contiguous()
    spec = next(iter(sets.values())).spec
    manifest = {
        "format": COLLECTION_FORMAT,
        "base_model": tasks.base_model,
        "num_labels": tasks.num_labels,
        "tasks_file": str(tasks.path.resolve()),
        "head_task": head_task,
        "head_module": HEAD_MODULE,
        "head_accuracy": {"train": head_train_acc, "test": head_test_acc},
        "lora": {
            "r": rank,
            "alpha": alpha,
            "target_modules": list(target_modules),
            "layers": list(layers) if layers else None,
            "init_seed": seed,
        },
        "training": {
            "lora_steps": lora_steps,
            "last_n_steps": last_n_steps,
            "lr": lr,
            "batch_size": batch_size,
            "max_length": max_length,
            "seed": seed,
        },
        "dim": spec.dim,
        "condition_tasks": [t.name for t in cond_tasks],
        "tasks": [
            {
                "name": t.name,
                "description": t.description,
                "held_out": t.held_out,
                "checkpoints": f"{TASKS_DIR}/{t.name}" if t.trained else None,
            }
            for t in tasks.tasks.values()
        ],
    }
    with atomic_dir(out) as tmp:
        for name, ckpts in sets.items():
            ckpts.info.update({"base_model": tasks.base_model, "head_task": head_task})
            ckpts.save_to_disk(tmp / TASKS_DIR / name)
        save_file(head_state(model), str(tmp / HEAD_FILE), metadata={"format": "pt"})
        save_file({"conditions": conditions}, str(tmp / CONDITIONS_FILE), metadata={"format": "pt"})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        card = checkpoint_card(
            None,
            sum(len(s) for s in sets.values()),
            spec.dim,
            tasks.base_model,
            f"{len(sets)} text-classification tasks ({', '.join(sets)})",
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Collection.load(out)


# ---------------------------------------------------------------------------------------------- evaluate


def _stride(n: int, count: int) -> list[int]:
    """``count`` evenly spaced indices of ``range(n)`` that always include the last one (the final adapter)."""
    if n <= count:
        return list(range(n))
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


def evaluate_text_tasks(
    pipe: Any,
    tasks: TextClsTasks,
    collection: Collection,
    *,
    num_models: int = 10,
    seed: int = 0,
    num_inference_steps: int = 1000,
    eta: float = 0.0,
    num_originals: int = 10,
) -> dict[str, Any]:
    """Test accuracy (%) per task of generated adapters next to its controls, all with the same frozen head.

    Per task: generated (``num_models``, conditioned on the task name for training tasks and on
    the description for held-out ones), ``num_originals`` collected checkpoints at a fixed
    stride, the per-task mean checkpoint, and the base model (no adapter). A held-out task gets
    the final adapter of the *other* task that scores best on its **train** split (never test).
    """
    from peft import get_peft_model, set_peft_model_state_dict

    from hubtools.paramgen.evaluate import summary

    if tasks.base_model != collection.base_model or tasks.num_labels != collection.num_labels:
        raise ConfigError(
            f"{tasks.path} (base {tasks.base_model!r}, {tasks.num_labels} labels) does not match the collection "
            f"{collection.path} (base {collection.base_model!r}, {collection.num_labels} labels)"
        )
    spec = pipe.param_spec
    for name, ckpts in collection.sets.items():
        if ckpts.spec != spec:
            raise ArtifactError(f"the pipeline generates {spec}; task {name!r} was collected as {ckpts.spec}")
    uncollected = [t.name for t in tasks.train_tasks if t.name not in collection.sets]
    if uncollected:
        raise ConfigError(
            f"{tasks.path}: training tasks {uncollected} were not collected in {collection.path}"
        )
    max_length = collection.manifest["training"]["max_length"]
    tokenizer = load_tokenizer(tasks.base_model)
    # every lora_A/lora_B tensor is overwritten before each score, so the LoRA init does not matter here
    model = get_peft_model(collection.classifier(), collection.lora_config())
    if (model_spec := ParamSpec.from_peft(model)) != spec:
        raise ArtifactError(f"the collection's LoRA config gives {model_spec}, the pipeline generates {spec}")

    def score(vec: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> float:
        set_peft_model_state_dict(model, spec.unflatten(vec))
        return accuracy(model, batch)

    finals = {name: s.params[-1] for name, s in collection.sets.items()}
    trained = set(pipe.task_names)
    report: dict[str, Any] = {"tasks": {}}
    for task in tqdm(tasks.evaluated_tasks, desc="evaluate tasks"):
        test = encode(tokenizer, task.test, max_length)
        row: dict[str, Any] = {"held_out": task.held_out, "base": score(torch.zeros(spec.dim), test)}
        condition = task.name if task.name in trained else task.description
        try:
            gen = pipe(
                condition=condition,
                num_models=num_models,
                generator=torch.Generator().manual_seed(seed),
                num_inference_steps=num_inference_steps,
                eta=eta,
            ).params
            row["generated"] = summary([score(v, test) for v in gen])
        except ValueError as err:  # e.g. per_task normalisation has no statistics for an unseen task
            row["generated"] = None
            row["generated_error"] = str(err)
        if task.name in collection.sets:
            params = collection.sets[task.name].params
            row["original"] = summary([score(params[i], test) for i in _stride(len(params), num_originals)])
            row["per_task_mean"] = score(params.mean(0), test)
        else:
            others = {n: v for n, v in finals.items() if n != task.name}
            if task.train is not None and others:
                train = encode(tokenizer, task.train, max_length)
                on_train = {n: score(v, train) for n, v in others.items()}
                best = max(on_train, key=lambda n: on_train[n])
                row["best_other_task"] = {
                    "task": best,
                    "train_accuracy": on_train[best],
                    "test_accuracy": score(others[best], test),
                }
        report["tasks"][task.name] = row
    report["settings"] = {
        "num_models": num_models,
        "seed": seed,
        "num_inference_steps": num_inference_steps,
        "eta": eta,
        "normalization": pipe.normalizer.config.mode,
        "dim": spec.dim,
    }
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """The evaluate table: one row per task, accuracies in %."""

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    head = (
        f"{'task':<28} {'kind':<9} {'gen best':>8} {'gen mean':>8} {'gen med':>8} "
        f"{'orig mean':>9} {'task mean':>9} {'base':>6}  best other task (test)"
    )
    lines = [head, "-" * len(head)]
    for name, row in report["tasks"].items():
        gen, orig, other = row.get("generated"), row.get("original"), row.get("best_other_task")
        lines.append(
            f"{name:<28} {'held-out' if row['held_out'] else 'train':<9} "
            f"{f(gen and gen['best']):>8} {f(gen and gen['mean']):>8} {f(gen and gen['median']):>8} "
            f"{f(orig and orig['mean']):>9} {f(row.get('per_task_mean')):>9} {f(row['base']):>6}  "
            + (f"{other['task']} ({f(other['test_accuracy'])})" if other else "")
        )
    return "\n".join(lines)
