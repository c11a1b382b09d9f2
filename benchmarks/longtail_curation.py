"""InfoGrowth curation of a long-tailed set with noisy labels: MRI-LT with 20 % of the train labels flipped.

The long-tailed set is the one ``benchmarks/longtail_mri.py`` trains on (brain-MRI patches cut from Debian
``mricron-data`` by the AAL atlas: 116 region classes with their natural long tail, 457 -> 6 train images),
built by the same code. Per seed, 20 % of the TRAIN labels are flipped symmetrically (y -> y + U{1..C-1}
mod C, so every class receives flipped rows, the rarest ones many times their own size); validation and
test stay clean. Arms, all trained by the same ERM recipe as the long-tail benchmark (its tiny random-init
ResNet, MONICA's augmentation without flips, Adam lr 1e-3, batch 128, 16 px, ``--epochs`` 12):

- ``uncurated``: the noisy train split as built (the baseline every difference is paired against);
- ``curated``: ``hubtools longtail build --infogrowth`` defaults (:func:`hubtools.longtail.curation.curate_split`):
  the clean validation split is the trusted seed, PCA-64 of the seed images the encoder, the probe cleaner
  at a 5 % clean-loss target, budget 1.0 (every row the cleaner kept), tail floor 20;
- ``curated@0.5``: the same curation, then a gain-weighted draw of half the train rows after the floor;
- ``clean oracle``: the train split without flipped labels (what cleaning could reach at best).

Reported: test balanced accuracy and many/medium/few-shot accuracy (groups of the clean set: many > 100,
few < 20 train images) with the paired difference from ``uncurated`` per seed and its bootstrap 95 % CI;
classes kept, flipped labels removed %, clean rows lost %, the flipped share left in train, and per group
the clean rows lost (by true class) and the flipped rows removed (by given label). Acceptance: the
``curated`` split keeps every class on every seed and its few-shot accuracy is not below the uncurated
one (paired mean difference >= 0 over the 3 seeds). ERM's validation curve on the uncurated arm is checked
for a plateau as in the long-tail benchmark: 12 epochs is that benchmark's budget, and when the curve has
not levelled off the verdict says "budget insufficient".

    python benchmarks/longtail_curation.py                      # seeds 1 2 3, ~15 min on 2 cores
    python benchmarks/longtail_curation.py --seeds 1 --reuse    # reuses identical finished curations and runs
    python benchmarks/longtail_curation.py --smoke              # 20 of the 116 classes, 1 epoch, seed 1 (< 60 s)

Needs Debian ``mricron-data``. Curated sets and training runs are cached under ``--work`` keyed on their
configuration, the code digest (long-tail training code, InfoGrowth, the curation step) and the library
versions, so ``--reuse`` only picks up what the current code would reproduce. Results:
``benchmarks/results/longtail_curation.{json,md,png}`` (``--smoke`` writes to a temporary folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# One BLAS/OpenMP thread, set before numpy loads: the cleaner's logistic-regression fits are small, and on
# a shared 2-core machine extra threads only spin (a curation took 2x longer with threadpool_limits(1) alone,
# which does not reach scipy's L-BFGS-B).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import longtail_mri as ltm  # noqa: E402  (the long-tail benchmark: its set, model and ERM recipe)

import hubtools.longtail.trainer as lt_trainer  # noqa: E402
from hubtools.bench import Benchmark, Run, arms_table, values_by_seed  # noqa: E402
from hubtools.bench.stats import budget_verdict, fmt_diff, paired_by_seed  # noqa: E402

NOISE = 0.2
BASELINE, CURATED, ORACLE = "uncurated", "curated", "clean oracle"
GROUPS = ("many", "medium", "few")
ACC_KEYS = ("balanced_acc", "many_acc", "medium_acc", "few_acc", "top1")
LABELS = {
    "balanced_acc": "balanced acc %",
    "many_acc": "many %",
    "medium_acc": "medium %",
    "few_acc": "few %",
    "top1": "top-1 %",
}
CODE = [
    *ltm.TRAINING_CODE,
    "hubtools/longtail/curation.py",
    "hubtools/data/infogrowth.py",
    "hubtools/data/offline.py",
    "dataset_scripts/mri_patches",
    "benchmarks/longtail_mri.py",
]
DATA = (
    "brain-MRI patches (Debian mricron-data, ch2 T1 cut by the AAL atlas; the set benchmarks/longtail_mri.py "
    "builds): 116 region classes, natural long tail 457 -> 6 train images; 20 % of the train labels flipped "
    "symmetrically per seed, validation and test clean"
)


def save_set(folder: Path, ds: Any, lt: Any) -> Path:
    """A folder ``hubtools.longtail.datasets.load`` reads: ``data/`` and one profile."""
    if (folder / "data").is_dir():
        shutil.rmtree(folder)
    ds.save_to_disk(str(folder / "data"))
    lt.to_json(folder / "longtail" / "profile.json")
    return folder


def noisy_labels(y: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """20 % symmetric flips: y -> y + U{1..C-1} mod C for a seeded Bernoulli(NOISE) choice of rows."""
    rng = np.random.default_rng([seed, 20])
    flip = rng.random(len(y)) < NOISE
    out = y.copy()
    out[flip] = (y[flip] + rng.integers(1, n_classes, int(flip.sum()))) % n_classes
    return out, flip


def train_hash(ds: Any) -> str:
    """What a run's train split is: its row ids and labels (cache key of the data an arm trains on)."""
    h = hashlib.sha256()
    h.update("\n".join(ds["train"]["source_id"]).encode())
    h.update(np.asarray(ds["train"]["label"], np.int64).tobytes())
    return h.hexdigest()[:16]


def curation_stats(
    lt: Any, ids: list[str], y_true: np.ndarray, y_given: np.ndarray, flip: np.ndarray, kept_ids: list[str]
) -> dict[str, float]:
    """Cleaning quality from the known flips: removed / lost shares overall and per group."""
    kept = np.isin(np.asarray(ids), np.asarray(kept_ids))
    groups = np.asarray(lt.groups())

    def pct(mask: np.ndarray) -> float | None:  # share of the rows in mask (None: no such rows)
        return 100 * float(mask.mean()) if mask.size else None

    out = {
        "train_rows": int(kept.sum()),
        "classes_kept": int(len(np.unique(y_given[kept]))),
        "noisy_removed": pct(~kept[flip]),
        "clean_lost": pct(~kept[~flip]),
        "noise_share": pct(flip[kept]),
    }
    for gi, g in enumerate(GROUPS):
        out[f"{g}_clean_lost"] = pct(~kept[~flip & (groups[y_true] == gi)])
        out[f"{g}_noisy_removed"] = pct(~kept[flip & (groups[y_given] == gi)])
        out[f"{g}_removed"] = pct(~kept[groups[y_given] == gi])
    return out


class Arms:
    """Builds each seed's noisy and curated sets and trains every arm once (cached under ``--work``)."""

    def __init__(self, clean: Path, args: Any, bench: Benchmark) -> None:
        from hubtools.longtail.datasets import load

        self.args, self.bench, self.clean = args, bench, clean
        self.ds, self.lt = load(clean)
        self.y = np.asarray(self.ds["train"]["label"], np.int64)
        self.ids = list(self.ds["train"]["source_id"])
        self.records: dict[tuple[str, int], dict] = {}

    def sets(self, seed: int) -> dict[str, tuple[Path, dict[str, float], dict | None]]:
        """arm -> (dataset folder, curation stats, curation record summary) for one seed."""
        from hubtools.longtail.curation import curate_split, replace_train

        C = self.lt.num_classes
        y_noisy, flip = noisy_labels(self.y, C, seed)
        train = self.ds[
            "train"
        ].map(
            lambda b, idx: {"label": y_noisy[idx].tolist()},
            batched=True,
            with_indices=True,
            features=self.ds["train"].features,
            keep_in_memory=True,  # never a cache file beside the clean set that a later code change would reuse
            load_from_cache_file=False,
            new_fingerprint=f"noisy-{train_hash(self.ds)}-{seed}",
        )
        noisy_ds, noisy_lt = replace_train(
            self.ds, self.lt, train, f"{NOISE:.0%} of train labels flipped (seed {seed})."
        )
        root = self.args.work / "data" / ("smoke" if self.args.smoke else "full") / f"s{seed}"
        out = {
            BASELINE: (
                save_set(root / "uncurated", noisy_ds, noisy_lt),
                curation_stats(self.lt, self.ids, self.y, y_noisy, flip, self.ids),
                None,
            ),
            ORACLE: (
                self.clean,
                curation_stats(self.lt, self.ids, self.y, self.y, np.zeros_like(flip), self.ids),
                None,
            ),
        }
        for budget in [1.0, *self.args.budgets]:
            arm = CURATED if budget == 1.0 else f"{CURATED}@{budget:g}"
            key = {
                "seed": seed,
                "noise": NOISE,
                "budget": budget,
                "smoke": self.args.smoke,
                "data": train_hash(noisy_ds),
            }
            folder, saved = self.bench.cached(f"curate-b{budget:g}-s{seed}", key)
            if saved is None or not (Path(saved["folder"]) / "data").is_dir():
                t0 = time.perf_counter()
                cur, record = curate_split(noisy_ds, self.lt, budget=budget, seed=seed)
                cur_ds, cur_lt = replace_train(noisy_ds, self.lt, cur, "Train split curated by InfoGrowth.")
                save_set(folder / "set", cur_ds, cur_lt)
                (folder / "infogrowth.json").write_text(json.dumps(record, default=str) + "\n")
                saved = {
                    "folder": str(folder / "set"),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "summary": {
                        "delta": record["delta"],
                        "counts": record["counts"],
                        "classes": record["classes"],
                        "per_group": record["per_group"],
                        "encoder_id": record["settings"]["encoder_id"],
                        "borrowed_seed_rows": record["seed"]["borrowed_train_rows"],
                    },
                }
                Benchmark.save_record(folder, key, saved, self.bench)
                print(
                    f"seed {seed} {arm}: curated in {saved['seconds']} s, delta {record['delta']:.4g}",
                    flush=True,
                )
            from hubtools.longtail.datasets import load

            kept_ids = list(load(saved["folder"])[0]["train"]["source_id"])
            stats = curation_stats(self.lt, self.ids, self.y, y_noisy, flip, kept_ids)
            out[arm] = (Path(saved["folder"]), stats | {"curate_seconds": saved["seconds"]}, saved["summary"])
        return out

    def train(self, arm: str, seed: int, folder: Path) -> dict:
        """ERM on ``folder`` with the long-tail benchmark's recipe; the run's test metrics and log path."""
        from hubtools.longtail.datasets import load
        from hubtools.longtail.trainer import LongTailTrainConfig, train_longtail

        key = {
            "arm": arm,
            "data": train_hash(load(folder)[0]),
            "method": "erm",
            "recipe": ltm.RECIPE,
            "augmentation_options": ltm.AUGMENTATION_OPTIONS["mri"],
            "seed": seed,
            "epochs": self.args.epochs,
            "image_size": self.args.image_size,
            "backbone": ltm.BACKBONE,
            "batch_size": ltm.BATCH_SIZE,
            "lr": ltm.LR,
        }
        run_folder, saved = self.bench.cached(f"train-{arm.replace(' ', '_').replace('@', 'b')}-s{seed}", key)
        if saved is not None and (Path(saved["folder"]) / "metrics.json").is_file():
            return saved
        shutil.rmtree(run_folder, ignore_errors=True)
        cfg = LongTailTrainConfig(
            recipe=ltm.RECIPE,
            augmentation_options=key["augmentation_options"],
            dataset=str(folder),
            method="erm",
            backbone=ltm.BACKBONE,
            output_dir=run_folder / "run",
            image_size=self.args.image_size,
            num_epochs=self.args.epochs,
            batch_size=ltm.BATCH_SIZE,
            lr=ltm.LR,
            seed=seed,
        )
        start = time.perf_counter()
        model = train_longtail(cfg)
        record = {"folder": str(model), "seconds": round(time.perf_counter() - start, 1)}
        Benchmark.save_record(run_folder, key, record, self.bench)
        test = json.loads((model / "metrics.json").read_text())["test"]
        print(
            f"seed {seed} {arm}: balanced {test['balanced_acc']:.2f} few {test['few_acc']:.2f} "
            f"({record['seconds']} s)",
            flush=True,
        )
        return record


def val_curve(folder: str) -> list[float]:
    log = Path(folder).parent / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r["val_balanced_acc"] for r in rows if "val_balanced_acc" in r]


def tables_and_verdict(
    runs: list[Run], arms: list[str], curves: list[list[float]]
) -> tuple[list, str, str, dict]:
    accuracy = arms_table(
        runs,
        list(ACC_KEYS),
        baseline=BASELINE,
        arms=arms,
        digits=1,
        labels=LABELS,
        diff_metrics=["balanced_acc", "many_acc", "medium_acc", "few_acc"],
        title="Test accuracy (%) of ERM on each train split",
    )
    stat_keys = ["train_rows", "classes_kept", "noisy_removed", "clean_lost", "noise_share"]
    cleaning = arms_table(
        runs,
        stat_keys,
        baseline=BASELINE,
        arms=arms,
        digits=1,
        labels={
            "train_rows": "train rows",
            "classes_kept": "classes kept",
            "noisy_removed": "flipped labels removed %",
            "clean_lost": "clean rows lost %",
            "noise_share": "flipped share left %",
        },
        diff_metrics=[],
        title="What each train split holds (flipped labels are known, so removal is measured, not estimated)",
    )
    group_keys = [f"{g}_{k}" for g in GROUPS for k in ("clean_lost", "noisy_removed", "removed")]
    per_group = arms_table(
        runs,
        group_keys,
        baseline=BASELINE,
        arms=[a for a in arms if a.startswith(CURATED)],
        digits=1,
        labels={
            f"{g}_{k}": f"{g}: {t}"
            for g in GROUPS
            for k, t in (
                ("clean_lost", "clean lost %"),
                ("noisy_removed", "flipped removed %"),
                ("removed", "all removed %"),
            )
        },
        diff_metrics=[],
        title="Per group: clean rows lost (by true class), flipped rows removed (by given label), all rows removed",
    )

    def diff(arm: str, key: str) -> dict | None:
        d = paired_by_seed(values_by_seed(runs, arm, key), values_by_seed(runs, BASELINE, key))
        return d.as_dict() if d else None

    diffs = {a: {k: diff(a, k) for k in ACC_KEYS[:4]} for a in arms if a != BASELINE}
    seeds = sorted({r.seed for r in runs if r.arm == CURATED})
    n_classes = max(r.metrics["classes_kept"] for r in runs if r.arm in (BASELINE, ORACLE))
    kept_all = all(r.metrics["classes_kept"] == n_classes for r in runs if r.arm == CURATED)
    few, bal = diffs[CURATED]["few_acc"], diffs[CURATED]["balanced_acc"]
    passed = kept_all and few is not None and few["mean"] >= 0
    cur = [r.metrics for r in runs if r.arm == CURATED]
    headline = (
        f"InfoGrowth-curated train vs uncurated (20 % flipped labels), {len(seeds)} paired seed(s): balanced "
        f"{fmt_diff(paired_by_seed(values_by_seed(runs, CURATED, 'balanced_acc'), values_by_seed(runs, BASELINE, 'balanced_acc')), 1)}, "
        f"few-shot {fmt_diff(paired_by_seed(values_by_seed(runs, CURATED, 'few_acc'), values_by_seed(runs, BASELINE, 'few_acc')), 1)} "
        f"points; classes kept {min(m['classes_kept'] for m in cur)}/{n_classes}"
    )
    text = (
        f"Acceptance (the curated split keeps every class and does not lower few-shot accuracy, paired over seeds): "
        f"{'PASS' if passed else 'FAIL'}. The curated split keeps "
        f"{'every class on every seed' if kept_all else 'NOT every class'}; it removes "
        f"{np.mean([m['noisy_removed'] for m in cur]):.1f} % of the flipped labels and loses "
        f"{np.mean([m['clean_lost'] for m in cur]):.1f} % of the clean rows, leaving "
        f"{np.mean([m['noise_share'] for m in cur]):.1f} % flipped labels in train (uncurated: "
        f"{np.mean([r.metrics['noise_share'] for r in runs if r.arm == BASELINE]):.1f} %). "
    )
    for arm in arms:
        if arm == BASELINE:
            continue
        parts = []
        for k in ("balanced_acc", "few_acc"):
            d = diffs[arm][k]
            if d is None:
                continue
            verdict = (
                "no CI (one seed)"
                if d["clear"] is None
                else ("above beyond seed noise" if d["mean"] > 0 else "below beyond seed noise")
                if d["clear"]
                else "within seed noise"
            )
            ci = "" if d["ci_low"] is None else f" [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
            parts.append(f"{LABELS[k]} {d['mean']:+.1f}{ci} ({verdict})")
        text += f"{arm} vs uncurated: {'; '.join(parts)}. "
    n = min((len(c) for c in curves), default=0)
    curve = np.mean([c[:n] for c in curves], axis=0).round(3).tolist() if n else []
    trend = ltm.smoothed(curve)
    budget = budget_verdict(trend) if curve else None
    if budget:
        text += (
            f"{budget[0].upper()}{budget[1:]} (uncurated ERM validation balanced accuracy by epoch, mean over "
            f"seeds: {curve}; 3-epoch moving average {trend}): all arms train the same {n} epochs, so the "
            "comparison is budget-limited."
        )
    elif curve:
        text += f"The uncurated ERM validation curve plateaued (3-epoch moving average {trend})."
    details = {
        "paired_diffs_vs_uncurated": diffs,
        "acceptance": {
            "passed": passed,
            "classes_kept_every_seed": kept_all,
            "few_shot_diff": few,
            "balanced_diff": bal,
        },
        "checks": {"budget": budget, "uncurated_val_curve": curve, "uncurated_val_trend": trend},
    }
    return [accuracy, cleaning, per_group], headline, text.strip(), details


def figure(runs: list[Run], arms: list[str], name: str) -> dict:
    def mean_sd(arm: str, key: str) -> tuple[float | None, float | None]:
        v = list(values_by_seed(runs, arm, key).values())
        return (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None) if v else (None, None)

    acc = []
    for arm in arms:
        pts = [mean_sd(arm, k) for k in ("balanced_acc", "many_acc", "medium_acc", "few_acc")]
        acc.append(
            {
                "label": arm,
                "x": ["balanced", "many", "medium", "few"],
                "y": [p[0] for p in pts],
                "yerr": [p[1] for p in pts],
            }
        )
    clean = []
    for arm in (a for a in arms if a.startswith(CURATED)):
        for kind, title in (("clean_lost", "clean lost"), ("noisy_removed", "flipped removed")):
            clean.append(
                {
                    "label": f"{arm}: {title}",
                    "x": list(GROUPS),
                    "y": [mean_sd(arm, f"{g}_{kind}")[0] for g in GROUPS],
                }
            )
    return {
        "file": f"{name}.png",
        "title": "MRI-LT with 20 % flipped train labels: ERM test accuracy by train split, and what curation removed",
        "panels": [
            {"kind": "bar", "title": "test accuracy (mean ± sd over seeds)", "ylabel": "%", "series": acc},
            {"kind": "bar", "title": "curation by group", "ylabel": "% of rows", "series": clean},
        ],
    }


def main(argv: list[str] | None = None) -> None:
    bench = Benchmark(
        "longtail_curation",
        title="InfoGrowth curation of a long-tailed set with noisy labels",
        capability="longtail",
        code=CODE,
        default_seeds=[1, 2, 3],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="*",
        default=[0.5],
        help="extra curated arms at these budgets (fractions of the train rows); default 0.5",
    )
    args = bench.parse(parser, argv)
    torch.set_num_threads(1)  # the 2 cores are shared: 2 threads beside another busy process run slower
    lt_trainer.ImageTensors = ltm.DecodedOnce  # train_longtail looks the class up at call time
    if args.smoke:
        args.epochs, args.budgets = 1, []
    clean = ltm.build_set(args.work, "mri", args.smoke)
    arms_data = Arms(clean, args, bench)
    arms = [BASELINE, CURATED, *(f"{CURATED}@{b:g}" for b in args.budgets), ORACLE]
    runs: list[Run] = []
    curves = []
    summaries: dict[str, dict] = {}
    for seed in args.seeds:
        sets = arms_data.sets(seed)
        for arm in arms:
            folder, stats, summary = sets[arm]
            rec = arms_data.train(arm, seed, folder)
            test = json.loads((Path(rec["folder"]) / "metrics.json").read_text())["test"]
            runs.append(
                Run(
                    arm=arm,
                    seed=seed,
                    metrics={**{k: test[k] for k in ACC_KEYS}, **stats},
                    extra={"train_seconds": rec["seconds"]},
                )
            )
            if summary is not None:
                summaries[f"{arm} seed {seed}"] = summary
            if arm == BASELINE:
                curves.append(val_curve(rec["folder"]))
        done = [s for s in args.seeds if any(r.seed == s for r in runs)]
        tables, headline, verdict, details = tables_and_verdict(runs, arms, curves)
        lt = arms_data.lt
        bench.write(
            "longtail_curation",
            data=DATA + (" (smoke: 20 of the 116 classes)" if args.smoke else ""),
            config={
                "noise": NOISE,
                "noise_kind": "symmetric: y -> y + U{1..C-1} mod C on a seeded Bernoulli(0.2) choice of train rows",
                "arms": arms,
                "budgets": [1.0, *args.budgets],
                "curation": "curate_split defaults: seed split validation, encoder PCA-64 of the seed images, "
                "probe cleaner (clean_loss 0.05), dup_eps 1e-4, k 4, hnsw, min_per_class 20, "
                "min_seed_per_class 5 (tail classes topped up from train), seed = run seed",
                "method": "erm",
                "epochs": args.epochs,
                "image_size": args.image_size,
                "backbone": ltm.BACKBONE,
                "batch_size": ltm.BATCH_SIZE,
                "lr": ltm.LR,
                "recipe": ltm.RECIPE,
                "augmentation_options": ltm.AUGMENTATION_OPTIONS["mri"],
                "classes": lt.num_classes,
                "groups": [lt.head, lt.medium],
                "cls_num_list": lt.cls_num_list,
                "torch_threads": torch.get_num_threads(),
            },
            runs=runs,
            tables=tables,
            figures=[figure(runs, arms, "longtail_curation")],
            headline=headline,
            verdict=verdict,
            details={**details, "curation_records": summaries},
            seeds=done,
        )


if __name__ == "__main__":
    main()
