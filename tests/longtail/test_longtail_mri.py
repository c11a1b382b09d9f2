"""Real brain-MRI patches from Debian mricron-data (ch2 T1 + AAL atlas)."""

from pathlib import Path

import numpy as np
import pytest

from hubtools.data.mri_patches import MRICRON_TEMPLATES, MriDataError, load_mri_patches
from hubtools.data.offline import DataUnavailable
from hubtools.testing import data_missing


def _load(**kw):
    try:
        return load_mri_patches(**kw)
    except DataUnavailable as exc:
        data_missing(exc)


def test_default_grid_gives_the_documented_offline_data_figures():
    # offline_data.md: ~23k patches, 116 classes, head 652 / tail 8 (a 4-voxel 3D grid).
    m = _load(stride=4, slices=slice(None, None, 4))
    counts = m.class_counts
    assert m.images.shape == (23133, 32, 32) and m.images.dtype == np.uint8
    assert m.labels.dtype == np.int64 and len(m.class_names) == 116
    assert counts[0] == 652 and counts[-1] == 8
    assert np.all(np.diff(counts) <= 0)
    assert sorted(m.original_labels.tolist()) == list(range(1, 117))


def test_defaults_and_patch_content_match_a_plain_loop():
    import nibabel as nib

    m = _load()
    t1 = np.asarray(nib.load(str(MRICRON_TEMPLATES / "ch2.nii.gz")).dataobj)
    atlas = np.asarray(nib.load(str(MRICRON_TEMPLATES / "aal.nii.gz")).dataobj)
    names = dict(
        line.split()[:2] for line in (MRICRON_TEMPLATES / "aal.nii.txt").read_text().splitlines() if line
    )
    # Independent enumeration: axial slices (axis 2), centres 16, 32, ... with the patch inside.
    expected = []
    for z in range(t1.shape[2]):
        for r in range(16, t1.shape[0] - 16 + 1, 16):
            for c in range(16, t1.shape[1] - 16 + 1, 16):
                if atlas[r, c, z]:
                    expected.append((z, r, c, int(atlas[r, c, z])))
    assert len(m.labels) == len(expected) == 5789
    assert m.positions.tolist() == [list(e[:3]) for e in expected]
    codes = m.original_labels[m.labels]
    assert codes.tolist() == [e[3] for e in expected]
    for i in (0, 1234, len(expected) - 1):
        z, r, c, code = expected[i]
        assert m.images[i].tobytes() == t1[r - 16 : r + 16, c - 16 : c + 16, z].tobytes()
        assert m.class_names[m.labels[i]] == names[str(code)]


def test_deterministic_and_min_count_drops_small_classes():
    a = _load(stride=16, slices=slice(40, 120, 2), min_count=5)
    b = _load(stride=16, slices=slice(40, 120, 2), min_count=5)
    assert a.images.tobytes() == b.images.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert a.class_counts.min() >= 5
    unfiltered = _load(stride=16, slices=slice(40, 120, 2))
    assert unfiltered.class_counts.min() < 5 and len(unfiltered.labels) > len(a.labels)


def test_missing_package_and_bad_grid(tmp_path: Path):
    with pytest.raises(DataUnavailable, match="apt-get install -y mricron-data"):
        load_mri_patches(templates_dir=tmp_path)
    nib = pytest.importorskip("nibabel")
    if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
        data_missing("mricron-data is not installed")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(tmp_path / "ch2.nii.gz"))
    for name in ("aal.nii.gz", "aal.nii.txt"):
        (tmp_path / name).write_bytes((MRICRON_TEMPLATES / name).read_bytes())
    with pytest.raises(MriDataError, match="not on the same grid"):
        load_mri_patches(templates_dir=tmp_path)
