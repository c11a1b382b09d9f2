"""Block expansion (LLaMA-Pro, BE-DINORET): insert copies of DINOv2 blocks that are exact identities at init.

A DINOv2 block computes ``h = x + γ1 ⊙ O(Attn(LN1 x))`` and ``y = h + γ2 ⊙ F(LN2 h)``. Zeroing the two
LayerScale vectors γ (``layerscale_zero``, DINORET's code) or the output projections O and F, weights
AND biases (``zero_out``, LLaMA-Pro), makes both residual branches exactly 0, so ``y = x`` bitwise and
the expanded model computes the same function as the base. Training only the inserted blocks then
adapts the model without overwriting what the original blocks know.

The expanded model is built by an explicit key remap and ``load_state_dict(strict=True)``, never by
letting ``from_pretrained`` initialise missing keys: transformers' init sets LayerScale back to
``layerscale_value`` and would silently break the identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Dinov2Config, Dinov2Model, PreTrainedConfig

from hubtools.errors import ArtifactError, ConfigError
from hubtools.models.be_dinov2.configuration_be_dinov2 import EXPANSION_INITS, BeDinov2Config
from hubtools.models.be_dinov2.convert import (
    is_torch_hub_state_dict,
    load_torch_hub_checkpoint,
    torch_hub_to_hf,
)
from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2ForImageClassification, BeDinov2Model

DEFAULT_POSITIONS = (3, 7, 11)
# Base-config fields that describe the architecture; backbone out_features depend on depth, so they reset.
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(Dinov2Config)} - {
    "transformers_version",
    "architectures",
    "_out_features",
    "_out_indices",
    "dtype",
}

BaseLike = nn.Module | dict | str | Path


def expansion_positions(
    num_layers: int, positions: Sequence[int] | None = None, num_groups: int | None = None
) -> list[int]:
    """Sorted unique original block indices after which a copy goes; ``num_groups=G`` is LLaMA-Pro's rule
    (one copy after the last block of each of G equal groups)."""
    if num_groups is not None:
        if positions is not None:
            raise ConfigError("give positions or num_groups, not both")
        if num_groups < 1 or num_layers % num_groups:
            raise ConfigError(f"num_groups={num_groups} must divide num_hidden_layers={num_layers}")
        size = num_layers // num_groups
        return [(g + 1) * size - 1 for g in range(num_groups)]
    if positions is None:
        positions = DEFAULT_POSITIONS
    out = sorted(set(int(p) for p in positions))
    if not out:
        raise ConfigError("positions is empty: nothing to expand")
    if out[0] < 0 or out[-1] >= num_layers:
        raise ConfigError(f"positions {out} must lie in [0, {num_layers}) for a {num_layers}-layer base")
    return out


def expanded_indices(positions: Sequence[int]) -> list[int]:
    """Index of each inserted block in the expanded model: the k-th position (0-based) lands at ``p_k + k + 1``."""
    return [p + k + 1 for k, p in enumerate(sorted(positions))]


def load_base(base: BaseLike, num_attention_heads: int | None = None) -> Dinov2Model:
    """A DINOv2 backbone from a model, an original-format state dict, a ``.pth``/``.safetensors`` file,
    a ``save_pretrained`` folder or a Hub repo id. Native ``from_pretrained`` converts legacy key names."""
    if isinstance(base, nn.Module):
        if (
            isinstance(base, BeDinov2ForImageClassification)
            or type(base).__name__ == "Dinov2ForImageClassification"
        ):
            base = base.dinov2
        if not isinstance(base, Dinov2Model):
            raise ConfigError(
                f"expected a Dinov2Model, got {type(base).__name__} (for DINOv2 with registers or RETFound, "
                "convert the checkpoint with `hubtools be-dinov2 convert` first)"
            )
        return base
    if isinstance(base, dict):
        return _from_torch_hub(base, num_attention_heads, source="<state dict>")
    path = Path(base)
    if path.is_file():
        if path.suffix == ".safetensors":
            state_dict = load_file(path)
        else:
            state_dict = load_torch_hub_checkpoint(path)
        return _from_torch_hub(state_dict, num_attention_heads, source=str(path))
    config_dict, _ = PreTrainedConfig.get_config_dict(str(base))
    model_type = config_dict.get("model_type")
    if model_type == "be-dinov2":
        return BeDinov2Model.from_pretrained(str(base))
    if model_type != "dinov2":
        raise ConfigError(
            f"{base}: model_type {model_type!r} is not a DINOv2 (expected 'dinov2' or 'be-dinov2')"
        )
    return Dinov2Model.from_pretrained(str(base))


def _from_torch_hub(state_dict: dict, num_attention_heads: int | None, source: str) -> Dinov2Model:
    if not is_torch_hub_state_dict(state_dict):
        raise ArtifactError(f"{source}: not a DINOv2 torch.hub state dict (no 'blocks.*' / 'pos_embed' keys)")
    hf_state, config_kwargs = torch_hub_to_hf(state_dict, num_attention_heads=num_attention_heads)
    model = Dinov2Model(Dinov2Config(**config_kwargs))
    _load_strict(model, hf_state, source)
    return model


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ArtifactError(f"{source}: weights do not match the architecture: {err}") from None


def _residual_outputs(layer: nn.Module) -> list[nn.Linear]:
    """The two projections that end a block's residual branches, found by attribute: the module names
    changed in transformers 5.18 (``attention.output.dense`` -> ``attention.o_proj``; SwiGLU ``weights_out``
    -> ``down_proj``)."""
    found = []
    for owner, names in (
        (layer.attention, ("o_proj", "output")),
        (layer.mlp, ("fc2", "down_proj", "weights_out")),
    ):
        module = next((getattr(owner, n) for n in names if hasattr(owner, n)), None)
        module = getattr(module, "dense", module)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"cannot find the output projection of {type(owner).__name__}")
        found.append(module)
    return found


def make_identity(layer: nn.Module, init: str) -> None:
    """Zero what makes ``layer`` an exact identity under ``init`` (see the module docstring)."""
    with torch.no_grad():
        if init == "layerscale_zero":
            layer.layer_scale1.lambda1.zero_()
            layer.layer_scale2.lambda1.zero_()
        elif init == "zero_out":
            for linear in _residual_outputs(layer):
                linear.weight.zero_()
                if linear.bias is not None:  # ViT blocks have biases: a non-zero one breaks the identity
                    linear.bias.zero_()
        else:
            raise ConfigError(f"init must be one of {EXPANSION_INITS}, got {init!r}")


def expand_blocks(
    base: BaseLike,
    positions: Sequence[int] | None = DEFAULT_POSITIONS,
    init: str = "layerscale_zero",
    *,
    num_groups: int | None = None,
    num_attention_heads: int | None = None,
) -> BeDinov2Model:
    """Insert a copy of original block ``p`` after it for each ``p`` in ``positions``; the copies are identities.

    ``base``: a ``Dinov2Model`` (or a classifier around one), a ``save_pretrained`` folder or Hub repo id
    (``dinov2``, or an unexpanded ``be-dinov2``), or an original-format (torch.hub, ``blocks.{i}.*``) state
    dict or ``.pth`` file; for those ``num_attention_heads`` defaults to ``hidden_size // 64``.
    ``num_groups=G`` instead of ``positions`` puts one copy at the end of each of G equal groups.
    Returns a ``BeDinov2Model`` whose outputs equal the base's bitwise at init.
    """
    if init not in EXPANSION_INITS:
        raise ConfigError(f"init must be one of {EXPANSION_INITS}, got {init!r}")
    if num_groups is not None and positions == DEFAULT_POSITIONS:
        positions = None
    model = load_base(base, num_attention_heads)
    if isinstance(model, BeDinov2Model) and model.config.expanded_layer_indices:
        raise ConfigError(
            f"the base is already expanded (layers {model.config.expanded_layer_indices}); expand the original"
        )
    n = model.config.num_hidden_layers
    pos = expansion_positions(n, positions, num_groups)
    new_idx = expanded_indices(pos)
    # Built fresh from the base's fields: BeDinov2Config.from_pretrained(base) would keep model_type "dinov2".
    base_fields = {k: v for k, v in model.config.to_dict().items() if k in _CONFIG_FIELDS}
    # a converted checkpoint's registers and source licence survive expansion
    base_fields |= {
        k: getattr(model.config, k)
        for k in ("num_register_tokens", "weights_license")
        if getattr(model.config, k, None) is not None
    }
    config = BeDinov2Config(
        **{**base_fields, "num_hidden_layers": n + len(pos)},
        original_num_hidden_layers=n,
        expanded_layer_indices=new_idx,
        expansion_init=init,
        expansion_positions=pos,
    )

    old_state = model.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    old_to_new = {j: j + sum(p < j for p in pos) for j in range(n)}
    for key, value in old_state.items():
        if key.startswith("encoder.layer."):
            j, rest = key.removeprefix("encoder.layer.").split(".", 1)
            new_state[f"encoder.layer.{old_to_new[int(j)]}.{rest}"] = value.clone()
        else:
            new_state[key] = value.clone()
    for p, k in zip(pos, new_idx, strict=True):
        prefix = f"encoder.layer.{p}."
        for key, value in old_state.items():
            if key.startswith(prefix):
                new_state[f"encoder.layer.{k}.{key.removeprefix(prefix)}"] = value.clone()

    expanded = BeDinov2Model(config)
    _load_strict(expanded, new_state, "expanded state dict")
    for k in new_idx:
        make_identity(expanded.encoder.layer[k], init)
    expanded.eval()
    return expanded


def find_backbone(model: nn.Module) -> BeDinov2Model:
    """The ``BeDinov2Model`` inside ``model`` (itself, a classifier's ``dinov2``, an SSL wrapper's backbone)."""
    for module in model.modules():
        if isinstance(module, BeDinov2Model):
            return module
    raise ConfigError(f"{type(model).__name__} contains no BeDinov2Model")


def freeze_original_layers(model: nn.Module, train_final_layernorm: bool = False) -> list[str]:
    """Leave only the inserted blocks (and anything outside the backbone, e.g. heads) trainable.

    Embeddings, mask token and original blocks are frozen; the final ``layernorm`` too unless
    ``train_final_layernorm``. Build the optimizer from trainable tensors only, so a later unfreeze
    cannot silently start updating the originals. Returns the names of the trainable parameters.
    """
    backbone = find_backbone(model)
    indices = backbone.config.expanded_layer_indices
    if not indices:
        raise ConfigError("the model has no expanded layers: nothing would be trained")
    backbone.requires_grad_(False)
    for k in indices:
        backbone.encoder.layer[k].requires_grad_(True)
    if train_final_layernorm:
        backbone.layernorm.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def expanded_classifier(
    backbone: BeDinov2Model, num_labels: int, **head_config: object
) -> BeDinov2ForImageClassification:
    """A ``BeDinov2ForImageClassification`` around a copy of ``backbone``'s weights with a fresh head."""
    fields = {k: v for k, v in backbone.config.to_dict().items() if k not in ("id2label", "label2id")}
    config = BeDinov2Config.from_dict({**fields, **head_config, "num_labels": num_labels})
    classifier = BeDinov2ForImageClassification(config)
    classifier.dinov2.load_state_dict(backbone.state_dict(), strict=True)
    return classifier
