"""Convert the anchor's ``RetiZero.pth`` (a strict state dict of its FLAIR-style ``CLIPRModel``) into a RetiZero
folder (spec §2.6). The released file has no licence: hubtools converts, it does not redistribute.

Anchor layout (LooKing9218/RetiZero ``clip_modules/modeling/model.py`` + ``LoraRETFound.py``)::

    vision_model.model.<...>.cls_token / pos_embed / patch_embed.proj / norm     timm ViT (RETFound ViT-L/16)
    vision_model.model.<...>.blocks.{i}.norm1 / norm2 / attn.proj / mlp.fc1 / mlp.fc2
    vision_model.model.<...>.blocks.{i}.attn.qkv.<...>      fused qkv (3D x D) + the q and v LoRA A (r x D), B (D x r)
    vision_model.projection_head_vision.projection.weight   Linear(1024, 512, bias=False)
    text_model.model.<BERT keys>                              Bio_ClinicalBERT (its pooler is dropped)
    text_model.projection_head_text.projection.weight        Linear(768, 512, bias=False)
    logit_scale

The wrapper prefixes (``<...>``) and the LoRA tensor names were not recorded, so the prefixes are found from
anchor keys (``cls_token``, ``embeddings.word_embeddings.weight``) and the LoRA tensors by shape and by the
``q``/``v`` token in their names. Everything is loaded into the live modules with ``strict=True``.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import torch

from hubtools.errors import ArtifactError
from hubtools.models.retizero.configuration_retizero import RetiZeroConfig
from hubtools.models.retizero.modeling_retizero import RetiZeroModel

# timm block name -> HF ViTModel (transformers 5.x flat layout) name, per block.
_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
# Old BERT checkpoints carry buffers that 5.x no longer registers; the pooler is an unused NSP head.
_TEXT_DROP = re.compile(r"^(pooler\.|embeddings\.position_ids$)")


class ConvertError(ArtifactError):
    """The checkpoint is not a RetiZero/FLAIR state dict this converter understands (the message says why)."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` (never unpickles code), unwrapping ``{"state_dict"|"model": ...}``
    and a DDP ``module.`` prefix."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"{path}: not a loadable tensor checkpoint ({first})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ConvertError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _prefix(state: dict[str, torch.Tensor], suffix: str, owner: str) -> str:
    found = [k[: -len(suffix)] for k in state if k.endswith(suffix) and k.startswith(owner)]
    if len(found) != 1:
        raise ConvertError(f"expected one '{owner}...{suffix}' key, found {found or 'none'}")
    return found[0]


def _take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ConvertError(f"missing key {key!r}")
    return state.pop(key)


def _lora_role(name: str) -> str:
    tokens = set(re.split(r"[._]", name))
    roles = tokens & {"q", "v"}
    if len(roles) != 1:
        raise ConvertError(f"cannot tell whether LoRA tensor {name!r} adapts q or v")
    return roles.pop()


def vision_config_from_state(
    state: dict[str, torch.Tensor], prefix: str, num_attention_heads: int, layer_norm_eps: float = 1e-6
) -> dict[str, object]:
    """ViT config fields read off the timm tensors; the head count and LayerNorm eps are not in the weights
    (RETFound ViT-L/16: 16 heads, eps 1e-6)."""
    hidden = state[prefix + "cls_token"].shape[-1]
    patch = state[prefix + "patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state[prefix + "pos_embed"].shape[1] - 1)
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise ConvertError(f"no contiguous 'blocks.<i>' under {prefix!r}")
    return {
        "model_type": "vit",
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": num_attention_heads,
        "intermediate_size": state[prefix + "blocks.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch,
        "image_size": grid * patch,
        "num_channels": state[prefix + "patch_embed.proj.weight"].shape[1],
        "qkv_bias": any(k.startswith(prefix + "blocks.0.attn.qkv") and k.endswith("bias") for k in state),
        "layer_norm_eps": layer_norm_eps,
    }


def convert_anchor_state_dict(
    state: dict[str, torch.Tensor], text_config, num_attention_heads: int = 16, layer_norm_eps: float = 1e-6
) -> RetiZeroModel:
    """A :class:`RetiZeroModel` (LoRA kept, ``text_pool_masked=False`` as the anchor pools) holding exactly the
    anchor's weights; every anchor tensor must be used, every model tensor filled."""
    state = dict(state)
    vis = _prefix(state, "cls_token", "vision_model.")
    txt = _prefix(state, "embeddings.word_embeddings.weight", "text_model.")
    vision_fields = vision_config_from_state(state, vis, num_attention_heads, layer_norm_eps)
    n_layers, dim = vision_fields["num_hidden_layers"], vision_fields["hidden_size"]

    vision: dict[str, torch.Tensor] = {
        "embeddings.cls_token": _take(state, vis + "cls_token"),
        "embeddings.position_embeddings": _take(state, vis + "pos_embed"),
        "embeddings.patch_embeddings.projection.weight": _take(state, vis + "patch_embed.proj.weight"),
        "embeddings.patch_embeddings.projection.bias": _take(state, vis + "patch_embed.proj.bias"),
        "layernorm.weight": _take(state, vis + "norm.weight"),
        "layernorm.bias": _take(state, vis + "norm.bias"),
    }
    lora: dict[str, torch.Tensor] = {}
    for i in range(n_layers):
        block = f"{vis}blocks.{i}."
        for timm_name, hf_name in _BLOCK_MAP.items():
            for kind in ("weight", "bias"):
                vision[f"layers.{i}.{hf_name}.{kind}"] = _take(state, f"{block}{timm_name}.{kind}")
        qkv_keys = sorted(k for k in state if k.startswith(block + "attn.qkv"))
        base = {k for k in qkv_keys if state[k].shape[0] == 3 * dim and state[k].dim() in (1, 2)}
        for kind in ("weight", "bias"):
            key = [k for k in base if k.endswith(kind)]
            if len(key) != 1:
                if kind == "bias" and not key and not vision_fields["qkv_bias"]:
                    continue
                raise ConvertError(f"block {i}: expected one fused qkv {kind} (3*{dim} rows), found {key}")
            q, k, v = _take(state, key[0]).chunk(3, dim=0)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                vision[f"layers.{i}.attention.{name}.{kind}"] = part
        for key in sorted(set(qkv_keys) - base):
            tensor, role = _take(state, key), _lora_role(key[len(block) :])
            if tensor.dim() == 2 and tensor.shape[1] == dim and tensor.shape[0] < dim:
                which = "lora_A"
            elif tensor.dim() == 2 and tensor.shape[0] == dim and tensor.shape[1] < dim:
                which = "lora_B"
            else:
                raise ConvertError(f"{key}: shape {tuple(tensor.shape)} is neither LoRA A (r x {dim}) nor B")
            target = f"layers.{i}.attention.{role}_proj.{which}.default.weight"
            if target in lora:
                raise ConvertError(f"block {i}: two LoRA {which} tensors for {role}")
            lora[target] = tensor
    ranks = {t.shape[0] for k, t in lora.items() if "lora_A" in k}
    if len(ranks) > 1:
        raise ConvertError(f"LoRA ranks differ between tensors: {sorted(ranks)}")

    text = {k[len(txt) :]: state.pop(k) for k in list(state) if k.startswith(txt)}
    text = {k: v for k, v in text.items() if not _TEXT_DROP.match(k)}
    visual_projection = _take(state, "vision_model.projection_head_vision.projection.weight")
    text_projection = _take(state, "text_model.projection_head_text.projection.weight")
    logit_scale = _take(state, "logit_scale")
    if state:
        raise ConvertError(f"{len(state)} anchor tensors were not used, e.g. {sorted(state)[:4]}")

    config = RetiZeroConfig(
        vision_config=vision_fields,
        text_config=text_config.to_dict() if hasattr(text_config, "to_dict") else dict(text_config),
        projection_dim=visual_projection.shape[0],
        text_pool_masked=False,  # the anchor averages padding too: parity with its trained text tower
    )
    model = RetiZeroModel(config)
    try:
        model.vision_model.load_state_dict(vision, strict=True)
        model.text_model.load_state_dict(text, strict=True)
        if lora:
            model.add_vision_lora(r=ranks.pop(), alpha=None)  # anchor: no alpha/r scaling, i.e. alpha = r
            lora_state = {k: v for k, v in model.vision_model.state_dict().items() if "lora_" in k}
            if set(lora_state) != set(lora):
                missing = sorted(set(lora_state) - set(lora))[:3]
                raise ConvertError(f"LoRA tensors do not cover every adapted layer (missing {missing})")
            model.vision_model.load_state_dict(lora, strict=False)
        model.visual_projection.load_state_dict({"weight": visual_projection}, strict=True)
        model.text_projection.load_state_dict({"weight": text_projection}, strict=True)
    except RuntimeError as err:
        raise ConvertError(str(err).strip().splitlines()[0]) from None
    with torch.no_grad():
        model.logit_scale.copy_(logit_scale.reshape(()))
    model.clamp_logit_scale_()
    return model.eval()


__all__ = ["ConvertError", "convert_anchor_state_dict", "load_state_dict", "vision_config_from_state"]
