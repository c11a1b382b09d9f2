"""Image sources for pretraining and fine-tuning: folders, `datasets` columns, real fundus tiles, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hubtools.errors import ArtifactError, ConfigError
from hubtools.pretrain.data import labelled_images, load_images, retina_tiles


def _png(path: Path, value: int) -> None:
    Image.fromarray(np.full((20, 30, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_and_bad_files(tmp_path: Path) -> None:
    for name, value in (("a", 10), ("b", 200)):
        (tmp_path / name).mkdir()
        _png(tmp_path / name / "x.png", value)
    ds = load_images(str(tmp_path), size=8)
    assert (
        len(ds) == 2
        and ds[0]["pixel_values"].shape == (3, 8, 8)
        and ds[0]["pixel_values"].dtype == torch.uint8
    )
    labelled = labelled_images(str(tmp_path), size=8)
    assert labelled.class_names == ["a", "b"] and labelled.labels.tolist() == [0, 1]
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ArtifactError, match="broken.png"):
        load_images(str(tmp_path), size=8)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        load_images(str(tmp_path / "empty"), size=8)


def test_datasets_image_column(tmp_path: Path) -> None:
    import datasets

    images = [Image.fromarray(np.full((12, 12, 3), v, dtype=np.uint8)) for v in (0, 128, 255)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 1]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["n", "y"])}
        ),
    )
    table.save_to_disk(str(tmp_path / "ds"))
    ds = load_images(str(tmp_path / "ds"), size=4)
    assert len(ds) == 3 and int(ds[2]["pixel_values"].min()) == 255
    labelled = labelled_images(str(tmp_path / "ds"), size=4)
    assert labelled.class_names == ["n", "y"] and labelled.labels.tolist() == [0, 1, 1]
    with pytest.raises(ConfigError, match="pixels"):
        load_images(str(tmp_path / "ds"), size=4, column="pixels")


def test_retina_tiles_are_real_and_deterministic() -> None:
    a, b = retina_tiles(4, size=16), retina_tiles(4, size=16)
    assert torch.equal(a[3]["pixel_values"], b[3]["pixel_values"])
    red, green = a[0]["pixel_values"][0].float().mean(), a[0]["pixel_values"][1].float().mean()
    assert red > green  # a fundus photo is red-dominant
