"""Brain-MRI patches by AAL region: the real, naturally long-tailed set (116 classes, about 80:1).

Reads Debian ``mricron-data`` (``ch2.nii.gz`` T1 and the hand-drawn ``aal.nii.gz`` atlas on the
same grid) through :func:`hubtools.data.mri_patches.load_mri_patches`: square patches on a
grid of every ``slice_step``-th slice and in-plane ``stride``, labelled by the atlas region
at the centre. The default grid (32 px, 4-voxel steps, axial) gives 23,133 patches, 652 in the
largest region and 8 in the smallest. Validation/test hold out 10%/20% of every class (at
least one patch each): a balanced test is impossible with 8 patches in the tail.
``--source-dir`` defaults to ``/usr/share/mricron/templates``.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from hubtools.data.mri_patches import MRICRON_TEMPLATES, MriPatches, load_mri_patches
from hubtools.longtail.datasets import LongTailBuilder, LongTailConfig, Record


class MRIPatchesLT(LongTailBuilder):
    """AAL-region MRI patches, natural long tail (or an exponential profile with ``ratio``)."""

    CLASS_NAMES = None
    LICENSE = "other"
    LICENSE_NAME = "mricron-bsd-3-clause-aal-research"
    PARALLEL_BUILD = False  # patches are in memory already; worker start-up would cost more than it saves
    TEST_DISTRIBUTION = "natural"
    SOURCE = (
        "Debian package mricron-data (apt-get install mricron-data): ch2 single-subject T1 and the AAL atlas "
        "(Tzourio-Mazoyer et al.)"
    )
    DESCRIPTION = (
        "Greyscale T1 MRI patches of one brain (Colin27 'ch2'), each labelled by the AAL region at its "
        "centre; class sizes follow region volumes, a natural long tail."
    )
    EXTRA_FEATURES = {
        "aal_code": datasets.Value("int32"),
        "position": datasets.List(datasets.Value("int32")),
    }
    BUILDER_CONFIGS = [
        LongTailConfig(
            name="mri_patches_lt",
            ratio=None,
            patch_size=32,
            stride=4,
            slice_step=4,
            axis=2,
            description="AAL MRI patches, 32 px, 4-voxel grid, natural long tail",
        )
    ]
    DEFAULT_CONFIG_NAME = "mri_patches_lt"

    _patches: MriPatches | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir) if self.config.data_dir else MRICRON_TEMPLATES

    def patches(self) -> MriPatches:
        if self._patches is None:
            cfg = self.config
            self._patches = load_mri_patches(
                patch_size=cfg.patch_size,
                stride=cfg.stride,
                axis=cfg.axis,
                slices=slice(None, None, cfg.slice_step),
                templates_dir=self.data_dir,
            )
        return self._patches

    def class_names(self, records: Sequence[Record] | None = None) -> list[str]:
        return list(self.patches().class_names)

    def scan(self, data_dir: Path) -> list[Record]:
        m = self.patches()
        axis = "xyz"[m.axis]
        return [
            Record(
                source_id=f"{axis}{s:03d}_r{r:03d}_c{c:03d}",
                orig_label=m.class_names[lab],
                row=i,
                where=f"{data_dir}/ch2.nii.gz patch {i}",
                extra={"aal_code": int(m.original_labels[lab]), "position": [int(s), int(r), int(c)]},
            )
            for i, (lab, (s, r, c)) in enumerate(zip(m.labels.tolist(), m.positions.tolist(), strict=True))
        ]

    def iter_images(self, records: Sequence[Record]) -> Iterator[tuple[Record, Any]]:
        images = self.patches().images
        for rec in records:
            yield rec, images[rec.row]
