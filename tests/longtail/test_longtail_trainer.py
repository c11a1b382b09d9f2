"""`hubtools longtail train|eval` end to end on a tiny long-tailed image folder with a tiny ResNet."""

import json

import datasets
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard

from hubtools.errors import ConfigError
from hubtools.longtail.cli import longtail_group
from hubtools.longtail.splits import LTProfile
from hubtools.longtail.trainer import LongTailTrainConfig, evaluate_model, load_model, train_longtail

torch.set_num_threads(1)

COUNTS = [24, 10, 4]
TINY_RESNET = {
    "model_type": "resnet",
    "options": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}


def images(label, n, rng):
    # class c: a bright square in corner c on noise, so a tiny model can learn something in 2 epochs
    out = []
    for _ in range(n):
        a = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
        r, c = divmod(label, 2)
        a[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = 220
        out.append(a)
    return out


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("lt") / "tiny_lt"
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["head", "mid", "tail"])}
    )
    splits = {}
    for split, per_class in (("train", COUNTS), ("validation", [4, 4, 4]), ("test", [5, 5, 5])):
        imgs, labels = [], []
        for c, n in enumerate(per_class):
            imgs += images(c, n, rng)
            labels += [c] * n
        splits[split] = datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "data"))
    LTProfile(["head", "mid", "tail"], COUNTS, 6.0, head=1, medium=2).to_json(root / "longtail" / "tiny.json")
    return root


def config(tiny_set, out, method="erm", **kw):
    return LongTailTrainConfig(
        dataset=str(tiny_set),
        method=method,
        backbone=TINY_RESNET,
        output_dir=out,
        image_size=16,
        num_epochs=2,
        batch_size=8,
        lr=3e-3,
        **kw,
    )


@pytest.fixture(scope="module")
def erm_model(tiny_set, tmp_path_factory):
    return train_longtail(config(tiny_set, tmp_path_factory.mktemp("erm")))


def test_erm_artifact_card_and_reload(tiny_set, erm_model):
    names = {p.name for p in erm_model.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "longtail.json",
        "metrics.json",
        "README.md",
    } <= names
    metrics = json.loads((erm_model / "metrics.json").read_text())
    keys = {
        "top1",
        "balanced_acc",
        "group_avg_acc",
        "many_acc",
        "medium_acc",
        "few_acc",
        "macro_f1",
        "macro_auroc",
    }
    assert keys <= set(metrics["test"]) and metrics["selected_epoch"] in (0, 1)
    card = ModelCard.load(erm_model / "README.md")
    values = {m.metric_type: m.metric_value for m in card.data.eval_results}
    assert values["balanced_acc"] == pytest.approx(metrics["test"]["balanced_acc"], abs=1e-3)
    info = json.loads((erm_model / "longtail.json").read_text())
    assert info["cls_num_list"] == COUNTS and info["method"] == "erm"
    again = evaluate_model(erm_model, str(tiny_set))
    assert again["top1"] == pytest.approx(metrics["test"]["top1"])
    assert again["per_class_recall"] == pytest.approx(metrics["test"]["per_class_recall"])


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_stage2_freezes_encoder_and_trains_head(tiny_set, erm_model, tmp_path, method):
    out = train_longtail(config(tiny_set, tmp_path, method, stage1=erm_model))
    (stage1, _), (stage2, _) = load_model(erm_model), load_model(out)
    before, after = stage1.backbone.state_dict(), stage2.backbone.state_dict()
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)
    for k in before:  # every encoder weight and BN buffer bit-identical
        assert torch.equal(before[k], after[k]), k
    head0, head1 = stage1.head.state_dict(), stage2.head.state_dict()
    if method == "lws":
        assert torch.equal(head0["weight"], head1["linear.weight"])
        assert not torch.equal(head1["scales"], torch.ones(3))
    else:
        assert not torch.equal(head0["weight"], head1["weight"])


def test_la_posthoc_picks_tau_and_reloads(tiny_set, erm_model, tmp_path):
    out = train_longtail(config(tiny_set, tmp_path, "la_posthoc", stage1=erm_model))
    model, info = load_model(out)
    pi = np.asarray(COUNTS) / sum(COUNTS)
    assert info["tau"] in [0.25 * i for i in range(9)]
    np.testing.assert_allclose(info["logit_offset"], -info["tau"] * np.log(pi), rtol=1e-5, atol=1e-6)
    assert torch.equal(model.logit_offset, torch.tensor(info["logit_offset"]))


def test_cli_ldam_drw_and_eval(tiny_set, tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text(
        f"dataset: {tiny_set}\nmethod: ldam_drw\nimage_size: 16\nnum_epochs: 2\nbatch_size: 8\n"
        f"backbone:\n  model_type: resnet\n  options: {json.dumps(TINY_RESNET['options'])}\n"
    )
    runner = CliRunner()
    res = runner.invoke(
        longtail_group, ["train", str(yaml), "--output", str(tmp_path / "run"), "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "balanced_acc=" in res.output
    info = json.loads((tmp_path / "run" / "model" / "longtail.json").read_text())
    assert info["classifier"] == "cosine" and info["method_options"] == {"num_epochs": 2}
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    res = runner.invoke(
        longtail_group, ["eval", "--model", str(tmp_path / "run" / "model"), "--dataset", str(tiny_set)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["num_samples"] == 15


def test_bad_input_fails_before_training(tiny_set, erm_model, tmp_path):
    with pytest.raises(ConfigError, match="second stage: set stage1"):
        train_longtail(config(tiny_set, tmp_path, "crt"))
    with pytest.raises(ConfigError, match="unknown long-tail method 'ldam'"):
        train_longtail(config(tiny_set, tmp_path, "ldam"))
    with pytest.raises(ConfigError, match="takes no option"):
        train_longtail(config(tiny_set, tmp_path, "erm", method_options={"gamma": 2}))
    with pytest.raises(ConfigError, match="trained at image_size 16"):
        train_longtail(
            config(tiny_set, tmp_path, "crt", stage1=erm_model).model_copy(update={"image_size": 24})
        )
    assert not (tmp_path / "model").exists()
    res = CliRunner().invoke(longtail_group, ["train", "--dataset", str(tiny_set), "--method", "nope"])
    assert res.exit_code != 0 and "valid: erm" in res.output


def test_tau_norm_posthoc(tiny_set, erm_model, tmp_path):
    out = train_longtail(config(tiny_set, tmp_path, "tau_norm", stage1=erm_model))
    model, info = load_model(out)
    assert info["classifier"] == "tau_norm" and info["classifier_options"]["tau"] == info["tau"]
    w = load_model(erm_model)[0].head.weight
    expected = w / w.norm(dim=1, keepdim=True).pow(info["tau"])
    torch.testing.assert_close(model.head.normalized_weight(), expected)


def test_shared_loop_passes_epochs_to_the_sampler(tmp_path):
    from hubtools.longtail.samplers import get_sampler
    from hubtools.train import TrainConfig, train

    labels = np.repeat(np.arange(3), COUNTS)
    sampler = get_sampler("progressive", labels, COUNTS, num_epochs=3)
    data = torch.utils.data.TensorDataset(torch.randn(len(labels), 2), torch.as_tensor(labels))
    model = torch.nn.Linear(2, 3)
    seen = []

    def loss_fn(m, batch):
        seen.append(sampler.epoch)
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    cfg = TrainConfig(output_dir=tmp_path, num_epochs=3, batch_size=19)
    train(model, data, loss_fn, cfg, sampler=sampler)
    assert seen == [0, 0, 1, 1, 2, 2]


def test_recipe_settings_reach_the_run(tiny_set, tmp_path):
    """SAM trains 1.8x the recipe's epochs; seql gets the few-group start; augmentation changes the weights."""
    sam = json.loads((train_longtail(config(tiny_set, tmp_path / "sam", "sam")) / "longtail.json").read_text())
    assert sam["num_epochs"] == 4  # round(2 * 1.8)
    seql = json.loads((train_longtail(config(tiny_set, tmp_path / "seql", "seql")) / "longtail.json").read_text())
    assert seql["method_options"]["medium"] == 2 and seql["augmentation"] == "monica"
    plain = train_longtail(config(tiny_set, tmp_path / "plain", augmentation="none"))
    augmented = train_longtail(config(tiny_set, tmp_path / "aug"))
    a, b = load_model(plain)[0].state_dict(), load_model(augmented)[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    again = train_longtail(config(tiny_set, tmp_path / "aug2"))
    c = load_model(again)[0].state_dict()
    assert all(torch.equal(b[k], c[k]) for k in b)  # seeded: the augmentation draws repeat exactly


def test_sampler_option_replaces_the_method_sampler(tiny_set, erm_model, tmp_path):
    folder = train_longtail(
        config(tiny_set, tmp_path / "crt", "crt", stage1=erm_model, method_options={"sampler": "flex_rs"})
    )
    info = json.loads((folder / "longtail.json").read_text())
    assert info["sampler"] == "flex" and info["resolved_options"]["flex_mode"] == "instance"
