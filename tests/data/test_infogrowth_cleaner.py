"""InfoGrowth's label cleaner (seed-set probe at a target clean-row loss), entropy gain and per-class floor.

Every expected value is computed here independently: scikit-learn for the probe and its
cross-validated threshold, NumPy brute force for the neighbour label shares.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from hubtools.data.infogrowth import InfoGrowth, InfoGrowthError, StateMismatchError, select


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def mixture(rng, n_per_class, classes=5, dim=16, spread=0.6):
    """Gaussian clusters on the sphere: class c around centre c."""
    centres = rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    perm = rng.permutation(len(y))
    return unit(x[perm]), y[perm].astype(np.int64)


def flip(rng, y, share, classes):
    noisy = rng.random(len(y)) < share
    out = y.copy()
    out[noisy] = (y[noisy] + rng.integers(1, classes, noisy.sum())) % classes
    return out, noisy


def test_probe_threshold_is_the_cross_validated_clean_loss_quantile():
    rng = np.random.default_rng(0)
    xs, ys = mixture(rng, 20, spread=1.2)
    ig = InfoGrowth(index="exact", clean_loss=0.1, seed=3)
    ig.fit_seed({"img_emb": xs, "label": ys})
    # independent: K-fold probabilities of each seed row's own label, then the 10 % quantile
    p_own = np.zeros(len(ys))
    for train, held in StratifiedKFold(5, shuffle=True, random_state=3).split(xs, ys):
        m = LogisticRegression(C=10.0, max_iter=1000).fit(xs[train], ys[train])
        p_own[held] = m.predict_proba(xs[held])[np.arange(len(held)), ys[held]]
    assert ig.delta == pytest.approx(np.quantile(p_own, 0.1), abs=1e-6)
    # the stream's align score is the full-seed probe's probability of the given label
    xq, yq = mixture(np.random.default_rng(1), 4, spread=1.2)
    out = ig.process_batch({"img_emb": xq, "label": yq})
    full = LogisticRegression(C=10.0, max_iter=1000).fit(xs, ys)
    expected = full.predict_proba(xq)[np.arange(len(yq)), yq]
    np.testing.assert_allclose(out["ig_align"], expected, atol=1e-4)
    dropped = np.array(out["ig_status"]) == "dropped_noisy"
    np.testing.assert_array_equal(dropped, expected < ig.delta)


def test_probe_meets_its_clean_loss_target_and_removes_flipped_labels():
    rng = np.random.default_rng(1)
    x, y = mixture(rng, 600, spread=0.9)
    xs, ys = x[:150], y[:150]
    stream, y_true = x[150:], y[150:]
    y_noisy, noisy = flip(rng, y_true, 0.2, 5)
    ig = InfoGrowth(index="exact", clean_loss=0.05)
    ig.fit_seed({"img_emb": xs, "label": ys})
    for s in range(0, len(stream), 256):
        ig.process_batch({"img_emb": stream[s : s + 256], "label": y_noisy[s : s + 256]})
    status = ig.results()["ig_status"][150:]
    dropped = status == "dropped_noisy"
    assert ig.probe_refits >= 2  # 2,850 stream rows: refits at 512, 1024 and 2048
    assert dropped[~noisy].mean() < 0.10  # the target is 5 %, estimated from 150 seed rows
    assert dropped[noisy].mean() > 0.9


def test_score_none_accepts_every_row():
    rng = np.random.default_rng(2)
    x, y = mixture(rng, 40)
    y_noisy, _ = flip(rng, y, 0.5, 5)
    ig = InfoGrowth(index="exact", score="none")
    ig.fit_seed({"img_emb": x[:50], "label": y[:50]})
    out = ig.process_batch({"img_emb": x[50:], "label": y_noisy[50:]})
    assert "dropped_noisy" not in out["ig_status"]


def brute_force_entropy(x, y, k):
    """Row by row: share of the k' nearest earlier rows (all kept here) with the row's label."""
    agree = np.zeros(len(x))
    for i in range(len(x)):
        if i == 0:
            continue
        d = 1.0 - x[:i] @ x[i]
        near = np.argsort(d, kind="stable")[: min(k, i)]
        agree[i] = (y[near] == y[i]).mean()
    return 1.0 - agree


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_entropy_gain_equals_brute_force_neighbour_label_share(batch):
    rng = np.random.default_rng(3)
    x, y = mixture(rng, 30, spread=1.0)
    ig = InfoGrowth(index="exact", score="none", entropy_gain=True, dup_eps=0.0, k=4, min_seed_per_class=1)
    ig.fit_seed({"img_emb": x[:25], "label": y[:25]})
    for s in range(25, len(x), batch):
        ig.process_batch({"img_emb": x[s : s + batch], "label": y[s : s + batch]})
    res = ig.results()
    # seeds are scored against the seeds before them, then the stream against everything kept
    np.testing.assert_allclose(res["ig_gain_ent"], brute_force_entropy(x, y, 4), atol=1e-9)
    kept = np.ones(len(x), bool)
    g_img = res["ig_gain"] / np.quantile(res["ig_gain"][kept], 0.99)
    expected = (np.clip(g_img, 0, 1) + res["ig_gain_ent"]) / 2
    np.testing.assert_allclose(res["ig_gain_norm"], expected, atol=1e-9)


def test_entropy_gain_needs_labels():
    with pytest.raises(InfoGrowthError, match="entropy_gain"):
        InfoGrowth("image-text", entropy_gain=True)


def test_resume_with_probe_refits_equals_an_uninterrupted_run(tmp_path):
    rng = np.random.default_rng(4)
    x, y = mixture(rng, 260, spread=1.0)
    y_noisy, _ = flip(rng, y, 0.2, 5)
    xs, ys, stream, ystream = x[:100], y[:100], x[100:], y_noisy[100:]

    def run(stop_after=None, state=None):
        if state is not None:
            ig = InfoGrowth.from_state(state)
        else:
            ig = InfoGrowth(index="exact", probe_refit_every=256, entropy_gain=True)
            ig.fit_seed({"img_emb": xs, "label": ys})
        for i, _ in enumerate(ig.grow_batches({"img_emb": stream, "label": ystream}, batch_size=100)):
            if stop_after is not None and i + 1 == stop_after:
                ig.save_state(tmp_path / "state")
                return ig
        return ig

    whole = run()
    run(stop_after=4)  # 400 rows: refits at 256 done, 512 and 1024 still to come
    resumed = run(state=tmp_path / "state")
    assert whole.probe_refits == resumed.probe_refits == 3
    a, b = whole.results(), resumed.results()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert whole.delta == resumed.delta
    with pytest.raises(StateMismatchError, match="entropy_gain"):
        InfoGrowth(index="exact", probe_refit_every=256).load_state(tmp_path / "state")


def test_select_floor_keeps_every_class_and_the_budget():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), [400, 300, 200, 6])
    g = rng.uniform(0.5, 1.0, len(labels))
    g[labels == 3] = 1e-3  # a tight tail class: tiny gains, vanishes from gain-weighted picks
    g[:10] = 0.0  # dropped rows are never picked, floor or not
    plain = select(g, 50, "topk")
    assert not np.isin(3, labels[plain])
    for method in ("proportional", "topk", "random"):
        chosen = select(g, 50, method, seed=1, labels=labels, min_per_class=5)
        assert len(chosen) == 50 and len(np.unique(chosen)) == 50
        counts = np.bincount(labels[chosen], minlength=4)
        assert (counts >= 5).all(), (method, counts)
        if method != "random":
            assert (g[chosen] > 0).all()
    with pytest.raises(InfoGrowthError, match="labels"):
        select(g, 50, min_per_class=5)


def test_a_large_seed_set_is_scored_in_chunks_with_the_same_result(monkeypatch):
    import hubtools.data.infogrowth as igm

    rng = np.random.default_rng(6)
    x, y = mixture(rng, 30, spread=1.0)
    whole = InfoGrowth(index="exact", entropy_gain=True)
    whole.fit_seed({"img_emb": x, "label": y})
    monkeypatch.setattr(igm, "SEED_CHUNK", 16)  # 150 seeds: 10 chunks
    chunked = InfoGrowth(index="exact", entropy_gain=True)
    out = chunked.fit_seed({"img_emb": x, "label": y.tolist()})
    assert len(out["ig_status"]) == 150 and out["ig_arrival"].tolist() == list(range(150))
    a, b = whole.results(), chunked.results()
    assert a["ig_status"].tolist() == b["ig_status"].tolist()
    for key in set(a) - {"ig_status"}:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
