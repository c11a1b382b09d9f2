"""InfoGrowth's ablation on real images with injected label noise and near-duplicates, and curator throughput.

Quality (default): Fashion-MNIST (Debian ``dataset-fashion-mnist``) and brain-MRI patches (Debian
``mricron-data`` via ``hubtools.data.mri_patches``, 90 AAL classes, long-tailed). Per seed: a clean
held-out test set; a pool whose first rows per class (5%, at least 5 per class) are the trusted seed;
the rest is the stream, where 20% of the labels are flipped (y -> y + U{1..C-1} mod C) and 30% of the
rows get an augmented copy (brightness x U(0.9, 1.1) + Gaussian noise sigma 0.02, clipped; the copy
inherits the possibly flipped label), then shuffled. Encoder stand-in: PCA-64 of the seed images,
L2-normalised (no image weights ship offline). Curator: k=4, faiss HNSW, seeds first, duplicate
threshold calibrated without labels: the 1st percentile of the nearest-kept distance in a run over
clean rows outside the pool (Fashion-MNIST: other training rows, as many as the pool; MRI: the test
images, labels unused). Classifier for every subset: the same ``LogisticRegression(C=1, max_iter=300)``
on the same PCA features (whether it converged is recorded). Budgets are fractions of the whole noisy
pool N. Every subset of a seed shares that seed's pool, test set and features, so subsets are compared
by their paired difference per seed.

The ablation (the paper's: random / gain only / cleaning only / both), at 30 % and 50 % of N:
``random`` uniform over the pool; ``gain only`` gain-weighted selection from a curator without a
cleaner; ``cleaning only`` uniform over the rows the default cleaner kept; ``InfoGrowth`` (both: the
default curator, a seed-set probe cleaner at a 5 % clean-loss target, then gain-weighted selection);
and, for reference, the default plus the label-entropy gain and the earlier default cleaners
(prototype ``margin``, prototype ``cosine``). Acceptance: the default beats random by at least 1 point
in 4/4 dataset x budget cases, loses at most 10 % of clean rows and removes at least 80 % of the
noisy ones.

    python benchmarks/infogrowth.py                     # both datasets, seeds 0 1 2 (~3 min on 2 cores)
    python benchmarks/infogrowth.py --seeds 0 1 2 3 4 --datasets mri
    python benchmarks/infogrowth.py --smoke             # Fashion-MNIST only, 1,500 pool rows, seed 0 (< 60 s)
    python benchmarks/infogrowth.py --throughput        # samples/s at 100k and 1M 256-d rows vs exact k-NN
    python benchmarks/infogrowth.py --throughput --smoke   # 10k rows, at most 15 s per index

Results: ``benchmarks/results/infogrowth.{json,md,png}`` and ``infogrowth_throughput.{json,md,png}``.
Finished quality runs (one per dataset and seed) are cached under ``--work``, keyed on their
configuration, the curator's code digest and the library versions (``--reuse``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from hubtools.bench import Benchmark, Run, arms_table, mean_sd, paired_by_seed, values_by_seed
from hubtools.bench.stats import fmt_diff
from hubtools.data.infogrowth import KEPT_STATUSES, InfoGrowth, KnnIndex, select, versions

NOISE, DUP = 0.2, 0.3
BUDGETS = (0.3, 0.5)
MAX_ITER = 300
MATCH_TOLERANCE = 0.5  # points of test accuracy: "matches" the full noisy pool
# curator passes: label -> InfoGrowth keyword arguments (every pass uses the calibrated dup_eps)
CURATORS: dict[str, dict[str, Any]] = {
    "probe (default)": {},
    "no cleaner": {"score": "none"},
    "probe + entropy gain": {"entropy_gain": True},
    "margin": {"score": "margin"},
    "cosine": {"score": "cosine"},
}
DEFAULT = "probe (default)"
# selection arms per budget: label -> (curator pass, method, eligible rows)
ARMS: dict[str, tuple[str, str, str]] = {
    "random": (DEFAULT, "random", "all"),
    "gain only": ("no cleaner", "proportional", "gain"),
    "cleaning only": (DEFAULT, "random", "cleaned"),
    "InfoGrowth": (DEFAULT, "proportional", "gain"),
    "InfoGrowth + entropy gain": ("probe + entropy gain", "proportional", "gain"),
    "margin cleaner + gain": ("margin", "proportional", "gain"),
    "cosine cleaner + gain": ("cosine", "proportional", "gain"),
}
ACCEPT_GAIN_POINTS, ACCEPT_CLEAN_LOST, ACCEPT_NOISE_REMOVED = 1.0, 10.0, 80.0
DATASETS = ("fashion_mnist", "mri")
DATA = {
    "fashion_mnist": "Fashion-MNIST (Debian dataset-fashion-mnist): a random 8,000-image pool from the training "
    "split and 2,000 test images, 10 classes",
    "mri": "brain-MRI patches (Debian mricron-data, ch2 T1 cut by the AAL atlas, 32 px, stride 16, regions with "
    ">= 20 patches: 90 classes, long-tailed): a stratified 20 % test split, the rest the pool",
}
SMOKE_DATA = (
    "Fashion-MNIST (Debian dataset-fashion-mnist): a 1,500-image pool and 500 test images, 10 classes"
)

# --------------------------------------------------------------------------- data


def load_fashion_mnist(rng: np.random.Generator, n_pool: int, n_test: int, n_calib: int):
    from hubtools.data.offline import fashion_mnist

    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    perm = rng.permutation(len(ytr))
    test = rng.choice(len(yte), n_test, replace=False)
    return (
        xtr[perm[:n_pool]],
        ytr[perm[:n_pool]],
        xte[test],
        yte[test],
        xtr[perm[n_pool : n_pool + n_calib]],
    )


def load_mri(rng: np.random.Generator, n_pool: int, n_test: int, n_calib: int):
    from hubtools.data.mri_patches import load_mri_patches

    m = load_mri_patches(patch_size=32, stride=16, min_count=20)
    x, y = m.images, m.labels
    # a stratified 20% test split; the pool is the rest. There are no MRI rows outside pool and test,
    # so the duplicate threshold is calibrated on the test images (unlabelled use only)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(y == c))[: max(2, int(0.2 * (y == c).sum()))]
            for c in range(len(m.class_names))
        ]
    )
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), test))
    return x[rest], y[rest], x[test], y[test], x[test]


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = img.astype(np.float32) / 255.0 * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, img.shape)
    return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)


def make_task(name: str, seed: int, smoke: bool) -> dict:
    rng = np.random.default_rng(seed)
    if name == "fashion_mnist":
        n_pool, n_test = (1500, 500) if smoke else (8000, 2000)
        x, y, xt, yt, calib = load_fashion_mnist(rng, n_pool, n_test, n_calib=n_pool)
    else:
        x, y, xt, yt, calib = load_mri(rng, 0, 0, 0)
    n_cls = int(max(y.max(), yt.max()) + 1)
    seed_idx = np.concatenate(
        [np.flatnonzero(y == c)[: max(5, int(round(0.05 * (y == c).sum())))] for c in range(n_cls)]
    )
    stream_idx = np.setdiff1d(np.arange(len(y)), seed_idx)
    xs, ys = x[stream_idx], y[stream_idx].copy()
    flip = rng.random(len(ys)) < NOISE
    y_noisy = ys.copy()
    y_noisy[flip] = (ys[flip] + rng.integers(1, n_cls, flip.sum())) % n_cls
    src = rng.choice(len(ys), int(round(DUP * len(ys))), replace=False)
    copies = np.stack([augment(xs[i], rng) for i in src])
    xs_all = np.concatenate([xs, copies])
    y_all = np.concatenate([y_noisy, y_noisy[src]])
    true_all = np.concatenate([ys, ys[src]])
    group = np.concatenate([np.arange(len(ys)), src])  # copies share their source's group id
    is_copy = np.concatenate([np.zeros(len(ys), bool), np.ones(len(src), bool)])
    order = rng.permutation(len(y_all))
    return {
        "n_cls": n_cls,
        "x_seed": x[seed_idx],
        "y_seed": y[seed_idx],
        "x_stream": xs_all[order],
        "y_stream": y_all[order],
        "true_stream": true_all[order],
        "group": group[order],
        "is_copy": is_copy[order],
        "dup_sources": src,
        "x_test": xt,
        "y_test": yt,
        "x_calib": calib,
    }


# --------------------------------------------------------------------------- one run


def encoder(x_seed: np.ndarray, dim: int = 64):
    from sklearn.decomposition import PCA

    pca = PCA(dim, random_state=0).fit(x_seed.reshape(len(x_seed), -1) / 255.0)

    def features(x: np.ndarray) -> np.ndarray:
        return pca.transform(x.reshape(len(x), -1) / 255.0).astype(np.float32)

    return features


def calibrate_dup_eps(task: dict, feat, emb_seed: np.ndarray) -> float:
    """1st percentile of nearest-kept distances over clean, copy-free rows (no labels needed)."""
    ig = InfoGrowth(delta=-3.0, min_seed_per_class=1, dup_eps=0.0)
    ig.fit_seed({"img_emb": emb_seed, "label": np.zeros(len(emb_seed), np.int64)})
    e = feat(task["x_calib"])
    ig.process_batch({"img_emb": e, "label": np.zeros(len(e), np.int64)})
    nn1 = ig.results()["ig_nn1"][len(emb_seed) :]
    return float(np.percentile(nn1, 1))


def train_eval(
    feat_train: np.ndarray, y_train: np.ndarray, feat_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, bool]:
    """Test accuracy of the logistic regression, and whether its solver converged within ``max_iter``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these fits are tiny, and on a shared 2-core machine threads only spin
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=MAX_ITER)).fit(
            feat_train, y_train
        )
        converged = bool(np.max(clf[-1].n_iter_) < MAX_ITER)
        return float((clf.predict(feat_test) == y_test).mean()), converged


def run_one(name: str, seed: int, smoke: bool) -> dict:
    t0 = time.perf_counter()
    task = make_task(name, seed, smoke)
    feat = encoder(task["x_seed"])
    f_seed, f_stream, f_test = feat(task["x_seed"]), feat(task["x_stream"]), feat(task["x_test"])
    dup_eps = calibrate_dup_eps(task, feat, f_seed)
    n_seed, n_stream = len(f_seed), len(f_stream)
    N = n_seed + n_stream
    y_pool = np.concatenate([task["y_seed"], task["y_stream"]])
    true_pool = np.concatenate([task["y_seed"], task["true_stream"]])
    noisy_pool = y_pool != true_pool
    copy_pool = np.concatenate([np.zeros(n_seed, bool), task["is_copy"]])
    group_pool = np.concatenate([np.full(n_seed, -1), task["group"]])
    f_pool = np.concatenate([f_seed, f_stream])

    out: dict = {
        "dataset": name,
        "seed": seed,
        "N": int(N),
        "n_seed": int(n_seed),
        "classes": task["n_cls"],
        "dup_eps_calibrated": dup_eps,
    }
    groups = task["dup_sources"]
    in_group = np.isin(group_pool, groups)
    runs = {}
    for label, kwargs in CURATORS.items():
        ig = InfoGrowth(index="hnsw", dup_eps=dup_eps, encoder_id="pca64-seed", seed=seed, **kwargs)
        tg = time.perf_counter()
        ig.fit_seed({"img_emb": f_seed, "label": task["y_seed"]})
        for s in range(0, n_stream, 256):
            ig.process_batch({"img_emb": f_stream[s : s + 256], "label": task["y_stream"][s : s + 256]})
        res = ig.results()
        status = res["ig_status"]
        gpos = res["ig_gain_norm"] > 0
        # a duplicate group (source + its copy) is suppressed when at most one member keeps a positive gain
        per_group = np.bincount(group_pool[in_group & gpos], minlength=int(group_pool.max()) + 1)[groups]
        dropped = ~np.isin(status, KEPT_STATUSES)
        stream = np.arange(N) >= n_seed
        per_class = ig.per_class()
        runs[label] = res
        out[label] = {
            "duplicates_removed": float((per_group <= 1).mean()),
            "unique_rows_flagged_duplicate": float((status == "duplicate")[~in_group].mean()),
            "noise_removed": float(dropped[noisy_pool & stream].mean()),
            "clean_lost_to_cleaner": float((status == "dropped_noisy")[~noisy_pool & stream].mean()),
            "delta": float(ig.delta),
            "max_class_drop_rate": float(max(v["dropped"] / max(v["seen"], 1) for v in per_class.values())),
            "classes_with_kept_rows": int(sum(v["kept"] > 0 for v in per_class.values())),
            "curate_seconds": time.perf_counter() - tg,
        }

    subsets = {"full noisy": np.arange(N), "clean oracle": np.flatnonzero(~noisy_pool & ~copy_pool)}
    for b in BUDGETS:
        for arm, (cur, method, rows) in ARMS.items():
            res = runs[cur]
            eligible = None if rows != "cleaned" else res["ig_status"] != "dropped_noisy"
            subsets[f"{arm}@{b:.0%}"] = select(res["ig_gain_norm"], b, method, seed=seed, eligible=eligible)
    out["subsets"] = {}
    for key, idx in subsets.items():
        # redundant rows: members of a duplicate group with another member in the same subset
        g = group_pool[idx]
        g = g[g >= 0]
        members = np.bincount(g, minlength=int(group_pool.max()) + 1)
        redundant = (members[group_pool[idx]] >= 2) & (group_pool[idx] >= 0) & in_group[idx]
        accuracy, converged = train_eval(f_pool[idx], y_pool[idx], f_test, task["y_test"])
        out["subsets"][key] = {
            "rows": int(len(idx)),
            "accuracy": accuracy,
            "classifier_converged": converged,
            "noisy_share": float(noisy_pool[idx].mean()),
            "duplicate_share": float(redundant.mean()),
            "classes": int(len(np.unique(y_pool[idx]))),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- throughput


def clustered_embeddings(
    n: int, dim: int, seed: int, n_clusters: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 256-d embeddings with cluster structure (real encoders' outputs are not isotropic)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    lab = rng.integers(0, n_clusters, n)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centres[lab[s:e]] + 0.8 * rng.standard_normal((e - s, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, lab % 100


def throughput(
    sizes: list[int],
    exact_max: int,
    dim: int,
    add_threads: int | None,
    time_limit: float,
    seed: int = 0,
    mark_every: int = 50_000,
) -> dict:

    import faiss
    from threadpoolctl import threadpool_limits

    # one thread everywhere: on a shared machine, CPU seconds are then a load-independent measure
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)
    out = {
        "dim": dim,
        "k": 4,
        "batch_size": 256,
        "add_threads": add_threads,
        "threads": 1,
        "mark_every": mark_every,
        "runs": [],
        "load_average_start": os.getloadavg(),
    }
    for n in sizes:
        x, y = clustered_embeddings(n + 1000, dim, seed=seed)
        queries, x, y = x[n:], x[:n], y[:n]  # held-out rows of the same distribution, for recall
        n_seed = min(5000, n // 2)
        for kind in ("hnsw", "exact"):
            if kind == "exact" and n > exact_max:
                continue
            ig = InfoGrowth(delta=-3.0, index=kind, add_threads=add_threads, encoder_id="synthetic")
            t0, c0 = time.perf_counter(), time.process_time()
            ig.fit_seed({"img_emb": x[:n_seed], "label": y[:n_seed]})
            done, marks = n_seed, []
            for s in range(n_seed, n, 256):
                ig.process_batch({"img_emb": x[s : s + 256], "label": y[s : s + 256]})
                done = min(n, s + 256)
                if done % mark_every < 256:
                    marks.append((done, time.perf_counter() - t0, time.process_time() - c0))
                    print(
                        f"  {kind} n={n}: {done} rows in {marks[-1][1]:.0f} s ({marks[-1][2]:.0f} CPU s)",
                        file=sys.stderr,
                        flush=True,
                    )
                if time.perf_counter() - t0 > time_limit:
                    break
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = {
                "n": n,
                "index": kind,
                "rows_done": done,
                "seconds": sec,
                "cpu_seconds": cpu,
                "samples_per_s": done / sec,
                "samples_per_cpu_s": done / cpu,
                "completed": done == n,
                "progress": marks,
            }
            if kind == "hnsw":
                # recall of the index's 4-NN against exact, for 1,000 held-out queries against the final index
                q = queries
                flat = _flat_of(ig.img_index)
                _, ie = flat.search(q, 4)
                _, ih = ig.img_index.search(q, 4)
                row["recall@4"] = float(
                    np.mean([len(set(a) & set(b)) / 4 for a, b in zip(ih, ie, strict=True)])
                )
                # brute force against the final index: its per-row cost grows linearly with the index
                tq, cq = time.perf_counter(), time.process_time()
                flat.search(x[:2560], 4)
                row["exact_query_s_per_256_at_end"] = (time.perf_counter() - tq) / 10
                row["exact_query_cpu_s_per_256_at_end"] = (time.process_time() - cq) / 10
            row["load_average_end"] = os.getloadavg()
            out["runs"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "progress"}), file=sys.stderr, flush=True)
            del ig
    return out


def real_recall(n_queries: int = 1000, n_rows: int = 70_000) -> dict:
    """HNSW (curator defaults) recall@4 against exact on real embeddings: the first ``n_rows`` of a fixed
    permutation of all 70k Fashion-MNIST images (default all), PCA-64."""
    import faiss
    from sklearn.decomposition import PCA

    from hubtools.data.offline import fashion_mnist

    faiss.omp_set_num_threads(1)
    x = np.concatenate([fashion_mnist("train")[0], fashion_mnist("test")[0]]).reshape(70_000, -1) / 255.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))[:n_rows]
    z = PCA(64, random_state=0).fit(x[perm[:5000]]).transform(x).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    base, q = z[perm[n_queries:]], z[perm[:n_queries]]
    hnsw, exact = KnnIndex(64, "hnsw"), KnnIndex(64, "exact")
    t0 = time.process_time()
    hnsw.add(base)
    build = time.process_time() - t0
    exact.add(base)
    _, ih = hnsw.search(q, 4)
    _, ie = exact.search(q, 4)
    recall = float(np.mean([len(set(a) & set(b)) / 4 for a, b in zip(ih, ie, strict=True)]))
    return {"rows": len(base), "dim": 64, "recall@4": recall, "build_cpu_s": build}


def _flat_of(index: KnnIndex) -> KnnIndex:
    """An exact index over the same stored vectors (read back from the HNSW storage)."""
    import faiss

    flat = KnnIndex(index.dim, "exact")
    storage = faiss.downcast_index(index.index.storage)
    flat.add(faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * index.dim).reshape(-1, index.dim).copy())
    return flat


# --------------------------------------------------------------------------- quality result

PCT = ("accuracy", "noisy_share", "duplicate_share")
CURATOR_PCT = (
    "noise_removed",
    "clean_lost_to_cleaner",
    "max_class_drop_rate",
    "duplicates_removed",
    "unique_rows_flagged_duplicate",
)
LABELS = {
    "accuracy": "test accuracy %",
    "noisy_share": "noisy share %",
    "duplicate_share": "duplicate share %",
    "noise_removed": "noisy labels removed %",
    "clean_lost_to_cleaner": "clean rows lost to the cleaner %",
    "max_class_drop_rate": "worst per-class drop rate %",
    "duplicates_removed": "duplicate pairs suppressed %",
    "unique_rows_flagged_duplicate": "unique rows flagged duplicate %",
    "curate_seconds": "curation seconds",
    "delta": "δ",
    "dup_eps": "dup_eps (1 - cos)",
}


def to_runs(records: list[dict]) -> list[Run]:
    """One Run per (dataset, seed, subset) and per (dataset, seed, curator pass); shares in %."""
    runs = []
    for rec in records:
        name, seed = rec["dataset"], rec["seed"]
        for subset, m in rec["subsets"].items():
            metrics = {k: 100 * m[k] for k in PCT} | {
                "rows": m["rows"],
                "classes": m["classes"],
                "classifier_converged": m["classifier_converged"],
            }
            runs.append(
                Run(
                    arm=f"{name}: {subset}",
                    seed=seed,
                    metrics=metrics,
                    extra={"dataset": name, "subset": subset},
                )
            )
        for cur in CURATORS:
            c = rec[cur]
            metrics = {k: 100 * c[k] for k in CURATOR_PCT} | {
                "delta": c["delta"],
                "dup_eps": rec["dup_eps_calibrated"],
                "curate_seconds": c["curate_seconds"],
                "classes_with_kept_rows": c["classes_with_kept_rows"],
            }
            runs.append(
                Run(
                    arm=f"{name}: curator {cur}",
                    seed=seed,
                    metrics=metrics,
                    extra={"dataset": name, "curator": cur},
                )
            )
    return runs


def _short(runs: list[Run], name: str, key: str) -> list[Run]:
    """The runs of one dataset with the dataset dropped from the arm name (for its own tables)."""
    return [
        Run(arm=r.extra[key], seed=r.seed, metrics=r.metrics)
        for r in runs
        if r.extra.get("dataset") == name and key in r.extra
    ]


def claim_checks(subset_runs: list[Run], curator_runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per budget: each ablation arm's paired accuracy difference from random and from the full noisy pool."""
    checks = {}
    full = values_by_seed(subset_runs, "full noisy", "accuracy")
    removed = mean_sd(list(values_by_seed(curator_runs, DEFAULT, "noise_removed").values()))[0]
    lost = mean_sd(list(values_by_seed(curator_runs, DEFAULT, "clean_lost_to_cleaner").values()))[0]
    for b in BUDGETS:
        rnd = values_by_seed(subset_runs, f"random@{b:.0%}", "accuracy")
        for arm in ARMS:
            if arm == "random":
                continue
            key = f"{arm}@{b:.0%}"
            ig = values_by_seed(subset_runs, key, "accuracy")
            d_full, d_rand = paired_by_seed(ig, full), paired_by_seed(ig, rnd)
            converged = all(
                r.metrics["classifier_converged"]
                for r in subset_runs
                if r.arm in (key, "full noisy", f"random@{b:.0%}")
            )
            checks[key] = {
                "arm": arm,
                "budget": b,
                "accuracy": mean_sd(list(ig.values()))[0],
                "full_noisy": mean_sd(list(full.values()))[0],
                "random": mean_sd(list(rnd.values()))[0],
                "vs_full": d_full.as_dict(),
                "vs_random": d_rand.as_dict(),
                "matches_or_beats_full": bool(d_full.mean >= -MATCH_TOLERANCE),
                "beats_random_by_target": bool(d_rand.mean >= ACCEPT_GAIN_POINTS),
                "beats_random_beyond_noise": d_rand.clear is True and d_rand.mean > 0,
                "classifiers_converged": converged,
            }
    checks["cleaner"] = {"noise_removed": removed, "clean_lost": lost}
    return checks


def quality_tables(runs: list[Run], records: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    tables, checks = [], {}
    for name in dict.fromkeys(r["dataset"] for r in records):
        rs = [r for r in records if r["dataset"] == name]
        subset_runs, curator_runs = _short(runs, name, "subset"), _short(runs, name, "curator")
        arms = list(rs[0]["subsets"])
        rows = {
            a: round(float(np.mean([r.metrics["rows"] for r in subset_runs if r.arm == a]))) for a in arms
        }
        classes = {a: min(r.metrics["classes"] for r in subset_runs if r.arm == a) for a in arms}
        head = (
            f"{name}: N = {rs[0]['N']:,} pool rows ({rs[0]['n_seed']} trusted seed), {rs[0]['classes']} classes, "
            f"{len(rs)} seed(s)"
        )
        tables.append(
            arms_table(
                subset_runs,
                PCT,
                baseline="full noisy",
                arms=arms,
                digits=1,
                labels=LABELS,
                diff_metrics=["accuracy", "noisy_share"],
                extra_columns={"rows (mean)": rows, "classes (min)": classes},
                title=f"{head}: subsets",
            )
        )
        checks[name] = c = claim_checks(subset_runs, curator_runs)
        tables.append(
            {
                "title": f"{name}: the ablation against a random subset of the same size and the full noisy pool",
                "columns": [
                    "arm @ budget",
                    "arm acc %",
                    "random acc %",
                    "full noisy acc %",
                    "Δ acc vs random [95% CI]",
                    "Δ acc vs full noisy [95% CI]",
                    "Δ noisy share vs random [95% CI]",
                    "matches or beats full",
                ],
                "rows": [
                    [
                        k,
                        round(v["accuracy"], 1),
                        round(v["random"], 1),
                        round(v["full_noisy"], 1),
                        fmt_diff(paired_by_seed(*_pair(subset_runs, k, "random", "accuracy")), 1),
                        fmt_diff(paired_by_seed(*_pair(subset_runs, k, "full noisy", "accuracy")), 1),
                        fmt_diff(paired_by_seed(*_pair(subset_runs, k, "random", "noisy_share")), 1),
                        "yes" if v["matches_or_beats_full"] else "no",
                    ]
                    for k, v in c.items()
                    if k != "cleaner"
                ],
                "note": (
                    "Δ = paired difference per seed (arm − other), mean with a percentile bootstrap 95 % CI; "
                    f"'matches or beats' = mean Δ vs the full noisy pool ≥ −{MATCH_TOLERANCE} points. InfoGrowth = "
                    "the default curator (probe cleaner + gain-weighted selection)."
                ),
            }
        )
        tables.append(
            arms_table(
                curator_runs,
                (*CURATOR_PCT, "curate_seconds"),
                baseline=DEFAULT,
                arms=list(CURATORS),
                digits=1,
                labels=LABELS,
                diff_metrics=["noise_removed", "clean_lost_to_cleaner"],
                title=f"{name}: cleaning and duplicates by curator pass (the passes share the machine)",
            )
        )
        tables.append(
            arms_table(
                curator_runs,
                ("delta", "dup_eps"),
                baseline=DEFAULT,
                arms=[c for c in CURATORS if CURATORS[c].get("score") != "none"],  # no cleaner: no δ
                digits=4,
                labels=LABELS,
                diff_metrics=[],
                title=f"{name}: calibrated δ and duplicate threshold",
                note="δ: the cleaner's final threshold (probe: probability, calibrated for a 5 % clean-row loss on "
                "the seed set and re-estimated at each refit). dup_eps: calibrated without labels (1st percentile "
                "of nearest-kept distances over clean rows outside the pool); mean ± sample sd over seeds.",
            )
        )
    return tables, checks


def _pair(subset_runs: list[Run], key: str, other: str, metric: str) -> tuple[dict, dict]:
    budget = key.split("@")[1]
    if other == "random":
        other = f"random@{budget}"
    return values_by_seed(subset_runs, key, metric), values_by_seed(subset_runs, other, metric)


def quality_verdict(checks: dict[str, dict], n_seeds: int) -> tuple[str, str]:
    default = [
        (n, k, v)
        for n, c in checks.items()
        for k, v in c.items()
        if k != "cleaner" and v["arm"] == "InfoGrowth"
    ]
    passed = [(n, k) for n, k, v in default if v["beats_random_by_target"]]
    cleaner_ok = {
        n: c["cleaner"]["clean_lost"] <= ACCEPT_CLEAN_LOST
        and c["cleaner"]["noise_removed"] >= ACCEPT_NOISE_REMOVED
        for n, c in checks.items()
    }
    headline = (
        f"the default curator beats random by >= {ACCEPT_GAIN_POINTS:g} point in {len(passed)} of {len(default)} "
        "dataset x budget cases (paired, "
        f"{n_seeds} seed(s)); "
        + "; ".join(
            f"{n}: {c['cleaner']['noise_removed']:.1f} % of noisy labels removed, {c['cleaner']['clean_lost']:.1f} % "
            "of clean rows lost"
            for n, c in checks.items()
        )
    )
    parts = []
    for name, c in checks.items():
        rows = {k: v for k, v in c.items() if k != "cleaner"}
        s = f"{name}: " + ", ".join(
            f"{k} {v['vs_random']['mean']:+.1f} vs random"
            for k, v in rows.items()
            if v["arm"] in ("InfoGrowth",)
        )
        abl = {
            arm: [v["vs_random"]["mean"] for v in rows.values() if v["arm"] == arm]
            for arm in ARMS
            if arm != "random"
        }
        s += "; mean Δ vs random over budgets: " + ", ".join(
            f"{arm} {np.mean(d):+.1f}" for arm, d in abl.items() if d
        )
        hold = [k for k, v in rows.items() if v["matches_or_beats_full"]]
        s += f"; matches or beats the full noisy pool at {', '.join(hold) if hold else 'none'}"
        s += (
            f"; cleaner: {'meets' if cleaner_ok[name] else 'misses'} the targets (<= {ACCEPT_CLEAN_LOST:g} % clean "
            f"lost, >= {ACCEPT_NOISE_REMOVED:g} % noisy removed)"
        )
        parts.append(s)
    text = (
        f"Acceptance (default >= random + {ACCEPT_GAIN_POINTS:g} point in 4/4 cases, cleaner targets on both datasets): "
        + ("met. " if len(passed) == len(default) and all(cleaner_ok.values()) else "not met. ")
    )
    text += ". ".join(parts) + "."
    if n_seeds < 2:
        text += " One seed only: no difference is judged against seed noise."
    items = [(n, k, v) for n, c in checks.items() for k, v in c.items() if k != "cleaner"]
    unconverged = [f"{n} {k}" for n, k, v in items if not v["classifiers_converged"]]
    if unconverged:
        text += (
            f" Budget insufficient for {', '.join(unconverged)}: the logistic regression hit max_iter = {MAX_ITER} "
            "on at least one of the compared fits, so those accuracies may still change."
        )
    else:
        text += f" Every compared logistic regression converged within {MAX_ITER} iterations."
    return headline, text


def quality_figure(runs: list[Run], names: list[str]) -> dict:
    panels = []
    for name in names:
        subset_runs = _short(runs, name, "subset")
        arms = list(dict.fromkeys(r.arm for r in subset_runs))
        series = [
            {
                "label": a,
                "x": [r.metrics["noisy_share"] for r in subset_runs if r.arm == a],
                "y": [r.metrics["accuracy"] for r in subset_runs if r.arm == a],
            }
            for a in arms
        ]
        full = mean_sd(list(values_by_seed(subset_runs, "full noisy", "accuracy").values()))[0]
        panels.append(
            {
                "kind": "scatter",
                "series": series,
                "hlines": [full],
                "title": f"{name} (dashed: full noisy pool)",
                "xlabel": "noisy-label share of the subset %",
                "ylabel": "test accuracy % (per seed)",
            }
        )
    return {
        "file": "infogrowth.png",
        "title": "InfoGrowth subsets against the full noisy pool",
        "panels": panels,
    }


# --------------------------------------------------------------------------- throughput result


def throughput_runs(res: dict, seed: int) -> list[Run]:
    runs = []
    for r in res["runs"]:
        metrics = {
            k: r.get(k)
            for k in (
                "rows_done",
                "seconds",
                "cpu_seconds",
                "samples_per_s",
                "samples_per_cpu_s",
                "completed",
                "recall@4",
                "exact_query_s_per_256_at_end",
                "exact_query_cpu_s_per_256_at_end",
            )
            if k in r
        }
        runs.append(
            Run(
                arm=f"{r['index']} @ {r['n']:,}",
                seed=seed,
                metrics=metrics,
                extra={
                    "n": r["n"],
                    "index": r["index"],
                    "progress": r["progress"],
                    "load_average_start": res["load_average_start"],
                    "load_average_end": r["load_average_end"],
                },
            )
        )
    rr = res["real_recall"]
    runs.append(
        Run(
            arm="hnsw on real Fashion-MNIST PCA-64",
            seed=0,
            metrics={"rows": rr["rows"], "recall@4": rr["recall@4"], "build_cpu_s": rr["build_cpu_s"]},
        )
    )
    return runs


def _stretches(r: dict) -> list[tuple[int, float]]:
    marks = [m for m in r.get("progress", []) if len(m) == 3]
    return [(b[0], (b[0] - a[0]) / max(b[2] - a[2], 1e-9)) for a, b in zip(marks, marks[1:], strict=False)]


def throughput_tables(res: dict) -> list[dict]:
    main = {
        "title": "Curator throughput",
        "columns": [
            "stream rows",
            "index",
            "rows done",
            "wall s",
            "CPU s",
            "samples/s (wall)",
            "samples per CPU s",
            "recall@4 vs exact",
        ],
        "rows": [
            [
                f"{r['n']:,}",
                r["index"],
                f"{r['rows_done']:,}",
                round(r["seconds"]),
                round(r["cpu_seconds"]),
                f"{r['samples_per_s']:,.0f}",
                f"{r['samples_per_cpu_s']:,.0f}",
                "reference" if r["index"] == "exact" else round(r["recall@4"], 3),
            ]
            for r in res["runs"]
        ],
        "note": (
            f"{res['dim']}-d clustered synthetic embeddings (2,000 Gaussian clusters), k = {res['k']}, batch "
            f"{res['batch_size']}, 1 thread for search, insertion and BLAS; embedding time excluded (precomputed "
            "vectors). One repeat per row. The machine was shared (load average "
            f"{res['load_average_start'][0]:.1f} at the start), so samples per CPU second is the figure to compare; "
            "wall-clock rates are lower by the share of the core the run got."
        ),
    }
    exact = {
        "title": "Exact brute-force 4-NN search of 256 rows against the final index",
        "columns": [
            "index rows",
            "ms wall",
            "ms CPU",
            "ms per row",
            "HNSW curator CPU ms per row (whole pipeline)",
        ],
        "rows": [
            [
                f"{r['rows_done']:,}",
                round(r["exact_query_s_per_256_at_end"] * 1000),
                round(r["exact_query_cpu_s_per_256_at_end"] * 1000),
                round(r["exact_query_s_per_256_at_end"] / 256 * 1000, 2),
                round(1000 / r["samples_per_cpu_s"], 2),
            ]
            for r in res["runs"]
            if "exact_query_s_per_256_at_end" in r
        ],
        "note": "A brute-force search costs time linear in the index size, so a whole stream costs O(n²).",
    }
    rr = res["real_recall"]
    real = {
        "title": "HNSW recall on real embeddings",
        "columns": ["data", "indexed rows", "held-out queries", "recall@4 vs exact", "build CPU s"],
        "rows": [
            [
                "Fashion-MNIST, PCA-64",
                f"{rr['rows']:,}",
                1000,
                round(rr["recall@4"], 3),
                round(rr["build_cpu_s"], 1),
            ]
        ],
    }
    stretch = {
        "title": f"Samples per CPU second over each {res['mark_every']:,}-row stretch, by index size reached",
        "columns": ["run", "index size reached", "samples per CPU s"],
        "rows": [
            [f"{r['index']} @ {r['n']:,}", f"{end:,}", f"{rate:,.0f}"]
            for r in res["runs"]
            for end, rate in _stretches(r)
        ],
    }
    return [main, exact, real, stretch]


def throughput_verdict(res: dict) -> tuple[str, str]:
    hnsw = [r for r in res["runs"] if r["index"] == "hnsw"]
    exact = [r for r in res["runs"] if r["index"] == "exact"]
    big = max(hnsw, key=lambda r: r["rows_done"])
    headline = (
        f"HNSW curator: {big['samples_per_cpu_s']:,.0f} samples per CPU second over {big['rows_done']:,} rows "
        f"(recall@4 {big['recall@4']:.3f} vs exact; {res['real_recall']['recall@4']:.3f} on real Fashion-MNIST "
        "embeddings)"
    )
    parts = []
    for e in exact:
        h = next((r for r in hnsw if r["n"] == e["n"]), None)
        if h is not None:
            parts.append(
                f"at {e['n']:,} rows HNSW runs {h['samples_per_cpu_s'] / e['samples_per_cpu_s']:.1f}x the exact "
                f"curator's rate per CPU second ({h['samples_per_cpu_s']:,.0f} vs {e['samples_per_cpu_s']:,.0f}"
                + ("" if e["completed"] else f"; exact stopped at {e['rows_done']:,} rows by the time limit")
                + ")"
            )
    rates = [rate for _, rate in _stretches(big)]
    if len(rates) >= 2:
        parts.append(
            f"over the {big['rows_done']:,}-row HNSW run the rate per {res['mark_every']:,}-row stretch ranges "
            f"{min(rates):,.0f}-{max(rates):,.0f} samples per CPU s (first {rates[0]:,.0f}, last {rates[-1]:,.0f})"
        )
    incomplete = [f"{r['index']} @ {r['n']:,}" for r in res["runs"] if not r["completed"]]
    text = "; ".join(parts) + "." if parts else headline + "."
    text = text[0].upper() + text[1:]
    if incomplete:
        text += f" Stopped by --time-limit before the end of the stream: {', '.join(incomplete)}."
    text += " One repeat per configuration on a shared machine: no seed spread is claimed."
    return headline, text


def throughput_figure(res: dict) -> dict:
    series = [
        {
            "label": f"{r['index']} @ {r['n']:,}",
            "x": [end for end, _ in _stretches(r)],
            "y": [round(rate) for _, rate in _stretches(r)],
        }
        for r in res["runs"]
        if len(_stretches(r))
    ]
    return {
        "file": "infogrowth_throughput.png",
        "title": "Curator throughput as the index grows",
        "panels": [
            {
                "kind": "line",
                "series": series,
                "xlabel": "index size reached (rows)",
                "ylabel": f"samples per CPU s over the last {res['mark_every']:,} rows",
            }
        ],
    }


# --------------------------------------------------------------------------- main


def run_throughput(bench: Benchmark, args) -> None:
    seed = args.seeds[0]
    if args.smoke:
        sizes, exact_max, time_limit, mark_every, recall_rows = [10_000], 10_000, 15.0, 1_000, 5_000
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        exact_max, time_limit, mark_every, recall_rows = args.exact_max, args.time_limit, 50_000, 70_000
    res = throughput(sizes, exact_max, 256, args.add_threads, time_limit, seed=seed, mark_every=mark_every)
    res["real_recall"] = real_recall(n_rows=recall_rows)
    headline, verdict = throughput_verdict(res)
    bench.write(
        "infogrowth_throughput",
        title="InfoGrowth curator throughput: HNSW vs exact k-NN",
        data=(
            f"synthetic: {res['dim']}-d embeddings drawn around 2,000 Gaussian cluster centres (seed {seed}), "
            "unit-normalised, 100 labels; recall also on real Fashion-MNIST (Debian dataset-fashion-mnist) "
            f"PCA-64 embeddings, {res['real_recall']['rows']:,} rows indexed"
        ),
        config={
            "sizes": sizes,
            "exact_max": exact_max,
            "time_limit_s": time_limit,
            "dim": res["dim"],
            "k": res["k"],
            "batch_size": res["batch_size"],
            "add_threads": args.add_threads,
            "threads": res["threads"],
            "mark_every": mark_every,
            "real_recall_rows": recall_rows,
        },
        runs=throughput_runs(res, seed),
        tables=throughput_tables(res),
        figures=[throughput_figure(res)],
        headline=headline,
        verdict=verdict,
        details={"raw": res, "curator_versions": versions()},
        seeds=[seed],
    )


def run_quality(bench: Benchmark, args) -> None:
    names = ["fashion_mnist"] if args.smoke else args.datasets
    records = []
    for name in names:
        for seed in args.seeds:
            key = {
                "dataset": name,
                "seed": seed,
                "smoke": args.smoke,
                "noise": NOISE,
                "dup": DUP,
                "budgets": BUDGETS,
                "max_iter": MAX_ITER,
            }
            folder, rec = bench.cached(f"{name}-s{seed}", key)
            if rec is None:
                rec = run_one(name, seed, args.smoke)
                Benchmark.save_record(folder, key, rec, bench)
            records.append(rec)
            print(f"{name} seed {seed}: {rec['seconds']:.0f} s", file=sys.stderr, flush=True)
    runs = to_runs(records)
    tables, checks = quality_tables(runs, records)
    headline, verdict = quality_verdict(checks, len(args.seeds))
    bench.write(
        "infogrowth",
        title="InfoGrowth ablation on real images with 20 % flipped labels and 30 % near-duplicates",
        data=SMOKE_DATA if args.smoke else "; ".join(DATA[n] for n in names),
        config={
            "datasets": names,
            "label_noise": NOISE,
            "duplicate_rate": DUP,
            "budgets": list(BUDGETS),
            "encoder": "PCA-64 of the trusted seed images, L2-normalised",
            "curator": {"index": "hnsw", "k": 4, "batch": 256, "passes": CURATORS},
            "arms": {a: {"curator": c, "method": m, "rows": r} for a, (c, m, r) in ARMS.items()},
            "acceptance": {
                "gain_over_random_points": ACCEPT_GAIN_POINTS,
                "clean_lost_max_pct": ACCEPT_CLEAN_LOST,
                "noise_removed_min_pct": ACCEPT_NOISE_REMOVED,
            },
            "classifier": f"StandardScaler + LogisticRegression(C=1, max_iter={MAX_ITER})",
            "match_tolerance_points": MATCH_TOLERANCE,
            "pool": {
                n: {
                    "N": next(r["N"] for r in records if r["dataset"] == n),
                    "trusted_seed": next(r["n_seed"] for r in records if r["dataset"] == n),
                    "classes": next(r["classes"] for r in records if r["dataset"] == n),
                }
                for n in names
            },
        },
        runs=runs,
        tables=tables,
        figures=[quality_figure(runs, names)],
        headline=headline,
        verdict=verdict,
        details={"claim_checks": checks, "curator_versions": versions()},
    )


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark(
        "infogrowth",
        title="InfoGrowth data curation",
        capability="infogrowth",
        code=["hubtools/data/infogrowth.py", "hubtools/data/offline.py", "hubtools/data/mri_patches.py"],
        default_seeds=[0, 1, 2],
    )
    parser = bench.parser(__doc__)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        help="quality: fashion_mnist and/or mri (space- or comma-separated; smoke: fashion_mnist)",
    )
    parser.add_argument(
        "--throughput", action="store_true", help="measure curator throughput instead of quality"
    )
    parser.add_argument("--sizes", default="100000,1000000", help="throughput: comma-separated stream sizes")
    parser.add_argument(
        "--exact-max", type=int, default=100_000, help="throughput: largest stream for exact k-NN"
    )
    parser.add_argument("--add-threads", type=int, default=1, help="throughput: HNSW insertion threads")
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="throughput: seconds per run before stopping"
    )
    args = bench.parse(parser, argv)
    args.device = "cpu"  # faiss-cpu and scikit-learn: nothing here runs on an accelerator
    args.datasets = [d for item in args.datasets for d in item.split(",") if d]
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    if args.throughput:
        run_throughput(bench, args)
    else:
        run_quality(bench, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
