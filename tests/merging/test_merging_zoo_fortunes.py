"""The fortunes zoo at small scale: real Debian fortunes text, real tokenizer, caching, evaluator vs a hand count."""

from __future__ import annotations

import math

import pytest
import torch

from hubtools.testing import data_missing

torch.set_num_threads(1)

from hubtools.data.offline import DataUnavailable, fortunes  # noqa: E402

try:
    fortunes("computers", limit=1)
except DataUnavailable as err:  # pragma: no cover - depends on the machine
    data_missing(err)

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hubtools.merging.types import Zoo, fitness  # noqa: E402
from hubtools.merging.zoos.fortunes import (  # noqa: E402
    EXPERT_CATEGORIES,
    OUTLIER_CATEGORIES,
    TASKS,
    FortunesEvaluator,
    _split,
    build_fortunes_zoo,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return build_fortunes_zoo(tmp_path_factory.mktemp("fortunes"), scale=0.01, eval_limit=6)


def test_zoo_layout_tokenizer_and_cache(zoo, tmp_path_factory):
    assert set(zoo.models) == {f"ft_{c}" for c in EXPERT_CATEGORIES} | {
        f"out_{c}" for c in OUTLIER_CATEGORIES
    }
    assert zoo.truth_families == [
        [f"ft_{c}" for c in EXPERT_CATEGORIES],
        [f"out_{c}" for c in OUTLIER_CATEGORIES],
    ]
    for path in zoo.models.values():
        assert (
            path.is_absolute()
            and (path / "model.safetensors").is_file()
            and (path / "tokenizer.json").is_file()
        )
    tok = AutoTokenizer.from_pretrained(zoo.models["ft_science"])
    assert tok.bos_token == "<bos>" and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"
    ids = tok("The <eos> computer")["input_ids"]
    assert (
        ids[0] == tok.bos_token_id and tok.eos_token_id in ids
    )  # specials split out (mergekit-moe needs this)
    # Cached: a second call with the same settings reuses the trained folders byte for byte.
    before = {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in zoo.models.items()}
    again = build_fortunes_zoo(zoo.base.parent.parent, scale=0.01, eval_limit=6)
    assert {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in again.models.items()} == before
    # Outliers come from another initialisation: their weights differ from the main family's base.
    a = AutoModelForCausalLM.from_pretrained(zoo.models["ft_science"]).model.layers[0].mlp.up_proj.weight
    b = AutoModelForCausalLM.from_pretrained(zoo.models["out_zippy"]).model.layers[0].mlp.up_proj.weight
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).abs() < 0.2


def test_splits_are_disjoint_real_entries():
    for category in TASKS:
        parts = _split(category)
        search, report, train = (set(parts[k]) for k in ("search", "report", "train"))
        assert search and report and not (search & report) and not ((search | report) & train)
        assert search | report | train <= set(fortunes(category))


def test_evaluator_matches_an_independent_count(zoo):
    ev = FortunesEvaluator(zoo.base.parent / "tokenizer", "report", tasks=("science",), limit=4)
    model = AutoModelForCausalLM.from_pretrained(zoo.models["ft_science"]).eval()
    scores = ev(model)
    tok = ev.tokenizer
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for text in _split("science")["report"][:4]:  # one entry at a time, no padding
            ids = tok(text)["input_ids"][:63] + [tok.eos_token_id]
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1)
            gold = x[0, 1:]
            correct += int((logp.argmax(-1) == gold).sum())
            total += len(gold)
            nll -= float(logp.gather(-1, gold[:, None]).sum())
    assert scores["science"] == pytest.approx(correct / total, abs=1e-9)
    details = ev.last_details["science"]
    assert details["n"] == total
    assert details["perplexity"] == pytest.approx(math.exp(nll / total), rel=1e-4)
    inv = FortunesEvaluator(
        zoo.base.parent / "tokenizer", "report", tasks=("science",), limit=4, metric="inv_perplexity"
    )(model)
    assert inv["science"] == pytest.approx(math.exp(-nll / total), rel=1e-4)
    assert 0.0 <= fitness(zoo.search(zoo.models["ft_computers"])) <= 1.0


def test_prompts_come_from_the_split_and_are_seeded(zoo):
    p = zoo.search.prompts("zippy", n=3, seed=0)
    assert len(p) == 3 and set(p) <= set(_split("zippy")["search"])
    assert p == zoo.search.prompts("zippy", n=3, seed=0) != zoo.search.prompts("zippy", n=3, seed=1)
    assert set(zoo.report.prompts("zippy", n=3)).isdisjoint(_split("zippy")["search"])
