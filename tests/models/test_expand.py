"""Block expansion: exact identity at init, index rule, freezing, original-format weights."""

from __future__ import annotations

import pytest
import torch
from bedinov2_testutils import retina_crops, tiny_dinov2, to_torch_hub

from hubtools.errors import ConfigError
from hubtools.models.be_dinov2 import (
    BeDinov2Config,
    BeDinov2ForImageClassification,
    BeDinov2Model,
    expand_blocks,
    expanded_classifier,
    expanded_indices,
    expansion_positions,
    freeze_original_layers,
)

INITS = ("layerscale_zero", "zero_out")


@pytest.fixture(scope="module")
def retina56() -> torch.Tensor:
    return retina_crops(4, 56)


def _outputs(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return out.last_hidden_state, out.pooler_output


def test_index_rule() -> None:
    assert expanded_indices(expansion_positions(12, (3, 7, 11))) == [4, 9, 14]
    assert expanded_indices(expansion_positions(12, (11, 3, 7, 7))) == [4, 9, 14]
    assert expanded_indices(expansion_positions(32, num_groups=8)) == list(range(4, 40, 5))
    with pytest.raises(ConfigError, match="divide"):
        expansion_positions(12, num_groups=5)
    with pytest.raises(ConfigError, match=r"\[0, 12\)"):
        expansion_positions(12, (3, 12))


@pytest.mark.parametrize("init", INITS)
def test_identity_on_retina(init: str, retina56: torch.Tensor) -> None:
    base = tiny_dinov2()
    expanded = expand_blocks(base, (3, 7, 11), init=init)
    assert isinstance(expanded, BeDinov2Model)
    assert expanded.config.expanded_layer_indices == [4, 9, 14]
    assert expanded.config.num_hidden_layers == 15 and expanded.config.model_type == "be-dinov2"
    (h0, p0), (h1, p1) = _outputs(base, retina56), _outputs(expanded, retina56)
    assert torch.equal(h0, h1) and torch.equal(p0, p1)
    # The originals were moved, not re-initialised: original block 4 is now layer 5, block 3 copied to 4.
    sd0, sd1 = base.state_dict(), expanded.state_dict()
    assert torch.equal(
        sd0["encoder.layer.4.attention.q_proj.weight"], sd1["encoder.layer.5.attention.q_proj.weight"]
    )
    assert torch.equal(sd0["encoder.layer.3.mlp.fc1.bias"], sd1["encoder.layer.4.mlp.fc1.bias"])


@pytest.mark.parametrize(
    "overrides",
    [
        dict(patch_size=8, image_size=32, num_hidden_layers=5, use_swiglu_ffn=True),
        dict(
            patch_size=7,
            image_size=35,
            num_hidden_layers=4,
            qkv_bias=False,
            hidden_size=48,
            num_attention_heads=3,
        ),
        dict(patch_size=16, image_size=48, num_hidden_layers=6, use_mask_token=False, layerscale_value=1.0),
    ],
)
@pytest.mark.parametrize("init", INITS)
def test_identity_odd_configs(overrides: dict, init: str) -> None:
    base = tiny_dinov2(seed=1, **overrides)
    n = base.config.num_hidden_layers
    expanded = expand_blocks(base, (0, n - 1), init=init)
    x = retina_crops(2, base.config.image_size)
    (h0, p0), (h1, p1) = _outputs(base, x), _outputs(expanded, x)
    assert (h0 - h1).abs().max() < 1e-5 and (p0 - p1).abs().max() < 1e-5
    assert torch.equal(h0, h1)
    # A different input size exercises the position-embedding interpolation path too.
    x2 = retina_crops(2, base.config.image_size + base.config.patch_size)
    assert torch.equal(_outputs(base, x2)[0], _outputs(expanded, x2)[0])


def test_zeroing_weights_without_biases_breaks_identity(retina56: torch.Tensor) -> None:
    """Negative control: the test inputs can tell a missing bias zeroing apart."""
    base = tiny_dinov2()
    expanded = expand_blocks(base, init="zero_out")
    with torch.no_grad():
        for k in expanded.config.expanded_layer_indices:
            src = base.encoder.layer[k - 1 - expanded.config.expanded_layer_indices.index(k)]
            expanded.encoder.layer[k].attention.o_proj.bias.copy_(src.attention.o_proj.bias)
            expanded.encoder.layer[k].mlp.fc2.bias.copy_(src.mlp.fc2.bias)
    diff = (_outputs(base, retina56)[0] - _outputs(expanded, retina56)[0]).abs().max()
    assert diff > 1e-4


@pytest.mark.parametrize("init", INITS)
def test_freeze_and_one_step(init: str, retina56: torch.Tensor) -> None:
    expanded = expand_blocks(tiny_dinov2(), init=init)
    expanded.train()
    trainable = freeze_original_layers(expanded)
    assert trainable and all(
        n.startswith(("encoder.layer.4.", "encoder.layer.9.", "encoder.layer.14.")) for n in trainable
    )
    before = {k: v.clone() for k, v in expanded.state_dict().items()}
    params = [p for p in expanded.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)
    out = expanded(retina56)
    (out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()).backward()
    nonzero = {n for n, p in expanded.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if init == "layerscale_zero":
        expected = {f"encoder.layer.{k}.layer_scale{i}.lambda1" for k in (4, 9, 14) for i in (1, 2)}
    else:
        expected = {
            f"encoder.layer.{k}.{m}.{w}"
            for k in (4, 9, 14)
            for m in ("attention.o_proj", "mlp.fc2")
            for w in ("weight", "bias")
        }
    assert nonzero == expected
    optimizer.step()
    after = expanded.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.split(".")[2] in {"4", "9", "14"} for k in changed)


def test_final_layernorm_option_and_classifier() -> None:
    expanded = expand_blocks(tiny_dinov2(), (5,))
    names = freeze_original_layers(expanded, train_final_layernorm=True)
    assert "layernorm.weight" in names and "embeddings.cls_token" not in names
    clf = expanded_classifier(expanded, num_labels=3, head_pooling="cls_mean", classifier_num_layers=2)
    assert isinstance(clf, BeDinov2ForImageClassification)
    names = freeze_original_layers(clf)
    assert (
        any(n.startswith("classifier.") for n in names) and "dinov2.encoder.layer.0.norm1.weight" not in names
    )
    logits = clf(retina_crops(3, 56), labels=torch.tensor([0, 1, 2])).logits
    assert logits.shape == (3, 3)


@pytest.mark.parametrize("as_file", [False, True])
def test_torch_hub_format(tmp_path, as_file: bool, retina56: torch.Tensor) -> None:
    base = tiny_dinov2()
    hub_sd = {f"teacher.backbone.{k}": v for k, v in to_torch_hub(base).items()}
    hub_sd["student.backbone.cls_token"] = torch.zeros(1)  # SSL checkpoints hold the student too
    source: object = hub_sd
    if as_file:
        source = tmp_path / "bedinoret.pth"
        torch.save(hub_sd, source)
    expanded = expand_blocks(source, init="zero_out", num_attention_heads=4)
    assert expanded.config.image_size == 56 and expanded.config.patch_size == 14
    assert torch.equal(_outputs(base, retina56)[0], _outputs(expanded, retina56)[0])


def test_legacy_named_checkpoint_folder(tmp_path, retina56: torch.Tensor) -> None:
    """A native Dinov2Model folder is written with legacy key names; expanding it must not leave q/k/v random."""
    base = tiny_dinov2()
    base.save_pretrained(tmp_path / "base")
    expanded = expand_blocks(tmp_path / "base")
    assert torch.equal(_outputs(base, retina56)[0], _outputs(expanded, retina56)[0])
    expanded.save_pretrained(tmp_path / "be")
    again = BeDinov2Model.from_pretrained(tmp_path / "be")
    assert again.config.layerscale_value == 0.1
    assert torch.equal(_outputs(base, retina56)[0], _outputs(again, retina56)[0])
    head = BeDinov2ForImageClassification.from_pretrained(tmp_path / "be", num_labels=2)
    assert torch.equal(_outputs(base, retina56)[0], _outputs(head.dinov2, retina56)[0])
    with pytest.raises(ConfigError, match="already expanded"):
        expand_blocks(again)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="list of ints"):
        BeDinov2Config(num_hidden_layers=13, original_num_hidden_layers=12, expanded_layer_indices="4")
    with pytest.raises(ValueError, match="sorted and unique"):
        BeDinov2Config(num_hidden_layers=14, original_num_hidden_layers=12, expanded_layer_indices=[9, 4])
    with pytest.raises(ValueError, match="out of range"):
        BeDinov2Config(num_hidden_layers=13, original_num_hidden_layers=12, expanded_layer_indices=[13])
    with pytest.raises(ValueError, match="entries"):
        BeDinov2Config(num_hidden_layers=15, original_num_hidden_layers=12, expanded_layer_indices=[4])
    with pytest.raises(ValueError, match="expansion_init"):
        BeDinov2Config(expansion_init="random")
    with pytest.raises(ConfigError, match="init must be"):
        expand_blocks(tiny_dinov2(num_hidden_layers=2), (0,), init="noise")


def test_auto_classes_are_registered() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    config = AutoConfig.for_model(
        "be-dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28, num_labels=3
    )
    assert isinstance(config, BeDinov2Config)
    assert type(AutoModel.from_config(config)) is BeDinov2Model
    assert type(AutoModelForImageClassification.from_config(config)) is BeDinov2ForImageClassification
