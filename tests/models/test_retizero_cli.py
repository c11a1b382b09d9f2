"""`hubtools retizero build|train|zeroshot|retrieve|export` end to end on tiny towers and real Fashion-MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from test_retizero_utils import tiny_vit
from transformers import AutoModel

from hubtools.data.offline import fashion_mnist, minilm_path
from hubtools.models.retizero.cli import retizero_group

CLASSES = [
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]


def _run(*args: str) -> str:
    result = CliRunner().invoke(retizero_group, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_build_train_zeroshot_retrieve_export(tmp_path) -> None:
    images, labels = fashion_mnist("test")
    pil = [PILImage.fromarray(images[i]).convert("RGB") for i in range(16)]
    Dataset.from_dict(
        {"image": pil[:8], "text": [f"a photo of a {CLASSES[labels[i]]}" for i in range(8)]},
        features=Features({"image": Image(), "text": Value("string")}),
    ).save_to_disk(tmp_path / "pairs")
    Dataset.from_dict(
        {"image": pil, "label": [int(v) for v in labels[:16]]},
        features=Features({"image": Image(), "label": ClassLabel(names=CLASSES)}),
    ).save_to_disk(tmp_path / "labelled")
    tiny_vit().save_pretrained(tmp_path / "vit")

    _run(
        "build",
        "--vision",
        tmp_path / "vit",
        "--text",
        minilm_path(),
        "--out",
        tmp_path / "built",
        "--lora-r",
        2,
        "--projection-dim",
        16,
    )
    assert json.loads((tmp_path / "built" / "config.json").read_text())["vision_lora"]["r"] == 2
    (tmp_path / "train.yaml").write_text(
        f"model: {tmp_path / 'built'}\npairs: {tmp_path / 'pairs'}\nmax_steps: 2\nbatch_size: 4\nlr: 0.001\n"
    )
    out = _run("train", "--config", tmp_path / "train.yaml", "--out", tmp_path / "trained")
    assert "trained 2 steps" in out and (tmp_path / "trained.run" / "metrics.jsonl").exists()

    report = json.loads(
        _run(
            "zeroshot",
            "--model",
            tmp_path / "trained",
            "--data",
            tmp_path / "labelled",
            "--template",
            "a photo of a {}",
            "--out",
            tmp_path / "zs.json",
        )
    )
    assert report["n_images"] == 16 and report["classes"] == CLASSES
    assert 0.0 <= report["top1"] <= report["top3"] <= report["top5"] <= 1.0
    assert json.loads((tmp_path / "zs.json").read_text()) == report
    confusion = np.asarray(report["confusion_matrix"])  # rows: the true labels of the 16 images
    assert confusion.sum() == 16 and confusion.trace() / 16 == report["top1"]
    assert confusion.sum(axis=1).tolist() == np.bincount(labels[:16], minlength=10).tolist()
    assert [report["per_class"][c]["n"] for c in CLASSES] == confusion.sum(axis=1).tolist()
    assert (tmp_path / "zs.png").stat().st_size > 1000
    retrieval = json.loads(
        _run(
            "retrieve",
            "--model",
            tmp_path / "trained",
            "--data",
            tmp_path / "labelled",
            "--similarity",
            "retizero",
            "--normalization",
            "half",
            "--k",
            1,
            "--k",
            3,
            "--out",
            tmp_path / "ret.json",
        )
    )
    assert set(retrieval) == {"n_images", "similarity", "normalization", "p@1", "hit@1", "p@3", "hit@3"}
    assert retrieval["similarity"] == "retizero" and retrieval["normalization"] == "half"
    assert (tmp_path / "ret.png").stat().st_size > 1000

    _run("export", "--model", tmp_path / "trained", "--out", tmp_path / "hub")
    merged = AutoModel.from_pretrained(tmp_path / "hub")
    trained = AutoModel.from_pretrained(tmp_path / "trained")
    assert merged.config.vision_lora is None and trained.config.vision_lora is not None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            merged.get_image_features(x).pooler_output,
            trained.get_image_features(x).pooler_output,
            rtol=0,
            atol=1e-5,
        )


def test_missing_flags_are_clear_errors(tmp_path) -> None:
    result = CliRunner().invoke(retizero_group, ["zeroshot", "--model", str(tmp_path)])
    assert result.exit_code != 0 and "--data" in result.output
    result = CliRunner().invoke(
        retizero_group, ["train", "--model", "m", "--pairs", "p", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "exactly one of --epochs and --max-steps" in result.output


def test_shipped_config_validates() -> None:
    from hubtools.config import load_config
    from hubtools.models.retizero.cli import TrainCLIConfig

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "configs" / "retizero" / "pretrain_fundus.yaml", TrainCLIConfig)
    assert config.epochs == 15 and config.batch_size == 128 and config.lr == 1e-4
