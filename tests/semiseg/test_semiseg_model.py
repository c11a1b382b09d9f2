"""The U-Net: shapes, config checks, PyTorch-default init, and round trips through disk and the local Hub."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg


@pytest.mark.parametrize(
    ("dims", "shape", "depth"), [(2, (2, 1, 48, 56), 3), (2, (2, 1, 45, 37), 3), (3, (2, 1, 12, 40, 36), 2)]
)
def test_output_shapes_match_inputs_not_multiple_of_the_stride(dims, shape, depth):
    torch.manual_seed(0)
    model = UNetForSemiSeg(UNetSegConfig(spatial_dims=dims, width=4, depth=depth, out_channels=3))
    out = model(torch.randn(shape))
    assert out.logits.shape == (shape[0], 3, *shape[2:])
    assert out.threshold_mu.shape == (2, 3) and out.threshold_logvar.shape == (2, 3)
    assert ((out.threshold_mu > 0) & (out.threshold_mu < 1)).all()


def test_config_validation_and_bad_input_shape():
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetSegConfig(spatial_dims=4)
    with pytest.raises(ValueError, match="threshold_reduce"):
        UNetSegConfig(threshold_reduce="pixel")
    with pytest.raises(ValueError, match="class_names"):
        UNetSegConfig(out_channels=2, class_names=["a"])
    model = UNetForSemiSeg(UNetSegConfig(width=2, depth=1))
    with pytest.raises(ValueError, match=r"pixel_values must have shape"):
        model(torch.randn(1, 1, 8, 8, 8))


def test_pytorch_default_init_and_threshold_head_starts_at_the_prior():
    model = UNetForSemiSeg(UNetSegConfig(width=8, depth=1, threshold_init_mu=0.3, threshold_init_sigma=0.2))
    conv = model.encoder[0][0]
    fan_in = conv.weight[0].numel()
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert conv.weight.abs().max() <= bound + 1e-7
    assert conv.weight.std() > 0.5 * bound / math.sqrt(3)  # not transformers' N(0, 0.02)
    out = model(torch.rand(3, 1, 16, 16))
    assert torch.allclose(out.threshold_mu, torch.full((3, 1), 0.3), atol=1e-6)
    assert torch.allclose(out.threshold_logvar.exp().sqrt(), torch.full((3, 1), 0.2), atol=1e-6)


def test_batch_reduce_gives_one_threshold_per_batch():
    model = UNetForSemiSeg(UNetSegConfig(width=4, depth=1, threshold_reduce="batch"))
    torch.nn.init.normal_(model.threshold_head.fc2.weight)
    out = model(torch.rand(3, 1, 16, 16))
    assert torch.allclose(out.threshold_mu, out.threshold_mu[:1].expand(3, 1))


def test_hub_round_trip_gives_identical_outputs(hub, repo_id, tmp_path):
    torch.manual_seed(0)
    model = UNetForSemiSeg(UNetSegConfig(spatial_dims=3, width=4, depth=2, out_channels=2)).eval()
    torch.nn.init.normal_(model.threshold_head.fc2.weight, std=0.1)
    x = torch.rand(2, 1, 6, 20, 18)
    model.config.register_for_auto_class()
    model.register_for_auto_class("AutoModel")
    model.push_to_hub(repo_id)
    back = UNetForSemiSeg.from_pretrained(repo_id).eval()
    with torch.no_grad():
        a, b = model(x), back(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.threshold_mu, b.threshold_mu)

    # A user without hubtools: AutoModel + the remote code in the repo, in a fresh process, with the
    # threshold confidence map and the flag that says whether the threshold was learned.
    model.config.threshold_learned = True
    model.save_pretrained(tmp_path / "model")
    torch.save(x, tmp_path / "x.pt")
    torch.save(a.logits, tmp_path / "logits.pt")
    with torch.no_grad():
        torch.save(model.threshold_confidence(x)[1], tmp_path / "confidence.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["hubtools"] = None  # the remote code must not need hubtools
        torch.set_num_threads(1)  # as the test process: another thread count may change the last bit
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        expected = torch.load({str(tmp_path / "logits.pt")!r}, weights_only=True)
        with torch.no_grad():
            got = m(x).logits
        assert torch.allclose(got, expected, rtol=0, atol=1e-6), (got - expected).abs().max()
        with torch.no_grad():
            confidence = m.threshold_confidence(x)[1]
        saved = torch.load({str(tmp_path / "confidence.pt")!r}, weights_only=True)
        assert torch.allclose(confidence, saved, atol=1e-6) and m.config.threshold_learned is True
        print(type(m).__name__)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("UNetForSemiSeg")
