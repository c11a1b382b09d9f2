"""Trained long-tail (MONICA) classifiers as a transformers family (model_type ``longtail-classifier``).

Importing this package registers the family with ``AutoConfig``/``AutoModelForImageClassification`` (local
use) and marks the classes for ``register_for_auto_class``, so ``save_pretrained`` copies
``configuration_longtail_classifier.py`` and ``modeling_longtail_classifier.py`` next to the weights and
writes ``auto_map``: a user without hubtools loads the folder or Hub repo with
``AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)`` or
``pipeline("image-classification", model=repo, trust_remote_code=True)``.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from hubtools.models.longtail_classifier.configuration_longtail_classifier import (
    CLASSIFIER_KINDS,
    LongTailClassifierConfig,
)
from hubtools.models.longtail_classifier.modeling_longtail_classifier import LongTailForImageClassification

AutoConfig.register(LongTailClassifierConfig.model_type, LongTailClassifierConfig, exist_ok=True)
AutoModelForImageClassification.register(
    LongTailClassifierConfig, LongTailForImageClassification, exist_ok=True
)
LongTailClassifierConfig.register_for_auto_class()
LongTailForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["CLASSIFIER_KINDS", "LongTailClassifierConfig", "LongTailForImageClassification"]
