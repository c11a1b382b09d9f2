"""The MiniLM zoo at tiny scale: real pretrained MiniLM, real text tasks, mergekit's BERT support, evaluator check."""

from __future__ import annotations

import pytest
import torch

from hubtools.testing import data_missing

torch.set_num_threads(1)

from hubtools.data.offline import DataUnavailable, fortunes, minilm_path  # noqa: E402

try:
    minilm_path()
    fortunes("computers", limit=1)
except DataUnavailable as err:  # pragma: no cover - depends on the machine
    data_missing(err)

from transformers import AutoModelForSequenceClassification  # noqa: E402

from hubtools.merging.zoos.minilm import TASKS, build_minilm_zoo, task_examples  # noqa: E402

USED = ("computers_vs_science", "wisdom_vs_work")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_minilm_zoo(tmp_path_factory.mktemp("minilm"), scale=0.02, tasks=USED, eval_limit=12)


def test_task_examples_are_labelled_real_entries():
    for task in USED:
        search, report = task_examples(task, "search"), task_examples(task, "report")
        assert {y for _, y in search} == {0, 1}
        assert not {t for t, _ in search} & {t for t, _ in report}
        zero, one = TASKS[task]
        assert all(t in set(fortunes(zero if y == 0 else one)) for t, y in search[:20])


def test_members_merge_with_mergekit_and_evaluator_uses_each_task_head(zoo, tmp_path):
    from hubtools.merging.mk import run_recipe
    from hubtools.merging.recipe import Recipe

    assert set(zoo.models) == {f"ft_{t}" for t in USED}
    member = AutoModelForSequenceClassification.from_pretrained(zoo.models["ft_wisdom_vs_work"]).eval()
    assert type(member).__name__ == "BertForSequenceClassification"
    scores = zoo.report(member)
    assert set(scores) == set(USED)
    # Independent count with the member's own head for its own task.
    examples = task_examples("wisdom_vs_work", "report")[:12]
    enc = zoo.report.tokenizer(
        [t for t, _ in examples], padding=True, truncation=True, max_length=48, return_tensors="pt"
    )
    with torch.no_grad():
        preds = member(**enc).logits.argmax(-1).tolist()
    assert scores["wisdom_vs_work"] == pytest.approx(
        sum(p == y for p, (_, y) in zip(preds, examples, strict=False)) / 12
    )
    # mergekit merges the BERT classifiers (bert-sequence-classification.json); the evaluator scores the result.
    merged = run_recipe(
        Recipe.linear(list(zoo.models.values()), dtype="float32"), tmp_path / "merged", write_card=False
    )
    merged_scores = zoo.report(merged)
    assert set(merged_scores) == set(USED) and all(0.0 <= v <= 1.0 for v in merged_scores.values())
    # A uniform merge of identical encoders would equal the member; these differ, so the encoder changed.
    a = (
        AutoModelForSequenceClassification.from_pretrained(merged)
        .bert.encoder.layer[0]
        .intermediate.dense.weight
    )
    b = member.bert.encoder.layer[0].intermediate.dense.weight
    c = AutoModelForSequenceClassification.from_pretrained(zoo.models["ft_computers_vs_science"])
    expected = (b + c.bert.encoder.layer[0].intermediate.dense.weight) / 2
    assert torch.allclose(a, expected, atol=1e-6)
