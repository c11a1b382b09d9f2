"""A real-text Model-GLUE zoo: tiny Llamas trained on the Debian ``fortunes`` corpus.

No Llama-2 weights exist offline, so this zoo reproduces the shape of the paper's zoo on real English text:

- one BPE tokenizer trained with ``tokenizers`` on every fortunes category (bos/eos/pad/unk are special
  tokens; the tokenizer prepends ``<bos>``), saved with every model because mergekit-moe needs one;
- ``base``: a tiny Llama trained from init seed 0 on the training part of *all* categories;
- experts ``ft_<category>`` fine-tuned from ``base`` on one category each (the main family);
- outliers ``out_<category>`` fine-tuned from ``base_outlier``, a model trained from a *different
  initialisation* (seed 1) on the outlier categories only (the second family; the bases are not zoo members).

The evaluator scores per-category held-out next-token accuracy (default) or inverse perplexity, both in
[0, 1], through the local ``evaluate`` module ``hubtools/merging/metrics/next_token``. Search and report
splits are disjoint held-out entries of each category; training never sees either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from hubtools.hub.artifacts import atomic_dir
from hubtools.merging.types import Zoo

EXPERT_CATEGORIES = ("computers", "science", "politics", "songs-poems")
OUTLIER_CATEGORIES = ("definitions", "zippy")
TASKS = EXPERT_CATEGORIES + OUTLIER_CATEGORIES
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
VOCAB_SIZE = 1024
SEQ_LEN = 64
BATCH = 32
SPLIT_SIZES = {"search": 40, "report": 80}
METRICS = ("accuracy", "inv_perplexity")
BUILD_VERSION = 2  # bump when the recipe below changes, so cached zoos are rebuilt
# (steps, lr) at scale 1; fine-tunes use a lower rate so they stay close to their base (one family).
BASE_SCHEDULE = (900, 3e-3)
OUTLIER_BASE_SCHEDULE = (500, 3e-3)  # two categories only: fewer steps before it overfits them
FINETUNE_SCHEDULE = (200, 5e-4)


def _categories() -> list[str]:
    from hubtools.data.offline import FORTUNES_DIR, debian_path

    folder = debian_path(FORTUNES_DIR, "fortunes")
    return sorted(p.name for p in folder.iterdir() if p.is_file() and "." not in p.name)


def _split(category: str) -> dict[str, list[str]]:
    """Entries of a category shuffled by a seed derived from its name: search, report, then train."""
    from hubtools.data.offline import fortunes

    entries = fortunes(category)
    random.Random(zlib.crc32(category.encode())).shuffle(entries)
    n_search = min(SPLIT_SIZES["search"], len(entries) // 10)
    n_report = min(SPLIT_SIZES["report"], len(entries) // 5)
    return {
        "search": entries[:n_search],
        "report": entries[n_search : n_search + n_report],
        "train": entries[n_search + n_report :],
    }


def train_tokenizer(texts: Sequence[str]):  # -> PreTrainedTokenizerFast
    """Byte-level-free BPE (Metaspace, lowercase) over ``texts``; ``<bos>`` prepended by the post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def model_config(vocab_size: int):  # -> LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ_LEN * 2,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """``<bos> text <eos>`` of every entry, concatenated (training packs random windows of it)."""
    ids: list[int] = []
    for enc in tokenizer(list(texts))["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _train(model, stream: torch.Tensor, *, steps: int, lr: float, seed: int) -> None:
    """AdamW (no decay), batch 32 windows of 64 tokens, clip 1.0, linear warm-up (1/10) then linear decay."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - SEQ_LEN - 1, (BATCH,), generator=gen)
        ids = torch.stack([stream[s : s + SEQ_LEN] for s in starts.tolist()])
        logits = model(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()


class FortunesEvaluator:
    """Per-category held-out next-token score of a causal LM, through the local ``next_token`` evaluate module.

    ``metric="accuracy"``: teacher-forced next-token accuracy over every position after ``<bos>`` (the
    final ``<eos>`` included). ``metric="inv_perplexity"``: 1/perplexity, the geometric-mean probability of
    the gold token. Both lie in [0, 1]. Entries are truncated to 64 tokens.
    """

    def __init__(
        self,
        tokenizer_dir: str | os.PathLike,
        split: str = "search",
        *,
        tasks: Sequence[str] = TASKS,
        metric: str = "accuracy",
        limit: int | None = None,
    ) -> None:
        if split not in SPLIT_SIZES:
            raise ValueError(f"split must be one of {tuple(SPLIT_SIZES)}, got {split!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        from transformers import AutoTokenizer

        self.tasks = tuple(tasks)
        self.split = split
        self.metric = metric
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self._texts = {t: _split(t)[split][:limit] for t in self.tasks}
        self.last_details: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return f"FortunesEvaluator(split={self.split!r}, metric={self.metric!r}, tasks={self.tasks})"

    def _batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        rows = [ids[: SEQ_LEN - 1] + [tok.eos_token_id] for ids in tok(list(texts))["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        from hubtools.merging.metrics import load_metric

        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM

            import hubtools.merging  # noqa: F401  (registers the mixture model type)

            model = AutoModelForCausalLM.from_pretrained(Path(model), dtype=torch.float32)
        model.eval()
        metric = load_metric("next_token")
        scores, details = {}, {}
        for task in self.tasks:
            ids, mask = self._batch(self._texts[task])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            gold = ids[:, 1:]
            keep = mask[:, 1:].bool()
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
            result = metric.compute(
                predictions=logits.argmax(-1)[keep].tolist(),
                references=gold[keep].tolist(),
                log_probs=log_probs[keep].tolist(),
            )
            details[task] = result
            scores[task] = float(result[self.metric])
        self.last_details = details
        return scores

    def prompts(self, task: str, n: int = 8, seed: int = 0) -> list[str]:
        """``n`` entries of ``task`` from this split (for mixture gates)."""
        pool = self._texts[task]
        return random.Random(seed).sample(pool, min(n, len(pool)))


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def build_fortunes_zoo(
    cache_dir: str | os.PathLike,
    *,
    scale: float = 1.0,
    metric: str = "accuracy",
    eval_limit: int | None = None,
) -> Zoo:
    """Train (or reuse from ``cache_dir``) the fortunes zoo; ``scale`` < 1 shrinks every step count.

    The folder name is a digest of the build settings and of the corpus files, so a second call reuses the
    models and different settings never mix. ``eval_limit`` caps the held-out entries per category (tests).
    Single-threaded torch; 2,600 optimizer steps at scale 1 (0.1 s each on an idle core, about 4 minutes; 13
    minutes were measured on a shared, overloaded 2-core machine).
    """
    from transformers import LlamaForCausalLM

    from hubtools.data.offline import FORTUNES_DIR

    tasks_used = EXPERT_CATEGORIES + OUTLIER_CATEGORIES
    corpus = hashlib.sha256()
    for name in _categories():
        corpus.update(name.encode() + (FORTUNES_DIR / name).read_bytes())
    settings = {
        "version": BUILD_VERSION,
        "scale": scale,
        "experts": EXPERT_CATEGORIES,
        "outliers": OUTLIER_CATEGORIES,
        "base": BASE_SCHEDULE,
        "outlier_base": OUTLIER_BASE_SCHEDULE,
        "finetune": FINETUNE_SCHEDULE,
        "vocab": VOCAB_SIZE,
        "corpus": corpus.hexdigest(),
    }
    root = Path(cache_dir).absolute() / f"fortunes-{_digest(settings)}"
    root.mkdir(parents=True, exist_ok=True)
    splits = {c: _split(c) for c in _categories()}

    tok_dir = root / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        tokenizer = train_tokenizer([t for c in splits.values() for t in c["train"]])
        with atomic_dir(tok_dir) as tmp:
            tokenizer.save_pretrained(tmp)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    def steps(n: int) -> int:
        return max(4, math.ceil(n * scale))

    def get(name: str, init, categories: Sequence[str], schedule: tuple[int, float], seed: int) -> Path:
        path = root / name
        if not (path / "config.json").is_file():
            torch.set_num_threads(1)
            model = init()
            texts = [t for c in categories for t in splits[c]["train"]]
            random.Random(seed).shuffle(texts)
            # Tokenize only about twice the characters the steps consume (~4 characters per token), so a
            # small-scale build does not tokenize the whole corpus; at scale 1 every entry is used.
            budget, used = steps(schedule[0]) * BATCH * SEQ_LEN * 8, 0
            for n, text in enumerate(texts):
                used += len(text)
                if used > budget:
                    texts = texts[: n + 1]
                    break
            _train(model, _stream(tokenizer, texts), steps=steps(schedule[0]), lr=schedule[1], seed=seed)
            with atomic_dir(path) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        return path

    def fresh(seed: int):
        def init():
            torch.manual_seed(seed)
            return LlamaForCausalLM(model_config(len(tokenizer)))

        return init

    def from_(path: Path):
        return lambda: LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)

    base = get("base", fresh(0), list(splits), BASE_SCHEDULE, seed=1)
    base_outlier = get("base_outlier", fresh(1), OUTLIER_CATEGORIES, OUTLIER_BASE_SCHEDULE, seed=2)
    members: dict[str, Path] = {}
    for i, category in enumerate(tasks_used):
        parent = base if category in EXPERT_CATEGORIES else base_outlier
        prefix = "ft" if category in EXPERT_CATEGORIES else "out"
        name = f"{prefix}_{category}"
        members[name] = get(name, from_(parent), [category], FINETUNE_SCHEDULE, seed=100 + i)
    return Zoo(
        name="fortunes" if scale == 1.0 else f"fortunes-x{scale:g}",
        models=members,
        search=FortunesEvaluator(tok_dir, "search", metric=metric, limit=eval_limit),
        report=FortunesEvaluator(tok_dir, "report", metric=metric, limit=eval_limit),
        base=base,
        truth_families=[[f"ft_{c}" for c in EXPERT_CATEGORIES], [f"out_{c}" for c in OUTLIER_CATEGORIES]],
    )
