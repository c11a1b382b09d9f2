"""Semi-supervised segmentation: U-Nets trained with plain and Bayesian pseudo labels (Xu et al., MICCAI 2022).

- :mod:`.configuration_semiseg_unet` / :mod:`.modeling_semiseg_unet`: the 2D/3D U-Net with the threshold
  head, a transformers family (``model_type = "semiseg-unet"``) that loads with ``trust_remote_code``.
- :mod:`.losses`, :mod:`.objective`: Dice/BCE, pseudo labels (soft / straight-through / hard), the KL,
  the warm-up ramp and the anchor's gates.
- :mod:`.metrics`: Dice and IoU per class and mean over a whole test set.
- :mod:`.data`: the labelled/unlabelled/test layout and builders for the real offline data.
- :mod:`.trainer`: one call of the shared accelerate loop; :mod:`.cli`: ``hubtools semiseg``.
"""

from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg

__all__ = ["UNetForSemiSeg", "UNetSegConfig"]
