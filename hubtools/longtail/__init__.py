"""MONICA long-tailed medical classification: datasets, splits and methods.

- :mod:`hubtools.longtail.splits`: exponential profile, seeded split drawing, :class:`LTProfile`.
- :mod:`hubtools.longtail.datasets`: builder base, readers, ``build``/``load``, publishing.
- :mod:`hubtools.longtail.sources`: builder bases shared by ``dataset_scripts/`` (MedMNIST npz, label sheets).
- :mod:`hubtools.longtail.losses`, :mod:`~hubtools.longtail.methods` (registry, ``get_loss``),
  :mod:`~hubtools.longtail.samplers` (``get_sampler``), :mod:`~hubtools.longtail.classifiers`
  (``get_classifier``), :mod:`~hubtools.longtail.augment` (mixup, RandAugment, RSG),
  :mod:`~hubtools.longtail.experts` (SADE/RIDE expert heads), :mod:`~hubtools.longtail.metrics`
  (``lt_report``), :mod:`~hubtools.longtail.lt_metric` (the same as an offline ``evaluate`` module),
  :mod:`~hubtools.longtail.table` (MONICA-style comparison of runs), :mod:`~hubtools.longtail.trainer`
  (also SAM, BBN, flexible sampling).
- :mod:`hubtools.longtail.cli`: ``hubtools longtail build|profile|train|eval|table``.

Submodules are imported on use so ``import hubtools.longtail`` stays light.
"""

_LAZY = {
    "get_loss": "hubtools.longtail.methods",
    "get_sampler": "hubtools.longtail.samplers",
    "get_classifier": "hubtools.longtail.classifiers",
    "lt_report": "hubtools.longtail.metrics",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
