"""Collection on real digits (host and buffers frozen) and the benchmark's --smoke mode."""

import importlib.util
import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from hubtools.paramgen import ParamSpec, collect_checkpoints
from hubtools.paramgen.digits import SUBSET_PATTERN, DigitsCNN, classification_loss, load_digits_splits
from hubtools.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_collect_trains_only_the_subset_and_freezes_buffers(tmp_path):
    splits = load_digits_splits(0)
    torch.manual_seed(0)
    host = DigitsCNN()
    before = {k: v.clone() for k, v in host.state_dict().items()}
    spec = ParamSpec.from_model(host, SUBSET_PATTERN)
    assert spec.names == ["bn3.weight", "bn3.bias"] and spec.dim == 128
    cfg = TrainConfig(output_dir=tmp_path, max_steps=1, batch_size=64, optimizer="sgd", lr=0.1, log_every=100)
    ck = collect_checkpoints(
        host,
        spec,
        TensorDataset(splits.x_train, splits.y_train),
        classification_loss,
        cfg,
        num_checkpoints=4,
        save_every=2,
        eval_fn=lambda m: {"ok": 1.0},
    )
    assert ck.params.shape == (4, 128) and [m["step"] for m in ck.metrics] == [2, 4, 6, 8]
    assert not torch.equal(ck.params[0], ck.params[-1])
    after = host.state_dict()
    for key, value in before.items():
        if key.startswith("bn3.") and not key.startswith("bn3.running") and "num_batches" not in key:
            continue
        assert torch.equal(after[key], value), key  # conv weights, fc and every BN buffer are untouched
    assert torch.equal(ck.host_state["bn1.running_mean"], before["bn1.running_mean"])


def test_benchmark_smoke(tmp_path):
    """In-process (a subprocess would pay the torch/diffusers/transformers imports a second time)."""
    spec = importlib.util.spec_from_file_location("paramgen_benchmark", ROOT / "benchmarks" / "paramgen.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--smoke", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "paramgen_smoke.json").read_text())
    digits = results["digits"]["0"]
    assert digits["dim"] == 128 and digits["generated"]["n"] == 10
    assert {"best", "mean", "median"} <= set(digits["original"]) and digits["novelty"]["novelty_ratio"] > 0
    assert any("ddim" in k for k in digits["timing_s"])
    assert results["effnet"]["0"]["dim"] == 2560
    cond = results["cond"]["0"]["tasks"]
    assert cond["computers-vs-food"]["held_out"] and "base_no_adapter" in cond["computers-vs-food"]
    assert (tmp_path / "paramgen_digits_seed0.png").stat().st_size > 1000
