"""The real multi-label MRI set (labels vs an independent count on the atlas) and a 2-epoch multi-label training run."""

import json

import numpy as np
import pytest

from hubtools.data.mri_patches import MRICRON_TEMPLATES
from hubtools.testing import data_missing

SMALL = {"stride": 16, "slice_step": 16}  # a coarse grid keeps the tests fast
BACKBONE = {
    "model_type": "resnet",
    "options": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}


@pytest.fixture(scope="module")
def mri_set(tmp_path_factory):
    if not (MRICRON_TEMPLATES / "aal.nii.gz").exists():
        data_missing("Debian mricron-data")
    from hubtools.data.mri_multilabel import load_mri_multilabel

    return load_mri_multilabel(tmp_path_factory.mktemp("mriml"), **SMALL)


def test_labels_match_an_independent_atlas_count(mri_set):
    import nibabel as nib

    folder, ds, lt = mri_set
    atlas = np.asarray(nib.load(str(MRICRON_TEMPLATES / "aal.nii.gz")).dataobj)
    lines = [line.split() for line in (MRICRON_TEMPLATES / "aal.nii.txt").read_text().splitlines()]
    names = {int(f[0]): f[1] for f in lines if f}
    split = ds["test"]
    for i in (0, len(split) // 3, len(split) - 1):
        row = split[i]
        s, r, c = row["position"]  # axial: slice index is the third voxel axis
        patch = atlas[r - 16 : r + 16, c - 16 : c + 16, s]
        assert patch.shape == (32, 32)
        codes, n = np.unique(patch[patch > 0], return_counts=True)
        expected = sorted(int(k) for k, m in zip(codes, n, strict=True) if m / n.sum() >= 0.05)
        got = sorted(row["aal_codes"])
        # a region positive in the patch is dropped only when no train patch has it
        assert set(got) <= set(expected) and {names[k] for k in expected} - {names[k] for k in got} <= (
            set(names.values()) - set(lt.class_names)
        )
        assert [lt.class_names[j] for j in row["labels"]] == [names[k] for k in row["aal_codes"]]
        assert np.array_equal(np.asarray(row["image"]), np.asarray(split[i]["image"]))
    # labels ordered by train frequency, counts = train positives per label
    counts = np.zeros(len(lt.class_names), int)
    for ids in ds["train"]["labels"]:
        counts[ids] += 1
    assert counts.tolist() == lt.cls_num_list and counts.min() >= 1
    assert all(a >= b for a, b in zip(lt.cls_num_list, lt.cls_num_list[1:], strict=False))
    assert lt.split_sizes == {s: ds[s].num_rows for s in ds}
    assert not set(ds["train"]["source_id"]) & set(ds["test"]["source_id"])


def test_cached_build_is_reused_and_identical(mri_set, tmp_path):
    from hubtools.data.mri_multilabel import build_mri_multilabel, load_mri_multilabel

    folder, ds, lt = mri_set
    again, ds2, lt2 = load_mri_multilabel(folder.parent, **SMALL)
    assert again == folder and lt2 == lt
    fresh, lt3 = build_mri_multilabel(**SMALL)
    assert fresh["test"]["labels"] == ds["test"]["labels"] and lt3.cls_num_list == lt.cls_num_list
    with pytest.raises(ValueError, match="unknown option"):
        load_mri_multilabel(tmp_path, strides=4)


def test_train_multilabel_two_epochs(mri_set, tmp_path):
    import torch

    from hubtools.longtail.multilabel import MultiLabelTrainConfig, train_multilabel
    from hubtools.longtail.trainer import load_model

    torch.set_num_threads(1)
    folder, ds, lt = mri_set
    cfg = MultiLabelTrainConfig(
        dataset=str(folder),
        loss="distribution_balanced",
        backbone=BACKBONE,
        output_dir=tmp_path / "run",
        image_size=16,
        num_epochs=2,
        batch_size=32,
        lr=3e-3,
    )
    model_dir = train_multilabel(cfg)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        rep = metrics[split]
        for k in ("map", "many_map", "medium_map", "few_map", "micro_f1", "macro_f1", "macro_auroc"):
            assert k in rep and (np.isnan(rep[k]) or 0 <= rep[k] <= 100)
        assert len(rep["per_class_ap"]) == len(lt.class_names)
    assert metrics["selection_metric"] == "map" and metrics["selected_epoch"] in (0, 1)
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[1] < losses[0]
    model, info = load_model(model_dir)
    assert info["task"] == "multi-label" and info["cls_num_list"] == lt.cls_num_list
    with pytest.raises(Exception, match="no option"):
        train_multilabel(cfg.model_copy(update={"loss": "asl", "loss_options": {"gamma": 1}}))


def test_cli_train_multilabel(mri_set, tmp_path):
    import yaml
    from click.testing import CliRunner

    from hubtools.cli import main

    folder, _, _ = mri_set
    cfg = tmp_path / "ml.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": BACKBONE, "image_size": 16, "batch_size": 64}))
    args = [
        "longtail",
        "train-multilabel",
        str(cfg),
        "--dataset",
        str(folder),
        "--loss",
        "asl",
        "--epochs",
        "1",
    ]
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "run" / "model" / "metrics.json").read_text())["test"]
    assert f"map={test['map']:.2f}" in result.output
    bad = CliRunner().invoke(main, [*args[:5], "--loss", "focal", "--output", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "unknown multi-label loss 'focal'" in bad.output
