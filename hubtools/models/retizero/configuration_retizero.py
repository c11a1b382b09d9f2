"""RetiZero configuration: a vision tower config, a text tower config and the dual-encoder fields.

This file imports only transformers (and is imported by ``modeling_retizero.py``) so that
``register_for_auto_class`` can copy it into a Hub repo: a user without hubtools then loads the
model with ``AutoModel.from_pretrained(repo, trust_remote_code=True)``.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

IMAGE_POOLINGS = ("cls",)
RETRIEVAL_POOLINGS = ("mean_patch_prenorm",)
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


class RetiZeroConfig(PreTrainedConfig):
    r"""Configuration of a RetiZero dual encoder (CLIP-style, FLAIR/RetiZero recipe).

    Fields (besides the two tower configs, any ``AutoConfig`` type: ViT/Dinov2 vision, BERT-family text):
        projection_dim: size of the shared embedding space.
        logit_scale_init_value: initial log-temperature ``s`` (ln 1/0.07).
        logit_scale_min, logit_scale_max: every forward uses ``clamp(s, min, max)``, scale ``exp(s)`` in [1, 100].
        text_pool_layers: hidden-state indices averaged for the text embedding (``None`` = ``[1, 2, -1]``,
            index 0 is the embedding output).
        text_pool_masked: attention-mask-weighted token mean (``False`` averages padding too, as the anchor).
        text_max_length: longest tokenised text; longer texts are truncated (the processor warns).
        image_pooling: image feature fed to the projection (``"cls"``: CLS token after the final LayerNorm).
        retrieval_pooling: ``get_retrieval_features`` pooling (mean of patch tokens before the final LayerNorm).
        vision_lora: ``None`` or ``{"r", "alpha", "dropout", "target_modules"}`` of the LoRA injected into the
            vision tower (needs peft); ``merge_vision_lora()`` folds it back and resets this to ``None``.
        freeze_vision_base: keep every non-LoRA vision weight frozen.
        uncertainty_loss: add the evidential (Dirichlet) term to the CLIP loss.
        uncertainty_anneal_epochs: the KL weight is ``min(1, epoch / uncertainty_anneal_epochs)``.
    """

    model_type = "retizero"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    logit_scale_min: float = 0.0
    logit_scale_max: float = 4.6052
    text_pool_layers: list[int] | None = None
    text_pool_masked: bool = True
    text_max_length: int = 77
    image_pooling: str = "cls"
    retrieval_pooling: str = "mean_patch_prenorm"
    vision_lora: dict | None = None
    freeze_vision_base: bool = True
    uncertainty_loss: bool = True
    uncertainty_anneal_epochs: int = 15

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Subclass fields are not type-checked by @strict: fail here, naming the field, not in the forward.
        if self.text_pool_layers is None:
            self.text_pool_layers = [1, 2, -1]
        layers = self.text_pool_layers
        if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(i, int) for i in layers):
            raise ValueError(f"text_pool_layers must be a non-empty list of ints, got {layers!r}")
        self.text_pool_layers = list(layers)
        if not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise ValueError(f"projection_dim must be a positive int, got {self.projection_dim!r}")
        if not self.logit_scale_min <= self.logit_scale_max:
            raise ValueError(
                f"logit_scale_min ({self.logit_scale_min}) must not exceed logit_scale_max ({self.logit_scale_max})"
            )
        if not isinstance(self.text_max_length, int) or self.text_max_length < 2:
            raise ValueError(f"text_max_length must be an int >= 2, got {self.text_max_length!r}")
        if self.image_pooling not in IMAGE_POOLINGS:
            raise ValueError(f"image_pooling must be one of {IMAGE_POOLINGS}, got {self.image_pooling!r}")
        if self.retrieval_pooling not in RETRIEVAL_POOLINGS:
            raise ValueError(
                f"retrieval_pooling must be one of {RETRIEVAL_POOLINGS}, got {self.retrieval_pooling!r}"
            )
        if self.vision_lora is not None:
            if not isinstance(self.vision_lora, dict) or not set(self.vision_lora) <= LORA_KEYS:
                raise ValueError(
                    f"vision_lora must be None or a dict with keys {sorted(LORA_KEYS)}, got {self.vision_lora!r}"
                )
            if not isinstance(self.vision_lora.get("r"), int) or self.vision_lora["r"] < 1:
                raise ValueError(
                    f"vision_lora['r'] must be a positive int, got {self.vision_lora.get('r')!r}"
                )
        if not isinstance(self.uncertainty_anneal_epochs, int) or self.uncertainty_anneal_epochs < 1:
            raise ValueError(
                f"uncertainty_anneal_epochs must be an int >= 1, got {self.uncertainty_anneal_epochs!r}"
            )


__all__ = ["RetiZeroConfig"]
