"""RetiZero training through hubtools.train on a `datasets` image–text dataset, and the merged Hub artifact."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from test_retizero_utils import tiny_processor, tiny_retizero
from transformers import AutoModel

from hubtools.data.offline import fashion_mnist
from hubtools.models.retizero import dirichlet_uncertainty_loss
from hubtools.models.retizero.train import PairsDataError, save_retizero, train_retizero
from hubtools.train import TrainConfig

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


def _pairs(n: int) -> Dataset:
    images, labels = fashion_mnist("test")
    rows = {
        "image": [PILImage.fromarray(images[i]).convert("RGB") for i in range(n)],
        "text": [f"a photo of a {CLASSES[labels[i]]}, a piece of clothing" for i in range(n)],
    }
    return Dataset.from_dict(rows, features=Features({"image": Image(), "text": Value("string")}))


def test_train_updates_only_trainable_parts_and_exports_merged(tmp_path) -> None:
    model, processor = tiny_retizero(), tiny_processor()
    base = {k: v.clone() for k, v in model.vision_model.state_dict().items() if "lora_" not in k}
    config = TrainConfig(output_dir=tmp_path / "run", max_steps=3, batch_size=4, lr=1e-3, log_every=1)
    with torch.no_grad():
        model.logit_scale.fill_(4.6)  # the first step pushes it past the clamp
    result = train_retizero(model, processor, _pairs(12), config)
    trained = result.model.eval()
    assert result.step == 3 and "loss_clip" in result.metrics and "loss_uncertainty" in result.metrics
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert 0.0 <= trained.logit_scale.item() <= trained.config.logit_scale_max
    state = trained.vision_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert any(p.abs().sum() > 0 for n, p in trained.vision_model.named_parameters() if "lora_B" in n)

    out = save_retizero(trained, processor, tmp_path / "art", base_model=["tiny-vit", "all-MiniLM-L6-v2"])
    assert trained.config.vision_lora is not None  # merged on a copy
    loaded = AutoModel.from_pretrained(out).eval()
    assert loaded.config.vision_lora is None and "fundus" in (out / "README.md").read_text()
    batch = dict(processor(images=list(_pairs(2)["image"]), text=["a bag", "a coat"]))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).image_embeds, trained(**batch).image_embeds, rtol=0, atol=1e-5
        )


def test_missing_column_is_a_clear_error(tmp_path) -> None:
    config = TrainConfig(output_dir=tmp_path, max_steps=1, batch_size=2)
    with pytest.raises(PairsDataError, match="caption"):
        train_retizero(tiny_retizero(), tiny_processor(), _pairs(4), config, text_column="caption")


def test_resume_from_an_epoch_boundary_is_exact(tmp_path) -> None:
    """12 rows, batch 4: 3 steps per epoch. Resuming at step 3 must restore the epoch counter (the KL weight of
    step 4 is 1/15, not 0) as well as weights, optimizer and data order."""
    processor, pairs = tiny_processor(), _pairs(12)

    def run(resume: str | None):
        config = TrainConfig(
            output_dir=tmp_path / "run", max_steps=4, batch_size=4, lr=1e-3, save_every=3, resume=resume
        )
        return train_retizero(tiny_retizero(), processor, pairs, config).model.state_dict()

    straight = run(None)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_4")
    resumed = run("auto")
    trainable = [k for k in straight if "lora_" in k or not k.startswith("vision_model.")]
    assert trainable and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bf16_autocast_training_on_cpu(tmp_path) -> None:
    model, processor = tiny_retizero(), tiny_processor()
    batch = dict(processor(images=list(_pairs(4)["image"]), text=["a bag", "a coat", "a shirt", "a dress"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, return_loss=True, kl_anneal=1.0)
    assert out.logits_per_text.dtype == torch.bfloat16
    # The evidential term runs in float32 (digamma/lgamma) on the bf16 logits, whatever the autocast.
    assert out.loss_uncertainty.dtype == torch.float32
    expected = dirichlet_uncertainty_loss(out.logits_per_text.float(), 1.0) + dirichlet_uncertainty_loss(
        out.logits_per_image.float(), 1.0
    )
    assert out.loss_uncertainty.item() == pytest.approx(expected.item(), rel=1e-6)
    config = TrainConfig(
        output_dir=tmp_path / "amp", max_steps=3, batch_size=4, lr=1e-3, mixed_precision="bf16", log_every=1
    )
    result = train_retizero(model, processor, _pairs(12), config)
    records = [json.loads(line) for line in (tmp_path / "amp" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not a bf16 model
