"""Trained long-tail classifiers as transformers models: every head kind, pipeline, and without hubtools."""

import json
import os
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata
from sklearn.datasets import load_digits
from torch import nn
from transformers import AutoModelForImageClassification, ResNetConfig, ResNetModel, pipeline

from hubtools.errors import ArtifactError
from hubtools.longtail.classifiers import NCMClassifier, get_classifier
from hubtools.longtail.convert import to_transformers
from hubtools.longtail.experts import BBNBranchHead, ExpertHeads
from hubtools.longtail.splits import LTProfile
from hubtools.longtail.trainer import (
    HEAD_FILE,
    ImageTensors,
    LongTailModel,
    LongTailTrainConfig,
    feature_dim,
    load_model,
    normalize,
    predict,
    train_longtail,
)
from hubtools.models.longtail_classifier import CLASSIFIER_KINDS, LongTailForImageClassification

torch.set_num_threads(1)

NAMES = ["zero", "one", "two"]
COUNTS = [30, 12, 5]
SIZE = 16
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}


def _randomise(module: nn.Module) -> None:
    # Random values everywhere (BN statistics included), so that a misplaced key or a wrong formula shows.
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor)
                )


def tiny_model(kind: str) -> tuple[LongTailModel, dict]:
    """A LongTailModel with head ``kind`` built the way the trainer builds it, and its longtail.json info."""
    torch.manual_seed(0)
    backbone = ResNetModel(ResNetConfig(**TINY_RESNET))
    dim, classes = feature_dim(backbone, SIZE), len(NAMES)
    options: dict = {}
    if kind == "experts":
        head, options = ExpertHeads.split_backbone(backbone, dim, classes)
    elif kind == "bbn_separate":
        head, options = BBNBranchHead.split_backbone(backbone, dim, classes)
    elif kind in ("lws", "mislas", "disalign", "tau_norm"):
        options = {"tau": 0.7} if kind == "tau_norm" else {}
        head = get_classifier(kind, dim, classes, linear=nn.Linear(dim, classes), **options)
    elif kind == "de_confound":
        options = {"num_heads": 2, "tau": 16.0, "gamma": 1 / 32, "alpha": 1.5, "momentum": 0.9}
        head = get_classifier(kind, dim, classes, **options)
    else:
        head = get_classifier(kind, dim, classes)
    _randomise(backbone)
    _randomise(head)
    if kind == "ncm":
        head = NCMClassifier(dim, classes).fit(torch.randn(12, dim), torch.arange(12) % classes)
    model = LongTailModel(backbone, head).eval()
    info = {
        "method": kind,
        "classifier": kind,
        "classifier_options": options,
        "feature_dim": dim,
        "cls_num_list": COUNTS,
        "class_names": NAMES,
        "logit_offset": None,
    }
    if kind == "linear":  # la_posthoc: a linear head plus a fixed offset
        model.logit_offset = (
            -0.75 * torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)).float()
        )
        info["logit_offset"] = model.logit_offset.tolist()
    return model, info


@pytest.mark.parametrize("kind", [*CLASSIFIER_KINDS])
def test_every_head_kind_gives_the_trainers_logits(kind, tmp_path):
    model, info = tiny_model(kind)
    to_transformers(model, info).save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, LongTailForImageClassification) and not loaded.training
    assert loaded.config.id2label == dict(enumerate(NAMES)) and loaded.config.cls_num_list == COUNTS
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, got = model(x), loaded(pixel_values=x).logits
    assert got.shape == (4, len(NAMES))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert expected.std() > 1e-3  # not a degenerate head that any model would match
    labels = torch.tensor([0, 1, 2, 0])
    loss = loaded(pixel_values=x, labels=labels).loss
    torch.testing.assert_close(loss, nn.functional.cross_entropy(expected, labels), rtol=0, atol=1e-5)


def test_a_head_that_does_not_fit_the_config_is_an_error():
    model, info = tiny_model("lws")
    with pytest.raises(ArtifactError, match="(?s)'cosine'.*head.scales"):
        to_transformers(model, {**info, "classifier": "cosine"})


def _digits(label: int, n: int, offset: int) -> list[np.ndarray]:
    digits = load_digits()
    picks = np.flatnonzero(digits.target == label)[offset : offset + n]
    return [np.repeat((digits.images[i] * 255 / 16).astype(np.uint8)[..., None], 3, axis=2) for i in picks]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch ERM run on a long-tailed set of real digit images (classes 0, 1, 2)."""
    root = tmp_path_factory.mktemp("digits") / "digits_lt"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    splits = {}
    for split, per_class, offset in (
        ("train", COUNTS, 0),
        ("validation", [4] * 3, 40),
        ("test", [5] * 3, 50),
    ):
        imgs, labels = [], []
        for c, n in enumerate(per_class):
            imgs += _digits(c, n, offset)
            labels += [c] * n
        splits[split] = datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "data"))
    LTProfile(NAMES, COUNTS, 6.0, head=1, medium=2).to_json(root / "longtail" / "tiny.json")
    cfg = LongTailTrainConfig(
        dataset=str(root),
        backbone={"model_type": "resnet", "options": TINY_RESNET},
        output_dir=tmp_path_factory.mktemp("run"),
        image_size=SIZE,
        num_epochs=2,
        batch_size=8,
        lr=3e-3,
    )
    return train_longtail(cfg)


def real_images() -> list[Image.Image]:
    """Photos of other sizes and aspect ratios (the processor must resize as the trainer does) and digits."""
    photos = [Image.fromarray(f()) for f in (skdata.astronaut, skdata.chelsea, skdata.coffee)]
    return photos + [Image.fromarray(a).resize((24, 24)) for c in range(3) for a in _digits(c, 1, 60)]


def image_split(images: list[Image.Image]) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": [0] * len(images)}, features=features)


def test_saved_folder_is_a_transformers_image_classifier(trained):
    names = {p.name for p in trained.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_longtail_classifier.py",
        "modeling_longtail_classifier.py",
        "preprocessor_config.json",
        "longtail.json",
        "metrics.json",
        "README.md",
    } <= names
    assert HEAD_FILE not in names
    config = json.loads((trained / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("LongTailForImageClassification")
    processor = json.loads((trained / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "ViTImageProcessor"
    assert processor["size"] == {"height": SIZE, "width": SIZE} and processor["resample"] == Image.BICUBIC
    assert "trust_remote_code=True" in (trained / "README.md").read_text()


def test_pipeline_predicts_the_trainers_argmax_on_real_images(trained):
    model, info = load_model(trained)
    images = real_images()
    logits = predict(model, ImageTensors(image_split(images), info["image_size"]))
    classify = pipeline("image-classification", model=str(trained))
    predicted = [out[0]["label"] for out in classify(images, top_k=1)]
    assert predicted == [NAMES[i] for i in logits.argmax(1).tolist()]
    scores = classify(images[:1], top_k=3)[0]
    expected = torch.softmax(logits[0], 0)
    assert {d["label"]: d["score"] for d in scores} == pytest.approx(
        {NAMES[i]: float(expected[i]) for i in range(3)}, abs=1e-4
    )


def test_load_model_reads_new_and_old_folders(trained, tmp_path):
    model, info = load_model(trained)
    classifier = AutoModelForImageClassification.from_pretrained(trained).eval()
    x = normalize(torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8))
    with torch.no_grad():
        expected = classifier(pixel_values=x).logits
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    # The earlier format: the backbone's own folder + head.safetensors + longtail.json.
    old = tmp_path / "old"
    model.backbone.save_pretrained(old)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, old / HEAD_FILE)
    (old / "longtail.json").write_text(json.dumps(info))
    again, again_info = load_model(old)
    assert again_info == info
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, rtol=0, atol=1e-6)
    (old / HEAD_FILE).unlink()
    with pytest.raises(ArtifactError, match="head.safetensors.*'resnet'"):
        load_model(old)


def test_loads_without_hubtools(trained, tmp_path):
    x = normalize(torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8))
    model, _ = load_model(trained)
    with torch.no_grad():
        expected = model(x)
    torch.save(x, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "logits.pt")
    image = tmp_path / "cat.png"
    real_images()[1].save(image)
    label = NAMES[int(predict(model, ImageTensors(image_split([Image.open(image)]), SIZE)).argmax())]
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["hubtools"] = None  # the remote code must not need hubtools
        try:
            import hubtools
        except ImportError:
            pass
        else:
            raise SystemExit("hubtools is still importable")
        torch.set_num_threads(1)
        from transformers import AutoModelForImageClassification, pipeline
        folder = {str(trained)!r}
        m = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        expected = torch.load({str(tmp_path / "logits.pt")!r}, weights_only=True)
        with torch.no_grad():
            got = m(pixel_values=x).logits
        assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
        classify = pipeline("image-classification", model=folder, trust_remote_code=True)
        print(type(m).__name__, classify({str(image)!r}, top_k=1)[0]["label"])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["LongTailForImageClassification", label]
