"""A real-weights Model-GLUE zoo: fine-tunes of the pretrained all-MiniLM-L6-v2 on text-classification tasks.

Each member is ``BertForSequenceClassification`` (mergekit 0.1.5 ships an architecture definition for it,
``bert-sequence-classification.json``) fine-tuned from the real MiniLM weights
(``hubtools.data.offline.minilm_path()``) on one binary task built from real text: telling two Debian
fortunes categories apart. ``base`` is the same class with the pretrained encoder and an untrained head, the
common ancestor for task-vector merges.

Merging averages the classification heads of different tasks too, which is meaningless, so the evaluator
scores a model's *encoder* (embeddings, layers, pooler) with each task's own head taken from that task's
fine-tune: the usual protocol of task-vector merging. Accuracy per task comes from the local ``accuracy``
evaluate module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from hubtools.hub.artifacts import atomic_dir
from hubtools.merging.types import Zoo

# task -> (category of label 0, category of label 1)
TASKS: dict[str, tuple[str, str]] = {
    "computers_vs_science": ("computers", "science"),
    "politics_vs_men_women": ("politics", "men-women"),
    "wisdom_vs_work": ("wisdom", "work"),
}
MAX_LEN = 48
BATCH = 16
SCHEDULE = (60, 1e-4)  # (steps at scale 1, lr)
BUILD_VERSION = 1


def task_examples(task: str, split: str) -> list[tuple[str, int]]:
    """(text, label) pairs of a task: the ``split`` entries of both categories, interleaved by a fixed seed."""
    from hubtools.merging.zoos.fortunes import _split

    if task not in TASKS:
        raise ValueError(f"unknown MiniLM zoo task {task!r}; known: {sorted(TASKS)}")
    pairs = [(text, label) for label, cat in enumerate(TASKS[task]) for text in _split(cat)[split]]
    random.Random(f"{task}/{split}").shuffle(pairs)
    return pairs


def _encode(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")


def _fine_tune(
    model, tokenizer, examples: Sequence[tuple[str, int]], *, steps: int, lr: float, seed: int
) -> None:
    """AdamW on the encoder and head (word embeddings frozen: they dominate the cost), batch 16, linear decay."""
    gen = random.Random(seed)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    model.train()
    for _ in range(steps):
        batch = [examples[gen.randrange(len(examples))] for _ in range(BATCH)]
        enc = _encode(tokenizer, [t for t, _ in batch])
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(True)
    model.eval()


class MiniLMTaskEvaluator:
    """Accuracy per task of a model's encoder with each task's own classification head.

    ``heads`` maps task -> the fine-tuned member folder whose ``classifier`` is used for that task.
    """

    def __init__(
        self, heads: Mapping[str, str | os.PathLike], split: str = "search", *, limit: int | None = None
    ) -> None:
        from safetensors import safe_open
        from transformers import AutoTokenizer

        if split not in ("search", "report"):
            raise ValueError(f"split must be 'search' or 'report', got {split!r}")
        self.tasks = tuple(heads)
        self.split = split
        self._heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for task, folder in heads.items():
            with safe_open(Path(folder) / "model.safetensors", framework="pt") as f:
                self._heads[task] = (f.get_tensor("classifier.weight"), f.get_tensor("classifier.bias"))
        self.tokenizer = AutoTokenizer.from_pretrained(next(iter(heads.values())))
        self._examples = {t: task_examples(t, split)[:limit] for t in self.tasks}

    def __repr__(self) -> str:
        return f"MiniLMTaskEvaluator(split={self.split!r}, tasks={self.tasks})"

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        from hubtools.merging.metrics import load_metric

        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(Path(model), dtype=torch.float32)
        model.eval()
        metric = load_metric("accuracy")
        scores = {}
        for task, examples in self._examples.items():
            weight, bias = self._heads[task]
            preds = []
            for i in range(0, len(examples), 64):
                enc = _encode(self.tokenizer, [t for t, _ in examples[i : i + 64]])
                pooled = model.bert(**enc).pooler_output
                preds.extend((pooled @ weight.T + bias).argmax(-1).tolist())
            scores[task] = float(
                metric.compute(predictions=preds, references=[y for _, y in examples])["accuracy"]
            )
        return scores

    def prompts(self, task: str, n: int = 8, seed: int = 0) -> list[str]:
        """``n`` input texts of ``task`` from this split."""
        pool = [t for t, _ in self._examples[task]]
        return random.Random(seed).sample(pool, min(n, len(pool)))


def build_minilm_zoo(
    cache_dir: str | os.PathLike,
    *,
    scale: float = 1.0,
    tasks: Sequence[str] | None = None,
    eval_limit: int | None = None,
) -> Zoo:
    """Fine-tune (or reuse from ``cache_dir``) the real MiniLM on each task; ``scale`` < 1 shrinks the steps.

    Cached by a digest of the settings and the MiniLM weights file. Single-threaded torch.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    from hubtools.data.offline import minilm_path
    from hubtools.hashing import sha256_file

    source = minilm_path()
    tasks = tuple(tasks or TASKS)
    steps = max(2, math.ceil(SCHEDULE[0] * scale))
    settings = {
        "version": BUILD_VERSION,
        "scale": scale,
        "tasks": tasks,
        "schedule": SCHEDULE,
        "weights": sha256_file(source / "model.safetensors"),
    }
    root = (
        Path(cache_dir).absolute()
        / f"minilm-{hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]}"
    )
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def model_from_source(seed: int):
        torch.manual_seed(seed)  # the head is the only randomly initialised part
        return BertForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.float32)

    def save(model, path: Path) -> Path:
        with atomic_dir(path) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return path

    base = root / "base"
    if not (base / "config.json").is_file():
        save(model_from_source(0), base)
    members: dict[str, Path] = {}
    for i, task in enumerate(tasks):
        path = root / f"ft_{task}"
        if not (path / "config.json").is_file():
            torch.set_num_threads(1)
            model = model_from_source(0)
            _fine_tune(
                model, tokenizer, task_examples(task, "train"), steps=steps, lr=SCHEDULE[1], seed=100 + i
            )
            save(model, path)
        members[f"ft_{task}"] = path
    heads = {task: members[f"ft_{task}"] for task in tasks}
    return Zoo(
        name="minilm" if scale == 1.0 else f"minilm-x{scale:g}",
        models=members,
        search=MiniLMTaskEvaluator(heads, "search", limit=eval_limit),
        report=MiniLMTaskEvaluator(heads, "report", limit=eval_limit),
        base=base,
        truth_families=[list(members)],
    )
