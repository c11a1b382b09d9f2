"""The COND P-DIFF real case: LoRA adapters of the real all-MiniLM-L6-v2 for fortunes category-pair tasks.

A task is "does this quote come from category A or category B" (Debian ``fortunes``, real
text); its condition is the MiniLM sentence embedding of a written description of the task,
so an unseen pair can be asked for by its description alone. The classifier head is fitted
once on a pretext pair and then frozen, so only the LoRA adapter can adapt the model to a
task (a trainable head per task would let the head, not the generated adapter, do the work).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from hubtools.data.offline import fortunes, minilm_path

LORA_TARGETS = ("query", "value")


@dataclass(frozen=True)
class FortunesTask:
    """Binary task: label 0 = a quote from ``cat_a``, 1 = from ``cat_b``."""

    cat_a: str
    cat_b: str

    @property
    def name(self) -> str:
        return f"{self.cat_a}-vs-{self.cat_b}"

    @property
    def description(self) -> str:
        return f"Decide whether a quotation is about {self.cat_a} (first class) or about {self.cat_b} (second class)."


TRAIN_TASKS = (
    FortunesTask("computers", "love"),
    FortunesTask("science", "food"),
    FortunesTask("politics", "sports"),
    FortunesTask("art", "wisdom"),
)
HELD_OUT_TASK = FortunesTask("computers", "food")
PRETEXT_TASK = FortunesTask("literature", "science")

# A larger family: every pair of five categories (the first-listed category is class 0), eight trained and
# two held out. Each held-out pair's categories occur in three training pairs each, so a generator that
# composes what it learnt could answer them; with four unrelated training pairs it cannot.
MANY_CATEGORIES = ("computers", "politics", "art", "work", "food")
MANY_HELD_OUT = (FortunesTask("computers", "food"), FortunesTask("art", "work"))
MANY_TRAIN_TASKS = tuple(
    FortunesTask(a, b)
    for i, a in enumerate(MANY_CATEGORIES)
    for b in MANY_CATEGORIES[i + 1 :]
    if FortunesTask(a, b) not in MANY_HELD_OUT
)


@dataclass
class TaskData:
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor] | None = None  # for choosing among models; never the reported split


def load_task(
    task: FortunesTask,
    tokenizer,
    n_train: int = 96,
    n_test: int = 48,
    max_length: int = 32,
    seed: int = 0,
    n_val: int = 0,
) -> TaskData:
    """Balanced, tokenised train/validation/test splits (``n_*`` quotes per class; no quote in two splits)."""
    rng = random.Random(seed)
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "test": [], "val": []}
    for label, cat in enumerate((task.cat_a, task.cat_b)):
        quotes = [q for q in fortunes(cat) if len(q) >= 20]
        rng.shuffle(quotes)
        need = n_train + n_test + n_val
        if len(quotes) < need:
            raise ValueError(f"fortunes category {cat!r} has {len(quotes)} quotes; need {need}")
        rows["train"] += [(q, label) for q in quotes[:n_train]]
        rows["test"] += [(q, label) for q in quotes[n_train : n_train + n_test]]
        rows["val"] += [(q, label) for q in quotes[n_train + n_test : need]]
    out: dict[str, dict[str, torch.Tensor] | None] = {"val": None}
    for split, items in rows.items():
        if not items:
            continue
        rng.shuffle(items)
        enc = tokenizer(
            [q for q, _ in items],
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out[split] = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([y for _, y in items]),
        }
    return TaskData(out["train"], out["test"], out["val"])


def load_minilm() -> tuple[nn.Module, object]:
    """The real all-MiniLM-L6-v2 encoder (eval mode) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def pooled(encoder: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def fit_head(
    encoder: nn.Module, data: TaskData, epochs: int = 200, lr: float = 0.1, seed: int = 0
) -> nn.Linear:
    """A 2-way linear head on frozen mean-pooled features of the pretext task; returned frozen."""
    torch.manual_seed(seed)
    with torch.no_grad():
        feats = pooled(encoder, data.train)
    head = nn.Linear(feats.shape[1], 2)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        loss = F.cross_entropy(head(feats), data.train["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.requires_grad_(False).eval()


def lora_config(r: int = 1, alpha: int = 8, layers: list[int] | None = None):
    """LoRA on query/value; ``layers`` limits it to some of MiniLM's 6 layers (fewer floats to generate)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(LORA_TARGETS),
        layers_to_transform=layers,
    )


def make_lora_trainer(
    head: nn.Linear,
    data_by_task: dict[str, TaskData],
    steps: int = 80,
    lr: float = 5e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> Callable[[nn.Module, str, Callable[[int], None]], None]:
    """``train_task(peft_encoder, task_name, on_step)`` for :func:`hubtools.paramgen.lora.collect_lora_checkpoints`.

    A plain loop rather than the shared trainer: ``on_step`` must see the adapter after every
    single step, and a run this short (tens of steps) needs no checkpoints or resume.
    """

    def train_task(model: nn.Module, task: str, on_step: Callable[[int], None]) -> None:
        train = data_by_task[task].train
        n = len(train["labels"])
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        model.train()
        order = torch.randperm(n, generator=gen)
        pos = 0
        for step in range(steps):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            batch = {k: v[idx] for k, v in train.items()}
            loss = F.cross_entropy(head(pooled(model, batch)), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            on_step(steps - 1 - step)
        model.eval()

    return train_task


@torch.no_grad()
def lora_predictions(
    peft_encoder: nn.Module, head: nn.Linear, data: dict[str, torch.Tensor], state=None
) -> torch.Tensor:
    """Predicted class of every example of ``data`` (for accuracy and for wrong-prediction overlap)."""
    from peft import set_peft_model_state_dict

    if state is not None:
        set_peft_model_state_dict(peft_encoder, state)
    peft_encoder.eval()
    return head(pooled(peft_encoder, data)).argmax(1)


@torch.no_grad()
def lora_accuracy(
    peft_encoder: nn.Module, head: nn.Linear, data: dict[str, torch.Tensor], state=None
) -> float:
    """Accuracy (%) of encoder+head on ``data``; ``state`` (a saved-adapter state dict) is loaded first."""
    pred = lora_predictions(peft_encoder, head, data, state)
    return float((pred == data["labels"]).float().mean()) * 100.0
