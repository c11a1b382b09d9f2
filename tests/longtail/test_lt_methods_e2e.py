"""Every registered method end to end for one tiny epoch (tiny random ResNet, 16 px images), plus the
stage-2 freezing guarantees and the errors raised before training."""

import json
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hubtools.errors import ConfigError
from hubtools.longtail.methods import METHODS
from hubtools.longtail.splits import LTProfile
from hubtools.longtail.trainer import LongTailTrainConfig, evaluate_model, load_model, train_longtail

torch.set_num_threads(1)

COUNTS = [24, 10, 4]
TINY_RESNET = {
    "model_type": "resnet",
    "options": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}
REQUIRED = {"weighted_ce": {"weight": [1.0, 2.0, 4.0]}}  # options without a default
REPORT_KEYS = {"top1", "balanced_acc", "group_avg_acc", "many_acc", "medium_acc", "few_acc", "macro_f1"}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """Class c = a bright square in quadrant c on dark noise; 24/10/4 train images."""
    root = tmp_path_factory.mktemp("lt_e2e") / "tiny"
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["head", "mid", "tail"])}
    )
    splits = {}
    for split, per_class in (("train", COUNTS), ("validation", [4, 4, 4]), ("test", [5, 5, 5])):
        imgs, labels = [], []
        for c, n in enumerate(per_class):
            for _ in range(n):
                a = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
                r, q = divmod(c, 2)
                a[r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] = 220
                imgs.append(a)
                labels.append(c)
        splits[split] = datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "data"))
    LTProfile(["head", "mid", "tail"], COUNTS, 6.0, head=1, medium=2).to_json(root / "longtail" / "tiny.json")
    return root


def config(tiny_set, out, method, **kw):
    base = dict(
        dataset=str(tiny_set),
        method=method,
        backbone=TINY_RESNET,
        output_dir=out,
        image_size=16,
        num_epochs=1,
        batch_size=8,
        lr=3e-3,
    )
    return LongTailTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tiny_set, tmp_path_factory):
    """method -> model folder, training a second stage's first stage on demand (once per module)."""
    done: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("runs")

    def run(method: str) -> Path:
        if method not in done:
            start = METHODS[method].start_from
            stage1 = run(start) if start else None
            cfg = config(
                tiny_set, root / method, method, stage1=stage1, method_options=REQUIRED.get(method, {})
            )
            done[method] = train_longtail(cfg)
        return done[method]

    return run


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_saves_and_reloads(runs, tiny_set, method):
    folder = runs(method)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert REPORT_KEYS <= set(metrics["test"])
    info = json.loads((folder / "longtail.json").read_text())
    assert info["method"] == method and info["stage"] == METHODS[method].stage
    if METHODS[method].trained:
        log = [json.loads(x) for x in (folder.parent / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in log if "loss" in r]
        assert losses and all(math.isfinite(v) for v in losses)
    # the saved folder (any head: experts, NCM buffers, causal EMA, BBN) reproduces the test metrics
    again = evaluate_model(folder, str(tiny_set))
    assert again["per_class_recall"] == pytest.approx(metrics["test"]["per_class_recall"])
    assert again["macro_auroc"] == pytest.approx(metrics["test"]["macro_auroc"], nan_ok=True)


def _encoder_diff(before: Path, after: Path) -> set[str]:
    a, b = (load_model(folder)[0].backbone.state_dict() for folder in (before, after))
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.mark.parametrize("method", ["gcl_2nd", "disalign", "crt"])
def test_second_stages_freeze_every_encoder_tensor(runs, method):
    stage2 = runs(method)
    stage1 = runs(METHODS[method].start_from)
    assert _encoder_diff(stage1, stage2) == set()  # weights and BN buffers bit-identical
    h1, h2 = (load_model(folder)[0].head.state_dict() for folder in (stage1, stage2))
    assert any(k not in h1 or not torch.equal(h1[k], h2[k]) for k in h2)  # the head changed


def test_mislas_shift_bn_moves_only_bn_running_stats(runs, tiny_set, tmp_path):
    mixup = runs("mixup")
    shifted = runs("mislas")
    changed = _encoder_diff(mixup, shifted)
    assert changed and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
    )
    head0, head1 = (load_model(folder)[0].head.state_dict() for folder in (mixup, shifted))
    assert not torch.equal(head0["weight"], head1["linear.weight"])  # the copied fc keeps training
    assert not torch.equal(head1["scales"], torch.ones(3))
    plain = train_longtail(
        config(tiny_set, tmp_path, "mislas", stage1=mixup, method_options={"shift_bn": False})
    )
    assert _encoder_diff(mixup, plain) == set()


def test_experts_checkpoint_holds_a_truncated_trunk(runs):
    folder = runs("sade")
    cfg = json.loads((folder / "config.json").read_text())
    trunk = cfg["encoder_config"]
    assert trunk["hidden_sizes"] == [8] and trunk["depths"] == [1]  # shared: first half of the stages
    head = load_model(folder)[0].head.state_dict()
    assert sum(k.endswith("classifiers.0.weight") or k == "classifiers.0.weight" for k in head) == 1
    assert {k.split(".")[1] for k in head if k.startswith("branches.")} == {"0", "1", "2"}


def test_sam_uses_cosine_schedule_and_flex_gets_validation_recall(tiny_set, tmp_path):
    out = train_longtail(config(tiny_set, tmp_path / "sam", "sam", num_epochs=2))
    log = [json.loads(x) for x in (out.parent / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in log if "lr" in r]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[0] < 3e-3
    flex = train_longtail(config(tiny_set, tmp_path / "flex", "flex_rs"))
    saved = list((flex.parent / "checkpoints").glob("step_*/custom_checkpoint_1.pkl"))  # 0: LR schedule
    assert len(saved) == 1
    state = torch.load(saved[0], weights_only=False)
    val = json.loads((flex / "metrics.json").read_text())["validation"]["per_class_recall"]
    assert state["recall"] == pytest.approx([v / 100 for v in val])


def test_bad_input_fails_before_training(tiny_set, runs, tmp_path):
    with pytest.raises(ConfigError, match="unknown long-tail method 'sadee'; valid: erm, rs"):
        train_longtail(config(tiny_set, tmp_path, "sadee"))
    with pytest.raises(ConfigError, match="'weighted_ce' needs weight"):
        train_longtail(config(tiny_set, tmp_path, "weighted_ce"))
    with pytest.raises(ConfigError, match="'bbn' takes no option rho"):
        train_longtail(config(tiny_set, tmp_path, "bbn", method_options={"rho": 0.1}))
    with pytest.raises(ConfigError, match="second stage: set stage1 to the folder of a 'gcl' run"):
        train_longtail(config(tiny_set, tmp_path, "gcl_2nd"))
    with pytest.raises(ConfigError, match="mislas needs a linear stage-1 head"):
        train_longtail(config(tiny_set, tmp_path, "mislas", stage1=runs("gcl")))
    assert not (tmp_path / "model").exists()
    bad = tmp_path / "bad_counts"  # a profile whose class counts do not match the train labels
    shutil.copytree(tiny_set / "data", bad / "data")
    LTProfile(["head", "mid", "tail"], [24, 10, 5], 4.8, head=1, medium=2).to_json(
        bad / "longtail" / "tiny.json"
    )
    with pytest.raises(
        ConfigError, match=r"cls_num_list \[24, 10, 5\] differs from the train labels' \[24, 10, 4\]"
    ):
        train_longtail(config(bad, tmp_path / "out", "sade"))
    assert not (tmp_path / "out").exists()


def test_shipped_configs_validate():
    import yaml

    from hubtools.longtail.methods import get_method, method_options

    files = sorted(Path(__file__).parents[2].joinpath("configs", "longtail").glob("mri_patches_*.yaml"))
    assert len(files) >= 8
    for f in files:
        cfg = LongTailTrainConfig(**yaml.safe_load(f.read_text()))
        method = get_method(cfg.method)
        method_options(cfg.method, **cfg.method_options)
        assert (cfg.stage1 is not None) == (method.stage == 2), f.name


def test_rsg_is_training_only(runs):
    rsg, erm = runs("rsg"), runs("erm")
    saved = {k for k in load_file(rsg / "model.safetensors") if not k.startswith("head.")}
    assert saved == {k for k in load_file(erm / "model.safetensors") if not k.startswith("head.")}
    assert set(load_model(rsg)[0].head.state_dict()) == {"weight"}  # the cosine head, no RSG tensors


def test_bbn_with_separate_last_stages(tiny_set, tmp_path):
    out = train_longtail(
        config(tiny_set, tmp_path / "bbn", "bbn", method_options={"bbn_branches": "separate"})
    )
    info = json.loads((out / "longtail.json").read_text())
    assert info["classifier"] == "bbn_separate" and info["classifier_options"]["split"] == 1
    assert json.loads((out / "config.json").read_text())["encoder_config"]["hidden_sizes"] == [
        8
    ]  # trunk without the last stage
    head = load_model(out)[0].head.state_dict()
    assert {k.split(".")[1] for k in head if k.startswith("branches.")} == {"0", "1"}
    assert head["linear.weight"].shape == (3, 32)  # W on [f_u || f_r], 16 features each
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    again = evaluate_model(out, str(tiny_set))
    assert again["per_class_recall"] == pytest.approx(metrics["per_class_recall"])
    with pytest.raises(ConfigError, match="bbn_branches must be 'shared' or 'separate'"):
        train_longtail(config(tiny_set, tmp_path / "x", "bbn", method_options={"bbn_branches": "both"}))
