"""The MONICA builders on tiny files in each source's real raw format."""

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ISIC_COLUMNS, ISIC_COUNTS, image_bytes, make_class_tree, make_isic, make_npz, write_csv
from datasets import ClassLabel, Image

from hubtools.longtail.datasets import (
    AnnotationError,
    ChecksumError,
    CorruptSourceFile,
    MissingSourceFile,
    NpzMember,
    SourceError,
    SplitMismatchError,
    UnknownDatasetError,
    build,
    builder_class,
)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _raw(ds):
    return ds.cast_column("image", Image(decode=False))


# --------------------------------------------------------------------------- ISIC 2019


def test_isic_counts_labels_features(tmp_path, isic_dir):
    # every image of the tiny folder is needed, and its lesion pairs straddle classes: draw image by image
    ds, lt = build(
        "isic2019",
        isic_dir,
        cache_dir=tmp_path / "c",
        n_max=6,
        val_per_class=1,
        test_per_class=1,
        expected_train_counts=(),
        lesion_disjoint=False,
    )
    lt_order = ["NV", "MEL", "BCC", "BKL", "AK", "SCC", "VASC", "DF"]
    assert ds["train"].features["label"].names == lt_order
    assert set(ds["train"].features) == {"image", "label", "orig_label", "source_id", "lesion_id"}
    # floor_plus_one with n_max 6, r 100, C 8: int(6 / 100^(i/7)) + 1 = 6, 4, 2, 1, ... capped by what is left
    # after 1 validation + 1 test image per class: 6, 3, 2, 1, 1, 1, 1, 1
    assert lt.cls_num_list == [6, 3, 2, 1, 1, 1, 1, 1]
    assert [ds[s].num_rows for s in ("train", "validation", "test")] == [16, 8, 8]
    for split in ds.values():
        for row in split:
            assert split.features["label"].int2str(row["label"]) == row["orig_label"]
    ids = [set(ds[s]["source_id"]) for s in ds]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    all_ids = set().union(*ids)
    assert (
        "ISIC_0000003_downsampled.jpg" in all_ids
    )  # NV (8 images) is used whole, its _downsampled id included
    lesions = {sid: lid for d in ds.values() for sid, lid in zip(d["source_id"], d["lesion_id"], strict=True)}
    assert lesions["ISIC_0000001.jpg"] == "IL_0000000"
    assert lesions["ISIC_0000005.jpg"] == ""  # an empty lesion_id in the metadata stays empty
    # bytes are the original JPEG, untouched
    raw = _raw(ds["train"])[0]
    assert raw["image"]["bytes"] == (isic_dir / "ISIC_2019_Training_Input" / raw["source_id"]).read_bytes()
    assert lt.head == 2 and lt.medium == 5 and lt.test_distribution == "balanced"


def test_isic_seeded_and_deterministic(tmp_path, isic_dir):
    kw = dict(n_max=6, val_per_class=1, test_per_class=1, expected_train_counts=(), lesion_disjoint=False)
    a, _ = build("isic2019", isic_dir, cache_dir=tmp_path / "a", **kw)
    b, _ = build("isic2019", isic_dir, cache_dir=tmp_path / "b", **kw)
    c, _ = build("isic2019", isic_dir, seed=2, cache_dir=tmp_path / "c", **kw)
    assert a["train"]["source_id"] == b["train"]["source_id"]
    assert a["test"]["source_id"] != c["test"]["source_id"]


def test_isic_bad_inputs_name_file_and_row(tmp_path):
    make_isic(tmp_path / "unk", unk_row=True)
    with pytest.raises(AnnotationError, match=r"GroundTruth\.csv:34: image ISIC_9999999 is labelled UNK"):
        build("isic2019", tmp_path / "unk", cache_dir=tmp_path / "c")

    make_isic(tmp_path / "missing")
    (tmp_path / "missing" / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").unlink()
    with pytest.raises(MissingSourceFile, match=r"ISIC_0000005\.jpg: missing image of .*GroundTruth\.csv:7"):
        build("isic2019", tmp_path / "missing", cache_dir=tmp_path / "c")

    make_isic(tmp_path / "cols")
    gt = tmp_path / "cols" / "ISIC_2019_Training_GroundTruth.csv"
    gt.write_text(gt.read_text().replace(",SCC,UNK", ",SCCX,UNK"))
    with pytest.raises(AnnotationError, match=r"GroundTruth\.csv: missing column\(s\) \['SCC'\]"):
        build("isic2019", tmp_path / "cols", cache_dir=tmp_path / "c")

    make_isic(tmp_path / "trunc")
    img = tmp_path / "trunc" / "ISIC_2019_Training_Input" / "ISIC_0000010.jpg"
    img.write_bytes(img.read_bytes()[:40])
    with pytest.raises(CorruptSourceFile, match=r"ISIC_0000010\.jpg does not decode"):
        build(
            "isic2019",
            tmp_path / "trunc",
            cache_dir=tmp_path / "c",
            n_max=6,
            val_per_class=1,
            test_per_class=1,
            expected_train_counts=(),
            lesion_disjoint=False,
        )

    # The real config asks 50 + 100 held-out images per class: a tiny folder is refused, not built partly.
    with pytest.raises(SourceError, match="fewer images than the held-out quotas"):
        build("isic2019", tmp_path / "trunc", cache_dir=tmp_path / "c")


def test_expected_counts_are_enforced(tmp_path, isic_dir):
    with pytest.raises(SplitMismatchError, match=r"differ from MONICA's \[9, 9"):
        build(
            "isic2019",
            isic_dir,
            cache_dir=tmp_path / "c",
            n_max=6,
            val_per_class=1,
            test_per_class=1,
            expected_train_counts=(9, 9, 1, 1, 1, 1, 1, 1),
            lesion_disjoint=False,
        )


# --------------------------------------------------------------------------- NCT and HyperKvasir folder trees


NCT_LT = ["TUM", "MUS", "LYM", "DEB", "BACK", "STR", "ADI", "MUC", "NORM"]


def test_nct_tiff_tree(tmp_path):
    counts = {c: 12 - i for i, c in enumerate(NCT_LT)}
    make_class_tree(tmp_path / "NCT-CRC-HE-100K", counts, ".tif", "TIFF")
    ds, lt = build(
        "nct",
        tmp_path / "NCT-CRC-HE-100K",
        cache_dir=tmp_path / "c",
        n_max=8,
        val_per_class=1,
        test_per_class=2,
        expected_train_counts=(),
    )
    # round half up of 8 * 100^(-i/8), capped by (count - 3)
    expected = [min(c - 3, math.floor(8 * 100 ** (-i / 8) + 0.5)) for i, c in enumerate(counts.values())]
    assert lt.cls_num_list == expected
    assert ds["validation"].num_rows == 9 and ds["test"].num_rows == 18
    row = ds["train"][0]
    assert row["image"].mode == "RGB" and row["source_id"].startswith(row["orig_label"] + "/")
    (tmp_path / "NCT-CRC-HE-100K" / "XYZ").mkdir()
    with pytest.raises(AnnotationError, match=r"XYZ: unknown class folder"):
        build("nct", tmp_path / "NCT-CRC-HE-100K", cache_dir=tmp_path / "c")


KVASIR = {
    "bbps-2-3": "lower-gi-tract/quality-of-mucosal-views",
    "polyps": "lower-gi-tract/pathological-findings",
    "cecum": "lower-gi-tract/anatomical-landmarks",
    "dyed-lifted-polyps": "lower-gi-tract/therapeutic-interventions",
    "pylorus": "upper-gi-tract/anatomical-landmarks",
    "dyed-resection-margins": "lower-gi-tract/therapeutic-interventions",
    "z-line": "upper-gi-tract/anatomical-landmarks",
    "retroflex-stomach": "upper-gi-tract/anatomical-landmarks",
    "bbps-0-1": "lower-gi-tract/quality-of-mucosal-views",
    "ulcerative-colitis-grade-2": "lower-gi-tract/pathological-findings",
    "esophagitis-a": "upper-gi-tract/pathological-findings",
    "retroflex-rectum": "lower-gi-tract/anatomical-landmarks",
    "esophagitis-b-d": "upper-gi-tract/pathological-findings",
    "ulcerative-colitis-grade-1": "lower-gi-tract/pathological-findings",
    "hemorrhoids": "lower-gi-tract/pathological-findings",  # a HyperKvasir class outside the 14: left out
}


def test_hyperkvasir_tree(tmp_path):
    counts = {c: 4 for c in KVASIR}
    counts["bbps-2-3"] = 7
    make_class_tree(
        tmp_path / "hk" / "labeled-images",
        counts,
        ".jpg",
        "JPEG",
        prefix_dirs=KVASIR,
        name=lambda cls, i: f"{cls[:3]}{i:02d}-uuid",
    )
    ds, lt = build(
        "kvasir",
        tmp_path / "hk",
        cache_dir=tmp_path / "c",
        n_max=5,
        val_per_class=1,
        test_per_class=1,
        expected_train_counts=(),
    )
    assert lt.num_classes == 14 and "hemorrhoids" not in lt.class_names
    left = [5] + [2] * 13  # after 1 validation + 1 test image per class
    assert lt.cls_num_list == [min(a, math.floor(5 * 20 ** (-i / 13) + 0.5)) for i, a in enumerate(left)]
    assert lt.cls_num_list[-1] == 0  # 5 / 20 rounds to nothing: a tiny n_max empties the tail
    assert (
        ds["train"][0]["source_id"].count("/") == 3
    )  # <tract>/<category>/<class>/<file> under labeled-images
    assert lt.head == 4 and lt.medium == 8


# --------------------------------------------------------------------------- MedMNIST+


MEDMNIST = {  # flag -> (channels, LT -> original order of MONICA's lists)
    "pathmnist": (3, (8, 5, 3, 2, 1, 7, 0, 4, 6)),
    "dermamnist": (3, (5, 4, 2, 1, 0, 6, 3)),
    "bloodmnist": (3, (6, 1, 3, 7, 2, 5, 0, 4)),
    "tissuemnist": (1, (0, 6, 7, 3, 4, 1, 5, 2)),
    "organamnist": (1, (6, 4, 8, 7, 5, 10, 9, 0, 3, 1, 2)),
    "organcmnist": (1, (6, 10, 9, 5, 0, 4, 8, 7, 1, 3, 2)),
    "organsmnist": (1, (6, 9, 10, 0, 4, 5, 8, 7, 3, 1, 2)),
}


@pytest.mark.parametrize("flag", sorted(MEDMNIST))
def test_medmnist_builders(tmp_path, flag):
    channels, lt_to_orig = MEDMNIST[flag]
    num_classes = len(lt_to_orig)
    lt_avail = [20, 14, 10, 8, 6, 5, 4, 3, 3, 3, 3][:num_classes]
    train_counts = [0] * num_classes
    for lt_idx, orig in enumerate(lt_to_orig):
        train_counts[orig] = lt_avail[lt_idx]
    path = tmp_path / f"{flag}_224.npz"
    arrays = make_npz(path, train_counts, channels)
    ds, lt = build(flag, tmp_path, cache_dir=tmp_path / "c", ratio=10, md5=_md5(path))
    expected = [min(a, math.floor(20 * 10 ** (-i / (num_classes - 1)) + 0.5)) for i, a in enumerate(lt_avail)]
    assert lt.cls_num_list == expected
    assert ds["validation"].num_rows == 4 and ds["test"].num_rows == 5  # official val/test kept whole
    names = ds["train"].features["label"].names
    for split, key in (("train", "train"), ("test", "test")):
        for row in ds[split]:
            idx = int(row["source_id"].split("_")[1])
            orig = int(arrays[f"{key}_labels"][idx, 0])
            assert row["label"] == lt_to_orig.index(orig)
            assert row["orig_label"] == names[row["label"]]
            img = np.asarray(row["image"])
            assert img.shape == (28, 28, 3)
            src = arrays[f"{key}_images"][idx]
            assert np.array_equal(img, src if channels == 3 else np.repeat(src[..., None], 3, axis=-1))
    assert lt.test_distribution == "natural"


def test_medmnist_md5_truncation_and_keys(tmp_path):
    path = tmp_path / "bloodmnist_224.npz"
    make_npz(path, [3] * 8, 3)
    with pytest.raises(
        ChecksumError,
        match=r"bloodmnist_224\.npz: MD5 .* differs from the published "
        r"b718ff6835fcbdb22ba9eacccd7b2601",
    ):
        build("bloodmnist", tmp_path, cache_dir=tmp_path / "c")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptSourceFile, match=r"bloodmnist_224\.npz: not a readable npz"):
        build("bloodmnist", tmp_path, cache_dir=tmp_path / "c", md5="skip")
    np.savez(path, train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(CorruptSourceFile, match=r"has no array 'val_labels'"):
        build("bloodmnist", tmp_path, cache_dir=tmp_path / "c", md5="skip")
    with pytest.raises(MissingSourceFile, match=r"dermamnist_224\.npz: missing"):
        build("dermamnist", tmp_path, cache_dir=tmp_path / "c")


def test_npz_member_truncated_rows(tmp_path):
    # An uncompressed member cut short: the header is fine, the rows run out.
    arr = np.arange(10 * 28 * 28, dtype=np.uint8).reshape(10, 28, 28)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    import zipfile

    with zipfile.ZipFile(tmp_path / "t.npz", "w", zipfile.ZIP_STORED) as z:
        z.writestr("train_images.npy", buf.getvalue()[: -28 * 28 * 3])
    with NpzMember(tmp_path / "t.npz", "train_images") as m:
        assert len(m) == 10
        with pytest.raises(CorruptSourceFile, match=r"truncated at row 7"):
            list(m.rows(range(10)))


def test_npz_row_streaming_equals_np_load(tmp_path):
    path = tmp_path / "organamnist_224.npz"
    arrays = make_npz(path, [5] * 11, 1, size=32)
    rows = [0, 3, 4, 17, 54]
    with NpzMember(path, "train_images") as m:
        got = [r for _, r in m.rows(rows)]
    loaded = np.load(path)["train_images"]
    assert all(np.array_equal(g, loaded[i]) for g, i in zip(got, rows, strict=True))
    assert np.array_equal(loaded, arrays["train_images"])


def test_medmnist_anchor_train_list(tmp_path):
    path = tmp_path / "bloodmnist_224.npz"
    arrays = make_npz(path, [6, 6, 6, 6, 6, 6, 6, 6], 3)
    labels = arrays["train_labels"][:, 0]
    lt_to_orig = MEDMNIST["bloodmnist"][1]
    # an anchor-style list: 3 images of LT class 0, 2 of class 1, 1 of each other class
    want = {lt_to_orig[0]: 3, lt_to_orig[1]: 2}
    picked = []
    for orig in range(8):
        rows = np.flatnonzero(labels == orig)[: want.get(orig, 1)]
        picked += [f"train_{r}_{orig}.jpg" for r in rows]
    splits = tmp_path / "numpy"
    splits.mkdir()
    np.save(splits / "train_100.npy", np.array(picked))
    ds, lt = build(
        "bloodmnist",
        tmp_path,
        splits_dir=splits,
        cache_dir=tmp_path / "c",
        md5=_md5(path),
        expected_train_counts=(),
    )
    assert lt.split_provenance == "monica-lists"
    assert lt.cls_num_list == [3, 2, 1, 1, 1, 1, 1, 1]
    assert sorted(ds["train"]["source_id"]) == sorted(f"train_{n.split('_')[1]}" for n in picked)
    bad = picked[:-1] + [
        picked[-1].rsplit("_", 1)[0] + f"_{(int(picked[-1].rsplit('_', 1)[1][0]) + 1) % 8}.jpg"
    ]
    np.save(splits / "train_100.npy", np.array(bad))
    with pytest.raises(SplitMismatchError, match=r"says class"):
        build(
            "bloodmnist",
            tmp_path,
            splits_dir=splits,
            cache_dir=tmp_path / "c2",
            md5=_md5(path),
            expected_train_counts=(),
        )


# --------------------------------------------------------------------------- multi-label sheets (generic rule)


def test_odir_single_label_patients(tmp_path):
    root = tmp_path / "odir"
    labels = ["N", "D", "G", "C", "A", "H", "M", "O"]
    rows, n = [], 0
    plan = {"N": 6, "D": 4, "C": 3, "M": 3}
    for cls, count in plan.items():
        for _ in range(count):
            rows.append([n, f"{n}_left.jpg", f"{n}_right.jpg"] + [int(c == cls) for c in labels])
            n += 1
    rows.append([n, f"{n}_left.jpg", f"{n}_right.jpg", 0, 1, 1, 0, 0, 0, 0, 0])  # two labels: left out
    for r in rows:
        for name in r[1:3]:
            (root / "ODIR-5K_Training_Dataset").mkdir(parents=True, exist_ok=True)
            (root / "ODIR-5K_Training_Dataset" / name).write_bytes(image_bytes(hash(name) % 1000))
    write_csv(
        root / "ODIR-5K_Training_Annotations.csv",
        ["ID", "Patient Age", "Left-Fundus", "Right-Fundus"] + labels,
        [[r[0], 50, *r[1:]] for r in rows],
    )
    ds, lt = build("odir", root, cache_dir=tmp_path / "c", ratio=None)
    assert lt.class_names == ["N", "D", "C", "M"]  # by frequency, ties by name
    assert sum(d.num_rows for d in ds.values()) == 2 * 16
    assert lt.notes.startswith("Single-label subset") and lt.test_distribution == "natural"
    bad = root / "ODIR-5K_Training_Annotations.csv"
    bad.write_text(
        bad.read_text().replace("\n3,50,3_left.jpg,3_right.jpg,1,", "\n3,50,3_left.jpg,3_right.jpg,yes,")
    )
    with pytest.raises(AnnotationError, match=r"Annotations\.csv:5: column 'N' has value 'yes'"):
        build("odir", root, cache_dir=tmp_path / "c")


def test_rfmid_and_chexpert(tmp_path):
    rf = builder_class("rfmid")
    diseases = list(rf.LABEL_COLUMNS[1:])
    assert len(diseases) == 45
    root = tmp_path / "rfmid" / "Training_Set"
    rows = []
    for i in range(1, 25):
        risk, onehot = (
            (0, []) if i <= 10 else (1, ["DR"] if i <= 18 else ["MH"] if i <= 22 else ["DR", "ODC"])
        )
        rows.append([i, risk] + [int(d in onehot) for d in diseases])
        (root / "Training").mkdir(parents=True, exist_ok=True)
        (root / "Training" / f"{i}.png").write_bytes(image_bytes(i, fmt="PNG"))
    write_csv(root / "RFMiD_Training_Labels.csv", ["ID", "Disease_Risk"] + diseases, rows)
    ds, lt = build("rfmid", tmp_path / "rfmid", cache_dir=tmp_path / "c", ratio=None)
    assert lt.class_names == ["NORMAL", "DR", "MH"]
    assert sum(d.num_rows for d in ds.values()) == 22  # the two-disease images are left out

    cx = tmp_path / "cx"
    findings = list(builder_class("chexpert").LABEL_COLUMNS)
    rows = []
    for i in range(14):
        rel = f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg"
        (cx / rel).parent.mkdir(parents=True, exist_ok=True)
        (cx / rel).write_bytes(image_bytes(i, mode="L"))
        vals = (
            {"No Finding": "1.0"}
            if i < 6
            else {"Edema": "1.0", "Cardiomegaly": "-1.0"}
            if i < 11
            else {"Pneumonia": "1.0", "Fracture": ""}
        )
        rows.append(
            [rel, "Female", 60, "Frontal", "AP"] + [vals.get(f, "0.0" if i % 2 else "") for f in findings]
        )
    write_csv(
        cx / "CheXpert-v1.0-small" / "train.csv",
        ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + findings,
        rows,
    )
    ds, lt = build("chexpert", cx, cache_dir=tmp_path / "c2", ratio=None)
    assert lt.class_names == ["No Finding", "Edema", "Pneumonia"]  # -1 (uncertain) is not positive
    assert ds["train"][0]["image"].mode == "L"


def test_unknown_dataset_name():
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'isic2020'; available: .*bloodmnist"):
        builder_class("isic2020")


def test_class_label_feature_is_lt_ordered(tmp_path):
    cls = builder_class("pathmnist")
    assert isinstance(cls.INFO.lt_names, tuple)
    assert cls.CLASS_NAMES[0] == "colorectal adenocarcinoma epithelium"  # original 8, the most frequent
    assert ClassLabel(names=list(cls.CLASS_NAMES)).num_classes == 9
    assert ISIC_COLUMNS[1:-1] != list(
        builder_class("isic2019").CLASS_NAMES
    )  # LT order differs from CSV order


MEMORY_SCRIPT = r"""
import resource, sys
from hubtools.longtail.datasets import make_builder, prepare
src, cache = sys.argv[1], sys.argv[2]
builder = make_builder("pathmnist", src, cache_dir=cache, md5="skip", n_max=4, expected_train_counts=())
builder.plan()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = prepare(builder)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(ds["train"].num_rows, (after - before) // 1024)
"""


def test_streaming_a_300mb_npz_keeps_memory_flat(tmp_path):
    # 2000 RGB 224-px train rows (~300 MB) in a stored npz; the build reads every row header-to-end
    # but keeps only the drawn ones, so peak RSS must not grow with the file.
    n = 2000
    block = np.random.default_rng(0).integers(0, 256, (10, 224, 224, 3), dtype=np.uint8)
    labels = (np.arange(n) % 9).astype(np.uint8).reshape(-1, 1)
    np.savez(
        tmp_path / "pathmnist_224.npz",
        train_images=np.tile(block, (n // 10, 1, 1, 1)),
        train_labels=labels,
        val_images=np.zeros((2, 224, 224, 3), np.uint8),
        val_labels=np.zeros((2, 1), np.uint8),
        test_images=np.zeros((2, 224, 224, 3), np.uint8),
        test_labels=np.ones((2, 1), np.uint8),
    )
    assert (tmp_path / "pathmnist_224.npz").stat().st_size > 300e6
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    rows, grew_mb = int(out[0]), int(out[1])
    assert rows == 8  # n_max 4, ratio 100, 9 classes: 4, 2, 1, 1, then zeros
    assert grew_mb < 100, f"peak RSS grew by {grew_mb} MB while streaming a 300 MB npz"


def test_draw_ignores_file_creation_order(tmp_path):
    counts = {c: 6 for c in NCT_LT}
    make_class_tree(tmp_path / "a", counts, ".tif", "TIFF")
    # the same files created in the reverse order (different inode/listing order)
    for path in sorted((tmp_path / "a").rglob("*.tif"), reverse=True):
        target = tmp_path / "b" / path.relative_to(tmp_path / "a")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    kw = dict(n_max=3, val_per_class=1, test_per_class=1, expected_train_counts=())
    a, _ = build("nct", tmp_path / "a", cache_dir=tmp_path / "ca", **kw)
    b, _ = build("nct", tmp_path / "b", cache_dir=tmp_path / "cb", **kw)
    for split in a:
        assert a[split]["source_id"] == b[split]["source_id"]
        assert _raw(a[split])["image"] == _raw(b[split])["image"]


def test_isic_anchor_split_lists(tmp_path, isic_dir):
    names = sorted(p.name for p in (isic_dir / "ISIC_2019_Training_Input").glob("*.jpg"))
    truth = {}
    for line in (isic_dir / "ISIC_2019_Training_GroundTruth.csv").read_text().splitlines()[1:]:
        fields = line.split(",")
        truth[fields[0] + ".jpg"] = ISIC_COLUMNS[1 + [float(v) for v in fields[1:]].index(1.0)]
    by_class = {c: [n for n in names if truth[n] == c] for c in ISIC_COUNTS}
    lists = {"val": [], "test": [], "train": []}
    for files in by_class.values():
        lists["val"].append(files[0])
        lists["test"].append(files[1])
        lists["train"] += files[2:3]
    splits = tmp_path / "numpy"
    splits.mkdir()
    for split, files in lists.items():
        np.save(splits / f"{split}_100.npy", np.array(files))
    ds, lt = build(
        "isic2019", isic_dir, splits_dir=splits, cache_dir=tmp_path / "c", expected_train_counts=()
    )
    assert lt.split_provenance == "monica-lists" and lt.cls_num_list == [1] * 8
    assert sorted(ds["validation"]["source_id"]) == sorted(lists["val"])
    assert sorted(ds["test"]["source_id"]) == sorted(lists["test"])
    # MONICA's published counts are checked against the lists
    with pytest.raises(SplitMismatchError, match=r"drawn train counts \[1, 1, 1, 1, 1, 1, 1, 1\] differ"):
        build("isic2019", isic_dir, splits_dir=splits, cache_dir=tmp_path / "c2")
    np.save(splits / "train_100.npy", np.array(lists["train"] + ["ISIC_7777777.jpg"]))
    with pytest.raises(
        SplitMismatchError, match=r"train list names 1 image\(s\) not in the source.*ISIC_7777777"
    ):
        build("isic2019", isic_dir, splits_dir=splits, cache_dir=tmp_path / "c3", expected_train_counts=())
