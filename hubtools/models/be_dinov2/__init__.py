"""BE-DINORET: block-expanded DINOv2 as a transformers model family (model_type ``be-dinov2``).

Importing this package registers the family with ``AutoConfig``/``AutoModel``/
``AutoModelForImageClassification`` (local use) and marks the classes for ``register_for_auto_class``,
so ``save_pretrained`` copies ``configuration_be_dinov2.py`` and ``modeling_be_dinov2.py`` next to the
weights and writes ``auto_map``: a user without hubtools loads the folder or Hub repo with
``AutoModel.from_pretrained(repo, trust_remote_code=True)`` (hubtools never sets that flag for them).
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from hubtools.models.be_dinov2.configuration_be_dinov2 import BeDinov2Config
from hubtools.models.be_dinov2.expand import (
    expand_blocks,
    expanded_classifier,
    expanded_indices,
    expansion_positions,
    find_backbone,
    freeze_original_layers,
    load_base,
)
from hubtools.models.be_dinov2.modeling_be_dinov2 import (
    BeDinov2Backbone,
    BeDinov2ForImageClassification,
    BeDinov2Model,
)

AutoConfig.register(BeDinov2Config.model_type, BeDinov2Config, exist_ok=True)
AutoModel.register(BeDinov2Config, BeDinov2Model, exist_ok=True)
AutoModelForImageClassification.register(BeDinov2Config, BeDinov2ForImageClassification, exist_ok=True)
AutoBackbone.register(BeDinov2Config, BeDinov2Backbone, exist_ok=True)
BeDinov2Config.register_for_auto_class()
BeDinov2Model.register_for_auto_class("AutoModel")
BeDinov2ForImageClassification.register_for_auto_class("AutoModelForImageClassification")
BeDinov2Backbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "BeDinov2Backbone",
    "BeDinov2Config",
    "BeDinov2ForImageClassification",
    "BeDinov2Model",
    "expand_blocks",
    "expanded_classifier",
    "expanded_indices",
    "expansion_positions",
    "find_backbone",
    "freeze_original_layers",
    "load_base",
]
