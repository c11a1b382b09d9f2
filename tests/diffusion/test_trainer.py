"""`hubtools diffusion train`: real digits, a DDPMPipeline folder that from_pretrained loads and that
round-trips through the local Hub, exact resume of the sampler/EMA state, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline
from safetensors.torch import load_file

from hubtools.cli import main
from hubtools.diffusion.data import ImageDataError, load_images
from hubtools.diffusion.speed import SpeeDTimestepSampler
from hubtools.diffusion.trainer import DDPMTrainConfig, one_torch_thread, train_ddpm
from hubtools.errors import ConfigError

TINY = ["--image-size", "8", "--batch-size", "32", "--lr", "2e-3", "--sample-steps", "10"]


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def tiny_yaml(path, **extra):
    lines = {
        "block_out_channels": [16, 32],
        "attention_blocks": [],
        "norm_num_groups": 8,
        "warmup_steps": 10,
        "log_every": 1,
        "eval_examples": 32,
        "num_samples": 4,
        "ema_decay": 0.9,
        **extra,
    }
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in lines.items()) + "\n")
    return path


def test_train_saves_a_pipeline_that_loads_samples_and_round_trips_the_hub(tmp_path, hub, repo_id):
    cfg = tiny_yaml(tmp_path / "run.yaml")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "diffusion",
            "train",
            "--config",
            str(cfg),
            "-o",
            str(out),
            "--dataset",
            "digits",
            "--sampler",
            "uniform",
            "--max-steps",
            "150",
            *TINY,
            "--push-to-hub",
            repo_id,
        ],
    )
    assert result.exit_code == 0, result.output
    folder = out / "pipeline"
    for name in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "speed_sampler_config.json",
        "metrics.jsonl",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "library_name: diffusers" in (folder / "README.md").read_text()

    # Uniform sampling, weight 1: the logged loss is the plain MSE, and it falls on real digits.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert all(r["loss"] == pytest.approx(r["mse"], rel=1e-6) for r in records if "loss" in r)
    assert np.mean(losses[-10:]) < 0.5 * losses[0], (losses[0], losses[-10:])
    assert any("heldout_mse_d9" in r for r in records)

    pipe = DDPMPipeline.from_pretrained(folder)
    again = DDPMPipeline.from_pretrained(folder)

    def draw(p):
        return p(
            batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=5, output_type="np"
        ).images

    a = draw(pipe)
    assert a.shape == (2, 8, 8, 1) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, draw(again))

    from_hub = DDPMPipeline.from_pretrained(repo_id)
    np.testing.assert_array_equal(a, draw(from_hub))
    from huggingface_hub import hf_hub_download

    config = SpeeDTimestepSampler.load_config(hf_hub_download(repo_id, "speed_sampler_config.json"))
    assert config["num_train_timesteps"] == 1000 and config["_class_name"] == "UniformTimestepSampler"


def test_speed_run_resumes_exactly(tmp_path):
    """The sampler draws, EMA and optimiser state survive a stop: 12 steps + 12 more == 24 straight."""
    images = load_images("digits", image_size=8, limit=256)
    common = dict(
        block_out_channels=(16, 32),
        attention_blocks=(),
        norm_num_groups=8,
        image_size=8,
        batch_size=32,
        lr=2e-3,
        warmup_steps=2,
        ema_decay=0.9,
        sampler="speed",
        num_samples=2,
        sample_steps=2,
        eval_examples=16,
        save_every=6,
    )
    straight = train_ddpm(DDPMTrainConfig(output_dir=tmp_path / "a", max_steps=24, **common), images)
    train_ddpm(DDPMTrainConfig(output_dir=tmp_path / "b", max_steps=12, **common), images, save=False)
    resumed = train_ddpm(DDPMTrainConfig(output_dir=tmp_path / "b", max_steps=24, **common), images)
    a = load_file(straight.pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed.pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = SpeeDTimestepSampler.from_config(SpeeDTimestepSampler.load_config(straight.pipeline_dir))
    assert (saved.config.k, saved.config.tau, saved.config.lam, saved.pivot) == (5.0, 700, 0.6, 642)


def test_images_from_a_datasets_image_column(tmp_path):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pics = [PILImage.fromarray((im * 255 / 16).astype(np.uint8)) for im in digits.images[:20]]
    Dataset.from_dict(
        {"img": pics, "label": digits.target[:20].tolist()},
        features=Features({"img": Image(), "label": Value("int64")}),
    ).save_to_disk(tmp_path / "ds")
    x = load_images(str(tmp_path / "ds"), image_column="img", image_size=16)
    assert x.shape == (20, 1, 16, 16) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ImageDataError, match="no column 'image'; columns: img, label"):
        load_images(str(tmp_path / "ds"), image_column="image")
    with pytest.raises(ImageDataError, match="row 0 of column 'label' is a int, not an image"):
        load_images(str(tmp_path / "ds"), image_column="label")


def test_bad_input_gives_one_clear_error(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(
        main, ["diffusion", "train", "-o", str(tmp_path / "x"), "--max-steps", "2", "--sampler", "speedy"]
    )
    assert bad.exit_code == 2 and "key 'sampler' has invalid value 'speedy'" in bad.output
    assert "sampler must be one of uniform, speed" in bad.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: x\nmax_steps: 3\nlearning_rate: 0.1\n")
    bad = runner.invoke(main, ["diffusion", "train", "--config", str(cfg)])
    assert bad.exit_code == 2 and "unknown key 'learning_rate'" in bad.output and str(cfg) in bad.output
    bad = runner.invoke(
        main, ["diffusion", "train", "-o", str(tmp_path / "x"), "--max-steps", "2", "--tau", "1000"]
    )
    assert bad.exit_code == 2 and "0 < tau < T=1000" in bad.output
    with pytest.raises(ConfigError, match="multiple of norm_num_groups"):
        from hubtools.config import validate_config

        validate_config({"output_dir": "x", "max_steps": 1, "block_out_channels": [24, 32]}, DDPMTrainConfig)
    bad = runner.invoke(main, ["diffusion", "plot-sampler", "--out", str(tmp_path / "p.png"), "--k", "0"])
    assert bad.exit_code == 2 and "k must be a number >= 1" in bad.output
    ok = runner.invoke(main, ["diffusion", "plot-sampler", "--out", str(tmp_path / "p.png")])
    assert ok.exit_code == 0 and "pivot=642 tau=700" in ok.output and (tmp_path / "p.png").is_file()
