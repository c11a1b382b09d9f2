"""Multi-label configs of the CheXpert, ODIR-5K and RFMiD builders on tiny raw files in the official formats."""

from collections import Counter

import numpy as np
import pytest
from conftest import image_bytes, write_csv

from hubtools.longtail.datasets import MissingSourceFile, builder_class, prepare
from hubtools.longtail.multilabel import group_split


def _build(name, config, root, cache, **kw):
    builder = builder_class(name)(config_name=config, data_dir=str(root), cache_dir=str(cache), **kw)
    return prepare(builder), builder.plan().profile


def _check_order_and_counts(ds, lt, findings_of):
    """Label order = train frequency (ties in sheet column order); counts = train positives."""
    counts = Counter(f for sid in ds["train"]["source_id"] for f in findings_of[sid])
    assert lt.cls_num_list == [counts[n] for n in lt.class_names]
    assert lt.cls_num_list == sorted(lt.cls_num_list, reverse=True) and set(lt.class_names) == set(counts)
    for split in ds.values():
        names = split.features["labels"].feature.names
        for sid, ids in zip(split["source_id"], split["labels"], strict=True):
            assert sorted(names[i] for i in ids) == sorted(f for f in findings_of[sid] if f in counts)


def _chexpert(root, n_patients=10):
    findings = list(builder_class("chexpert").LABEL_COLUMNS)
    rng = np.random.default_rng(0)
    rows, table = [], {}
    for p in range(n_patients):
        for study in (1, 2):
            rel = f"CheXpert-v1.0-small/train/patient{p:05d}/study{study}/view1_frontal.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(image_bytes(p * 2 + study, mode="L"))
            vals = rng.choice(["1.0", "0.0", "-1.0", ""], size=len(findings), p=[0.2, 0.4, 0.15, 0.25])
            table[rel] = dict(zip(findings, vals, strict=True))
            rows.append([rel, "Male", 50, "Frontal", "PA", *vals])
    write_csv(
        root / "CheXpert-v1.0-small" / "train.csv",
        ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *findings],
        rows,
    )
    return table


def test_chexpert_multilabel_policies_and_patient_split(tmp_path):
    table = _chexpert(tmp_path / "cx")
    zeros = {k: [f for f, v in row.items() if v == "1.0"] for k, row in table.items()}
    ones = {k: [f for f, v in row.items() if v in ("1.0", "-1.0")] for k, row in table.items()}
    ds, lt = _build("chexpert", "chexpert_multilabel", tmp_path / "cx", tmp_path / "c1")
    assert sum(d.num_rows for d in ds.values()) == 20  # every image, single- or multi-finding
    _check_order_and_counts(ds, lt, zeros)
    patients = [set(ds[s]["patient_id"]) for s in ds]
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1 :])
    assert {row["source_id"].split("/")[2] for row in ds["train"]} == patients[list(ds).index("train")]
    assert ds["train"][0]["image"].mode == "L"
    assert lt.disjoint_by == "patient" and lt.split_sizes == {s: ds[s].num_rows for s in ds}
    ds1, lt1 = _build(
        "chexpert", "chexpert_multilabel", tmp_path / "cx", tmp_path / "c2", uncertain="positive"
    )
    _check_order_and_counts(ds1, lt1, ones)
    assert sum(lt1.cls_num_list) > sum(lt.cls_num_list)
    with pytest.raises(Exception, match="uncertain must be 'negative'"):
        _build("chexpert", "chexpert_multilabel", tmp_path / "cx", tmp_path / "c3", uncertain="maybe")
    # the single-label config still keeps only the single-finding images
    single = builder_class("chexpert")(config_name="chexpert_lt_100", data_dir=str(tmp_path / "cx"), ratio=0)
    assert all(len(zeros[r.source_id]) == 1 for r in single.scan(tmp_path / "cx"))


def test_odir_multilabel_keeps_both_eyes_together(tmp_path):
    root = tmp_path / "odir"
    labels = ["N", "D", "G", "C", "A", "H", "M", "O"]
    rng = np.random.default_rng(1)
    rows, findings_of = [], {}
    for pid in range(12):
        onehot = (rng.random(8) < [0.5, 0.4, 0.1, 0.2, 0.1, 0.1, 0.15, 0.3]).astype(int)
        for eye in ("left", "right"):
            name = f"{pid}_{eye}.jpg"
            (root / "ODIR-5K_Training_Dataset").mkdir(parents=True, exist_ok=True)
            (root / "ODIR-5K_Training_Dataset" / name).write_bytes(image_bytes(pid * 2 + (eye == "left")))
            findings_of[name] = [lab for lab, v in zip(labels, onehot, strict=True) if v]
        rows.append([pid, 60, f"{pid}_left.jpg", f"{pid}_right.jpg", *onehot])
    write_csv(
        root / "ODIR-5K_Training_Annotations.csv",
        ["ID", "Patient Age", "Left-Fundus", "Right-Fundus", *labels],
        rows,
    )
    ds, lt = _build("odir", "odir_multilabel", root, tmp_path / "c")
    assert sum(d.num_rows for d in ds.values()) == 24
    _check_order_and_counts(ds, lt, findings_of)
    for split in ds.values():  # both eyes of a patient in the same split
        assert Counter(split["patient_id"]) == {p: 2 for p in set(split["patient_id"])}
    (root / "ODIR-5K_Training_Annotations.csv").unlink()
    with pytest.raises(MissingSourceFile, match=r"odir2019\.grand-challenge\.org/dataset"):
        _build("odir", "odir_multilabel", root, tmp_path / "c4")


def test_rfmid_multilabel_and_missing_download(tmp_path):
    rf = builder_class("rfmid")
    diseases = list(rf.LABEL_COLUMNS[1:])
    root = tmp_path / "rfmid" / "Training_Set"
    rows, findings_of = [], {}
    sets = [[], ["DR"], ["DR", "ODC"], ["MH", "DR"], ["TSLN"]]
    for i in range(1, 21):
        found = sets[i % len(sets)]
        rows.append([i, int(bool(found))] + [int(d in found) for d in diseases])
        (root / "Training").mkdir(parents=True, exist_ok=True)
        (root / "Training" / f"{i}.png").write_bytes(image_bytes(i, fmt="PNG"))
        findings_of[f"Training/{i}.png"] = found or ["NORMAL"]
    write_csv(root / "RFMiD_Training_Labels.csv", ["ID", "Disease_Risk", *diseases], rows)
    ds, lt = _build("rfmid", "rfmid_multilabel", tmp_path / "rfmid", tmp_path / "c")
    assert sum(d.num_rows for d in ds.values()) == 20
    _check_order_and_counts(ds, lt, findings_of)
    with pytest.raises(MissingSourceFile, match=r"riadd\.grand-challenge\.org/download-all-classes"):
        _build("rfmid", "rfmid_multilabel", tmp_path / "nowhere", tmp_path / "c2")
    with pytest.raises(MissingSourceFile, match=r"stanfordmlgroup\.github\.io/competitions/chexpert"):
        _build("chexpert", "chexpert_multilabel", tmp_path / "rfmid", tmp_path / "c3")


def test_group_split_is_disjoint_seeded_and_sized():
    groups = [f"p{i // 3}" for i in range(300)] + ["", ""]
    val, test, train = group_split(groups, (0.1, 0.2), seed=4)
    assert sorted(np.concatenate([val, test, train]).tolist()) == list(range(302))
    owner = {}
    for part, idx in enumerate((val, test, train)):
        for i in idx.tolist():
            assert owner.setdefault(groups[i] or f"own{i}", part) == part
    assert abs(len(val) - 30) <= 3 and abs(len(test) - 60) <= 3
    again = group_split(groups, (0.1, 0.2), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(again, (val, test, train), strict=True))
    assert not np.array_equal(group_split(groups, (0.1, 0.2), seed=5)[0], val)
