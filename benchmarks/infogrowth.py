"""InfoGrowth on real images with injected label noise and near-duplicates, and curator throughput.

Quality (default): Fashion-MNIST (Debian ``dataset-fashion-mnist``) and brain-MRI patches (Debian
``mricron-data`` via ``hubtools.data.mri_patches``, 90 AAL classes, long-tailed). Per seed: a clean
held-out test set; a pool whose first rows per class (5%, at least 5 per class) are the trusted seed;
the rest is the stream, where 20% of the labels are flipped (y -> y + U{1..C-1} mod C) and 30% of the
rows get an augmented copy (brightness x U(0.9, 1.1) + Gaussian noise sigma 0.02, clipped; the copy
inherits the possibly flipped label), then shuffled. Encoder stand-in: PCA-64 of the seed images,
L2-normalised (no image weights ship offline). Curator: margin cleaning, k=4, faiss HNSW, seeds first,
duplicate threshold calibrated without labels: the 1st percentile of the nearest-kept distance in a
run over clean rows outside the pool (Fashion-MNIST: other training rows, as many as the pool;
MRI: the test images, labels unused). Classifier for every subset: the same
``LogisticRegression(C=1)`` on the same PCA features. Budgets are fractions of the whole noisy pool N.

    python benchmarks/infogrowth.py                     # both datasets, 3 seeds (~5 min on 2 cores)
    python benchmarks/infogrowth.py --smoke             # Fashion-MNIST only, small, 1 seed (< 60 s)
    python benchmarks/infogrowth.py --throughput        # samples/s at 100k and 1M 256-d rows vs exact k-NN

Results: ``benchmarks/results/infogrowth.{json,md,png}`` and ``infogrowth_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from hubtools.data.infogrowth import KEPT_STATUSES, InfoGrowth, KnnIndex, select, versions

RESULTS = Path(__file__).resolve().parent / "results"
NOISE, DUP = 0.2, 0.3
BUDGETS = (0.3, 0.5)


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
) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these fits are tiny, and on a shared 2-core machine threads only spin
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300)).fit(
            feat_train, y_train
        )
        return float((clf.predict(feat_test) == y_test).mean())


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
        "N": N,
        "n_seed": n_seed,
        "classes": task["n_cls"],
        "dup_eps_calibrated": dup_eps,
    }
    groups = task["dup_sources"]
    in_group = np.isin(group_pool, groups)
    runs = {}
    for label, score, eps in (
        ("margin, dup_eps=1e-4", "margin", 1e-4),
        ("margin", "margin", dup_eps),
        ("cosine", "cosine", dup_eps),
    ):
        ig = InfoGrowth(index="hnsw", score=score, dup_eps=eps, encoder_id="pca64-seed", seed=seed)
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
            "delta": ig.delta,
            "max_class_drop_rate": max(v["dropped"] / max(v["seen"], 1) for v in per_class.values()),
            "classes_with_kept_rows": sum(v["kept"] > 0 for v in per_class.values()),
            "curate_seconds": time.perf_counter() - tg,
        }

    subsets = {"full noisy": np.arange(N), "clean oracle": np.flatnonzero(~noisy_pool & ~copy_pool)}
    for b in BUDGETS:
        for label in ("margin", "cosine"):
            subsets[f"InfoGrowth[{label}]@{b:.0%}"] = select(
                runs[label]["ig_gain_norm"], b, "proportional", seed=seed
            )
        subsets[f"random@{b:.0%}"] = select(runs["margin"]["ig_gain_norm"], b, "random", seed=seed)
    out["subsets"] = {}
    for key, idx in subsets.items():
        # redundant rows: members of a duplicate group with another member in the same subset
        g = group_pool[idx]
        g = g[g >= 0]
        members = np.bincount(g, minlength=int(group_pool.max()) + 1)
        redundant = (members[group_pool[idx]] >= 2) & (group_pool[idx] >= 0) & in_group[idx]
        out["subsets"][key] = {
            "rows": int(len(idx)),
            "accuracy": train_eval(f_pool[idx], y_pool[idx], f_test, task["y_test"]),
            "noisy_share": float(noisy_pool[idx].mean()),
            "duplicate_share": float(redundant.mean()),
            "classes": int(len(np.unique(y_pool[idx]))),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- reports


def _ms(values: list[float], pct: bool = True) -> str:
    v = np.asarray(values, dtype=np.float64) * (100 if pct else 1)
    digits = 1 if pct or np.abs(v).max() >= 1 else 4
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def summarise(runs: list[dict]) -> tuple[str, dict]:
    lines, summary = [], {}
    for name in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == name]
        full = [r["subsets"]["full noisy"]["accuracy"] for r in rs]
        lines += [
            f"### {name}: N = {rs[0]['N']} pool rows ({rs[0]['n_seed']} trusted seed), "
            f"{rs[0]['classes']} classes, {len(rs)} seed(s)",
            "",
            "| subset | rows | test accuracy % | noisy share % | duplicate share % | classes |",
            "|---|---|---|---|---|---|",
        ]
        for key in rs[0]["subsets"]:
            col = [r["subsets"][key] for r in rs]
            lines.append(
                f"| {key} | {col[0]['rows']} | {_ms([c['accuracy'] for c in col])} | "
                f"{_ms([c['noisy_share'] for c in col])} | {_ms([c['duplicate_share'] for c in col])} | "
                f"{min(c['classes'] for c in col)} |"
            )
        lines += [
            "",
            "| cleaning / duplicates | margin, dup_eps=1e-4 | margin | cosine |",
            "|---|---|---|---|",
        ]
        labs = ("margin, dup_eps=1e-4", "margin", "cosine")
        for key, title, pct in (
            ("noise_removed", "noisy labels removed %", True),
            ("clean_lost_to_cleaner", "clean rows lost to the cleaner %", True),
            ("max_class_drop_rate", "worst per-class drop rate %", True),
            ("delta", "δ", False),
            ("duplicates_removed", "duplicate pairs suppressed %", True),
            ("unique_rows_flagged_duplicate", "unique rows flagged duplicate %", True),
            ("curate_seconds", "curation seconds (3 passes share the machine)", False),
        ):
            lines.append(
                f"| {title} | " + " | ".join(_ms([r[lab][key] for r in rs], pct) for lab in labs) + " |"
            )
        lines.append(
            f"| dup_eps calibrated (1 - cos) | 1e-4 | "
            f"{_ms([r['dup_eps_calibrated'] for r in rs], pct=False)} | same |"
        )
        verdicts = {}
        for b in BUDGETS:
            for lab in ("margin", "cosine"):
                ig = [r["subsets"][f"InfoGrowth[{lab}]@{b:.0%}"]["accuracy"] for r in rs]
                rnd = [r["subsets"][f"random@{b:.0%}"]["accuracy"] for r in rs]
                verdicts[f"{lab}@{b:.0%}"] = {
                    "infogrowth": float(np.mean(ig)),
                    "random": float(np.mean(rnd)),
                    "full_noisy": float(np.mean(full)),
                    "matches_or_beats_full": bool(np.mean(ig) >= np.mean(full) - 0.005),
                }
        summary[name] = verdicts
        lines += [
            "",
            "Claim check (the curated subset matches or beats the full noisy set, within 0.5 points; "
            "margin is the spec default):",
            "",
        ]
        lines += [
            f"- {k}: InfoGrowth {100 * v['infogrowth']:.1f} vs full {100 * v['full_noisy']:.1f} vs random "
            f"{100 * v['random']:.1f} -> {'yes' if v['matches_or_beats_full'] else 'no'}"
            for k, v in verdicts.items()
        ]
        lines.append("")
    return "\n".join(lines), summary


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rs = [r for r in runs if r["dataset"] == name]
        keys = list(rs[0]["subsets"])
        acc = np.array([[r["subsets"][k]["accuracy"] for k in keys] for r in rs]) * 100
        ax.bar(
            range(len(keys)),
            acc.mean(0),
            yerr=acc.std(0),
            color=["C7", "C2"] + ["C0", "C9", "C1"] * len(BUDGETS),
        )
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        ax.set(
            ylabel="test accuracy %",
            title=f"{name}: 20% noisy labels + 30% near-duplicates",
            ylim=(max(0, acc.min() - 10), min(100, acc.max() + 5)),
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    sizes: list[int], exact_max: int, dim: int, add_threads: int | None, time_limit: float
) -> dict:
    import os

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
        "runs": [],
        "load_average_start": os.getloadavg(),
    }
    for n in sizes:
        x, y = clustered_embeddings(n + 1000, dim, seed=0)
        queries, x, y = x[n:], x[:n], y[:n]  # held-out rows of the same distribution, for recall
        n_seed = 5000
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
                if done % 50_000 < 256:
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


def real_recall(n_queries: int = 1000) -> dict:
    """HNSW (curator defaults) recall@4 against exact on real embeddings: all 70k Fashion-MNIST images, PCA-64."""
    import faiss
    from sklearn.decomposition import PCA

    from hubtools.data.offline import fashion_mnist

    faiss.omp_set_num_threads(1)
    x = np.concatenate([fashion_mnist("train")[0], fashion_mnist("test")[0]]).reshape(70_000, -1) / 255.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
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


def throughput_md(res: dict) -> str:
    lines = [
        f"Curator throughput, {res['dim']}-d clustered synthetic embeddings (2,000 Gaussian clusters), k={res['k']}, "
        f"batch {res['batch_size']}, 1 thread for search, insertion and BLAS; embedding time excluded (precomputed "
        f"vectors; the MiniLM text encoder is timed separately by the curator as stats['embed_seconds']). The machine "
        f"was shared (load average {res['load_average_start'][0]:.1f} on 2 cores at the start), so samples per CPU "
        "second is the figure to compare; wall-clock rates are lower by the share of the core the run got.",
        "",
        "| stream rows | index | rows done | wall s | CPU s | samples/s (wall) | samples per CPU s | recall@4 vs exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['n']:,} | {r['index']} | {r['rows_done']:,} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | "
            f"{r['samples_per_s']:,.0f} | {r['samples_per_cpu_s']:,.0f} | {'reference' if r['index'] == 'exact' else format(r['recall@4'], '.3f')} |"
        )
    for r in res["runs"]:
        if "exact_query_s_per_256_at_end" in r:
            cpu = r.get("exact_query_cpu_s_per_256_at_end")
            lines.append(
                f"\nExact brute-force 4-NN search of 256 rows against the final {r['rows_done']:,}-row index: "
                f"{r['exact_query_s_per_256_at_end'] * 1000:,.0f} ms wall"
                + (f" ({cpu * 1000:,.0f} ms CPU)" if cpu is not None else "")
                + f", i.e. {r['exact_query_s_per_256_at_end'] / 256 * 1000:.2f} ms per row and growing linearly with "
                f"the index, against {1000 / r['samples_per_cpu_s']:.2f} CPU ms per row for the whole HNSW curator."
            )
    if "real_recall" in res:
        rr = res["real_recall"]
        lines.append(
            f"\nRecall on real embeddings (all Fashion-MNIST images, PCA-64, {rr['rows']:,} indexed, 1,000 held-out "
            f"queries): HNSW recall@4 = {rr['recall@4']:.3f} (index built in {rr['build_cpu_s']:.0f} CPU s)."
        )
    for r in res["runs"]:
        marks = [m for m in r.get("progress", []) if len(m) == 3]
        if len(marks) >= 2:
            seg = [
                f"{b[0] // 1000}k: {(b[0] - a[0]) / max(b[2] - a[2], 1e-9):,.0f}"
                for a, b in zip(marks, marks[1:], strict=False)
            ]
            lines.append(
                f"\n{r['index']} at {r['n']:,}: samples per CPU second over each 50k-row stretch, by index size "
                f"reached: {', '.join(seg)}."
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="fashion_mnist,mri")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--smoke", action="store_true", help="Fashion-MNIST only, 1,500 pool rows, 1 seed (< 60 s)"
    )
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--exact-max", type=int, default=100_000)
    p.add_argument("--add-threads", type=int, default=1)
    p.add_argument(
        "--time-limit", type=float, default=900.0, help="seconds per throughput run before stopping"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.throughput:
        res = throughput(
            [int(s) for s in args.sizes.split(",")], args.exact_max, 256, args.add_threads, args.time_limit
        )
        res["real_recall"] = real_recall()
        res["versions"] = versions()
        (args.out / "infogrowth_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
        md = throughput_md(res)
        (args.out / "infogrowth_throughput.md").write_text(md + "\n")
        print(md)
        return 0
    names = ["fashion_mnist"] if args.smoke else args.datasets.split(",")
    seeds = 1 if args.smoke else args.seeds
    runs = []
    for name in names:
        for seed in range(seeds):
            r = run_one(name, seed, args.smoke)
            runs.append(r)
            print(f"{name} seed {seed}: {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    md, summary = summarise(runs)
    stem = "infogrowth_smoke" if args.smoke else "infogrowth"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"runs": runs, "summary": summary, "versions": versions()}, indent=2, default=float) + "\n"
    )
    (args.out / f"{stem}.md").write_text(md + "\n")
    plot(runs, args.out / f"{stem}.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
