"""`longtail train` from a Hub dataset repo, `longtail table` over finished runs, and 2 processes = 1 process.

Data: a small long-tailed cut of real Fashion-MNIST (Debian dataset-fashion-mnist), 4 classes.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from hubtools.data.offline import FASHION_MNIST_CLASSES, DataUnavailable, fashion_mnist
from hubtools.longtail.cli import longtail_group
from hubtools.longtail.splits import LTProfile
from hubtools.testing import data_missing

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
CLASSES = [1, 8, 5, 0]  # trouser, bag, sandal, t-shirt: separable enough for a tiny model in one epoch
COUNTS = [128, 64, 40, 24]  # 256 train images: whole batches of 32 (1 process) and 2 x 16 (2 processes)
CFG = "fmnist_tiny"
TINY_RESNET = {
    "model_type": "resnet",
    "options": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}
# LayerNorm only: with no batch statistics, 2 x 16 images under DDP is the same step as 32 images in one process.
TINY_VIT = {
    "model_type": "vit",
    "options": {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "image_size": 16,
        "patch_size": 4,
    },
}


@pytest.fixture(scope="module")
def fmnist_lt(tmp_path_factory):
    """A `longtail build`-style folder: data/ (save_to_disk), longtail/fmnist_tiny.json, README.md."""
    try:
        train_x, train_y = fashion_mnist("train")
        test_x, test_y = fashion_mnist("test")
    except DataUnavailable as exc:
        data_missing(exc)
    root = tmp_path_factory.mktemp("lt2") / "fmnist_tiny"
    names = [FASHION_MNIST_CLASSES[c] for c in CLASSES]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, (x, y), per_class, offset in (
        ("train", (train_x, train_y), COUNTS, 0),
        ("validation", (train_x, train_y), [12] * 4, 1000),
        ("test", (test_x, test_y), [25] * 4, 0),
    ):
        images, labels = [], []
        for new, (orig, n) in enumerate(zip(CLASSES, per_class, strict=True)):
            rows = np.flatnonzero(y == orig)[offset : offset + n]
            images += list(x[rows])
            labels += [new] * n
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "data"))
    LTProfile(names, COUNTS, COUNTS[0] / COUNTS[-1], head=1, medium=3).to_json(
        root / "longtail" / f"{CFG}.json"
    )
    (root / "README.md").write_text("---\nlicense: mit\n---\n# Fashion-MNIST, tiny long-tailed cut\n")
    return root


def write_config(path: Path, dataset: str, out: Path, **kw) -> Path:
    cfg = {
        "dataset": dataset,
        "method": "erm",
        "backbone": TINY_RESNET,
        "output_dir": str(out),
        "image_size": 16,
        "num_epochs": 1,
        "batch_size": 32,
        "lr": 3e-3,
        **kw,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> str:
    res = CliRunner().invoke(longtail_group, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_train_from_hub_repo_then_table(fmnist_lt, hub, repo_id, tmp_path):
    from hubtools.longtail.datasets import publish

    assert publish(fmnist_lt, repo_id, private=True) == CFG
    hub_run = tmp_path / "hub-erm"
    # flags only, as a user would type it: the default backbone (a random ResNet-50-sized config)
    out = cli(
        "train", "--dataset", repo_id, "--config", CFG, "--method", "erm", "--epochs", "1",
        "--batch-size", "32", "--image-size", "16", "--lr", "3e-3", "--seed", "1", "--output", str(hub_run),
    )  # fmt: skip
    assert "balanced_acc=" in out and f"saved {hub_run / 'model'}" in out
    info = json.loads((hub_run / "model" / "longtail.json").read_text())
    assert info["dataset"] == repo_id and info["config"] == CFG
    assert info["cls_num_list"] == COUNTS and (info["head"], info["medium"]) == (1, 3)  # the repo's profile
    metrics = json.loads((hub_run / "model" / "metrics.json").read_text())
    # evaluating the saved model again on the Hub copy of the test split gives the recorded numbers
    again = json.loads(cli("eval", "--model", str(hub_run / "model"), "--dataset", repo_id, "--config", CFG))
    for k in ("top1", "balanced_acc", "few_acc", "macro_auroc"):
        assert again[k] == pytest.approx(metrics["test"][k], abs=1e-9), k
    assert again["num_samples"] == 100

    # two more runs on the local folder: a second ERM seed and a re-balancing method
    local = str(fmnist_lt)
    runs = [hub_run, tmp_path / "erm-s2", tmp_path / "bs-s1"]
    cli("train", str(write_config(tmp_path / "b.yaml", local, runs[1])), "--seed", "2")
    cli(
        "train",
        str(write_config(tmp_path / "c.yaml", local, runs[2], method="balanced_softmax")),
        "--seed",
        "1",
    )
    md_path = tmp_path / "cmp" / "table.md"
    out = cli("table", *map(str, runs), "--output", str(md_path))
    md = md_path.read_text()
    assert md.strip() in out
    erm = [json.loads((r / "model" / "metrics.json").read_text())["test"] for r in runs[:2]]
    bs = json.loads((runs[2] / "model" / "metrics.json").read_text())["test"]
    header = md.splitlines()[0]
    assert header.startswith("| Family | Method | Many | Medium | Few | Group avg | Balanced acc |")
    erm_row = next(line for line in md.splitlines() if "| erm |" in line).split("|")
    few = [e["few_acc"] for e in erm]
    assert erm_row[5].strip() == f"{np.mean(few):.1f} ± {np.std(few, ddof=1):.1f}"
    assert erm_row[-2].strip() == "2"
    bs_row = next(line for line in md.splitlines() if "| balanced_softmax |" in line).split("|")
    assert bs_row[1].strip() == "re-weighting" and bs_row[7].strip() == f"{bs['balanced_acc']:.1f}"
    assert md.index("| erm |") < md.index("| balanced_softmax |")  # MONICA order: baseline first
    assert (tmp_path / "cmp" / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # runs on different class counts cannot share a table; a folder that is no run is named
    odd = tmp_path / "odd"
    shutil.copytree(runs[1], odd)
    info = json.loads((odd / "model" / "longtail.json").read_text())
    (odd / "model" / "longtail.json").write_text(json.dumps({**info, "cls_num_list": [1, 1, 1, 1]}))
    res = CliRunner().invoke(longtail_group, ["table", str(runs[1]), str(odd)])
    assert res.exit_code == 1 and "different class counts" in res.output
    res = CliRunner().invoke(longtail_group, ["table", str(tmp_path / "cmp")])
    assert res.exit_code == 1 and "not a `hubtools longtail train` run" in res.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(200)  # the child process gets 140 s
def test_two_processes_train_the_same_model_as_one(fmnist_lt, tmp_path):
    from hubtools.config import load_config
    from hubtools.longtail.classifiers import get_classifier
    from hubtools.longtail.trainer import (
        BackboneSpec,
        LongTailTrainConfig,
        build_backbone,
        feature_dim,
        load_model,
        train_longtail,
    )

    # without augmentation: its draws come from each process's own RNG, so 2 processes augment the
    # images differently from 1 (runs then agree within seed noise, not to 1e-4)
    plain = {"backbone": TINY_VIT, "augmentation": "none"}
    one = tmp_path / "one"
    train_longtail(
        load_config(write_config(tmp_path / "one.yaml", str(fmnist_lt), one, **plain), LongTailTrainConfig)
    )
    two = tmp_path / "two"
    cfg = write_config(tmp_path / "two.yaml", str(fmnist_lt), two, batch_size=16, **plain)
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "hubtools.cli", "longtail", "train", str(cfg),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("saved ") == 1  # only rank 0 writes the model folder and reports it
    a, b = (load_file(d / "model" / "model.safetensors") for d in (one, two))
    ha, hb = (load_model(d / "model")[0].head.state_dict() for d in (one, two))
    for name in ha:
        torch.testing.assert_close(ha[name], hb[name], rtol=1e-4, atol=1e-5)
    for name in a:  # float32 sums in another order: a weight near 0 may move by ~1e-5
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=3e-5)
    torch.manual_seed(1)  # the initial weights, built as train_longtail builds them
    backbone = build_backbone(BackboneSpec(**TINY_VIT))
    init = get_classifier("linear", feature_dim(backbone, 16), 4).state_dict()
    assert not torch.allclose(
        init["weight"], ha["weight"], atol=1e-3
    )  # the runs trained: equality means something
    ma, mb = (json.loads((d / "model" / "metrics.json").read_text())["test"] for d in (one, two))
    for k in ("top1", "balanced_acc", "many_acc", "medium_acc", "few_acc"):
        assert abs(ma[k] - mb[k]) <= 1.0 + 1e-9, k  # at most one of 100 test images flips on a near tie
    assert ma["macro_auroc"] == pytest.approx(mb["macro_auroc"], abs=0.1)


@pytest.mark.timeout(300)  # the child process gets 240 s
def test_throughput_benchmark_smoke(fmnist_lt, tmp_path):
    """`benchmarks/longtail_throughput.py --smoke`: both loops see the same images; envelope and table written."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "longtail_throughput.py"),
            "--smoke",
            "--data",
            str(fmnist_lt),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "longtail_throughput.json").read_text())
    assert result["smoke"] and result["config"]["repeats"] == 1 and not result["config"]["ddp"]
    # one round: one run per loop, seed = the round's index
    runs = {r["arm"]: r for r in result["runs"]}
    assert set(runs) == {"bare", "shared_loop", "train_longtail"} and all(r["seed"] == 0 for r in runs.values())
    bare, shared = runs["bare"]["metrics"], runs["shared_loop"]["metrics"]
    # 1 epoch of 256 images in whole batches of 128 (drop_last in both loops)
    assert result["details"]["train_images"] == sum(COUNTS)
    assert bare["images"] == shared["images"] == result["details"]["images_per_run"] == 256
    assert bare["images_per_s"] == pytest.approx(256 / bare["seconds"])
    assert shared["images_per_s"] == pytest.approx(256 / shared["loop_seconds"])
    assert shared["call_seconds"] >= shared["loop_seconds"] > 0
    assert runs["train_longtail"]["metrics"]["seconds"] > 0
    [table] = result["tables"]
    rows = {row[0]: row for row in table["rows"]}
    assert rows["bare PyTorch loop"][-1] == 1.0
    loop = rows["hubtools.train loop (as longtail train; timed loop)"]
    assert loop[-1] == pytest.approx(shared["images_per_s"] / bare["images_per_s"], abs=0.006)
    md = (tmp_path / "results" / "longtail_throughput.md").read_text()
    assert "| bare PyTorch loop | 1 |" in md and f"{bare['images_per_s']:.0f}" in md
