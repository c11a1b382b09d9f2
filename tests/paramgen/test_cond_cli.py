"""`hubtools paramgen cond collect|train|generate|evaluate` end to end on real fortunes text with a tiny BERT.

The checks recompute what the commands claim without their code: a generated adapter folder
loaded with one PEFT call gives the logits of base + the generated LoRA + the frozen head,
its head bytes are the collected head's, and evaluate's base accuracy is the one the test
computes itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hubtools.cli import main
from hubtools.data.offline import FORTUNES_DIR

PAIRS = [("computers", "love"), ("science", "food")]
HELD_OUT = ("computers", "food")
GEN = ["--num-models", "2", "--scheduler", "ddim", "--steps", "3", "--seed", "5"]

pytestmark = pytest.mark.skipif(
    not (FORTUNES_DIR / "computers").is_file(),
    reason=f"Debian fortunes corpus missing at {FORTUNES_DIR} (apt-get install fortunes)",
)


def _tiny_bert(folder: Path, texts: list[str], pooler: bool = True) -> Path:
    """A 2-layer hidden-32 BERT with a word-level tokenizer whose vocabulary is learned from ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=400, special_tokens=special))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _texts(tasks_yaml: Path) -> list[str]:
    return [
        json.loads(line)["text"]
        for f in sorted((tasks_yaml.parent / "data").glob("*.jsonl"))
        for line in f.open()
    ]


def _tasks(tmp: Path, name: str = "fortunes") -> Path:
    from hubtools.paramgen.textcls import write_fortunes_tasks

    return write_fortunes_tasks(tmp / name, PAIRS, 16, 8, 0, held_out=[HELD_OUT], base_model="placeholder")


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, ["paramgen", "cond", *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """The four commands once, tiny step counts; every test below reads their outputs."""
    import yaml

    tmp = tmp_path_factory.mktemp("cond")
    tasks_yaml = _tasks(tmp)
    bert = _tiny_bert(tmp / "tiny-bert", _texts(tasks_yaml))
    doc = yaml.safe_load(tasks_yaml.read_text())
    doc["base_model"] = str(bert)
    tasks_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    col, pipe, gen, ev = tmp / "col", tmp / "pipe", tmp / "gen", tmp / "ev.json"
    out = {"tasks": tasks_yaml, "bert": bert, "col": col, "pipe": pipe, "gen": gen, "ev": ev}
    res = _invoke(["collect", str(tasks_yaml), "--out", str(col), "--lora-steps", "6", "--last-n-steps", "4"])
    out["collect_output"] = res.output
    (tmp / "train.yaml").write_text("ae_steps: 4\nddpm_steps: 4\n")
    _invoke(["train", str(col), "--out", str(pipe), "--config", str(tmp / "train.yaml")])
    _invoke(["generate", str(pipe), "--condition", "-vs-".join(HELD_OUT), "--out", str(gen), *GEN])
    res = _invoke(
        ["evaluate", str(pipe), "--tasks", str(tasks_yaml), "--collected", str(col), "--json", str(ev), *GEN]
    )
    out["evaluate_output"] = res.output
    return out


def _classifier_with_head(run: dict, vec: torch.Tensor | None = None):
    """Base classifier + collected head (+ LoRA ``vec`` via set_peft_model_state_dict), built by hand."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from hubtools.paramgen import ParamSpec

    model = AutoModelForSequenceClassification.from_pretrained(run["bert"], num_labels=2)
    head = load_file(str(run["col"] / "head.safetensors"))
    with torch.no_grad():
        model.classifier.weight.copy_(head["classifier.weight"])
        model.classifier.bias.copy_(head["classifier.bias"])
    if vec is None:
        return model.eval()
    peft_model = get_peft_model(model, LoraConfig(r=1, lora_alpha=8, target_modules=["query", "value"]))
    spec = ParamSpec.load(run["col"] / "tasks" / "computers-vs-love" / "spec.json")
    set_peft_model_state_dict(peft_model, spec.unflatten(vec))
    return peft_model.eval()


def _test_batch(run: dict, task: str) -> tuple[dict, torch.Tensor]:
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in (run["tasks"].parent / "data" / f"{task}-test.jsonl").open()]
    max_length = json.loads((run["col"] / "manifest.json").read_text())["training"]["max_length"]
    tok = AutoTokenizer.from_pretrained(run["bert"])
    enc = tok(
        [r["text"] for r in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, torch.tensor(
        [r["label"] for r in rows]
    )


def test_collect_writes_sets_head_and_description_conditions(run):
    from transformers import AutoModel, AutoTokenizer

    from hubtools.paramgen import CheckpointSet, embed_texts

    manifest = json.loads((run["col"] / "manifest.json").read_text())
    assert manifest["condition_tasks"] == ["computers-vs-love", "science-vs-food", "computers-vs-food"]
    for name in ("computers-vs-love", "science-vs-food"):
        ckpts = CheckpointSet.load_from_disk(run["col"] / "tasks" / name)
        assert ckpts.params.shape == (4, manifest["dim"])
        assert all("lora_A" in n or "lora_B" in n for n in ckpts.spec.names)
        assert ckpts.params.std(0).max() > 0  # the adapter moved during the window
    assert not (run["col"] / "tasks" / "computers-vs-food").exists()  # held-out: never trained
    assert not (run["col"] / "tasks" / "literature-vs-science").exists()  # head-only task
    from safetensors.torch import load_file

    conditions = load_file(str(run["col"] / "conditions.safetensors"))["conditions"]
    descriptions = {t["name"]: t["description"] for t in manifest["tasks"]}
    expected = embed_texts(
        AutoModel.from_pretrained(run["bert"]).eval(),
        AutoTokenizer.from_pretrained(run["bert"]),
        [descriptions[n] for n in manifest["condition_tasks"]],
    )
    torch.testing.assert_close(conditions, expected, rtol=0, atol=1e-6)
    assert "head fitted on literature-vs-science" in run["collect_output"]


def test_generated_adapter_is_a_complete_classifier_in_one_call(run):
    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from hubtools.paramgen import CondPDiffPipeline, ddim_copy

    record = json.loads((run["gen"] / "generation.json").read_text())
    description = json.loads((run["col"] / "manifest.json").read_text())["tasks"][-1]["description"]
    assert record["resolved_condition"] == description  # a held-out name means its description
    # the vectors the command should have written, regenerated here from the saved pipeline
    pipe = ddim_copy(CondPDiffPipeline.from_pretrained(run["pipe"]))
    pipe.set_progress_bar_config(disable=True)
    vecs = pipe(
        condition=description,
        num_models=2,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=3,
        eta=0.05,
    ).params
    batch, _ = _test_batch(run, "computers-vs-food")
    head = load_file(str(run["col"] / "head.safetensors"))
    for i, vec in enumerate(vecs):
        folder = run["gen"] / f"adapter-{i:03d}"
        with torch.no_grad():
            expected = _classifier_with_head(run, vec)(**batch).logits
            one_call = AutoPeftModelForSequenceClassification.from_pretrained(folder).eval()(**batch).logits
            base = AutoModelForSequenceClassification.from_pretrained(run["bert"], num_labels=2)
            via_peft = PeftModel.from_pretrained(base, folder).eval()(**batch).logits
        torch.testing.assert_close(one_call, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(via_peft, expected, rtol=0, atol=1e-6)
        saved = load_file(str(folder / "adapter_model.safetensors"))
        for key in ("classifier.weight", "classifier.bias"):
            assert saved[f"base_model.model.{key}"].numpy().tobytes() == head[key].numpy().tobytes()
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["modules_to_save"] == ["classifier"] and config["base_model_name_or_path"] == str(
            run["bert"]
        )
        card = (folder / "README.md").read_text()
        assert "**generated**" in card and "is **not generated**" in card and "literature-vs-science" in card
    assert not torch.equal(vecs[0], vecs[1])


def test_evaluate_reports_base_and_held_out_baseline_computed_independently(run):
    from hubtools.paramgen import CheckpointSet

    report = json.loads(run["ev"].read_text())
    assert list(report["tasks"]) == ["computers-vs-love", "science-vs-food", "computers-vs-food"]
    base_model = _classifier_with_head(run)
    for name, row in report["tasks"].items():
        batch, labels = _test_batch(run, name)
        with torch.no_grad():
            acc = float((base_model(**batch).logits.argmax(1) == labels).float().mean()) * 100.0
        assert row["base"] == pytest.approx(acc, abs=1e-9), name
        assert row["generated"]["n"] == 2
    assert report["tasks"]["computers-vs-love"]["original"]["n"] == 4
    # held-out: the other task's final adapter that scores best on the held-out task's *train* split
    held = report["tasks"]["computers-vs-food"]
    assert "original" not in held and "per_task_mean" not in held
    rows = [
        json.loads(line) for line in (run["tasks"].parent / "data" / "computers-vs-food-train.jsonl").open()
    ]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run["bert"])
    enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
    train_batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    train_labels = torch.tensor([r["label"] for r in rows])
    train_acc = {}
    for name in ("computers-vs-love", "science-vs-food"):
        final = CheckpointSet.load_from_disk(run["col"] / "tasks" / name).params[-1]
        with torch.no_grad():
            pred = _classifier_with_head(run, final)(**train_batch).logits.argmax(1)
        train_acc[name] = float((pred == train_labels).float().mean()) * 100.0
    best = max(train_acc, key=lambda n: train_acc[n])
    assert held["best_other_task"]["task"] == best
    assert held["best_other_task"]["train_accuracy"] == pytest.approx(train_acc[best], abs=1e-9)
    assert "computers-vs-food" in run["evaluate_output"] and "held-out" in run["evaluate_output"]


def _rewrite(tasks_yaml: Path, edit) -> Path:
    import yaml

    doc = yaml.safe_load(tasks_yaml.read_text())
    edit(doc)
    tasks_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return tasks_yaml


def test_tasks_file_errors_name_file_and_key(tmp_path):
    from hubtools.errors import ConfigError
    from hubtools.paramgen.textcls import load_tasks

    tasks_yaml = _tasks(tmp_path)
    data = tasks_yaml.parent / "data"
    assert load_tasks(tasks_yaml).num_labels == 2

    def set_task(i, **kv):
        return lambda doc: doc["tasks"][i].update(kv)

    _rewrite(tasks_yaml, set_task(1, train="data/nope.jsonl"))
    with pytest.raises(
        ConfigError, match=r"tasks\[1\]\.train \(computers-vs-love\): file .*nope\.jsonl not found"
    ):
        load_tasks(tasks_yaml)

    (data / "cols.csv").write_text("sentence,label\nhello there,0\n")
    _rewrite(tasks_yaml, set_task(1, train="data/cols.csv"))
    with pytest.raises(
        ConfigError, match=r"cols\.csv: needs columns text,label; found \['sentence', 'label'\]"
    ):
        load_tasks(tasks_yaml)

    lines = (data / "science-vs-food-test.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"text": "a quote", "label": 2})
    (data / "bad-range.jsonl").write_text("\n".join(lines) + "\n")
    _rewrite(tasks_yaml, set_task(1, train="data/computers-vs-love-train.jsonl"))
    _rewrite(tasks_yaml, lambda doc: doc.update(num_labels=2))
    _rewrite(tasks_yaml, set_task(2, test="data/bad-range.jsonl"))
    with pytest.raises(
        ConfigError, match=r"bad-range\.jsonl: example 3 has label 2, out of range 0\.\.1.*tasks\[2\]\.test"
    ):
        load_tasks(tasks_yaml)

    # without num_labels the 3 classes of one file must be everyone's: the binary train splits then mismatch
    _rewrite(tasks_yaml, lambda doc: doc.pop("num_labels"))
    with pytest.raises(
        ConfigError,
        match=r"tasks\[0\]\.train \(literature-vs-science\) has labels \[0, 1\] but num_labels is 3",
    ):
        load_tasks(tasks_yaml)

    _rewrite(tasks_yaml, set_task(2, test="data/science-vs-food-test.jsonl"))
    _rewrite(tasks_yaml, lambda doc: doc.update(head_task="nope"))
    with pytest.raises(ConfigError, match=r"tasks\.yaml: key 'head_task' names 'nope'"):
        load_tasks(tasks_yaml)
    _rewrite(tasks_yaml, lambda doc: doc.update(head_task="literature-vs-science", heads=1))
    with pytest.raises(ConfigError, match=r"tasks\.yaml: unknown key 'heads'"):
        load_tasks(tasks_yaml)

    # the CLI turns the same error into one line naming file and key, not a traceback
    result = CliRunner().invoke(
        main, ["paramgen", "cond", "collect", str(tasks_yaml), "--out", str(tmp_path / "c")]
    )
    assert (
        result.exit_code == 1 and "unknown key 'heads'" in result.output and "Traceback" not in result.output
    )
    assert not (tmp_path / "c").exists()


def test_base_without_pooler_is_refused(tmp_path):
    """A pooler missing from the checkpoint would be re-initialised at every load: adapters could not reproduce."""
    from hubtools.errors import ConfigError
    from hubtools.paramgen.textcls import load_classifier

    bert = _tiny_bert(tmp_path / "nopool", ["some real words here"], pooler=False)
    with pytest.raises(
        ConfigError, match=r"lacks \['bert\.pooler\.dense\.bias', 'bert\.pooler\.dense\.weight'\]"
    ):
        load_classifier(str(bert), 2)


def test_example_command_writes_a_loadable_tasks_file(tmp_path):
    from hubtools.data.offline import DataUnavailable, minilm_path
    from hubtools.paramgen.textcls import load_tasks

    try:
        minilm = minilm_path()
    except DataUnavailable as err:
        pytest.skip(str(err))
    out = tmp_path / "ex"
    result = CliRunner().invoke(
        main, ["paramgen", "cond", "example", "--out", str(out), "--n-train", "5", "--n-test", "3"]
    )
    assert result.exit_code == 0, result.output
    tasks = load_tasks(out / "tasks.yaml")
    assert tasks.base_model == str(minilm) and tasks.head_task == "literature-vs-science"
    assert [t.name for t in tasks.train_tasks] == ["computers-vs-love", "science-vs-food"]
    assert [t.name for t in tasks.held_out_tasks] == ["computers-vs-food"]
    # a category's quotes fall in the same split in every task: no held-out test quote was trained on
    trained_texts = {x for t in tasks.tasks.values() if t.train is not None for x in t.train.texts}
    assert not trained_texts & set(tasks.tasks["computers-vs-food"].test.texts)
    assert len(tasks.tasks["computers-vs-love"].train) == 10 and sorted(
        set(tasks.tasks["computers-vs-love"].test.labels)
    ) == [0, 1]
