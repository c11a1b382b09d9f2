"""Both pipelines: sampling, save/from_pretrained (also in a fresh process), local-Hub round trip, bad input."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from hubtools.paramgen import (
    ConditionEncoder,
    CondParamDenoiser,
    CondPDiffPipeline,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
    ParamSpec,
    ParamSpecError,
    PDiffPipeline,
    ddim_copy,
)
from hubtools.paramgen.publish import save_pipeline
from hubtools.paramgen.training import PDiffTrainConfig, make_scheduler

SPEC = ParamSpec([("bn.weight", (20,)), ("bn.bias", (20,))])


def make_pdiff() -> PDiffPipeline:
    torch.manual_seed(0)
    ae = ParamAutoencoder(
        in_dim=SPEC.dim, fold_rate=2, kernel_size=3, dec_channels=(4, 8, 8, 4), param_spec=SPEC.to_dict()
    ).eval()
    denoiser = ParamDenoiser(latent_dim=4 * ae.latent_length, channels=(4, 8, 8, 8)).eval()
    return PDiffPipeline(
        autoencoder=ae, denoiser=denoiser, scheduler=make_scheduler(PDiffTrainConfig(output_dir="."))
    )


def make_cond(mode: str = "mlp", normalization: str = "global") -> CondPDiffPipeline:
    torch.manual_seed(0)
    ae = ParamAutoencoder(
        in_dim=SPEC.dim, fold_rate=2, kernel_size=3, dec_channels=(4, 8, 8, 4), param_spec=SPEC.to_dict()
    ).eval()
    enc = ConditionEncoder(mode=mode, cond_dim=6, embed_dim=5, hidden_dim=8, num_tasks=2)
    if mode == "mlp":
        enc.task_conditions.normal_()
    norm = ParamNormalizer(dim=SPEC.dim, mode=normalization, task_names=["a", "b"])
    norm.fit(torch.randn(10, SPEC.dim) * 3, torch.tensor([0] * 5 + [1] * 5))
    den = CondParamDenoiser(latent_dim=4 * ae.latent_length, cond_embed_dim=5, channels=(4, 8, 8, 8))
    return CondPDiffPipeline(
        autoencoder=ae,
        denoiser=den,
        condition_encoder=enc,
        normalizer=norm,
        scheduler=make_scheduler(PDiffTrainConfig(output_dir=".")),
    )


def sample(pipe, steps=20, **kw):
    return pipe(
        num_models=3, generator=torch.Generator().manual_seed(7), num_inference_steps=steps, **kw
    ).params


def test_pdiff_samples_and_clamps_latents(monkeypatch):
    pipe = make_pdiff()
    pipe.set_progress_bar_config(disable=True)
    seen = []
    decode = pipe.autoencoder.decode
    monkeypatch.setattr(pipe.autoencoder, "decode", lambda z: (seen.append(z), decode(z))[1])
    out = sample(pipe)
    assert out.shape == (3, SPEC.dim)
    assert seen[0].shape == (3, 4, 3) and seen[0].abs().max() <= 1.0
    assert torch.equal(out, sample(pipe))  # same generator, same models
    assert not torch.equal(out[0], out[1])
    assert pipe(num_samples=2, num_inference_steps=2).params.shape == (2, SPEC.dim)
    fast = ddim_copy(pipe)
    assert (
        type(fast.scheduler).__name__ == "DDIMScheduler" and type(pipe.scheduler).__name__ == "DDPMScheduler"
    )
    assert sample(fast, steps=5, eta=0.05).shape == (3, SPEC.dim)


def test_models_with_writes_into_host_copies_and_rejects_wrong_length():
    pipe = make_pdiff()
    host = nn.Sequential()
    host.add_module("bn", nn.BatchNorm1d(20))
    params = torch.randn(2, SPEC.dim)
    models = pipe.models_with(host, params)
    assert torch.equal(models[1].bn.bias.detach(), params[1, 20:])
    assert torch.equal(host.bn.weight.detach(), torch.ones(20))
    with pytest.raises(ParamSpecError, match=r"\[N, 40\]"):
        pipe.models_with(host, torch.randn(2, 41))
    with pytest.raises(ValueError, match="positive int"):
        pipe(num_models=0)


def test_pdiff_save_load_fresh_process(tmp_path):
    pipe = make_pdiff()
    pipe.set_progress_bar_config(disable=True)
    expected = sample(pipe)
    save_pipeline(pipe, tmp_path / "pipe", host_model="test host", num_checkpoints=10)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["autoencoder"] == ["models", "ParamAutoencoder"]
    assert index["denoiser"] == ["models", "ParamDenoiser"]
    assert index["scheduler"][1] == "DDPMScheduler"
    assert "p-diff" in (tmp_path / "pipe" / "README.md").read_text()
    code = (
        "import sys, torch\n"
        "from hubtools.paramgen import PDiffPipeline\n"
        f"pipe = PDiffPipeline.from_pretrained({str(tmp_path / 'pipe')!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "out = pipe(num_models=3, generator=torch.Generator().manual_seed(7), num_inference_steps=20).params\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert torch.equal(torch.load(tmp_path / "out.pt", weights_only=True), expected)


def test_pdiff_and_cond_round_trip_through_local_hub(hub, repo_id, tmp_path):
    pipe = make_pdiff()
    pipe.set_progress_bar_config(disable=True)
    expected = sample(pipe)
    pipe.push_to_hub(repo_id)
    back = PDiffPipeline.from_pretrained(repo_id)
    back.set_progress_bar_config(disable=True)
    assert torch.equal(sample(back), expected)
    assert back.param_spec == SPEC

    cond = make_cond(normalization="per_task")
    cond.set_progress_bar_config(disable=True)
    by_name, by_index = sample(cond, condition="b"), sample(cond, condition=1)
    assert torch.equal(by_name, by_index)
    assert not torch.equal(by_index, sample(cond, condition=0))
    cond.push_to_hub(repo_id + "-cond")
    cback = CondPDiffPipeline.from_pretrained(repo_id + "-cond")
    cback.set_progress_bar_config(disable=True)
    assert cback.task_names == ["a", "b"] and cback.text_encoder is None
    assert torch.equal(sample(cback, condition="b"), by_name)
    assert torch.equal(cback.normalizer.std, cond.normalizer.std)


def test_cond_pipeline_conditions_and_errors():
    pipe = make_cond(mode="mlp")
    pipe.set_progress_bar_config(disable=True)
    vec = pipe.condition_encoder.task_conditions[1]
    assert torch.equal(sample(pipe, condition=vec), sample(pipe, condition=1))
    with pytest.raises(ValueError, match="text_encoder"):
        sample(pipe, condition="an unseen task description")
    with pytest.raises(ValueError, match="out of range"):
        sample(pipe, condition=5)
    with pytest.raises(ValueError, match=r"\[batch, 6\]"):
        sample(pipe, condition=torch.randn(1, 7))
    emb = make_cond(mode="embedding")
    emb.set_progress_bar_config(disable=True)
    assert sample(emb, condition=[0, 1, 1]).shape == (3, SPEC.dim)


def test_pdiff_with_global_normalizer_round_trips(tmp_path):
    plain = make_pdiff()
    norm = ParamNormalizer(dim=SPEC.dim, mode="global").fit(torch.randn(8, SPEC.dim) * 50 + 7)
    pipe = PDiffPipeline(
        autoencoder=plain.autoencoder, denoiser=plain.denoiser, scheduler=plain.scheduler, normalizer=norm
    )
    pipe.set_progress_bar_config(disable=True)
    plain.set_progress_bar_config(disable=True)
    out = sample(pipe)
    assert torch.allclose(out, norm.denormalize(sample(plain)), atol=1e-4)
    pipe.save_pretrained(tmp_path / "p")
    back = PDiffPipeline.from_pretrained(tmp_path / "p")
    back.set_progress_bar_config(disable=True)
    assert torch.equal(sample(back), out)
    plain.save_pretrained(tmp_path / "plain")
    assert PDiffPipeline.from_pretrained(tmp_path / "plain").normalizer is None
