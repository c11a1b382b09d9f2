"""InfoGrowth curator: gains against brute-force NumPy, determinism, resume, bad input, samplers, cleaning."""

import numpy as np
import pytest

from hubtools.data.infogrowth import (
    EmbeddingError,
    EmptyBatchError,
    GainSampler,
    InfoGrowth,
    InfoGrowthError,
    KnnIndex,
    SeedError,
    StateMismatchError,
    TwoPhaseGainSampler,
    normalize_gains,
    select,
)
from hubtools.testing import data_missing


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_gains(x, k, dup_eps=None):
    """Row by row, InfoGrowth's definition: mean 1-cos to the k' nearest kept rows, then insert."""
    x = unit(x)
    kept, gains, dups = [], [], []
    for i in range(len(x)):
        if not kept:
            gains.append(1.0)
            dups.append(False)
            kept.append(i)
            continue
        d = np.sort(1.0 - x[kept] @ x[i])
        if dup_eps is not None and d[0] < dup_eps:
            gains.append(0.0)
            dups.append(True)
            continue
        gains.append(d[: min(k, len(d))].mean())
        dups.append(False)
        kept.append(i)
    return np.array(gains), np.array(dups)


def accept_all(**kw):
    # one class and delta below any margin: the cleaner accepts every row, only gains matter
    return InfoGrowth(delta=-3.0, min_seed_per_class=1, **kw)


def feed(ig, x, n_seed, batch_size, labels=None):
    labels = np.zeros(len(x), np.int64) if labels is None else labels
    ig.fit_seed({"img_emb": x[:n_seed], "label": labels[:n_seed]})
    for s in range(n_seed, len(x), batch_size):
        ig.process_batch({"img_emb": x[s : s + batch_size], "label": labels[s : s + batch_size]})
    return ig.results()


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_gains_equal_brute_force_for_any_batching(batch_size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 12)).astype(np.float32)
    x[250] = x[40]  # an exact copy: without the rule it keeps a gain of (k-1)/k of its neighbours' mean
    res = feed(accept_all(index="exact", dup_eps=0.0), x, 30, batch_size)
    expected, _ = brute_force_gains(x, 4)
    np.testing.assert_allclose(res["ig_gain"], expected, atol=2e-6)
    d = np.sort(1 - unit(x[:250]) @ unit(x[250:251]).T, axis=0)[:, 0]
    assert res["ig_gain"][250] == pytest.approx(d[1:4].sum() / 4, abs=2e-6)  # (k-1)/k x mean of the other 3


def test_duplicates_get_status_duplicate_gain_zero_and_are_not_indexed():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[200] = x[10]
    x[201] = x[150] + 0.05 * rng.standard_normal(16).astype(
        np.float32
    )  # near copy: only a larger eps catches it
    ig = accept_all(index="exact")  # default dup_eps 1e-4: exact copies
    res = feed(ig, x, 20, 32)
    expected, dups = brute_force_gains(x, 4, dup_eps=1e-4)
    assert res["ig_status"][200] == "duplicate" and res["ig_gain"][200] == 0.0
    assert res["ig_status"][201] == "kept"
    assert ig.img_index.ntotal == 299
    np.testing.assert_allclose(res["ig_gain"], expected, atol=2e-6)
    res2 = feed(accept_all(index="exact", dup_eps=0.01), x, 20, 32)
    assert res2["ig_status"][201] == "duplicate"


def test_gain_has_diminishing_returns_for_nested_sets():
    rng = np.random.default_rng(3)
    v = unit(rng.standard_normal((200, 8))).astype(np.float32)
    q = unit(rng.standard_normal((50, 8))).astype(np.float32)
    small, big = KnnIndex(8, "exact"), KnnIndex(8, "exact")
    small.add(v[:40])
    big.add(v)
    gs = small.search(q, 4)[0].mean(axis=1)
    gb = big.search(q, 4)[0].mean(axis=1)
    assert (gs >= gb - 1e-7).all() and (gs > gb).any()


def test_hnsw_recall_at_4_against_exact():
    rng = np.random.default_rng(4)
    x = unit(rng.standard_normal((10_000, 64))).astype(np.float32)
    q = unit(rng.standard_normal((500, 64))).astype(np.float32)
    hnsw, exact = KnnIndex(64, "hnsw"), KnnIndex(64, "exact")
    hnsw.add(x)
    exact.add(x)
    _, ih = hnsw.search(q, 4)
    _, ie = exact.search(q, 4)
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(ih, ie, strict=True)])
    assert recall >= 0.95


def test_hnsw_results_are_deterministic_and_close_to_exact():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1500, 32)).astype(np.float32)
    a = feed(accept_all(), x, 50, 128)["ig_gain"]
    b = feed(accept_all(), x, 50, 128)["ig_gain"]
    e = feed(accept_all(index="exact"), x, 50, 128)["ig_gain"]
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.abs(a - e) < 1e-6) > 0.95


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_resume_mid_stream_reproduces_the_uninterrupted_run(tmp_path, index):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1200, 24)).astype(np.float32)
    y = np.zeros(len(x), np.int64)
    full = accept_all(index=index, encoder_id="enc-a")
    full.fit_seed({"img_emb": x[:60], "label": y[:60]})
    list(full.grow_batches({"img_emb": x[60:], "label": y[60:]}, batch_size=100))

    first = accept_all(index=index, encoder_id="enc-a")
    first.fit_seed({"img_emb": x[:60], "label": y[:60]})
    stream = {"img_emb": x[60:], "label": y[60:]}
    for i, _ in enumerate(first.grow_batches(stream, batch_size=100)):
        if i == 4:
            break
    first.save_state(tmp_path / "state")
    resumed = InfoGrowth.from_state(tmp_path / "state")
    assert resumed.n_seen == 500
    list(resumed.grow_batches(stream, batch_size=100))  # skips the 500 rows it has seen
    np.testing.assert_array_equal(resumed.results()["ig_gain"], full.results()["ig_gain"])
    np.testing.assert_array_equal(resumed.results()["ig_status"], full.results()["ig_status"])
    if index == "hnsw":  # the resumed graph is the uninterrupted one (faiss's level generator is replayed)
        import faiss

        for name in ("levels", "neighbors"):
            a = faiss.vector_to_array(getattr(resumed.img_index.index.hnsw, name))
            b = faiss.vector_to_array(getattr(full.img_index.index.hnsw, name))
            np.testing.assert_array_equal(a, b)


def test_state_from_another_encoder_is_refused_and_state_unchanged(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    a = accept_all(encoder_id="minilm@rev1")
    feed(a, x, 30, 64)
    a.save_state(tmp_path / "a")
    b = accept_all(encoder_id="clip@rev9")
    feed(b, x[:200], 30, 64)
    before = (b.n_rows, b.img_index.ntotal, b.n_seen, b.results()["ig_gain"].copy())
    with pytest.raises(StateMismatchError, match="encoder 'minilm@rev1'"):
        b.load_state(tmp_path / "a")
    assert (b.n_rows, b.img_index.ntotal, b.n_seen) == before[:3]
    np.testing.assert_array_equal(b.results()["ig_gain"], before[3])
    with pytest.raises(StateMismatchError, match="not a readable"):
        b.load_state(tmp_path / "missing")


def test_bad_batches_raise_clear_errors_and_leave_state_unchanged():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    ig = accept_all()
    feed(ig, x, 30, 35)
    before = (ig.n_rows, ig.img_index.ntotal, ig.n_seen)
    with pytest.raises(EmbeddingError, match="dimension 8, this curator was seeded with dimension 16"):
        ig.process_batch({"img_emb": rng.standard_normal((4, 8)), "label": [0] * 4})
    bad = rng.standard_normal((4, 16))
    bad[2, 5] = np.nan
    with pytest.raises(EmbeddingError, match="row 2 of the batch has NaN"):
        ig.process_batch({"img_emb": bad, "label": [0] * 4})
    with pytest.raises(EmptyBatchError):
        ig.process_batch({"img_emb": np.zeros((0, 16)), "label": []})
    with pytest.raises(InfoGrowthError, match="label 3 has no prototype"):
        ig.process_batch({"img_emb": rng.standard_normal((2, 16)), "label": [0, 3]})
    with pytest.raises(InfoGrowthError, match="no column 'label'"):
        ig.process_batch({"img_emb": rng.standard_normal((2, 16))})
    assert (ig.n_rows, ig.img_index.ntotal, ig.n_seen) == before
    with pytest.raises(SeedError, match="fewer than 5 seed rows"):
        InfoGrowth().fit_seed({"img_emb": x[:12], "label": [0] * 9 + [1] * 3})


def _digits_long_tail(seed=0):
    """Real digits with an exponential long tail (class 9 keeps 16 rows), PCA-16 on the seed rows."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    counts = np.maximum((170 * 0.75 ** np.arange(10)).astype(int), 16)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: counts[c]] for c in range(10)])
    idx = rng.permutation(idx)
    seed_idx = np.concatenate([idx[y[idx] == c][:6] for c in range(10)])
    stream_idx = np.setdiff1d(idx, seed_idx)
    stream_idx = rng.permutation(stream_idx)
    pca = PCA(16, random_state=0).fit(X[seed_idx] / 16)
    emb = lambda i: pca.transform(X[i] / 16).astype(np.float32)  # noqa: E731
    y_noisy = y[stream_idx].copy()
    flip = rng.random(len(stream_idx)) < 0.2
    y_noisy[flip] = (y_noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    return emb(seed_idx), y[seed_idx], emb(stream_idx), y_noisy, flip, y[stream_idx]


def test_cleaner_removes_label_noise_and_keeps_the_tail_class():
    xs, ys, x, y, flip, y_true = _digits_long_tail()
    ig = InfoGrowth(index="exact")
    ig.fit_seed({"img_emb": xs, "label": ys})
    list(ig.grow_batches({"img_emb": x, "label": y}, batch_size=64))
    status = ig.results()["ig_status"][len(xs) :]
    dropped = status == "dropped_noisy"
    assert dropped[flip].mean() >= 0.9  # noise removed
    assert dropped[~flip].mean() <= 0.25  # clean lost
    tail = (y_true == 9) & ~flip
    assert tail.sum() >= 8 and (~dropped[tail]).mean() >= 0.5  # the 16-row tail class is not wiped out
    gnorm = ig.gains_norm()
    chosen = select(gnorm, 0.3, seed=0)
    np.testing.assert_array_equal(chosen, select(ig.table(), 0.3, seed=0))
    labels = ig.results()["label"]
    assert set(labels[chosen]) == set(range(10))  # every class is represented in a 30% selection
    assert ig.per_class()[9]["kept"] >= 8


def test_relabel_hook_restores_flipped_labels():
    xs, ys, x, y, flip, y_true = _digits_long_tail(1)
    ig = InfoGrowth(index="exact", relabel=True)
    ig.fit_seed({"img_emb": xs, "label": ys})
    out = [b for b in ig.grow_batches({"img_emb": x, "label": y}, batch_size=64)]
    new = np.concatenate([b["label"] for b in out])
    orig = np.concatenate([b["orig_label"] for b in out])
    status = np.concatenate([b["ig_status"] for b in out])
    np.testing.assert_array_equal(orig, y)
    rel = status == "relabeled"
    assert rel[flip].mean() > 0.6 and (new[rel & flip] == y_true[rel & flip]).mean() > 0.8


def test_image_text_cleaner_drops_shuffled_pairs_and_recaption_repairs_them():
    rng = np.random.default_rng(9)
    img = unit(rng.standard_normal((600, 32)))
    txt = unit(img + 0.7 * unit(rng.standard_normal((600, 32))) * 1.0)  # cos about 0.8
    bad = rng.random(600) < 0.25
    bad[:100] = False  # clean seed
    txt_in = txt.copy()
    txt_in[bad] = unit(rng.standard_normal((bad.sum(), 32)))  # a caption of something else: cos about 0
    lookup = {i: txt[i] for i in range(600)}
    seen = []
    ig = InfoGrowth("image-text", index="exact", on_reject=lambda row, why: seen.append(why))
    ig.fit_seed({"img_emb": img[:100], "txt_emb": txt_in[:100]})
    assert 0.3 < ig.delta < 0.8  # auto: between the modes
    list(ig.grow_batches({"img_emb": img[100:], "txt_emb": txt_in[100:], "id": np.arange(100, 600)}, 50))
    status = ig.results()["ig_status"]
    assert (status[bad] == "dropped_noisy").all() and (status[~bad] != "dropped_noisy").mean() > 0.9
    assert seen.count("dropped_noisy") == (status == "dropped_noisy").sum()

    fixer = InfoGrowth(
        "image-text", index="exact", recaption_fn=lambda row: {"txt_emb": lookup[int(row["id"])]}
    )
    fixer.fit_seed({"img_emb": img[:100], "txt_emb": txt_in[:100]})
    out = list(
        fixer.grow_batches({"img_emb": img[100:], "txt_emb": txt_in[100:], "id": np.arange(100, 600)}, 50)
    )
    status = fixer.results()["ig_status"]
    assert (status[bad] == "recaptioned").mean() > 0.9
    first = out[0]
    i = int(np.flatnonzero(np.asarray(first["ig_status"]) == "recaptioned")[0])
    np.testing.assert_allclose(first["txt_emb"][i], lookup[int(first["id"][i])])
    np.testing.assert_allclose(first["orig_txt_emb"][i], txt_in[int(first["id"][i])])


def test_normalisation_and_static_selection():
    g = np.concatenate([np.linspace(0.01, 1.0, 99), [50.0], [0.0]])
    kept = np.ones(101, bool)
    kept[-1] = False
    gn = normalize_gains(g, kept)
    assert gn.max() == 1.0 and gn[-1] == 0.0 and gn[0] == pytest.approx(0.01 / np.quantile(g[kept], 0.99))
    gains = np.array([0.0] * 10 + [0.1] * 30 + [0.5] * 30 + [1.0] * 30)
    freq = np.zeros(100)
    for s in range(300):
        idx = select(gains, 30, seed=s)
        assert len(idx) == 30 and (gains[idx] > 0).all()
        freq[idx] += 1
    assert freq[10:40].mean() < freq[40:70].mean() < freq[70:].mean()
    np.testing.assert_array_equal(select(gains, 30, "topk"), np.arange(70, 100))
    assert len(select(gains, 0.95)) == 90  # fewer positive rows than the budget: all of them
    with pytest.raises(InfoGrowthError, match="budget"):
        select(gains, -1)


def test_samplers_lengths_phases_fallback_and_ddp_shards():
    rng = np.random.default_rng(10)
    g = rng.random(500)
    s = GainSampler(g, seed=1)
    for e in range(3):
        s.set_epoch(e)
        assert len(list(s)) == 500
    hi, lo = g > 0.9, g < 0.1
    counts = np.bincount(
        np.concatenate([GainSampler(g, seed=2).epoch_indices(e) for e in range(20)]), minlength=500
    )
    assert counts[hi].mean() > 3 * counts[lo].mean()
    tp = TwoPhaseGainSampler(g, seed=3)
    even = [len(tp.epoch_indices(e)) for e in range(0, 80, 2)]
    odd = [len(tp.epoch_indices(e)) for e in range(1, 80, 2)]
    for lengths, p in ((even, g), (odd, np.maximum(0.1, 1 - g))):
        sigma = np.sqrt((p * (1 - p)).sum() / len(lengths))
        assert abs(np.mean(lengths) - p.sum()) < 3 * sigma
    assert sorted(GainSampler(np.zeros(50)).epoch_indices(0).tolist()) == list(range(50))
    shards = [list(TwoPhaseGainSampler(g, seed=4, rank=r, world_size=3)) for r in range(3)]
    assert len({len(x) for x in shards}) == 1
    assert not (set(shards[0]) & set(shards[1])) and not (set(shards[1]) & set(shards[2]))
    with pytest.raises(InfoGrowthError, match="normalised"):
        GainSampler(g * 3)


def test_transformers_text_encoder_embeds_real_quotes_and_states_record_it(tmp_path):
    """The default encoder path: real all-MiniLM-L6-v2 embeds real fortunes quotes inside the curator."""
    from hubtools.data.infogrowth import TransformersTextEmbedder
    from hubtools.data.offline import DataUnavailable, fortunes

    try:
        embed = TransformersTextEmbedder(output_column="img_emb")
        texts = {c: fortunes(c, limit=40) for c in ("medicine", "computers")}
    except DataUnavailable as exc:
        data_missing(exc)
    seed = {"text": texts["medicine"][:8] + texts["computers"][:8], "label": [0] * 8 + [1] * 8}
    stream = {"text": texts["medicine"][8:] + texts["computers"][8:], "label": [0] * 32 + [1] * 32}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 80 short quotes: extra threads only contend on a busy 2-core machine
    try:
        ig = InfoGrowth(embed_fn=embed, encoder_id=embed.encoder_id, index="exact")
        ig.fit_seed(seed)
        out = list(ig.grow_batches(stream, batch_size=32))
    finally:
        torch.set_num_threads(threads)
    assert out[0]["img_emb"].shape == (32, 384) and ig.stats["embed_seconds"] > 0
    assert ig.counts()["kept"] + ig.counts()["dropped_noisy"] == 64
    assert ig.counts()["kept"] > 32  # most quotes sit nearer their own category's prototype
    ig.save_state(tmp_path / "s")
    with pytest.raises(StateMismatchError, match=embed.encoder_id):
        InfoGrowth(encoder_id="another-encoder").load_state(tmp_path / "s")
