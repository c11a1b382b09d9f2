"""Configuration of the semi-supervised segmentation U-Net (``model_type = "semiseg-unet"``).

Imports only transformers, so ``register_for_auto_class`` can copy this file into a Hub repo and
a user without hubtools can load the model with ``trust_remote_code=True``.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class UNetSegConfig(PreTrainedConfig):
    """Hyper-parameters of :class:`UNetForSemiSeg`.

    Args:
        spatial_dims: 2 (Conv2d) or 3 (Conv3d).
        in_channels: image channels.
        out_channels: one sigmoid logit channel per foreground class (1 for binary segmentation).
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.
        depth: number of down-sampling steps (the input is padded to a multiple of ``2**depth``).
        logit_temperature: tau of ``p = sigmoid(logits / tau)`` ("temperature" is a generation
            parameter to transformers and may not appear in a model config).
        threshold_hidden: hidden width of the threshold head (default: ``width``).
        threshold_detach: stop the threshold head's gradient from reaching the decoder.
        threshold_reduce: "image" (one threshold per image) or "batch" (averaged over the batch).
        threshold_init_mu, threshold_init_sigma: the threshold posterior the head starts from (set them to
            the prior: an untrained head gives sigma near 1, and thresholds drawn that widely make the
            pseudo labels noise until the KL has pulled sigma down).
        class_names: names of the output channels, for cards and reports.
        threshold_learned: whether training taught the threshold head from the pseudo labels (Bayesian
            pseudo labels in a mode with a gradient to T); otherwise q(T) is the prior and the
            confidence map of ``UNetForSemiSeg.threshold_confidence`` reflects only the prior.
        initializer_range: kept for transformers' conventions; weights use PyTorch's default init.
    """

    model_type = "semiseg-unet"

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 16,
        depth: int = 2,
        logit_temperature: float = 1.0,
        threshold_hidden: int | None = None,
        threshold_detach: bool = True,
        threshold_reduce: str = "image",
        threshold_init_mu: float = 0.5,
        threshold_init_sigma: float = 0.1,
        class_names: list[str] | tuple[str, ...] | None = None,
        initializer_range: float = 0.02,
        threshold_learned: bool = False,
        **kwargs,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if threshold_reduce not in ("image", "batch"):
            raise ValueError(f"threshold_reduce must be 'image' or 'batch', got {threshold_reduce!r}")
        if not 0 < threshold_init_mu < 1 or threshold_init_sigma <= 0:
            raise ValueError("threshold_init_mu must be in (0, 1) and threshold_init_sigma > 0")
        if min(in_channels, out_channels, width) < 1 or depth < 0:
            raise ValueError("in_channels, out_channels and width must be >= 1 and depth >= 0")
        if logit_temperature <= 0:
            raise ValueError(f"logit_temperature must be > 0, got {logit_temperature!r}")
        if class_names is not None and len(class_names) != out_channels:
            raise ValueError(f"class_names has {len(class_names)} names for {out_channels} output channels")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width
        self.depth = depth
        self.logit_temperature = logit_temperature
        self.threshold_hidden = threshold_hidden
        self.threshold_detach = threshold_detach
        self.threshold_reduce = threshold_reduce
        self.threshold_init_mu = threshold_init_mu
        self.threshold_init_sigma = threshold_init_sigma
        self.class_names = list(class_names) if class_names is not None else None
        self.threshold_learned = bool(threshold_learned)
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


__all__ = ["UNetSegConfig"]
