"""Real sets through the local Hub: MRI patches and Fashion-MNIST-LT, the CLI and load_dataset."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from datasets import Image, load_dataset
from huggingface_hub import DatasetCard, hf_hub_download

from hubtools.cli import main
from hubtools.data.offline import DataUnavailable, fashion_mnist
from hubtools.longtail.datasets import build, load, make_builder, prepare, publish, save_build
from hubtools.longtail.splits import LTProfile
from hubtools.testing import data_missing


def _table(ds) -> pa.Table:
    return ds.cast_column("image", Image(decode=False)).with_format("arrow")[:].combine_chunks()


def _mri_builder(tmp_path):
    try:
        builder = make_builder("mri_patches", None, cache_dir=tmp_path / "cache")
        builder.plan()
    except DataUnavailable as exc:
        data_missing(exc)
    return builder


def test_mri_set_round_trips_through_the_hub_byte_identical(hub, repo_id, tmp_path):
    builder = _mri_builder(tmp_path)
    ds = prepare(builder)
    lt = builder.plan().profile
    assert lt.num_classes == 116 and sum(d.num_rows for d in ds.values()) == 23133
    folder = save_build(tmp_path / "art", "mri_patches", builder, ds, lt, repo_id=repo_id)
    assert (folder / "longtail" / "mri_patches_lt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    publish(folder, repo_id, private=True)

    back = load_dataset(repo_id, "mri_patches_lt")
    assert set(back) == set(ds) == {"train", "validation", "test"}
    for split in ds:
        assert back[split].features == ds[split].features
        assert _table(back[split]).equals(_table(ds[split]))  # same rows, same bytes, same order
    prof = LTProfile.from_json(hf_hub_download(repo_id, "longtail/mri_patches_lt.json", repo_type="dataset"))
    assert prof == lt
    card = DatasetCard.load(repo_id, repo_type="dataset")
    assert card.data.task_categories == ["image-classification"]
    assert [c["config_name"] for c in card.data.configs] == ["mri_patches_lt"]
    assert "Not for clinical use" in card.text and "Vermis_1_2" in card.text

    # A second config (exponential profile, ratio 20) through the CLI joins the same repo.
    out = tmp_path / "r20"
    result = CliRunner().invoke(
        main,
        [
            "longtail",
            "build",
            "mri_patches",
            "--ratio",
            "20",
            "--output",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--push-to-hub",
            repo_id,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "115  Vermis_1_2" in result.output
    r20, prof20 = load(out)
    # n_max is fitted so the whole profile fits the natural counts: the split really has ratio ~20
    assert (
        prof20.imbalance_ratio == pytest.approx(20, rel=0.1)
        and f"imbalance {prof20.imbalance_ratio:g}" in result.output
    )
    assert all(a <= b for a, b in zip(prof20.cls_num_list, lt.cls_num_list, strict=True))
    assert np.all(np.diff(prof20.cls_num_list) <= 0)
    card = DatasetCard.load(repo_id, repo_type="dataset")
    assert sorted(c["config_name"] for c in card.data.configs) == ["mri_patches_lt", "mri_patches_lt_20"]
    again = load_dataset(repo_id, "mri_patches_lt_20", split="train")
    assert _table(again).equals(_table(r20["train"]))
    assert load_dataset(repo_id, "mri_patches_lt", split="test").num_rows == ds["test"].num_rows


def test_fashion_mnist_lt(tmp_path):
    try:
        images, labels = fashion_mnist("test")
    except DataUnavailable as exc:
        data_missing(exc)
    ds, lt = build(
        "fashion_mnist", None, cache_dir=tmp_path / "c", n_max=300, val_per_class=20, expected_train_counts=()
    )
    assert lt.cls_num_list == [300, 180, 108, 65, 39, 23, 14, 8, 5, 3]  # round half up of 300 * 100^(-i/9)
    assert np.bincount(ds["test"]["label"]).tolist() == [1000] * 10  # the official balanced test split
    assert np.bincount(ds["validation"]["label"]).tolist() == [20] * 10
    row = ds["test"][1234]
    assert row["source_id"] == "test_1234" and row["label"] == labels[1234]
    assert np.array_equal(np.asarray(row["image"]), images[1234])


def test_build_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["longtail", "build", "isic2019", "--source-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: " in result.output and "ISIC_2019_Training_Input: missing image folder" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["longtail", "build", "nope", "--source-dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output
    cfg = tmp_path / "build.yaml"
    cfg.write_text("ratio: 50\nratoi: 3\n")
    result = runner.invoke(main, ["longtail", "build", "mri_patches", "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown key 'ratoi'" in result.output and str(cfg) in result.output
    result = runner.invoke(
        main,
        [
            "longtail",
            "profile",
            "--n-max",
            "5000",
            "--classes",
            "8",
            "--ratio",
            "100",
            "--rounding",
            "floor_plus_one",
        ],
    )
    assert result.output.splitlines()[0] == "5000 2590 1342 695 360 187 97 51"
    assert json.loads(json.dumps(result.output.splitlines()[1].split()[1])) == "10322"
