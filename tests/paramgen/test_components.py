"""ParamSpec, autoencoder, denoiser and normaliser: shapes, orders, the per-sample timestep fix, bad input."""

import pytest
import torch
from torch import nn

from hubtools.errors import ArtifactError
from hubtools.paramgen import (
    CheckpointSet,
    CondParamDenoiser,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
    ParamSpec,
    ParamSpecError,
    stack_checkpoints,
)
from hubtools.paramgen.models import interpolate_noise


class Host(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.bn(self.lin(x)))


def test_param_spec_flatten_unflatten_identity_order_and_json(tmp_path):
    host = Host()
    spec = ParamSpec.from_model(host, r"^(out|bn)\.")
    assert spec.names == ["bn.weight", "bn.bias", "out.weight", "out.bias"]  # named_parameters order
    assert spec.dim == 4 + 4 + 8 + 2
    vec = spec.flatten(host)
    back = spec.unflatten(vec)
    for name, t in back.items():
        assert torch.equal(t, dict(host.named_parameters())[name].detach())
    spec.save(tmp_path / "spec.json")
    assert ParamSpec.load(tmp_path / "spec.json") == spec
    new = torch.arange(spec.dim, dtype=torch.float32)
    model = spec.model_with(host, new)
    assert torch.equal(spec.flatten(model), new)
    assert not torch.equal(spec.flatten(host), new)  # the host itself is untouched
    assert torch.equal(model.lin.weight, host.lin.weight)


def test_param_spec_bad_input():
    host = Host()
    with pytest.raises(ParamSpecError, match="matches none"):
        ParamSpec.from_model(host, r"^layer4\.")
    spec = ParamSpec.from_model(host, r"^bn\.")
    with pytest.raises(ParamSpecError, match=r"needs \(8,\)"):
        spec.load_into(host, torch.zeros(9))
    other = ParamSpec([("bn.weight", (5,)), ("bn.bias", (5,))])
    with pytest.raises(ParamSpecError, match="does not fit"):
        other.load_into(host, torch.zeros(10))
    with pytest.raises(ParamSpecError, match=r"shapes \[\(7,\)\]"):
        stack_checkpoints([torch.zeros(8), torch.zeros(7)], spec)
    with pytest.raises(ParamSpecError):
        CheckpointSet(params=torch.zeros(3, 9), spec=spec)


def test_checkpoint_set_round_trip_and_corrupt_file(tmp_path):
    host = Host()
    spec = ParamSpec.from_model(host, r"^bn\.")
    cs = CheckpointSet(
        params=torch.randn(5, 8),
        spec=spec,
        host_state=host.state_dict(),
        metrics=[{"step": i} for i in range(5)],
    )
    cs.save_to_disk(tmp_path / "ck")
    back = CheckpointSet.load_from_disk(tmp_path / "ck")
    assert torch.equal(back.params, cs.params) and back.spec == spec and back.metrics == cs.metrics
    assert torch.equal(back.host(Host()).bn.running_var, host.bn.running_var)
    assert back.to_dataset().num_rows == 5
    data = (tmp_path / "ck" / "params.safetensors").read_bytes()
    (tmp_path / "ck" / "params.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt"):
        CheckpointSet.load_from_disk(tmp_path / "ck")


@pytest.mark.parametrize(("d", "length"), [(1, 1), (64, 1), (256, 1), (2048, 4), (7168, 12)])
def test_autoencoder_latent_shape(d, length):
    ae = ParamAutoencoder(in_dim=d, dec_channels=(4, 8, 8, 4)).eval()
    x = torch.randn(2, d)
    z = ae.encode(x)
    assert z.shape == (2, 4, length) and ae.latent_shape == (4, length)
    assert z.abs().max() < 1
    assert ae.decode(z).shape == (2, d)


def test_autoencoder_noise_is_interpolation_and_encode_is_noise_free():
    x = torch.full((4, 10), 3.0)
    torch.manual_seed(0)
    eps = torch.randn_like(x)
    torch.manual_seed(0)
    assert torch.allclose(interpolate_noise(x, 0.25), 0.75 * x + 0.25 * eps)
    assert interpolate_noise(x, 0.0) is x
    ae = ParamAutoencoder(in_dim=50, fold_rate=2, kernel_size=3, dec_channels=(4, 8, 8, 4), latent_noise=0.5)
    v = torch.randn(3, 50)
    assert torch.equal(ae.encode(v), ae.encode(v))
    assert torch.equal(ae.decode(ae.encode(v)), ae.decode(ae.encode(v)))
    torch.manual_seed(1)
    a = ae(v)
    torch.manual_seed(2)
    assert not torch.allclose(a, ae(v))  # the training forward is noisy


@pytest.mark.parametrize("conditional", [False, True])
def test_timestep_embedding_is_per_sample(conditional):
    """Regression for the anchor bug: one batch with distinct t must equal the single-sample calls."""
    torch.manual_seed(0)
    if conditional:
        net = CondParamDenoiser(latent_dim=12, cond_embed_dim=5, channels=(4, 8, 8, 8))
        cond = torch.randn(3, 5)
        call = lambda x, t, i: net(x, t, cond[i])  # noqa: E731
    else:
        net = ParamDenoiser(latent_dim=12, channels=(4, 8, 8, 8))
        call = lambda x, t, i: net(x, t)  # noqa: E731
    with torch.no_grad():
        net.time_embedding.weight.normal_()
    x = torch.randn(1, 1, 12).repeat(3, 1, 1)  # the same sample three times
    t = torch.tensor([0, 500, 999])
    batch = call(x, t, slice(None))
    singles = torch.cat([call(x[i : i + 1], t[i : i + 1], slice(i, i + 1)) for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1]) and not torch.allclose(batch[1], batch[2])


def test_normalizer_modes():
    params = torch.randn(6, 4) * torch.tensor([1.0, 2.0, 3.0, 0.0]) + 5
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    g = ParamNormalizer(dim=4, mode="global").fit(params)
    assert torch.allclose(g.denormalize(g.normalize(params)), params, atol=1e-5)
    assert g.std.min() >= 1e-8  # the constant coordinate does not divide by zero
    p = ParamNormalizer(dim=4, mode="per_task", task_names=["a", "b"]).fit(params, ids)
    assert torch.allclose(p.normalize(params, ids)[:3].mean(0), torch.zeros(4), atol=1e-5)
    with pytest.raises(ValueError, match="unseen tasks"):
        p.denormalize(params)
    with pytest.raises(ValueError, match="normalization must be"):
        ParamNormalizer(dim=4, mode="zscore")


def test_checkpoint_set_push_to_local_hub_as_dataset(hub, repo_id, tmp_path):
    from huggingface_hub import snapshot_download

    from hubtools.paramgen.publish import checkpoint_card

    host = Host()
    spec = ParamSpec.from_model(host, r"^bn\.")
    cs = CheckpointSet(params=torch.randn(4, 8), spec=spec, host_state=host.state_dict())
    cs.push_to_hub(repo_id, card=checkpoint_card(repo_id, 4, 8, "Host", "nothing"))
    back = CheckpointSet.load_from_disk(snapshot_download(repo_id, repo_type="dataset"))
    assert torch.equal(back.params, cs.params) and back.spec == spec
