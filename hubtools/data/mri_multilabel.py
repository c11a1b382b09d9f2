"""Real multi-label long-tailed images offline: brain-MRI patches labelled with every AAL region they overlap.

The single-label MRI set (:mod:`hubtools.data.mri_patches`) names a patch by the region at its
centre. A 32-px patch really covers several regions, so here it gets the *set* of regions that
fill at least ``min_fraction`` (default 5 %) of its in-brain voxels (atlas label > 0). Large
cortical regions are positive in many patches, the small vermis lobules and the amygdala in few:
a naturally long-tailed multi-label set on the same real data, no download.

Patches are the ones :func:`~hubtools.data.mri_patches.load_mri_patches` cuts (centre on an atlas
region). A patch whose regions all stay under the threshold is left out. The split is a seeded
random permutation of the patches (validation 10 %, test 20 % by default); neighbouring patches
overlap, as in the single-label set, so the test measures fit to this one brain, not to a new
subject. Labels with no train positive are dropped; the rest are ordered by train frequency
(count descending, AAL code ascending), label 0 being the most frequent.

The set is a ``datasets.DatasetDict`` with features ``image`` (greyscale PNG), ``labels``
(``List(ClassLabel)``: the ids of the positive regions, ascending), ``aal_codes``, ``position``
and ``source_id``, cached under a work folder in the layout ``hubtools longtail build`` writes
(``data/`` + ``longtail/<name>.json``), so :func:`hubtools.longtail.datasets.load` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hubtools.data.mri_patches import (
    MRICRON_PACKAGE,
    MRICRON_TEMPLATES,
    MriPatches,
    _load_volume,
    load_mri_patches,
    read_aal_names,
)
from hubtools.data.offline import debian_path

if TYPE_CHECKING:
    import datasets

    from hubtools.longtail.splits import LTProfile

PROFILE_NAME = "mri_multilabel"


def region_voxel_counts(atlas: np.ndarray, patches: MriPatches) -> np.ndarray:
    """Voxels of every atlas code (0 = background) inside each patch: N x (max code + 1) int64.

    ``atlas`` is the AAL volume in its file's axis order; it is moved like the T1 was for the patches.
    """
    vol = np.moveaxis(atlas, patches.axis, 0)
    half, p = patches.patch_size // 2, patches.patch_size
    windows = np.lib.stride_tricks.sliding_window_view(vol, (p, p), axis=(1, 2))
    s, r, c = patches.positions.T
    codes = windows[s, r - half, c - half].reshape(len(s), -1).astype(np.int64)
    width = int(vol.max()) + 1
    offsets = codes + width * np.arange(len(s))[:, None]
    return np.bincount(offsets.ravel(), minlength=width * len(s)).reshape(len(s), width)


def positive_regions(counts: np.ndarray, min_fraction: float) -> np.ndarray:
    """N x (max code + 1) bool: code k (k >= 1) fills at least ``min_fraction`` of the patch's in-brain voxels."""
    in_brain = counts[:, 1:].sum(axis=1, keepdims=True)
    positive = counts >= min_fraction * np.maximum(in_brain, 1)
    positive[:, 0] = False
    return positive & (in_brain > 0)


def _split(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    return {
        "train": np.sort(perm[n_val + n_test :]),
        "validation": np.sort(perm[:n_val]),
        "test": np.sort(perm[n_val : n_val + n_test]),
    }


def build_mri_multilabel(
    patch_size: int = 32,
    stride: int = 8,
    slice_step: int = 8,
    axis: int = 2,
    min_fraction: float = 0.05,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 1,
    templates_dir: Path = MRICRON_TEMPLATES,
) -> tuple[datasets.DatasetDict, LTProfile]:
    """The multi-label MRI set and its :class:`~hubtools.longtail.splits.LTProfile` (label counts = train positives).

    Raises:
        DataUnavailable: ``mricron-data`` is not installed.
        ValueError: a fraction is out of range.
    """
    import datasets

    from hubtools.longtail.splits import LTProfile, groups_by_threshold

    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must lie in (0, 1], got {min_fraction}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need val_fraction, test_fraction >= 0 with sum < 1, got {val_fraction}, {test_fraction}"
        )
    patches = load_mri_patches(
        patch_size=patch_size,
        stride=stride,
        axis=axis,
        slices=slice(None, None, slice_step),
        templates_dir=templates_dir,
    )
    atlas, _ = _load_volume(debian_path(Path(templates_dir) / "aal.nii.gz", MRICRON_PACKAGE))
    names = read_aal_names(debian_path(Path(templates_dir) / "aal.nii.txt", MRICRON_PACKAGE))
    positive = positive_regions(region_voxel_counts(atlas, patches), min_fraction)
    keep = positive.any(axis=1)
    positive = positive[keep]
    images, positions = patches.images[keep], patches.positions[keep]
    splits = _split(len(positive), val_fraction, test_fraction, seed)

    train_counts = positive[splits["train"]].sum(axis=0)
    codes = np.flatnonzero(train_counts > 0)
    codes = codes[np.lexsort((codes, -train_counts[codes]))]  # count descending, then AAL code
    class_names = [names[int(k)] for k in codes]
    label_matrix = positive[:, codes]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "labels": datasets.List(datasets.ClassLabel(names=class_names)),
            "aal_codes": datasets.List(datasets.Value("int32")),
            "position": datasets.List(datasets.Value("int32")),
            "source_id": datasets.Value("string"),
        }
    )
    plane = "xyz"[axis]
    out = {}
    for split, idx in splits.items():
        ids = [np.flatnonzero(label_matrix[i]).tolist() for i in idx]
        out[split] = datasets.Dataset.from_dict(
            {
                "image": [images[i] for i in idx],
                "labels": ids,
                "aal_codes": [codes[j].tolist() for j in ids],
                "position": positions[idx].tolist(),
                "source_id": [f"{plane}{s:03d}_r{r:03d}_c{c:03d}" for s, r, c in positions[idx].tolist()],
            },
            features=features,
        )
    counts = label_matrix[splits["train"]].sum(axis=0).astype(int).tolist()
    head, medium = groups_by_threshold(counts)
    profile = LTProfile(
        class_names=class_names,
        cls_num_list=counts,
        imbalance_ratio=round(counts[0] / counts[-1], 4),
        head=head,
        medium=medium,
        test_distribution="natural",
        split_provenance="seeded-redraw",
        license="other",
        seed=seed,
        split_sizes={s: len(i) for s, i in splits.items()},
        notes=(
            f"Multi-label: a label is an AAL region filling >= {min_fraction:g} of the patch's in-brain voxels; "
            f"cls_num_list counts train positives. Patches {patch_size} px, stride {stride}, every "
            f"{slice_step}th slice along axis {axis}."
        ),
    )
    return datasets.DatasetDict(out), profile


def load_mri_multilabel(work_dir: str | Path, **options: Any) -> tuple[Path, datasets.DatasetDict, LTProfile]:
    """Build once under ``work_dir`` (keyed by the options) and load: (folder, DatasetDict, LTProfile).

    ``options`` are those of :func:`build_mri_multilabel`; the folder is written whole or not at all.
    """
    import inspect

    from hubtools.hub.artifacts import atomic_dir
    from hubtools.longtail.datasets import load

    defaults = {
        k: p.default
        for k, p in inspect.signature(build_mri_multilabel).parameters.items()
        if k != "templates_dir"
    }
    unknown = sorted(set(options) - set(defaults) - {"templates_dir"})
    if unknown:
        raise ValueError(f"load_mri_multilabel: unknown option(s) {unknown}; known: {sorted(defaults)}")
    settings = {**defaults, **{k: v for k, v in options.items() if k != "templates_dir"}}
    key = "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in settings.items())
    folder = Path(work_dir) / f"{PROFILE_NAME}_{key}"
    if not (folder / "data").is_dir():
        ds, profile = build_mri_multilabel(**options)
        with atomic_dir(folder) as tmp:
            ds.save_to_disk(str(tmp / "data"))
            profile.to_json(tmp / "longtail" / f"{PROFILE_NAME}.json")
    ds, profile = load(folder)
    return folder, ds, profile
