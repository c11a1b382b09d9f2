"""Original (torch.hub / facebookresearch/dinov2) DINOv2 state dicts -> transformers key names.

The published DINORET weights (``cmerk/dinoret``: ``dinoret.pth``, ``bedinoret.pth``) and the
official torch.hub checkpoints use ``blocks.{i}.attn.qkv`` etc.; transformers uses
``encoder.layer.{i}.attention.{q,k,v}_proj``. Converting by explicit map (not by letting
``from_pretrained`` initialise missing keys) makes a wrong or partial checkpoint an error.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from hubtools.errors import ArtifactError

# Prefixes stripped from SSL training checkpoints (DINOv2 / DINORET save the whole meta-architecture).
_SSL_DROP_PREFIXES = ("student", "dino_loss", "ibot_patch_loss", "koleo_loss")
_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # block_chunks checkpoints nest one more index
_TOP_LEVEL_KEYS = frozenset(
    {
        "cls_token",
        "pos_embed",
        "mask_token",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
)
_BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
}


def is_torch_hub_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for original-format keys (``blocks.*``, ``pos_embed``), possibly under ``teacher.backbone.``."""
    keys = _strip_ssl_prefixes(state_dict).keys()
    return "pos_embed" in keys or any(k.startswith("blocks.") for k in keys)


def _strip_ssl_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not any(k.startswith("teacher.") for k in state_dict):
        return state_dict
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_SSL_DROP_PREFIXES) or not key.startswith("teacher."):
            continue
        key = key.removeprefix("teacher.").removeprefix("backbone.")
        out[key] = value
    return out


def torch_hub_to_hf(
    state_dict: dict[str, torch.Tensor],
    num_attention_heads: int | None = None,
    mlp_ratio: float | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Convert an original-format DINOv2 state dict; returns ``(hf_state_dict, dinov2_config_kwargs)``.

    The config is read from tensor shapes. Heads are not stored in the weights: the default is
    ``hidden_size // 64`` (every DINOv2 size, ViT-S/B/L/g, uses 64-dim heads). ``image_size`` is
    ``patch_size * grid`` of the stored position-embedding grid (37x37 for 518 px, 16x16 for 224 px).
    Unknown keys (heads, register tokens) are errors rather than silently dropped.
    """
    sd = _strip_ssl_prefixes(state_dict)
    try:
        cls_token, pos_embed, proj = sd["cls_token"], sd["pos_embed"], sd["patch_embed.proj.weight"]
    except KeyError as err:
        raise ArtifactError(f"not a DINOv2 torch.hub state dict: missing key {err.args[0]!r}") from None
    if "register_tokens" in sd:
        raise ArtifactError("DINOv2 checkpoints with register tokens are not supported by BE-DINOv2")
    hidden = cls_token.shape[-1]
    grid = math.isqrt(pos_embed.shape[1] - 1)
    if grid * grid != pos_embed.shape[1] - 1:
        raise ArtifactError(f"pos_embed has {pos_embed.shape[1] - 1} patch positions: not a square grid")
    patch = proj.shape[-1]
    out: dict[str, torch.Tensor] = {
        "embeddings.cls_token": cls_token,
        "embeddings.position_embeddings": pos_embed,
        "embeddings.patch_embeddings.projection.weight": proj,
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    if "mask_token" in sd:
        out["embeddings.mask_token"] = sd["mask_token"].reshape(1, hidden)
    layers: set[int] = set()
    swiglu = False
    for key, value in sd.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            if key not in _TOP_LEVEL_KEYS:
                raise ArtifactError(f"unexpected key {key!r} in a DINOv2 torch.hub state dict")
            continue
        i, rest = int(match.group(1)), match.group(2)
        layers.add(i)
        prefix = f"encoder.layer.{i}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}attention.{name}.{kind}"] = part.clone()
        elif rest in ("mlp.w12.weight", "mlp.w12.bias"):
            swiglu = True
            kind = rest.rsplit(".", 1)[1]
            gate, up = value.chunk(2, dim=0)
            out[f"{prefix}mlp.gate_proj.{kind}"], out[f"{prefix}mlp.up_proj.{kind}"] = (
                gate.clone(),
                up.clone(),
            )
        elif rest in _BLOCK_MAP:
            out[prefix + _BLOCK_MAP[rest]] = value
        else:
            raise ArtifactError(f"unexpected key {key!r} in a DINOv2 torch.hub state dict")
    if layers != set(range(len(layers))):
        raise ArtifactError(f"block indices {sorted(layers)} are not contiguous from 0")
    if mlp_ratio is None:
        mlp_ratio = 4 if swiglu else sd["blocks.0.mlp.fc1.weight"].shape[0] // hidden
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": num_attention_heads or max(hidden // 64, 1),
        "mlp_ratio": mlp_ratio,
        "patch_size": patch,
        "image_size": patch * grid,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "use_swiglu_ffn": swiglu,
        "use_mask_token": "mask_token" in sd,
        "layer_norm_eps": 1e-6,
    }
    return out, config


def load_torch_hub_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a foreign ``.pth`` safely (``weights_only=True``: no unpickling of arbitrary objects)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt/pickled-object files
        raise ArtifactError(f"{path}: cannot read as a weights-only torch checkpoint: {err}") from None
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict) and len(obj) <= 4:
            obj = {f"teacher.{k}" if wrapper == "teacher" else k: v for k, v in obj[wrapper].items()}
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path}: expected a state dict of tensors")
    return obj


def convert_checkpoint(
    path: str | Path, expanded_indices: list[int] | None = None, num_attention_heads: int | None = None
):
    """An original-format checkpoint as a ``BeDinov2Model``; ``expanded_indices`` marks which blocks were
    inserted (``bedinoret.pth``: [4, 9, 14], not stored in the file). Loaded strictly: nothing is random."""
    from hubtools.models.be_dinov2.configuration_be_dinov2 import BeDinov2Config
    from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2Model

    hf_state, config_kwargs = torch_hub_to_hf(load_torch_hub_checkpoint(path), num_attention_heads)
    indices = sorted(expanded_indices or [])
    config = BeDinov2Config(
        **config_kwargs,
        original_num_hidden_layers=config_kwargs["num_hidden_layers"] - len(indices),
        expanded_layer_indices=indices or None,
        expansion_positions=[i - k - 1 for k, i in enumerate(indices)] or None,
    )
    model = BeDinov2Model(config)
    try:
        model.load_state_dict(hf_state, strict=True)
    except RuntimeError as err:
        raise ArtifactError(f"{path}: weights do not match the architecture: {err}") from None
    return model.eval()
