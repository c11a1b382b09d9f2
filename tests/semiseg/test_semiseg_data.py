"""Builders on the real offline data, the dataset layout round trip, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from hubtools.data.offline import DataUnavailable
from hubtools.semiseg.data import (
    SegmentationArrays,
    SegmentationData,
    SegmentationDataError,
    brain_mask_dataset,
    check_data,
    evenly_spaced,
    from_datasets,
    mni_dataset,
    nuclei_dataset,
)
from hubtools.testing import data_missing


def real(builder, **kwargs):
    try:
        return builder(**kwargs)
    except DataUnavailable as err:
        data_missing(err)


def tiny(n_labelled=2, shape=(8, 8), classes=("background", "foreground")) -> SegmentationData:
    rng = np.random.default_rng(0)

    def arrays(n, masks=True):
        return SegmentationArrays(
            rng.random((n, 1, *shape), dtype=np.float32),
            rng.integers(0, len(classes), (n, *shape)) if masks else None,
        )

    return SegmentationData(
        {"labelled": arrays(n_labelled), "unlabelled": arrays(3, masks=False), "test": arrays(2)},
        classes,
        len(shape),
        "tiny",
    )


@pytest.mark.parametrize(("fraction", "labelled"), [(0.05, 2), (0.10, 5), (0.25, 12)])
def test_nuclei_tiles_fractions_and_fixed_test_region(fraction, labelled):
    data = real(nuclei_dataset, tile=64, labelled_fraction=fraction)
    check_data(data)
    s = data.splits
    assert s["labelled"].images.shape == (labelled, 1, 64, 64)
    assert len(s["labelled"].images) + len(s["unlabelled"].images) == 48 and len(s["test"].images) == 16
    assert 0 < s["test"].masks.mean() < 0.5 and set(np.unique(s["labelled"].masks)) <= {0, 1}
    assert s["labelled"].images.min() >= 0 and s["labelled"].images.max() <= 1
    # the test region is the same whatever the labelled fraction
    other = nuclei_dataset(tile=64, labelled_fraction=0.5)
    assert np.array_equal(other.splits["test"].images, s["test"].images)


def test_mni_2d_3d_and_tissue_classes():
    gm = real(mni_dataset, dims=2, resolution=4, labelled_fraction=0.1)
    assert gm.splits["labelled"].images.shape[1:] == (1, 56, 48)
    n_pool = len(gm.splits["labelled"].images) + len(gm.splits["unlabelled"].images)
    assert n_pool == 23 and len(gm.splits["test"].images) == 12  # the 4 mm split: 23 pool and 12 test slices
    tissue = mni_dataset(dims=2, resolution=4, tissue="3class", labelled_fraction=0.1)
    assert tissue.class_names == ("background", "grey_matter", "white_matter")
    assert set(np.unique(tissue.splits["test"].masks)) == {0, 1, 2}
    vol = mni_dataset(dims=3, resolution=4, labelled_fraction=0.25)
    assert vol.spatial_dims == 3 and vol.splits["test"].images.shape[1:] == (1, 4, 56, 48)
    with pytest.raises(SegmentationDataError, match="tissue"):
        mni_dataset(tissue="csf")


def test_brain_mask_3d():
    data = real(brain_mask_dataset, dims=3, resolution=4)
    check_data(data)
    assert data.class_names == ("background", "brain") and data.splits["labelled"].images.ndim == 5
    assert 0.1 < data.splits["test"].masks.mean() < 0.9


def test_datasetdict_round_trip(tmp_path):
    import datasets

    data = tiny()
    dd = data.to_datasets()
    assert set(dd) == {"labelled", "unlabelled", "test"} and dd["unlabelled"][0]["mask"] is None
    dd.save_to_disk(str(tmp_path / "ds"))
    back = from_datasets(datasets.load_from_disk(str(tmp_path / "ds")))
    for name in ("labelled", "test"):
        assert np.array_equal(back.splits[name].images, data.splits[name].images)
        assert np.array_equal(back.splits[name].masks, data.splits[name].masks)
    assert back.splits["unlabelled"].masks is None and back.class_names == ("background", "foreground")


def test_bad_input_errors():
    bad = tiny()
    bad.splits["test"] = SegmentationArrays(bad.splits["test"].images, np.zeros((2, 8, 7), dtype=np.int64))
    with pytest.raises(SegmentationDataError, match=r"split 'test', example 0: mask shape \(8, 7\) differs"):
        check_data(bad)
    bad = tiny()
    bad.splits["labelled"].masks[1, 3, 3] = 5
    with pytest.raises(
        SegmentationDataError, match=r"example 1: label values \[5\] outside the declared classes 0..1"
    ):
        check_data(bad)
    with pytest.raises(SegmentationDataError, match="'labelled' split is empty"):
        check_data(tiny(n_labelled=0))
    with pytest.raises(SegmentationDataError, match="labelled_fraction"):
        real(nuclei_dataset, labelled_fraction=0.0)
    assert isinstance(SegmentationDataError("x"), ValueError)


def test_bad_datasetdict_errors():
    import datasets

    good = tiny().to_datasets()
    with pytest.raises(SegmentationDataError, match=r"no split\(s\) \['test'\]"):
        from_datasets(datasets.DatasetDict({k: good[k] for k in ("labelled", "unlabelled")}))
    empty = datasets.DatasetDict({**good, "labelled": good["labelled"].select([])})
    with pytest.raises(SegmentationDataError, match="'labelled' split is empty"):
        from_datasets(empty)
    plain = datasets.Dataset.from_dict(
        {"image": [np.zeros((1, 4, 4), np.float32)], "mask": [np.zeros((4, 5))]}
    )
    with pytest.raises(SegmentationDataError, match=r"mask shape \(4, 5\) differs"):
        from_datasets(
            datasets.DatasetDict({"labelled": plain, "unlabelled": good["unlabelled"], "test": good["test"]})
        )
    three = tiny(classes=("a", "b", "c")).to_datasets()
    with pytest.raises(SegmentationDataError, match="outside the declared classes 0..1"):
        from_datasets(three, class_names=("a", "b"))
    assert from_datasets(three).class_names == ("class_0", "class_1", "class_2")


def test_evenly_spaced():
    assert evenly_spaced(10, 2) == [2, 7] and evenly_spaced(5, 0) == [2] and evenly_spaced(3, 9) == [0, 1, 2]
