"""The shared training loop: exact resume, gradient accumulation, two processes, configs, files on disk."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hubtools.config import load_config
from hubtools.errors import ArtifactError, ConfigError
from hubtools.train import METRICS_FILE, TrainConfig, TrainState, list_checkpoints, train

from .tiny_ddp_train import Interrupt, TinyMLP, dem_regression, interrupt_at, mse_loss

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dem():
    # 63 points: 7 batches of 8 per epoch, so with accumulation 2 every epoch ends on a one-batch step.
    return dem_regression(9, 7)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


class EMA(torch.nn.Module):
    """A teacher that follows the student: state that lives outside the model and must survive a resume."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.shadow = copy.deepcopy(model)

    @torch.no_grad()
    def update(self, state: TrainState) -> None:
        self.shadow.to(state.accelerator.device)  # a no-op after the first step
        for teacher, student in zip(self.shadow.parameters(), state.model.parameters(), strict=True):
            teacher.lerp_(student, 0.1)


def run_with_ema(dataset, config: TrainConfig, on_step_end=None):
    torch.manual_seed(0)
    model = TinyMLP()
    ema = EMA(model)

    def step_end(state: TrainState) -> None:
        ema.update(state)
        if on_step_end is not None:
            on_step_end(state)

    result = train(model, dataset, mse_loss, config, on_step_end=step_end, checkpoint_objects=[ema])
    return result, ema


def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, dem):
    settings = dict(
        max_steps=12,
        batch_size=8,
        gradient_accumulation_steps=2,
        lr=3e-3,
        weight_decay=0.01,
        scheduler="linear",
        warmup_steps=2,
        max_grad_norm=1.0,
        log_every=1,
        seed=7,
    )
    straight, straight_ema = run_with_ema(dem, TrainConfig(output_dir=tmp_path / "straight", **settings))

    config = TrainConfig(output_dir=tmp_path / "resumed", save_every=5, **settings)
    with pytest.raises(Interrupt):
        run_with_ema(dem, config, on_step_end=interrupt_at(7))  # work after the step-5 checkpoint is lost
    assert [r["step"] for r in read_log(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step_5"]

    seen_steps = []
    resumed, resumed_ema = run_with_ema(dem, config, on_step_end=lambda s: seen_steps.append(s.step))

    assert seen_steps == list(range(6, 13))
    assert resumed.step == straight.step == 12
    for name, expected in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], expected), name
    for name, expected in straight_ema.state_dict().items():
        assert torch.equal(resumed_ema.state_dict()[name], expected), name
    # The log reads like the uninterrupted one: steps 6 and 7 of the killed run were dropped and redone.
    assert without_time(read_log(tmp_path / "resumed")) == without_time(read_log(tmp_path / "straight"))
    assert resumed.metrics["loss"] == straight.metrics["loss"]


def test_gradient_accumulation_matches_one_larger_batch(tmp_path, dem):
    def one_sgd_step(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = TinyMLP(dropout=0.0)
        config = TrainConfig(
            output_dir=tmp_path / f"b{batch_size}x{accumulation}",
            max_steps=1,
            batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optimizer="sgd",
            momentum=0.0,
            lr=0.5,
        )
        return {k: v.cpu() for k, v in train(model, dem, mse_loss, config).model.state_dict().items()}

    torch.manual_seed(0)
    init = TinyMLP(dropout=0.0).state_dict()
    accumulated, large, small = one_sgd_step(8, 2), one_sgd_step(16, 1), one_sgd_step(8, 1)
    for name in init:
        assert not torch.equal(accumulated[name], init[name]), name
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-5, atol=1e-6)
    # The check can tell batches apart: half the examples give a different step.
    assert any(not torch.allclose(small[n], large[n], rtol=1e-5, atol=1e-6) for n in init)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_identical_weights(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(REPO_ROOT / "tests" / "train" / "tiny_ddp_train.py"), str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["straight"] == ranks[1]["straight"]
    assert ranks[0]["straight"] != ranks[0]["init"]
    # Interrupted at step 5, resumed from the step-4 checkpoint, on both processes.
    assert [r["resumed"] for r in ranks] == [ranks[0]["straight"]] * 2
    # Only the main process writes the log: one record per step.
    assert [r["step"] for r in read_log(tmp_path / "straight")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints" / "step_4").iterdir()) == [
        "custom_checkpoint_0.pkl",
        "model.safetensors",
        "optimizer.bin",
        "random_states_0.pkl",
        "random_states_1.pkl",
        "trainer_state.json",
    ]


def test_yaml_config_errors_name_the_key_and_the_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("output_dir: runs/x\nmax_steps: 10\nmixed_precision: no\n")
    assert load_config(path, TrainConfig).mixed_precision == "no"  # YAML's `no` is a boolean

    path.write_text("output_dir: runs/x\nmax_steps: 10\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate") as err:
        load_config(path, TrainConfig)
    assert str(path) in str(err.value)

    path.write_text("output_dir: runs/x\nmax_steps: 10\nmixed_precision: fp8\n")
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(path, TrainConfig)

    path.write_text("output_dir: runs/x\nmax_steps: 10\nnum_epochs: 2\n")
    with pytest.raises(ConfigError, match="exactly one of max_steps and num_epochs"):
        load_config(path, TrainConfig)


def test_checkpoints_and_metrics_on_disk(tmp_path, dem):
    run = tmp_path / "run"
    killed_save = run / "checkpoints" / ".partial-step_99"  # what a save killed half-way leaves
    killed_save.mkdir(parents=True)

    def evaluate(state: TrainState) -> dict[str, float]:
        assert not state.model.training and not torch.is_grad_enabled()
        everything = [t.to(state.accelerator.device) for t in dem.tensors]
        return {"eval_mse": mse_loss(state.model, everything)[0].item()}

    config = TrainConfig(
        output_dir=run,
        num_epochs=2,  # 4 steps per epoch
        batch_size=8,
        gradient_accumulation_steps=2,
        mixed_precision="bf16",
        log_every=3,
        eval_every=4,
        save_every=2,
        keep_last=2,
    )
    result = train(TinyMLP(), dem, mse_loss, config, eval_fn=evaluate)

    assert result.step == 8
    records = read_log(run)
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [3, 6, 8]
    assert {"step", "epoch", "loss", "mae", "lr", "elapsed_s"} <= set(train_records[0])
    assert [r["step"] for r in records if "eval_mse" in r] == [4, 8]
    assert result.metrics["eval_mse"] == records[-1]["eval_mse"]

    assert not killed_save.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_6", "step_8"]
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"]) == (8, 1)
    assert (result.checkpoint / "model.safetensors").is_file()

    # A finished run started again with resume: auto has nothing left to do.
    again = train(TinyMLP(), dem, mse_loss, config)
    assert again.step == 8 and again.metrics == result.metrics
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name


def test_resume_refuses_what_would_not_be_exact(tmp_path, dem):
    config = TrainConfig(output_dir=tmp_path / "run", max_steps=2, batch_size=8)
    train(TinyMLP(), dem, mse_loss, config)

    with pytest.raises(ConfigError, match="batch_size 8 -> 4"):
        train(TinyMLP(), dem, mse_loss, config.model_copy(update={"batch_size": 4}))
    with pytest.raises(ConfigError, match="earlier run"):
        train(TinyMLP(), dem, mse_loss, config.model_copy(update={"resume": None}))
    with pytest.raises(ArtifactError, match="not a complete checkpoint"):
        train(TinyMLP(), dem, mse_loss, config.model_copy(update={"resume": str(tmp_path)}))
    with pytest.raises(ConfigError, match="too few"):
        train(TinyMLP(), dem, mse_loss, TrainConfig(output_dir=tmp_path / "big", max_steps=1, batch_size=64))
