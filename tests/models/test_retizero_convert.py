"""Converting the anchor's RetiZero.pth: a checkpoint written here in the anchor's layout (timm ViT with fused qkv
and LoRA_ViT q/v tensors, FLAIR projection heads, BERT with its pooler) converts back to identical features."""

from __future__ import annotations

import argparse

import pytest
import torch
from click.testing import CliRunner
from test_retizero_utils import perturb_lora, retina_images, tiny_processor, tiny_retizero
from transformers import AutoModel

from hubtools.data.offline import minilm_path
from hubtools.models.retizero.cli import retizero_group
from hubtools.models.retizero.convert import ConvertError, convert_anchor_state_dict, load_state_dict

VIS = "vision_model.model.lora_vit."
TINY = {"num_attention_heads": 4, "layer_norm_eps": 1e-12}  # the tiny ViT's (RETFound: 16, 1e-6)


def anchor_state_dict(model) -> dict[str, torch.Tensor]:
    """The inverse of the converter's mapping, written independently: HF names -> the anchor's timm/FLAIR names."""
    v = model.vision_model.state_dict()
    out = {
        VIS + "cls_token": v["embeddings.cls_token"],
        VIS + "pos_embed": v["embeddings.position_embeddings"],
        VIS + "patch_embed.proj.weight": v["embeddings.patch_embeddings.projection.weight"],
        VIS + "patch_embed.proj.bias": v["embeddings.patch_embeddings.projection.bias"],
        VIS + "norm.weight": v["layernorm.weight"],
        VIS + "norm.bias": v["layernorm.bias"],
    }
    for i in range(model.config.vision_config.num_hidden_layers):
        hf, timm = f"layers.{i}.", f"{VIS}blocks.{i}."
        att = hf + "attention."
        for kind in ("weight", "bias"):
            out[f"{timm}norm1.{kind}"] = v[f"{hf}layernorm_before.{kind}"]
            out[f"{timm}norm2.{kind}"] = v[f"{hf}layernorm_after.{kind}"]
            out[f"{timm}attn.proj.{kind}"] = v[f"{att}o_proj.{kind}"]
            out[f"{timm}mlp.fc1.{kind}"] = v[f"{hf}mlp.fc1.{kind}"]
            out[f"{timm}mlp.fc2.{kind}"] = v[f"{hf}mlp.fc2.{kind}"]
            q, val = (v[f"{att}{p}_proj.base_layer.{kind}"] for p in ("q", "v"))
            k = v[f"{att}k_proj.{kind}"]  # not adapted
            out[f"{timm}attn.qkv.qkv.{kind}"] = torch.cat([q, k, val])
        for role in ("q", "v"):
            out[f"{timm}attn.qkv.linear_a_{role}.weight"] = v[f"{att}{role}_proj.lora_A.default.weight"]
            out[f"{timm}attn.qkv.linear_b_{role}.weight"] = v[f"{att}{role}_proj.lora_B.default.weight"]
    text = model.text_model.state_dict()
    out |= {"text_model.model." + k: t for k, t in text.items()}
    hidden = model.config.text_config.hidden_size
    out["text_model.model.pooler.dense.weight"] = torch.zeros(
        hidden, hidden
    )  # the anchor's BERT has a pooler
    out["text_model.model.pooler.dense.bias"] = torch.zeros(hidden)
    out["vision_model.projection_head_vision.projection.weight"] = model.visual_projection.weight.detach()
    out["text_model.projection_head_text.projection.weight"] = model.text_projection.weight.detach()
    out["logit_scale"] = model.logit_scale.detach().clone()
    return {k: t.clone() for k, t in out.items()}


@pytest.fixture(scope="module")
def original():
    model = tiny_retizero(text_pool_masked=False)
    perturb_lora(model)
    with torch.no_grad():
        model.logit_scale.fill_(3.1)
    return model


def _embeds(model, processor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = processor(images=retina_images(2), text=["glaucoma", "a fundus photograph of a macular hole"])
    with torch.no_grad():
        out = model(**batch)
        retrieval = model.get_retrieval_features(batch["pixel_values"])
    return out.image_embeds, out.text_embeds, torch.cat([out.logits_per_image.flatten(), retrieval.flatten()])


def test_anchor_layout_converts_to_identical_features(original, tmp_path) -> None:
    state = anchor_state_dict(original)
    torch.save({"state_dict": {"module." + k: t for k, t in state.items()}}, tmp_path / "RetiZero.pth")
    converted = convert_anchor_state_dict(
        load_state_dict(tmp_path / "RetiZero.pth"), original.config.text_config, **TINY
    )
    assert converted.config.vision_lora["r"] == 4 and converted.config.text_pool_masked is False
    assert converted.config.vision_config.image_size == 32 and converted.config.projection_dim == 16
    processor = tiny_processor()
    for ours, theirs in zip(_embeds(converted, processor), _embeds(original, processor), strict=True):
        assert torch.equal(ours, theirs)

    result = CliRunner().invoke(
        retizero_group,
        ["convert", "--pth", str(tmp_path / "RetiZero.pth"), "--text", str(minilm_path()), "--out"]
        + [str(tmp_path / "hub"), "--heads", "4", "--layer-norm-eps", "1e-12"],
    )
    assert result.exit_code == 0, result.output
    merged = AutoModel.from_pretrained(tmp_path / "hub").eval()
    assert merged.config.vision_lora is None
    from hubtools.models.retizero import RetiZeroProcessor

    saved = RetiZeroProcessor.from_pretrained(tmp_path / "hub")
    assert list(saved.image_processor.image_mean) == [
        0.485,
        0.456,
        0.406,
    ]  # the anchor's zero-shot statistics
    for ours, theirs in zip(_embeds(merged, saved), _embeds(original, saved), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_bad_checkpoints_are_clear_errors(original, tmp_path) -> None:
    state = anchor_state_dict(original)
    config = original.config.text_config
    torch.save({"args": argparse.Namespace(lr=1e-4), "model": state}, tmp_path / "pickled.pth")
    with pytest.raises(
        ConvertError, match="not a loadable tensor checkpoint"
    ):  # weights_only refuses objects
        load_state_dict(tmp_path / "pickled.pth")
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConvertError, match="not a loadable"):
        load_state_dict(tmp_path / "truncated.pth")

    broken = dict(state)
    del broken[VIS + "blocks.1.mlp.fc2.bias"]
    with pytest.raises(ConvertError, match=r"missing key .*blocks\.1\.mlp\.fc2\.bias"):
        convert_anchor_state_dict(broken, config, **TINY)
    extra = state | {"text_model.extra_head.weight": torch.zeros(2)}
    with pytest.raises(ConvertError, match="not used.*extra_head"):
        convert_anchor_state_dict(extra, config, **TINY)
    no_lora_v = {k: t for k, t in state.items() if "linear_a_v" not in k and "linear_b_v" not in k}
    with pytest.raises(ConvertError, match="do not cover every adapted layer"):
        convert_anchor_state_dict(no_lora_v, config, **TINY)
    # Without any LoRA tensors the file converts to a plain (LoRA-free) model.
    plain = {k: t for k, t in state.items() if "linear_" not in k}
    assert convert_anchor_state_dict(plain, config, **TINY).config.vision_lora is None
