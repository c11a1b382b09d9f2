"""Tiny DINOv2 bases with non-zero biases, and real fundus crops, for the BE-DINOv2 tests."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Dinov2Config, Dinov2Model


def tiny_dinov2(seed: int = 0, **overrides: object) -> Dinov2Model:
    """A random tiny DINOv2 whose biases are re-filled: freshly initialised biases are all zero, which
    would let a "forgot to zero the bias" expansion bug pass an identity test."""
    kwargs = dict(
        hidden_size=64,
        num_hidden_layers=12,
        num_attention_heads=4,
        patch_size=14,
        image_size=56,
        layerscale_value=0.1,
    )
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**kwargs)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.02)
            if name.endswith("mask_token"):
                param.normal_(0.0, 0.02)
    return model


def retina_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` real fundus crops (skimage.data.retina, CC0) resized to ``size``, ImageNet-normalised."""
    from skimage import data
    from skimage.transform import resize

    image = data.retina()
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        y, x = rng.integers(200, 1411 - 500, size=2)
        crop = resize(image[y : y + 400, x : x + 400], (size, size), anti_aliasing=True).astype(np.float32)
        crops.append(crop)
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (batch - mean) / std


def to_torch_hub(model: Dinov2Model) -> dict[str, torch.Tensor]:
    """The inverse of the converter under test, written independently from the original key names."""
    sd = model.state_dict()
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "mask_token": sd["embeddings.mask_token"].reshape(1, -1),
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd[f"{p}attention.{n}_proj.{kind}"] for n in "qkv"]
            )
            out[f"blocks.{i}.attn.proj.{kind}"] = sd[f"{p}attention.o_proj.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"blocks.{i}.{n}.{kind}"] = sd[f"{p}{n}.{kind}"]
        out[f"blocks.{i}.ls1.gamma"] = sd[f"{p}layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = sd[f"{p}layer_scale2.lambda1"]
    return out
