"""RetiZero processor: the native `VisionTextDualEncoderProcessor` (image processor + the text tower's tokenizer)
with RetiZero's text rules: tokenised to ``max_length`` (77), padded to the longest, and truncated WITH a warning.

It saves itself as a plain ``VisionTextDualEncoderProcessor`` (plus ``preprocessor_config.json`` for
``AutoImageProcessor`` and the zero-shot pipeline), so a Hub user loads it with ``AutoProcessor`` and no remote code.
"""

from __future__ import annotations

import logging
import os

from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, VisionTextDualEncoderProcessor

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 77


def _field(size, key: str):
    """A key of an image processor's size, a dict in some versions and a ``SizeDict`` in others."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


class RetiZeroProcessor(VisionTextDualEncoderProcessor):
    def __init__(self, image_processor=None, tokenizer=None, max_length: int = DEFAULT_MAX_LENGTH, **kwargs):
        super().__init__(image_processor, tokenizer)
        if tokenizer is not None:
            tokenizer.model_max_length = max_length

    @property
    def max_length(self) -> int:
        return self.tokenizer.model_max_length

    def __call__(self, images=None, text=None, return_tensors: str = "pt", **kwargs):
        """A ``BatchFeature`` (``.to(device)``) with ``pixel_values`` for ``images`` and ``input_ids``/
        ``attention_mask`` for ``text`` (str or list)."""
        if images is None and text is None:
            raise ValueError("RetiZeroProcessor needs images, text or both")
        encoding = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
            too_long = [i for i, n in enumerate(lengths) if n > self.max_length]
            if too_long:
                logger.warning(
                    "%d text(s) longer than the text tower's %d tokens were truncated (first: #%d, %d tokens)",
                    len(too_long),
                    self.max_length,
                    too_long[0],
                    lengths[too_long[0]],
                )
            encoding.update(
                self.tokenizer(
                    texts,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors=return_tensors,
                )
            )
        if images is not None:
            encoding.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(encoding)

    def check_towers(self, config) -> None:
        """Raise ``ValueError`` if this processor cannot feed the towers of a ``RetiZeroConfig``: token ids beyond
        the text tower's vocabulary, a ``max_length`` beyond its position embeddings, or images of another size
        than the vision tower's position embeddings."""
        vocab, text_vocab = len(self.tokenizer), config.text_config.vocab_size
        if vocab > text_vocab:
            raise ValueError(
                f"tokenizer has {vocab} tokens but the text tower's vocabulary has {text_vocab}: not its tokenizer"
            )
        positions = getattr(config.text_config, "max_position_embeddings", None)
        if positions is not None and self.max_length > positions:
            raise ValueError(
                f"max_length {self.max_length} exceeds the text tower's {positions} positions: texts that long "
                "would crash it instead of being truncated"
            )
        processor = self.image_processor
        # The size the model sees: the centre crop when there is one, else the resize target.
        size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
        height = _field(size, "height") or _field(size, "shortest_edge")
        expected = getattr(config.vision_config, "image_size", None)
        if height is not None and expected is not None and int(height) != int(expected):
            raise ValueError(
                f"image processor makes {height}px images but the vision tower expects {expected}px"
            )

    def to_dict(self) -> dict:
        # Written as the native class so AutoProcessor loads the folder without hubtools or remote code.
        output = super().to_dict()
        output["processor_class"] = "VisionTextDualEncoderProcessor"
        return output

    def save_pretrained(self, save_directory, **kwargs):
        saved = super().save_pretrained(save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        return saved

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> RetiZeroProcessor:
        image_processor = AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls(
            image_processor=image_processor, tokenizer=tokenizer, max_length=tokenizer.model_max_length
        )


__all__ = ["RetiZeroProcessor"]
