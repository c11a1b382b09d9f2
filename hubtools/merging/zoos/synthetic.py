"""The synthetic Model-GLUE zoo of spec section 4.1: tiny Llamas fine-tuned on string tasks.

Two unrelated bases (letters family A, digits family B) and seven fine-tunes give a zoo with a known answer:
clustering must recover {R, S, I, P, noise} and {N, T}, a good merge must reject the harmful ``ft_noise``,
and a mixture must route digits to family B. Everything is seeded exactly as the spec says so the benchmark
re-measures the spec's calibration rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hubtools.hub.artifacts import atomic_dir
from hubtools.merging.types import Zoo

TAGS = ("C", "R", "S", "I", "P", "N", "T")  # tag order fixes the data seeds of the splits
LETTERS = tuple("abcdefghijklmnop")
DIGITS = tuple("0123456789")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", ">")
VOCAB: tuple[str, ...] = SPECIALS + TAGS + LETTERS + DIGITS + tuple(f"w{i}" for i in range(38, 96))
FAMILY_A = ("R", "S", "I", "P")
FAMILY_B = ("N", "T")
ZOO_TASKS = FAMILY_A + FAMILY_B
BUILD_VERSION = 1  # bump when the recipe below changes, so cached zoos are rebuilt


def _answer(task: str, xs: Sequence[str]) -> list[str]:
    if task == "R":
        return list(reversed(xs))
    if task == "S":
        return sorted(xs, key=LETTERS.index)
    if task == "I":
        return [LETTERS[(LETTERS.index(x) + 1) % 16] for x in xs]
    if task == "P":
        out = list(xs)
        for i in range(0, len(out) - 1, 2):
            out[i], out[i + 1] = out[i + 1], out[i]
        return out
    if task == "N":
        return [str(9 - int(d)) for d in xs]
    if task == "T":
        return sorted(xs, reverse=True)
    raise ValueError(f"unknown synthetic task {task!r}; known: {ZOO_TASKS}")


@dataclass(frozen=True)
class Example:
    task: str
    inputs: tuple[str, ...]
    answer: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """The input text up to and including ``>`` (no bos: the tokenizer adds it)."""
        return " ".join((self.task, *self.inputs, ">"))

    def ids(self) -> tuple[list[int], list[int]]:
        """Token ids of ``<bos> TAG x.. > y.. <eos>`` and the positions of the answer tokens y."""
        toks = ["<bos>", self.task, *self.inputs, ">", *self.answer, "<eos>"]
        start = 3 + len(self.inputs)
        return [VOCAB.index(t) for t in toks], list(range(start, start + len(self.answer)))


def make_example(task: str, rng: random.Random, *, noise: bool = False) -> Example:
    alphabet = DIGITS if task in FAMILY_B else LETTERS
    xs = tuple(rng.choice(alphabet) for _ in range(rng.choice((4, 5, 6))))
    ys = tuple(rng.choice(LETTERS) for _ in xs) if noise else tuple(_answer(task, xs))
    return Example(task, xs, ys)


def split_examples(task: str, split: str) -> list[Example]:
    """The fixed search (100, seed 777+t) or report (200, seed 10000+t) examples of one task."""
    t = TAGS.index(task)
    n, seed = {"search": (100, 777 + t), "report": (200, 10000 + t)}[split]
    rng = random.Random(seed)
    return [make_example(task, rng) for _ in range(n)]


def make_tokenizer():  # -> PreTrainedTokenizerFast
    """Word-level tokenizer over the 96-token vocabulary; specials split out and bos is prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def model_config():  # -> LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _batch(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and next-token labels (-100 except on y and eos)."""
    rows = [e.ids() for e in examples]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (seq, answer_pos) in enumerate(rows):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        for p in [*answer_pos, answer_pos[-1] + 1]:  # y and <eos>
            labels[r, p] = seq[p]
    return ids, mask, labels


def _train(
    model, tasks: Sequence[str], *, steps: int, lr: float, data_seed: int, noise: bool = False
) -> None:
    """AdamW (no decay), batch 64, clip 1.0, 50-step linear warm-up then linear decay to 0 (spec 4.1)."""
    rng = random.Random(data_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(50, max(1, steps // 4))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )
    model.train()
    for _ in range(steps):
        ids, mask, labels = _batch([make_example(rng.choice(tasks), rng, noise=noise) for _ in range(64)])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()


class SyntheticTaskEvaluator:
    """Exact match of the answer from one teacher-forced pass (= greedy exact match), per synthetic task.

    Scores a model object or a folder; folders are loaded with ``AutoModelForCausalLM`` (so registered mixture
    models work too). ``split`` is "search" (100 examples per task) or "report" (200, disjoint seeds);
    ``limit`` keeps the first examples of each task only (fast tests); ``metric="token"`` scores the fraction
    of correct answer tokens instead of whole answers (a softer signal for barely trained demo zoos).
    """

    def __init__(
        self,
        tasks: Sequence[str] = ZOO_TASKS,
        split: str = "search",
        limit: int | None = None,
        metric: str = "exact",
    ) -> None:
        if split not in ("search", "report"):
            raise ValueError(f"split must be 'search' or 'report', not {split!r}")
        unknown = set(tasks) - set(ZOO_TASKS)
        if unknown:
            raise ValueError(f"unknown synthetic task(s) {sorted(unknown)}; known: {ZOO_TASKS}")
        if metric not in ("exact", "token"):
            raise ValueError(
                f"metric must be 'exact' (whole answer) or 'token' (per answer token), not {metric!r}"
            )
        self.tasks = tuple(tasks)
        self.split = split
        self.metric = metric
        self._examples = {t: split_examples(t, split)[:limit] for t in self.tasks}

    def __repr__(self) -> str:
        return f"SyntheticTaskEvaluator(tasks={self.tasks}, split={self.split!r})"

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM

            import hubtools.merging  # noqa: F401  (registers the mixture model type)

            model = AutoModelForCausalLM.from_pretrained(Path(model), dtype=torch.float32)
        model.eval()
        scores = {}
        for task, examples in self._examples.items():
            ids, mask, _ = _batch(examples)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            correct, total = 0, 0
            for r, e in enumerate(examples):
                seq, pos = e.ids()
                hits = [int(pred[r, p - 1]) == seq[p] for p in pos]
                if self.metric == "exact":
                    correct, total = correct + all(hits), total + 1
                else:
                    correct, total = correct + sum(hits), total + len(hits)
            scores[task] = correct / total
        return scores

    def prompts(self, task: str, n: int = 8, seed: int = 0) -> list[str]:
        """``n`` prompts of ``task`` drawn from this split (for mixture gates)."""
        pool = self._examples[task]
        return [e.prompt for e in random.Random(seed).sample(pool, min(n, len(pool)))]


def _save(model, tokenizer, path: Path) -> None:
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def build_synthetic_zoo(cache_dir: str | os.PathLike, *, scale: float = 1.0) -> Zoo:
    """Train (or reuse from ``cache_dir``) the spec 4.1 zoo; ``scale`` < 1 shrinks every step count.

    The folder name carries a digest of the build settings, so a second call with the same settings reuses
    the trained models and a different scale never mixes with them.
    """
    from transformers import LlamaForCausalLM

    settings = {"version": BUILD_VERSION, "scale": scale}
    root = (
        Path(cache_dir).absolute()
        / f"synthetic-{hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]}"
    )
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()

    def steps(n: int) -> int:
        return max(4, math.ceil(n * scale))

    def get(name: str, init, tasks, *, n: int, lr: float, data_seed: int, noise: bool = False) -> Path:
        path = root / name
        if not (path / "config.json").is_file():
            torch.set_num_threads(1)
            model = init()
            _train(model, tasks, steps=steps(n), lr=lr, data_seed=data_seed, noise=noise)
            _save(model, tokenizer, path)
        return path

    def fresh(seed: int):
        def init():
            torch.manual_seed(seed)
            return LlamaForCausalLM(model_config())

        return init

    def from_(path: Path):
        return lambda: LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)

    base_a = get("base_A", fresh(0), FAMILY_A, n=250, lr=3e-3, data_seed=1)
    base_b = get("base_B", fresh(1), FAMILY_B, n=250, lr=3e-3, data_seed=2)
    members: dict[str, Path] = {}
    for i, (name, tasks, base, noise) in enumerate(
        [
            ("ft_R", ("R",), base_a, False),
            ("ft_S", ("S",), base_a, False),
            ("ft_I", ("I",), base_a, False),
            ("ft_P", ("P",), base_a, False),
            ("ft_noise", FAMILY_A, base_a, True),
            ("ft_N", ("N",), base_b, False),
            ("ft_T", ("T",), base_b, False),
        ]
    ):
        members[name] = get(name, from_(base), tasks, n=200, lr=5e-4, data_seed=100 + i, noise=noise)
    return Zoo(
        name="synthetic" if scale == 1.0 else f"synthetic-x{scale:g}",
        models=members,
        search=SyntheticTaskEvaluator(ZOO_TASKS, "search"),
        report=SyntheticTaskEvaluator(ZOO_TASKS, "report"),
        base=base_a,
        truth_families=[["ft_R", "ft_S", "ft_I", "ft_P", "ft_noise"], ["ft_N", "ft_T"]],
    )
