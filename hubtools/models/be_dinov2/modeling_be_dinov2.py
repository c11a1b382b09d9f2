"""BE-DINORET models: a DINOv2 ViT with inserted (identity-initialised) blocks, and its classifier.

The forward pass is DINOv2's, unchanged: expansion only adds layers to ``encoder.layer``, so
``BeDinov2Model`` is ``Dinov2Model`` with a config that records which layers are new. This file
imports only torch, transformers and the configuration module next to it, so that
``register_for_auto_class`` copies both files into a Hub repo and a user without hubtools can
load it with ``trust_remote_code=True``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from transformers import Dinov2Model, Dinov2PreTrainedModel
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_be_dinov2 import BeDinov2Config

# transformers converts legacy DINOv2 key names (attention.attention.query, ...) only for classes it
# knows; without this a legacy-named checkpoint loads into BeDinov2Model with every q/k/v/o projection
# missing, i.e. randomly initialised. overwrite=True: remote code may be imported more than once.
register_checkpoint_conversion_mapping(
    "BeDinov2Model", get_checkpoint_conversion_mapping("Dinov2Model"), overwrite=True
)


class BeDinov2Model(Dinov2Model):
    """DINOv2 backbone whose ``encoder.layer[k]`` for k in ``config.expanded_layer_indices`` are inserted blocks."""

    config_class = BeDinov2Config
    config: BeDinov2Config

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


__all__ = ["BeDinov2ForImageClassification", "BeDinov2Model"]
