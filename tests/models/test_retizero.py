"""RetiZero model core: LoRA identity and freezing, temperature clamp, losses vs scipy, pooling, round trips."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import digamma, gammaln
from test_retizero_utils import perturb_lora, retina_images, tiny_processor, tiny_retizero
from transformers import AutoModel, AutoTokenizer, Dinov2Config, Dinov2Model

from hubtools.data.offline import minilm_path
from hubtools.models.retizero import (
    RetiZeroConfig,
    RetiZeroModel,
    clip_loss,
    dirichlet_uncertainty_loss,
    kl_anneal_weight,
)

TEXTS = ["a fundus photograph of glaucoma", "a fundus photograph of a macular hole", "a normal retina"]


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    processor = tiny_processor()
    enc = processor(images=retina_images(3), text=TEXTS)
    unk = processor.tokenizer.unk_token_id
    assert (enc["input_ids"] != unk).all(), "tokenizer maps words to [UNK]"
    return dict(enc)


def _np_uncertainty(logits: np.ndarray, lam: float) -> float:
    n, c = logits.shape
    y = np.eye(n, c)
    alpha = np.logaddexp(0.0, logits) + 1.0
    s = alpha.sum(1, keepdims=True)
    fit = (y * (digamma(s) - digamma(alpha))).sum(1)
    at = (alpha - 1) * (1 - y) + 1
    st = at.sum(1, keepdims=True)
    kl = gammaln(st[:, 0]) - gammaln(c) - gammaln(at).sum(1) + ((at - 1) * (digamma(at) - digamma(st))).sum(1)
    return float((fit + lam * kl).mean())


def test_uncertainty_loss_matches_scipy_and_kl_vanishes() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, size=(6, 6))
    for lam in (0.0, 0.4, 1.0):
        ours = dirichlet_uncertainty_loss(torch.tensor(logits, dtype=torch.float32), lam).item()
        assert ours == pytest.approx(_np_uncertainty(logits, lam), rel=1e-5, abs=1e-5)
    # No off-target evidence -> α̃ = 1 -> the KL weight changes nothing.
    clean = torch.full((4, 4), -200.0).fill_diagonal_(8.0)
    assert dirichlet_uncertainty_loss(clean, 1.0).item() == pytest.approx(
        dirichlet_uncertainty_loss(clean, 0.0).item()
    )
    assert kl_anneal_weight(0) == 0.0 and kl_anneal_weight(3) == pytest.approx(0.2)
    assert kl_anneal_weight(15) == 1.0 and kl_anneal_weight(40) == 1.0


def test_clip_loss_symmetric_and_vanishes_for_aligned_embeddings() -> None:
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    assert clip_loss(logits).item() == pytest.approx(expected.item())
    assert clip_loss(logits.t()).item() == pytest.approx(clip_loss(logits).item())
    aligned = torch.eye(4)  # unit, orthogonal embeddings at scale 100
    assert clip_loss(100.0 * aligned @ aligned.t()).item() < 1e-30 + 1e-6


def test_temperature_is_clamped_in_forward_and_in_place(batch) -> None:
    model = tiny_retizero(lora=False)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
        assert model.effective_logit_scale().item() == pytest.approx(100.0, rel=1e-4)
        out = model(**batch)
        expected = 100.0 * out.text_embeds @ out.image_embeds.t()
        torch.testing.assert_close(out.logits_per_text, expected, rtol=1e-4, atol=1e-4)
        model.logit_scale.fill_(-1.0)
        assert model.effective_logit_scale().item() == pytest.approx(1.0)
    model.logit_scale.data.fill_(7.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(4.6052)
    assert RetiZeroConfig().logit_scale_init_value == pytest.approx(np.log(1 / 0.07), abs=1e-4)


def test_features_match_an_independent_computation(batch) -> None:
    model = tiny_retizero()
    perturb_lora(model)
    with torch.no_grad():
        out = model(**batch, return_loss=True, kl_anneal=0.5)
        cls_token = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state[:, 0]
        image = model.visual_projection.weight @ (cls_token / cls_token.norm(dim=-1, keepdim=True)).t()
        image = (image / image.norm(dim=0)).t()
        hidden = model.text_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states
        mask = batch["attention_mask"][..., None].float()
        pooled = sum((hidden[i] * mask).sum(1) / mask.sum(1) for i in (1, 2, -1)) / 3
        text = F.normalize(F.normalize(pooled, dim=-1) @ model.text_projection.weight.t(), dim=-1)
    torch.testing.assert_close(out.image_embeds, image, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    scale = model.logit_scale.exp()
    torch.testing.assert_close(out.logits_per_image, scale * image @ text.t(), rtol=1e-5, atol=1e-5)
    expected_un = _np_uncertainty(out.logits_per_text.numpy().astype(np.float64), 0.5) + _np_uncertainty(
        out.logits_per_image.numpy().astype(np.float64), 0.5
    )
    assert out.loss_uncertainty.item() == pytest.approx(expected_un, rel=1e-4)
    assert out.loss.item() == pytest.approx(out.loss_clip.item() + out.loss_uncertainty.item(), rel=1e-6)
    plain = tiny_retizero(uncertainty_loss=False)
    assert plain(**batch, return_loss=True).loss_uncertainty is None
    with pytest.raises(ValueError, match="one text per image"):
        model(
            input_ids=batch["input_ids"][:2],
            attention_mask=batch["attention_mask"][:2],
            pixel_values=batch["pixel_values"],
            return_loss=True,
        )


def test_text_pooling_masked_is_padding_invariant_anchor_mode_is_not() -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    short = tokenizer(["glaucoma"], return_tensors="pt")
    padded = tokenizer(["glaucoma"], padding="max_length", max_length=12, return_tensors="pt")
    masked, anchor = tiny_retizero(), tiny_retizero(text_pool_masked=False)
    with torch.no_grad():
        a, b = (masked.get_text_features(**enc).pooler_output for enc in (short, padded))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        c, d = (anchor.get_text_features(**enc).pooler_output for enc in (short, padded))
        torch.testing.assert_close(a, c, rtol=0, atol=1e-6)  # identical for unpadded input
        assert (c - d).abs().max() > 1e-3


def test_retrieval_feature_is_prenorm_patch_mean(batch) -> None:
    model = tiny_retizero()
    perturb_lora(model)
    x = batch["pixel_values"]
    with torch.no_grad():
        feats = model.get_retrieval_features(x)
        # Re-run the blocks by hand: embeddings -> layers, no final LayerNorm.
        h = model.vision_model.embeddings(x)
        for layer in model.vision_model.layers:
            h = layer(h)
            h = h[0] if isinstance(h, tuple) else h
    torch.testing.assert_close(feats, h[:, 1:].mean(1), rtol=1e-5, atol=1e-6)
    assert feats.shape == (3, 64)


def test_lora_identity_freezing_and_merge(batch) -> None:
    plain = tiny_retizero(lora=False)
    model = tiny_retizero(lora=True)
    with torch.no_grad():
        assert torch.equal(
            plain.get_image_features(batch["pixel_values"]).pooler_output,
            model.get_image_features(batch["pixel_values"]).pooler_output,
        )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    model.clamp_logit_scale_()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for key in before:
        if key.startswith("vision_model.") and "lora_" not in key:
            assert key not in changed, f"frozen base weight {key} changed"
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    assert any(k.startswith("text_model.") for k in changed)
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= changed
    model.eval()
    with torch.no_grad():
        unmerged = model.get_image_features(batch["pixel_values"]).pooler_output
        model.merge_vision_lora()
        merged = model.get_image_features(batch["pixel_values"]).pooler_output
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert model.config.vision_lora is None and not any("lora" in k for k in model.state_dict())


def test_save_load_round_trip_and_lora_free_file_is_refused(tmp_path, batch) -> None:
    model = tiny_retizero()
    perturb_lora(model)
    model.save_pretrained(tmp_path / "m")
    loaded = RetiZeroModel.from_pretrained(tmp_path / "m").eval()
    assert isinstance(AutoModel.from_pretrained(tmp_path / "m"), RetiZeroModel)
    with torch.no_grad():
        ref, again = model(**batch), loaded(**batch)
    assert torch.equal(ref.image_embeds, again.image_embeds) and torch.equal(
        ref.text_embeds, again.text_embeds
    )
    assert all(not p.requires_grad for n, p in loaded.vision_model.named_parameters() if "lora_" not in n)

    tiny_retizero(lora=False).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no LoRA weights"):
        RetiZeroModel.from_pretrained(tmp_path / "plain", vision_lora={"r": 4})


def test_dinov2_vision_tower(batch) -> None:
    torch.manual_seed(0)
    vision = Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=32,
        )
    )
    model = RetiZeroModel.from_towers(
        vision, AutoModel.from_pretrained(minilm_path()), vision_lora={"r": 2}, projection_dim=8
    ).eval()
    with torch.no_grad():
        out = model(**batch)
        assert out.logits_per_image.shape == (3, 3)
        assert model.get_retrieval_features(batch["pixel_values"]).shape == (3, 32)
    assert any("lora_A" in n for n, _ in model.vision_model.named_parameters())


def test_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="image_pooling"):
        RetiZeroConfig(image_pooling="mean")
    with pytest.raises(ValueError, match="vision_lora"):
        RetiZeroConfig(vision_lora={"rank": 8})
    with pytest.raises(ValueError, match="logit_scale_min"):
        RetiZeroConfig(logit_scale_min=5.0, logit_scale_max=1.0)


def test_processor_truncates_long_text_with_a_warning(tmp_path, caplog) -> None:
    processor = tiny_processor(max_length=16)
    with caplog.at_level(logging.WARNING, logger="hubtools.models.retizero.processing_retizero"):
        enc = processor(text=["short", "drusen " * 60])
    assert enc["input_ids"].shape == (2, 16) and "truncated" in caplog.text
    processor.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"preprocessor_config.json", "processor_config.json", "tokenizer.json"} <= names
    again = type(processor).from_pretrained(tmp_path)
    assert again.max_length == 16
    assert torch.equal(
        again(images=retina_images(1))["pixel_values"], processor(images=retina_images(1))["pixel_values"]
    )


def test_processor_that_does_not_match_the_towers_is_refused() -> None:
    from transformers import BertTokenizer, ViTImageProcessorPil

    config = tiny_retizero(lora=False).config
    tiny_processor().check_towers(config)
    big = tiny_processor()
    big.image_processor = ViTImageProcessorPil(size={"height": 64, "width": 64})
    with pytest.raises(ValueError, match="64px images but the vision tower expects 32px"):
        big.check_towers(config)
    vocab = {
        w: i
        for i, w in enumerate(
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40000)]
        )
    }
    foreign = tiny_processor()
    foreign.tokenizer = BertTokenizer(vocab=vocab)
    with pytest.raises(ValueError, match="not its tokenizer"):
        foreign.check_towers(config)
    with pytest.raises(ValueError, match="exceeds the text tower's 512 positions"):
        tiny_processor(max_length=600).check_towers(config)
