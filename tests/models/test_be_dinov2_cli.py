"""`hubtools be-dinov2 expand|pretrain|finetune|forgetting|convert` end to end on tiny models and real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bedinov2_testutils import retina_crops, tiny_dinov2, to_torch_hub
from click.testing import CliRunner
from huggingface_hub import HfApi
from PIL import Image
from transformers import AutoModelForImageClassification

from hubtools.cli import main
from hubtools.models.be_dinov2 import BeDinov2Model
from hubtools.models.be_dinov2.downstream import predict_proba
from hubtools.pretrain.data import labelled_images


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, ["be-dinov2", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "dinov2-tiny"
    tiny_dinov2(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=2, patch_size=4, image_size=16
    ).save_pretrained(folder)
    return folder


def test_expand_push_and_forgetting_is_zero_at_init(
    base_dir: Path, tmp_path: Path, hub, repo_id: str
) -> None:
    out = tmp_path / "be"
    _run(
        "expand",
        "--base",
        str(base_dir),
        "--positions",
        "1,3",
        "--init",
        "zero_out",
        "--out",
        str(out),
        "--push",
        repo_id,
    )
    model = BeDinov2Model.from_pretrained(out)
    assert model.config.expanded_layer_indices == [2, 5] and model.config.expansion_init == "zero_out"
    card = (out / "README.md").read_text()
    assert "`expanded_layer_indices` | `[2, 5]`" in card and "fundus" in card
    assert json.loads((out / "preprocessor_config.json").read_text())["do_center_crop"] is False
    assert "modeling_be_dinov2.py" in HfApi().list_repo_files(repo_id)

    report_path = tmp_path / "forgetting.json"
    _run(
        "forgetting",
        "--before",
        str(base_dir),
        "--after",
        str(out),
        "--data",
        "sklearn:digits",
        "--image-size",
        "16",
        "--max-samples",
        "300",
        "--k",
        "5",
        "--out",
        str(report_path),
    )
    report = json.loads(report_path.read_text())
    for metric in ("knn_accuracy", "linear_probe_accuracy"):
        assert (
            report[metric]["forgetting"] == 0.0 and report[metric]["before"] > 0.15
        )  # chance 0.1; exact identity


def test_pretrain_from_image_folder_with_yaml_config(base_dir: Path, tmp_path: Path) -> None:
    be = tmp_path / "be"
    _run("expand", "--base", str(base_dir), "--positions", "3", "--out", str(be))
    images = tmp_path / "fundus"
    images.mkdir()
    crops = retina_crops(6, 32, seed=3)
    for i, crop in enumerate(crops):
        pixels = (
            crop * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
            + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        ).clamp(0, 1)
        Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(images / f"{i}.png")
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        f"model: {be}\ntrain_data: {images}\nout: {tmp_path / 'adapted'}\nmax_steps: 2\n"
        "batch_size: 3\nimage_size: 32\nglobal_crop_size: 16\nlocal_crop_size: 8\nn_local_crops: 2\n"
        "head_out_dim: 32\nhead_hidden_dim: 16\nhead_bottleneck_dim: 8\n"
    )
    output = _run("pretrain", "--config", str(config))
    printed = json.loads(output[output.rindex('{"out"') :])
    assert printed["steps"] == 2 and np.isfinite(printed["loss"])
    adapted = BeDinov2Model.from_pretrained(tmp_path / "adapted")
    before = BeDinov2Model.from_pretrained(be).state_dict()
    moved = {k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("encoder.layer.4.") for k in moved)
    assert (tmp_path / "adapted-run" / "checkpoints" / "step_2").is_dir()
    assert "DINO + iBOT + KoLeo" in (tmp_path / "adapted" / "README.md").read_text()

    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: x\n")
    result = CliRunner().invoke(main, ["be-dinov2", "pretrain", "--config", str(bad)])
    assert result.exit_code != 0 and "modle" in result.output


def test_finetune_and_few_shot_on_digits(base_dir: Path, tmp_path: Path) -> None:
    common = [
        "--model",
        str(base_dir),
        "--data",
        "sklearn:digits",
        "--image-size",
        "16",
        "--max-samples",
        "400",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--ordinal-weight",
        "0",
    ]
    _run("finetune", *common, "--mode", "full", "--out", str(tmp_path / "lin"), "--lr", "0.003")
    results = json.loads((tmp_path / "lin" / "results.json").read_text())
    # Checkpoint selection: the reported validation kappa is the best one logged during training.
    logged = [
        json.loads(line) for line in (tmp_path / "lin" / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    best = max(r["val_kappa_quadratic"] for r in logged if "val_kappa_quadratic" in r)
    assert results["val"]["kappa_quadratic"] == pytest.approx(best)
    # The saved classifier reproduces the reported test accuracy on the written split.
    split = json.loads((tmp_path / "lin" / "split.json").read_text())
    data = labelled_images("sklearn:digits", 16, max_samples=400)
    model = AutoModelForImageClassification.from_pretrained(
        tmp_path / "lin" / "model", trust_remote_code=True
    )
    test = data.subset(split["test"])
    accuracy = float((predict_proba(model, test).argmax(1) == test.labels.numpy()).mean())
    assert accuracy == pytest.approx(results["test"]["accuracy"]) and len(split["test"]) == len(test)
    _run(
        "finetune", *common, "--few-shot", "3", "--folds", "2", "--out", str(tmp_path / "fs"), "--lr", "0.01"
    )
    fs = json.loads((tmp_path / "fs" / "results.json").read_text())["few_shot"]["3-shot"]
    assert fs["kappa_quadratic"]["n"] == 2 and "ci_low" in fs["accuracy"]


def test_convert_original_weights(tmp_path: Path) -> None:
    base = tiny_dinov2(num_hidden_layers=5, hidden_size=64, num_attention_heads=1)
    pth = tmp_path / "bedinoret.pth"
    torch.save(to_torch_hub(base), pth)
    _run("convert", "--pth", str(pth), "--out", str(tmp_path / "conv"), "--expanded-indices", "2,4")
    model = BeDinov2Model.from_pretrained(tmp_path / "conv")
    assert model.config.expanded_layer_indices == [2, 4] and model.config.original_num_hidden_layers == 3
    assert model.config.expansion_positions == [1, 2]
    x = retina_crops(2, 56)
    with torch.no_grad():
        assert torch.equal(model(x).last_hidden_state, base(x).last_hidden_state)

    (tmp_path / "broken.pth").write_bytes(pth.read_bytes()[:100])
    result = CliRunner().invoke(
        main, ["be-dinov2", "convert", "--pth", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "broken.pth" in result.output and not (tmp_path / "x").exists()
    result = CliRunner().invoke(
        main,
        [
            "be-dinov2",
            "expand",
            "--base",
            str(tmp_path / "conv"),
            "--positions",
            "0,99",
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert result.exit_code == 1 and "already expanded" in result.output
