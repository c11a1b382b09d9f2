"""Group-disjoint (lesion / patient) split drawing, ISIC's lesion-disjoint builds, and missing-source errors."""

import numpy as np
import pytest
from conftest import ISIC_COLUMNS, image_bytes, write_csv

import hubtools.data.offline as offline
from hubtools.data.offline import DataUnavailable
from hubtools.longtail.datasets import MissingSourceFile, SplitMismatchError, build, builder_class
from hubtools.longtail.splits import draw_splits, group_codes, stratified_holdout

SPLITS = ("validation", "test", "train")


def _synthetic(seed: int = 0, n_groups: int = 400, mixed: float = 0.1):
    """Lesion-like metadata: groups of 1-4 images, one label per group except a ``mixed`` share, some ids empty."""
    rng = np.random.default_rng(seed)
    class_p = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    labels, groups = [], []
    for g in range(n_groups):
        size = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
        base = int(rng.choice(5, p=class_p))
        for _ in range(size):
            lab = int(rng.integers(5)) if rng.random() < mixed else base
            labels.append(lab)
            groups.append("" if g % 13 == 0 else f"L{g:04d}")
    order = rng.permutation(len(labels))  # group members are not contiguous in the sorted file list
    return np.array(labels)[order], [groups[i] for i in order]


def _reference_draw(labels, quotas, seed):
    """The ungrouped draw, written out independently: per class one permutation, sliced val | test | train."""
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for c in range(len(quotas["train"])):
        members = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for s in SPLITS:
            out[s] += members[start : start + quotas[s][c]].tolist()
            start += len(members[start : start + quotas[s][c]])
    return {s: sorted(v) for s, v in out.items() if v}


def test_no_group_in_two_splits_and_exact_quotas():
    labels, groups = _synthetic()
    train = [60, 40, 25, 15, 5]
    got = draw_splits(labels, train, val_per_class=8, test_per_class=10, seed=3, groups=groups)
    owner = {}
    for split, idx in got.items():
        for i in idx.tolist():
            if groups[i]:
                assert owner.setdefault(groups[i], split) == split, f"group {groups[i]} in two splits"
    # quotas are exact: a group counts toward the class of each of its images and never overshoots
    assert np.bincount(labels[got["validation"]], minlength=5).tolist() == [8] * 5
    assert np.bincount(labels[got["test"]], minlength=5).tolist() == [10] * 5
    assert np.bincount(labels[got["train"]], minlength=5).tolist() == train
    # every group is whole: a split holding one image of a group holds all its images
    codes = group_codes(groups, len(groups))
    for idx in got.values():
        inside = np.isin(codes, codes[idx])
        assert set(np.flatnonzero(inside).tolist()) == set(idx.tolist())


def test_grouped_draw_is_seeded():
    labels, groups = _synthetic(seed=1)
    kw = dict(val_per_class=5, test_per_class=5, groups=groups)
    a = draw_splits(labels, [50, 30, 20, 10, 4], seed=7, **kw)
    b = draw_splits(labels, [50, 30, 20, 10, 4], seed=7, **kw)
    c = draw_splits(labels, [50, 30, 20, 10, 4], seed=8, **kw)
    assert all(np.array_equal(a[s], b[s]) for s in SPLITS)
    assert not np.array_equal(a["test"], c["test"])


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_singleton_groups_reproduce_the_ungrouped_draw(seed):
    labels, _ = _synthetic(seed=seed)
    quotas = {"validation": [3] * 5, "test": [4] * 5, "train": [40, 25, 12, 6, 2]}
    unique = [f"img{i}" for i in range(labels.size)]
    empty = [""] * labels.size  # unknown ids: every record its own group
    want = _reference_draw(labels, quotas, seed)
    for groups in (None, unique, empty):
        got = draw_splits(labels, quotas["train"], 3, 4, seed=seed, groups=groups)
        assert {s: v.tolist() for s, v in got.items()} == want


def test_held_out_sets_do_not_depend_on_train_quotas():
    labels, groups = _synthetic(seed=2, mixed=0.3)
    small = draw_splits(labels, [10, 5, 3, 2, 1], 6, 6, seed=4, groups=groups)
    large = draw_splits(labels, [60, 40, 25, 15, 5], 6, 6, seed=4, groups=groups)
    assert np.array_equal(small["validation"], large["validation"])
    assert np.array_equal(small["test"], large["test"])


def test_groups_that_cannot_fill_a_quota_exactly_raise_or_cap():
    # class 1 lives only in one group of 3: no split asking 2 of it can be filled with whole groups
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    groups = ["a", "b", "c", "d", "e", "f", "g", "g", "g"]
    with pytest.raises(ValueError, match=r"class 1 validation 0/2"):
        draw_splits(labels, [2, 1], val_per_class=2, seed=0, groups=groups)
    got = draw_splits(labels, [2, 3], val_per_class=2, seed=0, groups=groups, strict=False)
    assert np.bincount(labels[got["validation"]], minlength=2).tolist() == [2, 0]
    assert np.bincount(labels[got["train"]], minlength=2).tolist() == [2, 3]  # the group went to train whole


def test_mixed_label_group_counts_toward_each_class():
    # group "m" holds one image of each class; with quotas of 1 it alone fills validation
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    groups = ["m", "m", "a", "b", "c", "d", "e", "f"]
    placed = 0
    for seed in range(6):
        got = draw_splits(labels, [1, 1], val_per_class=1, test_per_class=1, seed=seed, groups=groups)
        for idx in got.values():
            assert np.bincount(labels[idx], minlength=2).tolist() == [1, 1]
        home = [s for s, idx in got.items() if 0 in idx or 1 in idx]
        assert len(home) <= 1 and all({0, 1} <= set(got[s].tolist()) for s in home)  # whole or unused
        placed += len(home)
    assert placed > 0


def test_group_codes_missing_ids_are_singletons():
    codes = group_codes(["x", "", None, float("nan"), "x", 7, "7"], 7)
    assert codes[0] == codes[4] and codes[5] == codes[6]
    assert len({codes[1], codes[2], codes[3], codes[0], codes[5]}) == 5
    with pytest.raises(ValueError, match="groups has 2 entries for 3 records"):
        group_codes(["a", "b"], 3)


def test_stratified_holdout_with_groups():
    labels, groups = _synthetic(seed=3)
    plain = stratified_holdout(labels, (0.1, 0.2), seed=2)
    single = stratified_holdout(labels, (0.1, 0.2), seed=2, groups=[str(i) for i in range(labels.size)])
    assert all(np.array_equal(a, b) for a, b in zip(plain, single, strict=True))
    val, test, rest = stratified_holdout(labels, (0.1, 0.2), seed=2, groups=groups)
    codes = group_codes(groups, len(groups))
    val_g, test_g, rest_g = (set(codes[p].tolist()) for p in (val, test, rest))
    assert not val_g & test_g and not val_g & rest_g and not test_g & rest_g
    assert val.size + test.size + rest.size == labels.size
    for part, plain_part in ((val, plain[0]), (test, plain[1])):  # whole groups: at most the ungrouped sizes
        assert np.all(np.bincount(labels[part], minlength=5) <= np.bincount(labels[plain_part], minlength=5))
    assert set(np.unique(labels[rest]).tolist()) == set(range(5))  # every class keeps training images


# --------------------------------------------------------------------------- ISIC builder


LESION_SIZES = (3, 2, 1, 1, 1, 1, 1, 1)  # per class: 11 images in 8 lesions


def _isic_with_lesions(root):
    """ISIC layout whose lesions hold 1-3 images of one class, plus one lesion id left empty."""
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    rows, meta, n = [], [], 0
    for cls in ("NV", "MEL", "BCC", "BKL", "AK", "SCC", "VASC", "DF"):
        for lesion, size in enumerate(LESION_SIZES):
            for _ in range(size):
                image_id = f"ISIC_{n:07d}"
                (images / f"{image_id}.jpg").write_bytes(image_bytes(n))
                rows.append([image_id] + [f"{float(c == cls):.1f}" for c in ISIC_COLUMNS[1:]])
                meta.append([image_id, "" if (cls == "DF" and lesion == 5) else f"IL_{cls}_{lesion}"])
                n += 1
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ISIC_COLUMNS, rows)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "lesion_id"], meta)
    return root


ISIC_KW = dict(n_max=3, val_per_class=2, test_per_class=2, expected_train_counts=())


def test_isic_is_lesion_disjoint_by_default(tmp_path):
    src = _isic_with_lesions(tmp_path / "isic")
    for seed in (1, 2, 3):
        ds, lt = build("isic2019", src, seed=seed, cache_dir=tmp_path / f"c{seed}", **ISIC_KW)
        lesions = {s: {x for x in ds[s]["lesion_id"] if x} for s in ds}
        assert not lesions["train"] & lesions["test"] and not lesions["train"] & lesions["validation"]
        assert not lesions["validation"] & lesions["test"]
        assert lt.disjoint_by == "lesion_id" and lt.split_provenance == "seeded-redraw"
        assert [ds[s].num_rows for s in ("validation", "test")] == [16, 16]
        # floor_plus_one: int(3 / 100^(i/7)) + 1, met exactly with whole lesions
        assert lt.cls_num_list == [3] + [int(3 / 100 ** (i / 7)) + 1 for i in range(1, 8)]


def _shared_lesions(plan) -> int:
    lesions = [{r.group for r in plan.splits[s] if r.group} for s in SPLITS]
    return len(lesions[0] & lesions[1]) + len(lesions[0] & lesions[2]) + len(lesions[1] & lesions[2])


def test_isic_lesion_disjoint_off_draws_image_by_image(tmp_path):
    from hubtools.longtail.datasets import make_builder

    src = _isic_with_lesions(tmp_path / "isic")
    shared = {True: 0, False: 0}
    for seed in range(1, 5):
        for disjoint in shared:
            builder = make_builder("isic2019", src, seed=seed, lesion_disjoint=disjoint, **ISIC_KW)
            shared[disjoint] += _shared_lesions(builder.plan())
            assert builder.plan().profile.disjoint_by == ("lesion_id" if disjoint else "")
    assert shared[True] == 0 and shared[False] > 0  # the image-by-image draw leaks lesions, as the anchor's


def test_isic_anchor_lists_warn_shared_lesions(tmp_path):
    src = _isic_with_lesions(tmp_path / "isic")
    # IL_NV_0 has 3 images: one in test, two in train -> 1 lesion shared, 2 train / 1 test images
    names = sorted(p.name for p in (src / "ISIC_2019_Training_Input").glob("*.jpg"))
    lists = {"train": [names[0], names[1]], "val": [names[3]], "test": [names[2]]}
    splits = tmp_path / "numpy"
    splits.mkdir()
    for split, files in lists.items():
        np.save(splits / f"{split}_100.npy", np.array(files))
    with pytest.warns(
        UserWarning, match=r"share 1 lesion_id value\(s\) between train and test \(2 train / 1 test"
    ):
        _, lt = build("isic2019", src, splits_dir=splits, cache_dir=tmp_path / "c", expected_train_counts=())
    assert lt.split_provenance == "monica-lists" and lt.disjoint_by == ""
    assert "share 1 lesion_id" in lt.notes


def test_isic_card_states_lesion_disjoint(tmp_path):
    from hubtools.longtail.datasets import dataset_card, make_builder, prepare

    src = _isic_with_lesions(tmp_path / "isic")
    builder = make_builder("isic2019", src, cache_dir=tmp_path / "c", **ISIC_KW)
    ds = prepare(builder)
    card = str(dataset_card("isic2019", builder, ds, builder.plan().profile, None, builder.config.name))
    assert "every lesion_id lies in one split only" in card


def test_isic_lesions_that_cannot_fill_exact_quotas_are_reported(tmp_path, isic_dir):
    from hubtools.longtail.datasets import make_builder

    # the shared tiny folder pairs images of different classes into one lesion and needs every image
    kw = dict(n_max=6, val_per_class=1, test_per_class=1)
    builder = make_builder("isic2019", isic_dir, expected_train_counts=(), **kw)
    with pytest.warns(
        UserWarning, match=r"whole groups cannot fill the quotas exactly .*lesion_id in one split"
    ):
        plan = builder.plan()
    assert _shared_lesions(plan) == 0 and "whole groups cannot fill" in plan.profile.notes
    # the published-count check still refuses a train split the lesions left short
    left = [n - 2 for n in (8, 5, 4, 3, 3, 3, 3, 3)]  # ISIC_COUNTS in LT order, less 1 validation + 1 test
    image_by_image = [min(a, 6 if i == 0 else int(6 / 100 ** (i / 7)) + 1) for i, a in enumerate(left)]
    with pytest.warns(UserWarning), pytest.raises(SplitMismatchError, match=r"drawn train counts .* differ"):
        make_builder("isic2019", isic_dir, expected_train_counts=tuple(image_by_image), **kw).plan()


# --------------------------------------------------------------------------- missing raw files name their source


MISSING = {
    "isic2019": "https://challenge.isic-archive.com/data/#2019",
    "nct": "https://zenodo.org/records/1214456",
    "kvasir": "https://datasets.simula.no/hyper-kvasir/",
    **{
        flag: "https://zenodo.org/records/10519652"
        for flag in (
            "pathmnist",
            "dermamnist",
            "bloodmnist",
            "tissuemnist",
            "organamnist",
            "organcmnist",
            "organsmnist",
        )
    },
    "fashion_mnist": "apt-get install dataset-fashion-mnist",
    "mri_patches": "apt-get install mricron-data",
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_empty_source_dir_names_where_to_download(tmp_path, monkeypatch, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    # Fashion-MNIST reads the Debian package's fixed folder: point that at the empty folder instead
    monkeypatch.setattr(offline, "FASHION_MNIST_DIR", empty)
    with pytest.raises((MissingSourceFile, DataUnavailable)) as err:
        build(name, empty, cache_dir=tmp_path / "c")
    assert MISSING[name] in str(err.value)
    assert builder_class(name).SOURCE in str(err.value)  # one mechanism: the builder's own SOURCE


def test_missing_source_folder_names_where_to_download(tmp_path):
    with pytest.raises(MissingSourceFile, match=r"does not exist; get the source from NCT-CRC-HE-100K"):
        build("nct", tmp_path / "nowhere", cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- single-label sheets with a patient id


def test_sheet_builder_group_id_makes_fractions_patient_disjoint(tmp_path):
    import re

    from hubtools.longtail.datasets import prepare

    cx = tmp_path / "cx"
    findings = list(builder_class("chexpert").LABEL_COLUMNS)
    rows = []
    for i in range(60):  # 20 patients with 3 studies each, one finding per patient
        rel = f"CheXpert-v1.0-small/train/patient{i // 3:05d}/study{i % 3 + 1}/view1_frontal.jpg"
        (cx / rel).parent.mkdir(parents=True, exist_ok=True)
        (cx / rel).write_bytes(image_bytes(i, mode="L"))
        finding = ("No Finding", "Edema", "Pneumonia")[(i // 3) % 3]
        rows.append(
            [rel, "Female", 60, "Frontal", "AP"] + ["1.0" if f == finding else "0.0" for f in findings]
        )
    write_csv(
        cx / "CheXpert-v1.0-small" / "train.csv",
        ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + findings,
        rows,
    )

    class PatientCheXpert(builder_class("chexpert")):
        GROUP_NAME = "patient"

        def group_id(self, source_id: str, row: dict[str, str]) -> str:
            m = re.search(r"patient\d+", source_id)
            return m.group(0) if m else ""

    for seed in (1, 2, 3):
        builder = PatientCheXpert(
            config_name="chexpert_lt_100",
            data_dir=str(cx),
            cache_dir=str(tmp_path / f"c{seed}"),
            ratio=0,
            seed=seed,
            val_fraction=0.2,
            test_fraction=0.2,
        )
        ds = prepare(builder)
        patients = {s: {re.search(r"patient\d+", x).group(0) for x in ds[s]["source_id"]} for s in ds}
        assert set(ds) == {"train", "validation", "test"}
        assert not patients["train"] & patients["test"] and not patients["train"] & patients["validation"]
        assert not patients["validation"] & patients["test"]
        assert builder.plan().profile.disjoint_by == "patient"
        assert sum(d.num_rows for d in ds.values()) == 60  # natural ratio: every patient used, whole


def test_build_cli_passes_lesion_disjoint_to_isic_only(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import hubtools.longtail.datasets as lt_datasets
    from hubtools.errors import HubtoolsError
    from hubtools.longtail.cli import longtail_group

    seen = {}

    def fake_make_builder(name, *args, **kwargs):
        seen.update(name=name, **kwargs)
        raise HubtoolsError("stop here")

    monkeypatch.setattr(lt_datasets, "make_builder", fake_make_builder)
    res = CliRunner().invoke(
        longtail_group, ["build", "isic2019", "--source-dir", str(tmp_path), "--no-lesion-disjoint"]
    )
    assert res.exit_code == 1 and "stop here" in res.output
    assert seen == {"name": "isic2019", "lesion_disjoint": False}
    res = CliRunner().invoke(longtail_group, ["build", "mri_patches", "--lesion-disjoint"])
    assert res.exit_code == 1 and "--lesion-disjoint is an isic2019 option, not mri_patches's" in res.output
