"""MONICA long-tailed medical classification: datasets, splits and (later) methods.

- :mod:`hubtools.longtail.splits`: exponential profile, seeded split drawing, :class:`LTProfile`.
- :mod:`hubtools.longtail.datasets`: builder base, readers, ``build``/``load``, publishing.
- :mod:`hubtools.longtail.sources`: builder bases shared by ``dataset_scripts/`` (MedMNIST npz, label sheets).
- :mod:`hubtools.longtail.cli`: ``hubtools longtail build|profile``.

Submodules are imported on use so ``import hubtools.longtail`` stays light.
"""
