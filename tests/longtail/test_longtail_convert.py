"""torchvision/timm ResNet-50 checkpoints -> transformers ResNetModel folders (`longtail convert-resnet50`)."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file
from transformers import AutoModel

from hubtools.errors import ArtifactError
from hubtools.longtail.cli import longtail_group
from hubtools.longtail.convert import convert_resnet50
from hubtools.longtail.trainer import BackboneSpec, build_backbone, feature_dim

torch.set_num_threads(1)

DEPTHS = [3, 4, 6, 3]
WIDTHS = [64, 128, 256, 512]  # bottleneck widths; each block outputs 4x


def torchvision_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ResNet-50 names and shapes (conv1/bn1/layerS.B.convK/bnK/downsample/fc)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        sd[name] = torch.randn(c_out, c_in, k, k, generator=g) * (2 / (c_in * k * k)) ** 0.5

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = (
            torch.rand(c, generator=g) * 0.4 + 0.1
        )  # small gains keep 16 residual blocks bounded
        sd[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
        sd[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{name}.num_batches_tracked"] = torch.tensor(100)

    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    for s, (depth, width) in enumerate(zip(DEPTHS, WIDTHS, strict=True), start=1):
        for b in range(depth):
            p = f"layer{s}.{b}"
            conv(f"{p}.conv1.weight", width, c_in, 1)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2.weight", width, width, 3)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3.weight", 4 * width, width, 1)
            bn(f"{p}.bn3", 4 * width)
            if b == 0:
                conv(f"{p}.downsample.0.weight", 4 * width, c_in, 1)
                bn(f"{p}.downsample.1", 4 * width)
            c_in = 4 * width
    sd["fc.weight"] = torch.randn(1000, 2048, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def reference_features(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet-50 (v1.5: stride in the 3x3 conv) in eval mode, up to the global average pool."""

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"],
            training=False, eps=1e-5,
        )  # fmt: skip

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for s, depth in enumerate(DEPTHS, start=1):
        for b in range(depth):
            p = f"layer{s}.{b}"
            stride = 2 if b == 0 and s > 1 else 1
            out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if b == 0:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    return x.mean(dim=(2, 3))


def test_pth_checkpoint_gives_torchvisions_features(tmp_path):
    sd = torchvision_checkpoint()
    torch.save(sd, tmp_path / "resnet50.pth")
    out = convert_resnet50(tmp_path / "resnet50.pth", tmp_path / "backbone")
    model = AutoModel.from_pretrained(out, local_files_only=True).eval()
    assert type(model).__name__ == "ResNetModel" and model.config.depths == DEPTHS
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(pixel_values=x).pooler_output.flatten(1)
        expected = reference_features(sd, x)
    assert got.shape == (2, 2048) and expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_timm_safetensors_without_counters_is_a_trainer_backbone(tmp_path):
    sd = {k: v for k, v in torchvision_checkpoint(2).items() if not k.endswith("num_batches_tracked")}
    save_file(sd, str(tmp_path / "model.safetensors"))
    runner = CliRunner()
    res = runner.invoke(
        longtail_group,
        ["convert-resnet50", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "r50")],
    )
    assert res.exit_code == 0, res.output
    assert f"saved {tmp_path / 'r50'}" in res.output
    backbone = build_backbone(BackboneSpec(path=tmp_path / "r50"))
    assert feature_dim(backbone, 32) == 2048
    state = backbone.state_dict()
    torch.testing.assert_close(
        state["encoder.stages.3.layers.2.layer.2.convolution.weight"], sd["layer4.2.conv3.weight"]
    )
    torch.testing.assert_close(
        state["encoder.stages.1.layers.0.shortcut.normalization.running_var"],
        sd["layer2.0.downsample.1.running_var"],
    )


def test_foreign_missing_or_misshapen_tensors_are_named(tmp_path):
    sd = torchvision_checkpoint()
    bad = {**sd, "layer5.0.conv1.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(
        ArtifactError,
        match="2 keys are not torchvision/timm ResNet-50 keys: head.weight, layer5.0.conv1.weight",
    ):
        convert_resnet50(tmp_path / "extra.pth", tmp_path / "out")
    missing = {k: v for k, v in sd.items() if k != "layer3.5.bn2.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ArtifactError, match="1 ResNet-50 tensors missing: layer3.5.bn2.weight"):
        convert_resnet50(tmp_path / "missing.pth", tmp_path / "out")
    resnet101ish = {**sd, "layer1.0.conv2.weight": torch.zeros(64, 64, 1, 1)}
    torch.save(resnet101ish, tmp_path / "shape.pth")
    with pytest.raises(ArtifactError, match=r"layer1.0.conv2.weight \(64, 64, 1, 1\) != \(64, 64, 3, 3\)"):
        convert_resnet50(tmp_path / "shape.pth", tmp_path / "out")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00not a header")
    res = CliRunner().invoke(
        longtail_group,
        ["convert-resnet50", str(tmp_path / "broken.safetensors"), "--out", str(tmp_path / "out")],
    )
    assert res.exit_code != 0 and "cannot read as safetensors" in res.output
    assert not (tmp_path / "out").exists()  # nothing partly written
