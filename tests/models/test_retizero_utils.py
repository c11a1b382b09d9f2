"""Tiny RetiZero models (tiny random ViT + the real all-MiniLM-L6-v2 text tower) and real fundus crops."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoTokenizer, ViTConfig, ViTImageProcessorPil, ViTModel

from hubtools.data.offline import minilm_path
from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def tiny_vit(seed: int = 0) -> ViTModel:
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=4,
        image_size=32,
    )
    model = ViTModel(config, add_pooling_layer=False)
    with torch.no_grad():  # non-zero biases, so a lost base weight cannot hide behind zeros
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.02)
    return model


def tiny_retizero(lora: bool = True, seed: int = 0, **config_kwargs) -> RetiZeroModel:
    text = AutoModel.from_pretrained(minilm_path())
    torch.manual_seed(seed)
    model = RetiZeroModel.from_towers(
        tiny_vit(seed), text, vision_lora=dict(r=4) if lora else None, projection_dim=16, **config_kwargs
    )
    return model.eval()


def tiny_processor(max_length: int = 77) -> RetiZeroProcessor:
    image_processor = ViTImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )
    return RetiZeroProcessor(
        image_processor, AutoTokenizer.from_pretrained(minilm_path()), max_length=max_length
    )


def retina_images(n: int, size: int = 96, seed: int = 0) -> list[Image.Image]:
    """``n`` real fundus crops (skimage.data.retina, CC0) as PIL images."""
    from skimage import data

    image = data.retina()
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        y, x = rng.integers(200, 1411 - 500, size=2)
        crops.append(Image.fromarray(image[y : y + 400, x : x + 400]).resize((size, size)))
    return crops


def perturb_lora(model: RetiZeroModel, seed: int = 1) -> None:
    """Train-like non-zero LoRA B matrices (B = 0 at init would make every LoRA check trivial)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.vision_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
