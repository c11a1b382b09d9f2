"""BE-DINORET models: a DINOv2 ViT with inserted (identity-initialised) blocks, and its classifier.

The forward pass is DINOv2's, unchanged: expansion only adds layers to ``encoder.layer``, so
``BeDinov2Model`` is ``Dinov2Model`` with a config that records which layers are new. Two additions
keep converted checkpoints usable: DINOv2-with-registers tokens (``config.num_register_tokens``,
inserted after CLS as in facebookresearch/dinov2 and left out of the token outputs; nothing changes
when it is 0) and ``BeDinov2Backbone``, the ``AutoBackbone`` form (feature maps for segmentation).
This file imports only torch, transformers and the configuration module next to it, so that
``register_for_auto_class`` copies both files into a Hub repo and a user without hubtools can
load it with ``trust_remote_code=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Dinov2Model, Dinov2PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings, Dinov2Encoder
from transformers.utils.generic import can_return_tuple

from .configuration_be_dinov2 import BeDinov2Config

# transformers converts legacy DINOv2 key names (attention.attention.query, ...) only for classes it
# knows; without this a legacy-named checkpoint loads into BeDinov2Model with every q/k/v/o projection
# missing, i.e. randomly initialised. overwrite=True: remote code may be imported more than once.
# The backbone class reads the same files, so it needs the same mapping.
for _name in ("BeDinov2Model", "BeDinov2Backbone"):
    register_checkpoint_conversion_mapping(
        _name, get_checkpoint_conversion_mapping("Dinov2Model"), overwrite=True
    )


@dataclass
class BeDinov2ModelOutput(BaseModelOutputWithPooling):
    r"""``BaseModelOutputWithPooling`` plus the final-normed register tokens (``None`` without registers).

    ``last_hidden_state`` and every ``hidden_states`` entry are ``[CLS, patch tokens]`` with or without
    registers, so poolers and patch-token losses index them the same way; ``attentions`` cover the full
    sequence ``[CLS, registers, patches]``.
    """

    register_tokens: torch.FloatTensor | None = None


class BeDinov2Embeddings(Dinov2Embeddings):
    """DINOv2 embeddings, then ``num_register_tokens`` learned tokens inserted right after CLS.

    Same order as facebookresearch/dinov2 ``prepare_tokens_with_masks``: mask patches, prepend CLS, add
    position embeddings, insert registers (which get no position embedding).
    """

    def __init__(self, config: BeDinov2Config) -> None:
        super().__init__(config)
        num = config.num_register_tokens
        self.register_tokens = nn.Parameter(torch.zeros(1, num, config.hidden_size)) if num else None

    def forward(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        embeddings = super().forward(pixel_values, bool_masked_pos=bool_masked_pos)
        if self.register_tokens is None:
            return embeddings
        registers = self.register_tokens.expand(embeddings.shape[0], -1, -1)
        return torch.cat((embeddings[:, :1], registers, embeddings[:, 1:]), dim=1)


def _without_registers(hidden_state: torch.Tensor | None, num_registers: int) -> torch.Tensor | None:
    """``[CLS, registers, patches]`` -> ``[CLS, patches]``."""
    if hidden_state is None or not num_registers:
        return hidden_state
    return torch.cat((hidden_state[:, :1], hidden_state[:, 1 + num_registers :]), dim=1)


def _init_register_tokens(module: nn.Module) -> None:
    # Dinov2PreTrainedModel._init_weights knows nothing of registers; zeros as transformers' own
    # Dinov2WithRegisters. Only reached for tensors a checkpoint did not provide.
    if isinstance(module, BeDinov2Embeddings) and module.register_tokens is not None:
        init.zeros_(module.register_tokens)


class BeDinov2Model(Dinov2Model):
    """DINOv2 backbone whose ``encoder.layer[k]`` for k in ``config.expanded_layer_indices`` are inserted blocks."""

    config_class = BeDinov2Config
    config: BeDinov2Config
    _no_split_modules = ["BeDinov2Embeddings", "Dinov2Layer"]

    def __init__(self, config: BeDinov2Config) -> None:
        # Dinov2Model.__init__ with the register-aware embeddings; without registers the modules,
        # parameter names and initialisation order are Dinov2Model's.
        Dinov2PreTrainedModel.__init__(self, config)
        self.config = config
        self.embeddings = BeDinov2Embeddings(config)
        self.encoder = Dinov2Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        _init_register_tokens(module)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BeDinov2ModelOutput:
        """``Dinov2Model.forward``; with registers, they are moved out of the token outputs into
        ``register_tokens`` (dinov2's ``x_norm_regtokens``)."""
        outputs = super().forward(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            attention_mask=attention_mask,
            return_dict=True,
            **kwargs,
        )
        num = self.config.num_register_tokens
        sequence_output = outputs.last_hidden_state
        return BeDinov2ModelOutput(
            last_hidden_state=_without_registers(sequence_output, num),
            pooler_output=outputs.pooler_output,
            hidden_states=None
            if outputs.hidden_states is None
            else tuple(_without_registers(h, num) for h in outputs.hidden_states),
            attentions=outputs.attentions,
            register_tokens=sequence_output[:, 1 : 1 + num] if num else None,
        )

    def expanded_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the inserted blocks: what BE-DINORET trains while the original blocks stay frozen."""
        for index in self.config.expanded_layer_indices or []:
            yield from self.encoder.layer[index].parameters()


class BeDinov2ForImageClassification(Dinov2PreTrainedModel):
    """A block-expanded DINOv2 with a classification head on a pooled feature (``config.head_pooling``).

    The head is one Linear layer, or for ``classifier_num_layers = n > 1``
    ``[BatchNorm -> Linear -> LeakyReLU -> Dropout] x (n - 1) -> Linear`` as in DINORET's fine-tuning code.
    The backbone is nested as ``self.dinov2`` (``base_model_prefix``), so a backbone checkpoint loads
    into this class and this class's checkpoint loads into ``BeDinov2Model``.
    """

    config_class = BeDinov2Config
    config: BeDinov2Config
    base_model_prefix = "dinov2"

    def __init__(self, config: BeDinov2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dinov2 = BeDinov2Model(config)
        in_features = config.hidden_size * (2 if config.head_pooling == "cls_mean" else 1)
        layers: list[nn.Module] = []
        for _ in range(config.classifier_num_layers - 1):
            layers += [
                nn.BatchNorm1d(in_features),
                nn.Linear(in_features, config.hidden_size),
                nn.LeakyReLU(),
                nn.Dropout(config.classifier_dropout),
            ]
            in_features = config.hidden_size
        layers.append(nn.Linear(in_features, config.num_labels) if config.num_labels > 0 else nn.Identity())
        self.classifier = nn.Sequential(*layers)
        self.post_init()

    def pool(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """The feature the head sees: CLS token, mean of patch tokens, or both concatenated."""
        cls_token = sequence_output[:, 0]
        if self.config.head_pooling == "cls":
            return cls_token
        patch_mean = sequence_output[:, 1:].mean(dim=1)
        if self.config.head_pooling == "mean_patch":
            return patch_mean
        return torch.cat([cls_token, patch_mean], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.dinov2(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        logits = self.classifier(self.pool(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BeDinov2Backbone(BackboneMixin, Dinov2PreTrainedModel):
    """``AutoBackbone`` form of a (block-expanded) DINOv2, as transformers' ``Dinov2Backbone``.

    ``config.out_features`` / ``out_indices`` pick stages (``"stem"`` = embeddings, ``"stage{i}"`` = output of
    layer i); each selected hidden state gets the final ``layernorm`` (``apply_layernorm``) and its patch
    tokens are reshaped to ``[B, hidden_size, H / patch, W / patch]`` (``reshape_hidden_states``). CLS and
    register tokens are not part of the maps. Same parameter names as ``BeDinov2Model``: it loads the
    same folders.
    """

    config_class = BeDinov2Config
    config: BeDinov2Config
    _no_split_modules = ["BeDinov2Embeddings", "Dinov2Layer"]

    def __init__(self, config: BeDinov2Config) -> None:
        super().__init__(config)
        self.num_features = [config.hidden_size for _ in range(config.num_hidden_layers + 1)]
        self.embeddings = BeDinov2Embeddings(config)
        self.encoder = Dinov2Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        _init_register_tokens(module)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BackboneOutput:
        embedding_output = self.embeddings(pixel_values)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embedding_output, attention_mask=attention_mask
        )
        output = self.encoder(embedding_output, attention_mask=attention_mask, **kwargs)
        num = self.config.num_register_tokens
        hidden_states = tuple(_without_registers(h, num) for h in output.hidden_states)

        batch_size, _, height, width = pixel_values.shape
        patch_height, patch_width = self.embeddings.patch_embeddings.patch_size
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, hidden_states, strict=True):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = self.layernorm(hidden_state)
            if self.config.reshape_hidden_states:
                # patches are flattened row by row from the conv output, so (H / p, W / p) is the grid
                hidden_state = hidden_state[:, 1:].reshape(
                    batch_size, height // patch_height, width // patch_width, -1
                )
                hidden_state = hidden_state.permute(0, 3, 1, 2).contiguous()
            feature_maps += (hidden_state,)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=hidden_states, attentions=output.attentions
        )


__all__ = ["BeDinov2Backbone", "BeDinov2ForImageClassification", "BeDinov2Model", "BeDinov2ModelOutput"]
