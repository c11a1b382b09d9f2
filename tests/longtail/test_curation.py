"""InfoGrowth as a long-tail build step, on real MRI patches (Debian mricron-data) with known flipped labels."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset
from huggingface_hub import DatasetCard, hf_hub_download

from hubtools.cli import main
from hubtools.data.offline import DataUnavailable
from hubtools.longtail.curation import (
    CurationError,
    curate_split,
    curated_config_name,
    parse_seed_split,
    replace_train,
)
from hubtools.longtail.splits import LTProfile, groups_by_threshold, stratified_holdout
from hubtools.testing import data_missing

KEEP = np.arange(0, 116, 6)  # 20 of the 116 AAL classes, spread over the whole tail (457 -> 11 train rows)


@pytest.fixture(scope="module")
def mri20():
    """A long-tailed set of real MRI patches: 20 classes, held-out 10 % validation / 20 % test per class."""
    from hubtools.data.mri_patches import load_mri_patches

    try:
        m = load_mri_patches(patch_size=32, stride=4, slices=slice(None, None, 4))
    except DataUnavailable as exc:
        data_missing(exc)
    remap = np.full(len(m.class_names), -1)
    remap[KEEP] = np.arange(len(KEEP))
    mask = remap[m.labels] >= 0
    x, y = m.images[mask], remap[m.labels[mask]]
    val, test, train = stratified_holdout(y, (0.1, 0.2), seed=1)
    names = [m.class_names[c] for c in KEEP]
    features = Features({"image": Image(), "label": ClassLabel(names=names), "source_id": Value("string")})

    def split(idx):
        return Dataset.from_dict(
            {"image": list(x[idx]), "label": y[idx].tolist(), "source_id": [f"patch{i}" for i in idx]},
            features=features,
        )

    ds = DatasetDict(train=split(train), validation=split(val), test=split(test))
    counts = np.bincount(y[train], minlength=len(KEEP)).tolist()
    head, medium = groups_by_threshold(counts)
    lt = LTProfile(names, counts, counts[0] / counts[-1], head, medium, test_distribution="natural")
    return ds, lt


@pytest.fixture(scope="module")
def noisy(mri20):
    """The same set with 20 % of the train labels flipped (y -> y + U{1..C-1} mod C); the flip mask."""
    ds, lt = mri20
    y = np.asarray(ds["train"]["label"])
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.2
    y_noisy = y.copy()
    y_noisy[flip] = (y[flip] + rng.integers(1, lt.num_classes, flip.sum())) % lt.num_classes
    train = ds["train"].map(
        lambda b, idx: {"label": y_noisy[idx].tolist()}, batched=True, with_indices=True, keep_in_memory=True
    )
    return DatasetDict(train=train, validation=ds["validation"], test=ds["test"]), lt, flip


def _ids(ds) -> np.ndarray:
    return np.asarray(ds["source_id"])


def test_flipped_labels_are_dropped_clean_rows_kept_and_every_class_survives(noisy):
    ds, lt, flip = noisy
    cur, rec = curate_split(ds, lt)
    ids, y = _ids(ds["train"]), np.asarray(ds["train"]["label"])
    kept = np.isin(ids, _ids(cur))
    # measured from the known flips (probe cleaner, 5 % clean-loss target): 67 % removed, 5 % clean lost
    noise_removed, clean_lost = (~kept[flip]).mean(), (~kept[~flip]).mean()
    assert noise_removed >= 0.55, noise_removed
    assert clean_lost <= 0.12, clean_lost
    assert flip[kept].mean() < 0.5 * flip.mean()  # the curated split holds less than half the noise share
    assert sorted(np.unique(cur["label"])) == list(range(lt.num_classes))  # every class survives
    assert rec["classes"] == {"in_train": 20, "kept": 20, "lost": [], "unchecked": [], "restored": []}

    # the curated split is the train split's rows, in their order, with its columns
    assert cur.features == ds["train"].features
    assert list(_ids(cur)) == list(ids[kept])
    assert rec["rows"] == {"train": len(y), "selected": int(kept.sum()), "removed": int((~kept).sum())}
    assert sum(rec["counts"].values()) == len(y)
    removed = set(rec["removed_ids"]["dropped_noisy"]) | set(rec["removed_ids"]["duplicate"])
    assert removed == set(ids[~kept])  # budget 1.0: exactly the cleaner's and the duplicate rule's rows go
    per_class = np.array([rec["per_class"][str(c)]["selected"] for c in range(lt.num_classes)])
    assert per_class.tolist() == np.bincount(cur["label"], minlength=lt.num_classes).tolist()

    # classes with < 5 validation rows were topped up with exactly the missing number of train rows,
    # which stay in the curated split as seeds
    val_counts = np.bincount(ds["validation"]["label"], minlength=lt.num_classes)
    expected = {str(c): 5 - int(n) for c, n in enumerate(val_counts) if n < 5}
    assert expected and {c: len(v) for c, v in rec["seed"]["borrowed"].items()} == expected
    borrowed = [i for v in rec["seed"]["borrowed"].values() for i in v]
    assert set(borrowed) <= set(_ids(cur)) and rec["counts"]["seed"] == len(borrowed)
    for c, rows in rec["seed"]["borrowed"].items():
        assert (y[np.isin(ids, rows)] == int(c)).all()
    assert rec["seed"]["rows_from_split"] == ds["validation"].num_rows
    assert rec["settings"]["encoder_id"].startswith("pca64-of-seed@")
    assert rec["settings"]["min_per_class"] == 20 and rec["settings"]["seed_split"] == "validation"


def test_the_floor_keeps_every_class_at_a_small_budget(noisy):
    ds, lt, _ = noisy
    n = ds["train"].num_rows
    got = {}
    for floor in (20, 0):
        cur, rec = curate_split(ds, lt, budget=0.2, min_per_class=floor, score="cosine")
        counts = np.bincount(cur["label"], minlength=lt.num_classes)
        eligible = np.array(
            [rec["per_class"][str(c)]["seed"] + rec["per_class"][str(c)]["kept"] for c in range(20)]
        )
        assert cur.num_rows == round(0.2 * n)
        got[floor] = (counts, np.minimum(floor or 20, eligible))
    counts, need = got[20]
    assert (counts >= need).all(), (counts, need)
    counts0, need0 = got[0]
    assert (counts0 < need0).any()  # without the floor the gain-weighted draw leaves some class below it


def test_seed_split_choices_and_refusals(noisy):
    assert parse_seed_split("val") == ("validation", None)
    assert parse_seed_split("train:0.05") == ("train", 0.05)
    for bad, words in (
        ("test", "measures"),
        ("train", "needs a fraction"),
        ("validation:0.1", "train split only"),
        ("train:1.5", "(0, 1)"),
        ("train:x", "not a fraction"),
    ):
        with pytest.raises(CurationError, match=words):
            parse_seed_split(bad)
    ds, lt, _ = noisy
    with pytest.raises(CurationError, match="not in the dataset"):
        curate_split(ds, lt, seed_split="trusted")
    for budget in (0, 1.5, True):
        with pytest.raises(CurationError, match="budget"):
            curate_split(ds, lt, budget=budget)
    assert curated_config_name("mri_patches_lt") == "mri_patches_lt-infogrowth"
    assert curated_config_name("mri_patches_lt", 0.5) == "mri_patches_lt-infogrowth-b0.5"

    # a per-class sample of train as the seed: max(5, 10 %) rows per class (all of a smaller class)
    cur, rec = curate_split(ds, lt, seed_split="train:0.1", score="cosine")
    counts = np.bincount(ds["train"]["label"], minlength=lt.num_classes)
    expected = np.minimum(counts, np.maximum(5, np.round(0.1 * counts).astype(int)))
    assert rec["seed"]["rows_per_class"] == expected.tolist() and rec["counts"]["seed"] == expected.sum()
    assert rec["seed"]["rows_from_split"] == 0 and rec["seed"]["borrowed_train_rows"] == 0
    seed_rows = (
        set(_ids(ds["train"]))
        - set(rec["removed_ids"]["dropped_noisy"])
        - set(rec["removed_ids"]["duplicate"])
    )
    assert seed_rows == set(_ids(cur))


def test_a_class_without_seed_rows_is_kept_unchecked(noisy):
    ds, lt, _ = noisy
    val = ds["validation"].filter(lambda b: [v != 3 for v in b["label"]], batched=True)
    cur, rec = curate_split(
        DatasetDict(train=ds["train"], validation=val, test=ds["test"]), lt, score="cosine"
    )
    y = np.asarray(ds["train"]["label"])
    assert rec["classes"]["unchecked"] == [3] and rec["counts"]["unchecked"] == int((y == 3).sum())
    assert set(_ids(ds["train"])[y == 3]) <= set(_ids(cur))


def test_a_transformers_image_encoder_replaces_the_pca(noisy, tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from hubtools.data.embed import ImageEncoder

    ds, lt, _ = noisy
    small = DatasetDict(train=ds["train"].select(range(300)), validation=ds["validation"], test=ds["test"])
    folder = tmp_path / "vit"
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    ViTModel(cfg).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    cur, rec = curate_split(small, lt, encoder=str(folder), score="cosine", index="exact")
    assert rec["settings"]["encoder_id"] == ImageEncoder(folder).encoder_id
    assert rec["curator"]["encoder_id"] == rec["settings"]["encoder_id"]
    assert sum(rec["counts"].values()) == 300 and cur.num_rows == rec["rows"]["selected"]


def _table(ds) -> pa.Table:
    return ds.cast_column("image", Image(decode=False)).with_format("arrow")[:].combine_chunks()


def test_build_writes_and_publishes_the_curated_config_beside_the_uncurated(
    hub, repo_id, tmp_path, monkeypatch
):
    import hubtools.longtail.datasets as lt_datasets

    runner = CliRunner()
    result = runner.invoke(main, ["longtail", "build", "mri_patches", "--ig-budget", "0.5"])
    assert result.exit_code != 0 and "--ig-budget set without --infogrowth" in result.output

    make = lt_datasets.make_builder

    def coarse(*args, **kwargs):  # every 16th slice: the same real set, a quarter of the patches
        return make(*args, **kwargs, slice_step=16)

    monkeypatch.setattr(lt_datasets, "make_builder", coarse)
    out = tmp_path / "mri"
    args = [
        "longtail",
        "build",
        "mri_patches",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--infogrowth",
        "--ig-score",
        "cosine",
        "--push-to-hub",
        repo_id,
    ]
    try:
        result = runner.invoke(main, args)
    except DataUnavailable as exc:
        data_missing(exc)
    if result.exit_code and "mricron-data" in result.output:
        data_missing(result.output)
    assert result.exit_code == 0, result.output
    cfg, cur_cfg = "mri_patches_lt", "mri_patches_lt-infogrowth"
    assert f"published {repo_id} config {cur_cfg}" in result.output and "infogrowth: kept" in result.output

    base, base_lt = lt_datasets.load(out)
    cur, cur_lt = lt_datasets.load(tmp_path / "mri-infogrowth")
    record = json.loads((tmp_path / "mri-infogrowth" / "infogrowth.json").read_text())
    assert record["config"] == cur_cfg and record["settings"]["score"] == "cosine"
    assert cur["train"].num_rows == record["rows"]["selected"] < base["train"].num_rows
    assert set(cur["train"]["source_id"]) <= set(base["train"]["source_id"])
    for split in ("validation", "test"):
        assert _table(cur[split]).equals(_table(base[split]))
    # the curated profile: same classes and groups, the curated counts (what the trainer checks)
    assert cur_lt.cls_num_list == np.bincount(cur["train"]["label"], minlength=base_lt.num_classes).tolist()
    assert (cur_lt.class_names, cur_lt.head, cur_lt.medium) == (
        base_lt.class_names,
        base_lt.head,
        base_lt.medium,
    )
    present = set(base["train"]["label"])
    assert set(cur["train"]["label"]) == present  # every class that has train rows keeps some

    # both configs on the Hub; the curated one loads with load() and load_dataset()
    hub_ds, hub_lt = lt_datasets.load(repo_id, cur_cfg)
    assert _table(hub_ds["train"]).equals(_table(cur["train"])) and hub_lt == cur_lt
    assert load_dataset(repo_id, cfg, split="train").num_rows == base["train"].num_rows
    card = DatasetCard.load(repo_id, repo_type="dataset")
    assert sorted(c["config_name"] for c in card.data.configs) == [cfg, cur_cfg]
    assert "infogrowth" in card.data.tags
    for words in (
        "### InfoGrowth curation",
        "| cleaner | cosine",
        "| tail floor | 20 rows per class",
        f"`{record['settings']['encoder_id']}`",
        "| dropped_noisy |",
        "`validation` split",
    ):
        assert words in card.text, words
    assert (
        json.loads(open(hf_hub_download(repo_id, f"infogrowth/{cur_cfg}.json", repo_type="dataset")).read())
        == record
    )


def test_replace_train_keeps_groups_and_counts_the_new_rows(mri20):
    ds, lt = mri20
    half = ds["train"].select(range(0, ds["train"].num_rows, 2))
    new, prof = replace_train(ds, lt, half, "half")
    assert prof.cls_num_list == np.bincount(half["label"], minlength=20).tolist()
    assert (prof.head, prof.medium, prof.class_names) == (lt.head, lt.medium, lt.class_names)
    assert prof.split_sizes == {
        "train": half.num_rows,
        "validation": ds["validation"].num_rows,
        "test": ds["test"].num_rows,
    }
    assert prof.notes.endswith("half") and new["test"] is ds["test"]
