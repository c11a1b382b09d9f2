"""RetiZero: a retinal vision-language dual encoder as a transformers model family (model_type ``retizero``).

Importing this package registers the family with ``AutoConfig``/``AutoModel``/
``AutoModelForZeroShotImageClassification`` and marks the classes for ``register_for_auto_class``: ``save_pretrained``
copies ``configuration_retizero.py`` and ``modeling_retizero.py`` next to the weights, so a user without hubtools
loads the folder or Hub repo with ``AutoModel.from_pretrained(repo, trust_remote_code=True)``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

from hubtools.models.retizero.configuration_retizero import RetiZeroConfig
from hubtools.models.retizero.modeling_retizero import (
    RetiZeroModel,
    RetiZeroOutput,
    clip_loss,
    dirichlet_uncertainty_loss,
    kl_anneal_weight,
)
from hubtools.models.retizero.processing_retizero import RetiZeroProcessor

AutoConfig.register(RetiZeroConfig.model_type, RetiZeroConfig, exist_ok=True)
AutoModel.register(RetiZeroConfig, RetiZeroModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(RetiZeroConfig, RetiZeroModel, exist_ok=True)
RetiZeroConfig.register_for_auto_class()
RetiZeroModel.register_for_auto_class("AutoModel")
RetiZeroModel.register_for_auto_class("AutoModelForZeroShotImageClassification")

__all__ = [
    "RetiZeroConfig",
    "RetiZeroModel",
    "RetiZeroOutput",
    "RetiZeroProcessor",
    "clip_loss",
    "dirichlet_uncertainty_loss",
    "kl_anneal_weight",
]
