"""`hubtools be-dinov2 pretrain` runs unchanged under `accelerate launch` with 2 CPU (gloo) processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from hubtools.models.be_dinov2 import BeDinov2Model, expand_blocks

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=4, image_size=16)
    )
    expand_blocks(base, (1,)).save_pretrained(tmp_path / "be")
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "hubtools.cli", "be-dinov2", "pretrain",
        "--model", str(tmp_path / "be"), "--train-data", "skimage:retina", "--out", str(tmp_path / "adapted"),
        "--max-steps", "2", "--batch-size", "4", "--image-size", "32", "--global-crop-size", "16",
        "--local-crop-size", "8", "--n-local-crops", "2", "--head-out-dim", "32", "--head-hidden-dim", "16",
        "--head-bottleneck-dim", "8",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads(
        (tmp_path / "adapted-run" / "checkpoints" / "step_2" / "trainer_state.json").read_text()
    )
    assert state["num_processes"] == 2 and state["step"] == 2
    before = BeDinov2Model.from_pretrained(tmp_path / "be").state_dict()
    after = BeDinov2Model.from_pretrained(tmp_path / "adapted").state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("encoder.layer.2.") for k in moved)
    assert done.stdout.count('"steps": 2') == 1  # one process reports and writes the artifact
