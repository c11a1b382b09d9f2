"""Named training recipes for ``hubtools longtail train --recipe NAME`` (and ``recipe:`` in the YAML).

A recipe is a set of defaults for the training settings that MONICA fixes for every method; a
setting given explicitly (YAML key or CLI flag) wins over the recipe. ``monica`` is MONICA's own
recipe: ImageNet-pretrained ResNet-50 (supply it as ``backbone.path``, e.g. converted with
``hubtools longtail convert-resnet50``), 224 px, Adam at lr 3e-4 without weight decay and without a
schedule, 50 epochs, batch 256, and the train transform of :class:`~hubtools.longtail.augment.RecipeAugment`
(resize 264 + random crop 224, both flips, rotation 10 degrees, colour jitter 0.2). ``plain`` is the
same optimisation without augmentation, the control that shows what augmentation is worth.

Where the methods' papers train differently, the method registry says so rather than the recipe
(:attr:`hubtools.longtail.methods.Method.epochs_scale`): SAM trains 90 epochs where the others train
50, i.e. 1.8 E with a cosine schedule to zero. Second stages (cRT, LWS, DisAlign, MiSLAS, GCL's
second stage) train E epochs on the frozen encoder, as in MONICA.
"""

from __future__ import annotations

from typing import Any

from hubtools.errors import ConfigError

AUGMENTATIONS = ("none", "monica")

RECIPES: dict[str, dict[str, Any]] = {
    "monica": {
        "image_size": 224,
        "num_epochs": 50,
        "batch_size": 256,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "augmentation": "monica",
    },
    "plain": {
        "image_size": 224,
        "num_epochs": 50,
        "batch_size": 256,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "augmentation": "none",
    },
}


def recipe_defaults(name: str) -> dict[str, Any]:
    """The settings of recipe ``name`` (a copy); unknown names list the valid ones."""
    if name not in RECIPES:
        raise ConfigError(f"unknown long-tail recipe {name!r}; valid: {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def get_augmentation(name: str, **options: Any) -> Any:
    """The batch transform of augmentation ``name`` (``None`` for ``none``).

    ``options`` are :class:`~hubtools.longtail.augment.RecipeAugment`'s arguments. MONICA's flips
    suit dermoscopy, histology, endoscopy and fundus images; switch them off where orientation is
    part of the label: ``hflip: false`` for lateralised anatomy (left/right brain regions), ``vflip:
    false`` for upright natural objects.
    """
    import inspect

    from hubtools.longtail.augment import RecipeAugment

    if name == "none":
        if options:
            raise ConfigError(f"augmentation 'none' takes no options, got {sorted(options)}")
        return None
    if name == "monica":
        allowed = [p for p in inspect.signature(RecipeAugment).parameters]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"augmentation_options {unknown} unknown; valid: {', '.join(allowed)}")
        return RecipeAugment(**options)
    raise ConfigError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
