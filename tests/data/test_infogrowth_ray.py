"""InfoGrowth on Ray Data: shard, first pass, gain-rule merge, against the single-process curator.

Ray runs in local mode on 2 CPUs, started once for the module (start-up takes seconds).
"""

import logging
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip(
    "ray",
    reason='Ray is the optional extra hubtools[distributed] (pip install "hubtools[distributed]"); CI installs it',
)

from hubtools.data.infogrowth import (  # noqa: E402
    EmptyBatchError,
    InfoGrowth,
    InfoGrowthError,
    SeedError,
    select,
)
from hubtools.data.infogrowth_ray import (  # noqa: E402
    GainMerger,
    KeptRows,
    arrow_from_columns,
    columns_from_arrow,
    curate_on_ray,
)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    ctx = DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    yield
    ctx.enable_progress_bars = bars
    if started:
        ray.shutdown()


def clustered(rng, n, centres, sd=0.7):
    y = rng.integers(0, len(centres), n)
    x = centres[y] + sd * rng.standard_normal((n, centres.shape[1]))
    return x.astype(np.float32), y.astype(np.int64)


def noisy_stream(seed=0, n=900, n_classes=6, dim=16, noise=0.12, n_exact=80, n_near=80, near_sd=0.002):
    """Clustered rows with flipped labels, exact copies and near copies (one copy per source), shuffled."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((n_classes, dim))
    xs, ys = clustered(rng, 10 * n_classes, centres)
    x, y = clustered(rng, n, centres)
    flip = rng.random(n) < noise
    y[flip] = (y[flip] + rng.integers(1, n_classes, flip.sum())) % n_classes
    src = rng.choice(n, n_exact + n_near, replace=False)
    copies = x[src].copy()
    copies[n_exact:] += near_sd * rng.standard_normal((n_near, dim)).astype(np.float32)
    x, y = np.concatenate([x, copies]), np.concatenate([y, y[src]])
    order = rng.permutation(len(x))
    return {"img_emb": xs, "label": ys}, {"img_emb": x[order], "label": y[order]}


def single_process(seeds, stream, kwargs, batch_size=256):
    ig = InfoGrowth(**kwargs)
    ig.fit_seed(seeds)
    n = len(next(iter(stream.values())))
    for s in range(0, n, batch_size):
        ig.process_batch({k: v[s : s + batch_size] for k, v in stream.items()})
    return ig.results()


# --------------------------------------------------------------------------- equality with one curator


def test_exact_index_equals_single_process_and_merge_catches_cross_shard_copies():
    seeds, stream = noisy_stream()
    kw = dict(score="margin", relabel=True, relabel_delta=0.6, entropy_gain=True, index="exact", dup_eps=0.02)
    ref = single_process(seeds, stream, kw)
    cur = curate_on_ray(stream, seeds, num_shards=3, curator_kwargs=kw, batch_size=100)
    res = cur.results()

    assert set(res) == set(ref)
    assert (res["ig_status"] == ref["ig_status"]).all()
    counts = cur.counts()
    assert counts["dropped_noisy"] > 0 and counts["relabeled"] > 0 and counts["duplicate"] > 0
    np.testing.assert_array_equal(res["label"], ref["label"])
    np.testing.assert_array_equal(res["orig_label"], ref["orig_label"])
    np.testing.assert_allclose(res["ig_align"], ref["ig_align"], atol=1e-6)
    # gains agree up to float32 rounding: the rows fall into other batches
    for col in ("ig_gain", "ig_gain_ent", "ig_gain_norm"):
        np.testing.assert_allclose(res[col], ref[col], atol=2e-6, err_msg=col)
    # nn1 of rows the first pass dropped is their distance to the same-shard copy (documented)
    first = cur.first_pass()
    rescored = first["ig_shard_status"] != "duplicate"
    np.testing.assert_allclose(res["ig_nn1"][rescored], ref["ig_nn1"][rescored], atol=2e-6)
    dup = res["ig_status"] == "duplicate"
    assert (res["ig_nn1"][dup] < 0.02).all() and (ref["ig_nn1"][dup] < 0.02).all()

    # the merge did real work: copies across shards found, later shards' first-pass gains re-scored down
    assert cur.cross_shard_duplicates() > 10
    assert cur.stats["cross_shard_duplicates"] == cur.cross_shard_duplicates()
    later = (first["ig_shard"] >= 1) & (res["ig_status"] == "kept")
    assert (first["ig_shard_gain"][later] > res["ig_gain"][later] + 1e-6).mean() > 0.5
    shard0 = first["ig_shard"] == 0
    np.testing.assert_allclose(first["ig_shard_gain"][shard0], res["ig_gain"][shard0], atol=2e-6)

    # the same selection: select() applies unchanged
    np.testing.assert_array_equal(
        select(res["ig_gain_norm"], 0.3, "topk"), select(ref["ig_gain_norm"], 0.3, "topk")
    )
    assert cur.shard_bounds == [0, 353, 707, 1060]
    assert cur.settings["cleaning_identical_to_single_process"] is True


def test_cross_shard_exact_copy_caught_at_merge_and_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    x[30] = x[5]  # row 5 is in shard 0, its exact copy in shard 1
    stream = {"img_emb": x, "label": np.zeros(40, np.int64), "name": [f"row{i}" for i in range(40)]}
    seeds = {"img_emb": rng.standard_normal((6, 8)).astype(np.float32), "label": np.zeros(6, np.int64)}
    files = [tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"]
    table = arrow_from_columns(stream)
    pq.write_table(table.slice(0, 25), files[0])
    pq.write_table(table.slice(25), files[1])
    kw = dict(score="none", index="exact", min_seed_per_class=1)

    cur = curate_on_ray(files, seeds, num_shards=2, curator_kwargs=kw, output_path=tmp_path / "kept")

    res, first = cur.results(), cur.first_pass()
    copy = 6 + 30  # seeds first
    assert first["ig_shard"][copy] == 1
    assert first["ig_shard_status"][copy] == "kept" and first["ig_shard_gain"][copy] > 0.1
    assert res["ig_status"][copy] == "duplicate" and res["ig_gain"][copy] == 0.0
    assert res["ig_gain_norm"][copy] == 0.0 and res["ig_nn1"][copy] < 1e-4
    assert cur.cross_shard_duplicates() == 1
    ref = single_process(seeds, {k: v for k, v in stream.items() if k != "name"}, kw)
    assert (res["ig_status"] == ref["ig_status"]).all()
    np.testing.assert_allclose(res["ig_gain"], ref["ig_gain"], atol=2e-6)

    written = pq.read_table(tmp_path / "kept").sort_by("ig_arrival")
    kept = np.flatnonzero(res["ig_status"] != "duplicate")
    np.testing.assert_array_equal(written.column("ig_arrival").to_numpy(), kept)
    emb = columns_from_arrow(written)["img_emb"]
    all_rows = np.concatenate([seeds["img_emb"], x])
    assert emb.dtype == np.float32 and emb.tobytes() == all_rows[kept].tobytes()
    assert written.column("name").to_pylist()[6:] == [f"row{i}" for i in range(40) if i != 30]
    np.testing.assert_array_equal(
        written.column("ig_gain").to_numpy(), res["ig_gain"][kept].astype(np.float32)
    )
    assert written.column("ig_status").to_pylist()[:6] == ["seed"] * 6
    assert written.column("ig_shard").to_pylist() == [-1] * 6 + [0] * 20 + [1] * 19


def test_near_duplicate_chain_across_shards_differs_as_documented():
    """a ~ b and b ~ c within dup_eps but a !~ c: one curator keeps c, the shards drop it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    step = rng.standard_normal(8)
    step -= (step @ x[0]) * x[0]
    step *= 0.1 / np.linalg.norm(step)  # 1 - cos ~ 0.005 per step
    x[8] = x[0] + step  # b, shard 1
    x[10] = x[0] + 2 * step  # c, shard 1: 1 - cos(a, c) ~ 0.02 > dup_eps
    stream = {"img_emb": x.astype(np.float32), "label": np.zeros(12, np.int64)}
    seeds = {"img_emb": rng.standard_normal((3, 8)).astype(np.float32), "label": np.zeros(3, np.int64)}
    kw = dict(score="none", index="exact", dup_eps=0.01, min_seed_per_class=1)
    ref = single_process(seeds, stream, kw)
    cur = curate_on_ray(stream, seeds, num_shards=2, curator_kwargs=kw)
    res, first = cur.results(), cur.first_pass()
    b, c = 3 + 8, 3 + 10
    assert list(ref["ig_status"][[b, c]]) == ["duplicate", "kept"]
    assert first["ig_shard_status"][c] == "duplicate"  # the copy of b, dropped in shard 1
    assert list(res["ig_status"][[b, c]]) == ["duplicate", "duplicate"]
    others = np.setdiff1d(np.arange(15), [c])
    assert (res["ig_status"][others] == ref["ig_status"][others]).all()


# --------------------------------------------------------------------------- cleaning


def test_cleaning_identical_image_text_recaption_with_hnsw():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((400, 16)).astype(np.float32)
    txt = img + 0.5 * rng.standard_normal((400, 16)).astype(np.float32)
    bad = rng.random(400) < 0.2
    txt[bad] = rng.standard_normal((bad.sum(), 16))
    fixable = bad & (np.arange(400) % 2 == 0)
    stream = {"img_emb": img, "txt_emb": txt, "fix": fixable, "good_txt": img + 0.1}
    seeds = {"img_emb": img[:40] * 1.0, "txt_emb": img[:40] + 0.5 * rng.standard_normal((40, 16))}

    def recaption(row):  # runs inside the Ray workers
        return {"txt_emb": row["good_txt"]} if row["fix"] else None

    kw = dict(mode="image-text", recaption_fn=recaption)  # HNSW: only cleaning must match exactly
    ref = single_process(seeds, stream, kw)
    cur = curate_on_ray(stream, seeds, num_shards=2, curator_kwargs=kw, batch_size=64)
    res = cur.results()
    assert set(res) == set(ref) and "ig_gain_txt" in res
    for status in ("dropped_noisy", "recaptioned"):
        np.testing.assert_array_equal(res["ig_status"] == status, ref["ig_status"] == status)
    assert (res["ig_status"] == "recaptioned").sum() > 20 and (res["ig_status"] == "dropped_noisy").sum() > 20
    np.testing.assert_allclose(res["ig_align"], ref["ig_align"], atol=1e-6)
    kept = np.isin(ref["ig_status"], ["kept", "recaptioned"])
    assert np.corrcoef(res["ig_gain"][kept], ref["ig_gain"][kept])[0, 1] > 0.95


def test_probe_cleaning_identical_without_refits_and_shard0_identical_with_them(caplog):
    seeds, stream = noisy_stream(seed=4, n=500, n_exact=0, n_near=0)
    kw = dict(score="probe", probe_refit_every=0, index="exact")
    ref = single_process(seeds, stream, kw)
    res = curate_on_ray(stream, seeds, num_shards=2, curator_kwargs=kw).results()
    assert (res["ig_status"] == ref["ig_status"]).all() and (ref["ig_status"] == "dropped_noisy").sum() > 20
    np.testing.assert_allclose(res["ig_align"], ref["ig_align"], atol=1e-6)

    kw["probe_refit_every"] = 100
    ref = single_process(seeds, stream, kw, batch_size=100)
    with caplog.at_level(logging.WARNING, logger="hubtools.data.infogrowth_ray"):
        cur = curate_on_ray(stream, seeds, num_shards=2, curator_kwargs=kw, batch_size=100)
    assert "probe_refit_every=0 makes it identical" in caplog.text
    assert cur.settings["cleaning_identical_to_single_process"] is False
    shard0 = cur.first_pass()["ig_shard"] <= 0  # seeds and shard 0: the same rows as one curator saw
    np.testing.assert_allclose(cur.results()["ig_align"][shard0], ref["ig_align"][shard0], atol=1e-6)


# --------------------------------------------------------------------------- inputs and errors


def test_datasets_input_and_more_shards_than_rows(tmp_path):
    from datasets import Dataset

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    stream = Dataset.from_dict({"img_emb": x.tolist(), "label": [0, 0, 0]})
    seeds = {"img_emb": rng.standard_normal((2, 4)).astype(np.float32), "label": np.zeros(2, np.int64)}
    kw = dict(score="none", index="exact", min_seed_per_class=1)
    cur = curate_on_ray(stream, seeds, num_shards=4, curator_kwargs=kw, output_path=tmp_path / "out")
    ref = single_process(seeds, {"img_emb": x, "label": np.zeros(3, np.int64)}, kw)
    assert cur.shard_bounds == [0, 1, 2, 2, 3]  # shard 2 is empty
    np.testing.assert_allclose(cur.results()["ig_gain"], ref["ig_gain"], atol=2e-6)
    assert cur.table().num_rows == 5
    written = pq.read_table(tmp_path / "out").sort_by("ig_arrival")
    assert written.column("ig_shard").to_pylist() == [-1, -1, 0, 1, 3]
    assert columns_from_arrow(written)["img_emb"].tobytes() == np.concatenate([seeds["img_emb"], x]).tobytes()


def test_seed_rows_missing_or_unusable():
    stream = {"img_emb": np.eye(4, dtype=np.float32), "label": np.zeros(4, np.int64)}
    with pytest.raises(SeedError, match="seed_rows is required"):
        curate_on_ray(stream, None, num_shards=2)
    with pytest.raises(EmptyBatchError, match="no rows"):
        curate_on_ray(stream, {"img_emb": np.zeros((0, 4)), "label": np.zeros(0, np.int64)}, num_shards=2)
    # a problem only the curator can see is raised from the worker as the curator's own error type
    with pytest.raises(SeedError, match="no column 'label'"):
        curate_on_ray(stream, {"img_emb": np.eye(4, dtype=np.float32)}, num_shards=2)


def test_bad_arguments_refused_before_any_work():
    stream = {"img_emb": np.eye(4, dtype=np.float32), "label": np.zeros(4, np.int64)}
    seeds = dict(stream)
    with pytest.raises(InfoGrowthError, match="on_reject"):
        curate_on_ray(stream, seeds, num_shards=2, curator_kwargs={"on_reject": print})
    for bad in (0, 1.5, True):
        with pytest.raises(InfoGrowthError, match="num_shards"):
            curate_on_ray(stream, seeds, num_shards=bad)
    with pytest.raises(InfoGrowthError, match="k: expected"):
        curate_on_ray(stream, seeds, num_shards=2, curator_kwargs={"k": 0})
    with pytest.raises(InfoGrowthError, match="data: expected"):
        curate_on_ray(42, seeds, num_shards=2)


def test_merger_refuses_shards_out_of_order():
    m = GainMerger({"score": "none", "index": "exact", "min_seed_per_class": 1})
    m.seed({"img_emb": np.eye(3, dtype=np.float32), "label": np.zeros(3, np.int64)})
    x = np.ones((2, 3), np.float32)
    with pytest.raises(InfoGrowthError, match="expected shard 0"):
        m.add(KeptRows(shard=1, positions=np.arange(2), img=x, labels=np.zeros(2, np.int64)))
    scores = m.add(KeptRows(shard=0, positions=np.arange(2), img=x, labels=np.zeros(2, np.int64)))
    assert scores.inserted.tolist() == [True, False]  # the second row copies the first


def test_arrow_columns_round_trip():
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    cols = {"e": x, "y": np.arange(6), "s": list("abcdef"), "v": [np.ones(2), np.zeros(2)] * 3}
    table = arrow_from_columns(cols, float32=["v"])
    assert table.schema.field("e").type == pa.list_(pa.float32(), 4)
    back = columns_from_arrow(table.slice(2, 3))  # a slice: offsets must be honoured
    assert back["e"].tobytes() == x[2:5].tobytes()
    assert back["y"].tolist() == [2, 3, 4] and list(back["s"]) == ["c", "d", "e"]
    assert back["v"].dtype == np.float32 and back["v"].tolist() == [[1, 1], [0, 0], [1, 1]]
    ragged = columns_from_arrow(pa.table({"r": pa.array([[1.0], [2.0, 3.0]])}))
    assert [list(r) for r in ragged["r"]] == [[1.0], [2.0, 3.0]]


def test_import_error_names_the_extra():
    code = "import sys; sys.modules['ray'] = None; import hubtools.data.infogrowth_ray"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert 'pip install "hubtools[distributed]"' in out.stderr
