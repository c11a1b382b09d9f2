"""BE-DINORET configuration: a `Dinov2Config` that records which transformer blocks were inserted.

This file imports only transformers (and is imported by ``modeling_be_dinov2.py``) so that
``register_for_auto_class`` can copy it into a Hub repo: a user without hubtools then loads the
model with ``AutoModel.from_pretrained(repo, trust_remote_code=True)``.
"""

from __future__ import annotations

from transformers import Dinov2Config

EXPANSION_INITS = ("layerscale_zero", "zero_out")
HEAD_POOLINGS = ("cls", "mean_patch", "cls_mean")
_BACKBONE_AUTO_MAP = {"AutoBackbone": "modeling_be_dinov2.BeDinov2Backbone"}


class BeDinov2Config(Dinov2Config):
    r"""Configuration of a block-expanded DINOv2 (BE-DINORET).

    Extra fields (the rest are `Dinov2Config`'s):
        expanded_layer_indices: indices (in the expanded model) of the inserted blocks; ``None`` for a model
            that was not expanded. Their count must be ``num_hidden_layers - original_num_hidden_layers``.
        original_num_hidden_layers: depth of the base checkpoint before expansion.
        expansion_init: how the inserted blocks were made identities: ``"layerscale_zero"`` (both LayerScale
            vectors zeroed, DINORET's code) or ``"zero_out"`` (attention output and MLP output projections
            zeroed, weights and biases, LLaMA-Pro).
        expansion_positions: original block indices after which copies were inserted (provenance only).
        head_pooling: feature fed to the classification head: ``"cls"``, ``"mean_patch"`` or ``"cls_mean"``
            (concatenation, as `Dinov2ForImageClassification`).
        classifier_num_layers: 1 = one Linear; n > 1 adds (n - 1) [BatchNorm, Linear, LeakyReLU, Dropout] blocks.
        num_register_tokens: DINOv2-with-registers tokens inserted after CLS (0 = none). They take part in
            attention and are left out of ``last_hidden_state``/``hidden_states`` (returned as ``register_tokens``).
        weights_license: licence of the weights when it is not the project default (e.g. ``"cc-by-nc-4.0"`` for
            RETFound-based weights); the model card takes its ``license`` from here.

    ``auto_map`` always names ``modeling_be_dinov2.BeDinov2Backbone`` for ``AutoBackbone``, so every saved
    folder also loads as a feature-map backbone (segmentation, detection) with ``trust_remote_code=True``.
    """

    model_type = "be-dinov2"

    expanded_layer_indices: list[int] | None = None
    original_num_hidden_layers: int | None = None
    expansion_init: str = "layerscale_zero"
    expansion_positions: list[int] | None = None
    head_pooling: str = "cls"
    classifier_num_layers: int = 1
    classifier_dropout: float = 0.0
    num_register_tokens: int = 0
    weights_license: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Subclass fields are not type-checked by @strict, so a bad value would otherwise surface as a
        # shape error deep inside the forward pass (or silently build the wrong model).
        if self.original_num_hidden_layers is None:
            self.original_num_hidden_layers = self.num_hidden_layers
        indices = self.expanded_layer_indices
        if indices is not None:
            if not isinstance(indices, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in indices
            ):
                raise ValueError(f"expanded_layer_indices must be a list of ints, got {indices!r}")
            indices = list(indices)
            if indices != sorted(set(indices)):
                raise ValueError(f"expanded_layer_indices must be sorted and unique, got {indices}")
            if indices and (indices[0] < 0 or indices[-1] >= self.num_hidden_layers):
                raise ValueError(
                    f"expanded_layer_indices {indices} out of range for num_hidden_layers={self.num_hidden_layers}"
                )
            self.expanded_layer_indices = indices
        expected = self.num_hidden_layers - self.original_num_hidden_layers
        if len(indices or []) != expected:
            raise ValueError(
                f"expanded_layer_indices has {len(indices or [])} entries but num_hidden_layers - "
                f"original_num_hidden_layers = {self.num_hidden_layers} - {self.original_num_hidden_layers} = {expected}"
            )
        if self.expansion_init not in EXPANSION_INITS:
            raise ValueError(f"expansion_init must be one of {EXPANSION_INITS}, got {self.expansion_init!r}")
        if self.head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"head_pooling must be one of {HEAD_POOLINGS}, got {self.head_pooling!r}")
        if not isinstance(self.classifier_num_layers, int) or self.classifier_num_layers < 1:
            raise ValueError(f"classifier_num_layers must be an int >= 1, got {self.classifier_num_layers!r}")
        if (
            not isinstance(self.num_register_tokens, int)
            or isinstance(self.num_register_tokens, bool)
            or self.num_register_tokens < 0
        ):
            raise ValueError(f"num_register_tokens must be an int >= 0, got {self.num_register_tokens!r}")
        # save_pretrained only records the class being saved (AutoModel for a BeDinov2Model); the backbone
        # class reads the same weights, so it is named here for every artifact.
        self.auto_map = {**(getattr(self, "auto_map", None) or {}), **_BACKBONE_AUTO_MAP}


__all__ = ["BeDinov2Config"]
