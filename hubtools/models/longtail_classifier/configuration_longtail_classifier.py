"""Configuration of a trained long-tail (MONICA) classifier: a transformers backbone + a long-tail head.

This file imports only transformers (and is imported by ``modeling_longtail_classifier.py``) so that
``register_for_auto_class`` can copy it into a Hub repo: a user without hubtools then loads the model
with ``AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

CLASSIFIER_KINDS = (
    "linear",
    "cosine",
    "lws",
    "tau_norm",
    "disalign",
    "mislas",
    "ncm",
    "de_confound",
    "bbn",
    "bbn_separate",
    "experts",
)
# Heads that run the late backbone stages themselves and so need the full backbone config and the split.
FEATURE_MAP_KINDS = ("experts", "bbn_separate")


class LongTailClassifierConfig(PreTrainedConfig):
    r"""Configuration of :class:`LongTailForImageClassification`.

    Fields (``num_labels``, ``id2label`` and ``label2id`` come from the class names):
        encoder_config: the backbone's own config as a plain dict with its ``model_type`` (any ``AutoConfig``
            vision model: resnet, convnext, vit, dinov2, ...). For ``experts``/``bbn_separate`` it is the
            shared trunk only (the first ``split`` stages). Named so because transformers gives
            ``backbone_config`` a meaning of its own.
        classifier: the head kind, one of ``CLASSIFIER_KINDS``.
        classifier_options: the head's options: ``tau`` (``tau_norm``); ``num_heads``, ``tau``, ``gamma``,
            ``alpha``, ``momentum`` (``de_confound``); ``backbone_config`` (the full backbone config),
            ``split`` and, for experts, ``num_experts`` and ``scale`` (``experts``, ``bbn_separate``).
        feature_dim: size of the pooled feature the head sees.
        cls_num_list: train images per class (class id order), the long-tail profile the model was trained on.
        method: the long-tail method that trained it (``erm``, ``ldam_drw``, ``la_posthoc``, ...).
        logit_offset: a fixed per-class offset added to the head's logits (post-hoc logit adjustment
            ``-tau log pi``), or ``None``.
    """

    model_type = "longtail-classifier"

    encoder_config: dict | None = None
    classifier: str = "linear"
    classifier_options: dict | None = None
    feature_dim: int | None = None
    cls_num_list: list | None = None
    method: str | None = None
    logit_offset: list | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.classifier_options is None:
            self.classifier_options = {}
        if self.encoder_config is None:  # the empty config transformers builds for defaults and diffs
            return
        # Subclass fields are not type-checked by @strict: fail here, naming the field, not in the forward.
        if "model_type" not in self.encoder_config:
            raise ValueError(f"encoder_config needs a model_type, got keys {sorted(self.encoder_config)}")
        if self.classifier not in CLASSIFIER_KINDS:
            raise ValueError(f"classifier must be one of {CLASSIFIER_KINDS}, got {self.classifier!r}")
        if not isinstance(self.feature_dim, int) or self.feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive int, got {self.feature_dim!r}")
        if self.classifier in FEATURE_MAP_KINDS:
            missing = {"backbone_config", "split"} - set(self.classifier_options)
            if missing:
                raise ValueError(f"classifier {self.classifier!r} needs classifier_options {sorted(missing)}")
        for name in ("cls_num_list", "logit_offset"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_labels:
                raise ValueError(f"{name} has {len(values)} entries for {self.num_labels} labels")


__all__ = ["LongTailClassifierConfig"]
