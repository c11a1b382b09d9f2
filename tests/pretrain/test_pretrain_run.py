"""Continued pretraining on real fundus tiles runs through hubtools.train, keeps originals frozen, resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from hubtools.models.be_dinov2 import BeDinov2Model, expand_blocks
from hubtools.pretrain import PretrainConfig, pretrain
from hubtools.pretrain.data import retina_tiles
from hubtools.train import list_checkpoints


def _tiny_be() -> BeDinov2Model:
    torch.manual_seed(0)
    base = Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=4,
            image_size=16,
            layerscale_value=0.1,
        )
    )
    return expand_blocks(base, (1,))


def _config(out: Path) -> PretrainConfig:
    return PretrainConfig(
        output_dir=out,
        max_steps=4,
        save_every=2,
        log_every=1,
        batch_size=4,
        lr=1e-3,
        global_crop_size=16,
        local_crop_size=8,
        n_local_crops=2,
        head_out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        max_grad_norm=3.0,
        freeze_prototypes_fraction=0.25,
    )


def test_pretrain_runs_keeps_originals_and_resumes_exactly(tmp_path: Path) -> None:
    data = retina_tiles(8, size=24, tile=256)
    be = _tiny_be()
    original = {k: v.clone() for k, v in be.state_dict().items()}
    full = pretrain(be, data, _config(tmp_path / "a"))
    teacher = full.backbone.state_dict()
    changed = {k for k in original if not torch.equal(original[k], teacher[k])}
    assert changed and all(k.startswith("encoder.layer.2.") for k in changed)  # only the inserted block moved
    student = full.student.state_dict()
    assert all(
        torch.equal(original[k], student[f"backbone.{k}"])
        for k in original
        if not k.startswith("encoder.layer.2.")
    )
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["teacher_cls_std"] > 1e-3 and r["dino_loss"] > 0 for r in records)

    # A run killed after its step-2 checkpoint and started again ends bit-identical to the uninterrupted one.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_4")
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == ["step_2"]
    resumed = pretrain(_tiny_be(), data, _config(tmp_path / "b"))
    assert resumed.train.step == 4
    for name, value in resumed.teacher.state_dict().items():
        assert torch.equal(value, full.teacher.state_dict()[name]), name
    for name, value in resumed.student.state_dict().items():
        assert torch.equal(value, student[name]), name
