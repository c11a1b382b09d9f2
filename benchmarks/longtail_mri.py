"""Long-tail methods on real long-tailed sets: brain-region MRI patches (116 AAL classes, natural tail)
or long-tailed Fashion-MNIST (10 classes, ratio 100).

Every method of the registry (``hubtools.longtail.methods.METHODS``) trains the same tiny random-init
ResNet (transformers ``ResNetConfig``) through ``hubtools.longtail.trainer`` under MONICA's recipe
(``--recipe monica``: its crop / flip / rotation / colour-jitter augmentation, Adam without weight
decay, no schedule) scaled to what 2 CPU cores can run: images resized to ``--image-size`` 16,
``--epochs`` 12, batch 128, lr 1e-3 and no ImageNet weights. The recipe's flips are switched off
where they change the label: both on the MRI patches (the AAL regions come in left/right pairs, and
a mirrored patch of one looks like its twin), the vertical flip on Fashion-MNIST (upright garments). Methods whose papers train longer say so
in the registry (SAM: 1.8x the epochs). Second-stage and post-hoc methods start from the run their
registry entry names (``start_from``: erm, crt, mixup, ...) of the same seed and train the same
epochs on the frozen encoder, as in MONICA. A control row, ``erm_no_aug``, is ERM without the
augmentation. Methods that need a user option (``weighted_ce`` needs its weights) are skipped and
listed. The verdict flags a "budget insufficient" baseline (ERM's validation balanced accuracy, mean
over seeds and 3-epoch moving average, not within 5 % over its last 3 values), methods identical to
ERM on every seed (no-ops) and methods below half of ERM's balanced accuracy. 12 epochs: at 4 the
augmented ERM was still climbing (Fashion-MNIST-LT validation 45 -> 53 -> 53 -> 59 %); over 20
epochs it levels off from about epoch 8 at 65-72 %. Writes ``benchmarks/results/longtail_{mri,fmnist}.{json,md,png}`` through the shared harness
(:mod:`hubtools.bench`): the MONICA-style table (many/medium/few, group average, balanced accuracy,
top-1, mean ± sample sd over seeds), every method's paired difference from ERM with a bootstrap 95 %
CI, and per-class accuracy against class frequency.

    python benchmarks/longtail_mri.py --dataset mri    [--epochs 12] [--image-size 16] [--seeds 1 2 3] [--methods erm rs ...]
    python benchmarks/longtail_mri.py --dataset fmnist
    python benchmarks/longtail_mri.py --smoke          # erm, balanced_softmax, crt; 1 epoch; MRI: 20 of the 116 classes
    python benchmarks/longtail_mri.py --dataset fmnist --seeds 1 2 --reuse   # reuses identical finished runs

Needs Debian ``mricron-data`` (MRI) or ``dataset-fashion-mnist``; the set is built once under ``--work``.
Runs are cached under ``--work`` keyed on their full configuration, the long-tail code digest and the
library versions, so ``--reuse`` only ever picks up a run that the current code would reproduce.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

import hubtools.longtail.trainer as lt_trainer
from hubtools.bench import Benchmark, Run, arms_table, values_by_seed
from hubtools.bench.stats import budget_verdict, paired_by_seed
from hubtools.errors import ConfigError
from hubtools.longtail.trainer import LongTailTrainConfig, train_longtail

BACKBONE = {
    "model_type": "resnet",
    "options": {
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64],
        "depths": [1, 1, 1],
        "layer_type": "basic",
    },
}
BUILDS = {"mri": ("mri_patches", "mri_patches_lt"), "fmnist": ("fashion_mnist", "fashion_mnist_lt")}
SMOKE_METHODS = ["erm", "balanced_softmax", "crt"]
AUGMENTATION_OPTIONS = {"mri": {"hflip": False, "vflip": False}, "fmnist": {"vflip": False}}
CONTROLS = {"erm_no_aug": ("erm", "none")}  # arm -> (method, augmentation): ERM without the recipe's augmentation
# The modules whose code produces the numbers (building the two sets, training, scoring, saving and
# reloading first stages); the CLI, the demo, the multi-label and the MedMNIST/sheet builders do not.
TRAINING_CODE = [
    *(f"hubtools/longtail/{m}.py" for m in ("augment", "classifiers", "convert", "datasets", "experts", "losses",
                                            "methods", "metrics", "recipes", "samplers", "splits", "table",
                                            "trainer")),
    "hubtools/models/longtail_classifier", "hubtools/train", "hubtools/data/mri_patches.py",
]
BATCH_SIZE, LR = 128, 1e-3
RECIPE = "monica"
TITLES = {"mri": "MRI patches (116 AAL regions)", "fmnist": "Fashion-MNIST-LT (r = 100)"}
DATA = {
    "mri": "brain MRI patches cut from Debian mricron-data's MNI template by the AAL atlas: 116 region "
    "classes with their natural long tail (457 -> 6 train images)",
    "fmnist": "Fashion-MNIST from Debian dataset-fashion-mnist, train set made long-tailed with "
    "imbalance ratio 100 (5,500 -> 55 images per class); balanced test set",
}


_DECODED: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}


class DecodedOnce(lt_trainer.ImageTensors):
    """``ImageTensors`` decoded once per (split, image size) for the whole benchmark process.

    ``train_longtail`` decodes and resizes every image of all three splits on each call; over ~100
    runs of one set that was half of the benchmark's time (cProfile). The tensors are identical
    either way (read-only: batches are indexed copies), so the results do not change.
    """

    def __init__(self, split, image_size: int) -> None:
        key = (split._fingerprint, image_size)
        if key not in _DECODED:
            super().__init__(split, image_size)
            _DECODED[key] = (self.images, self.labels)
        self.images, self.labels = _DECODED[key]


def build_set(work: Path, dataset: str, smoke: bool) -> Path:
    """The built long-tail set under ``work`` (built once; deterministic from the Debian files)."""
    from hubtools.longtail.datasets import load, make_builder, prepare, save_build
    from hubtools.longtail.splits import LTProfile, groups_by_threshold

    name, folder_name = BUILDS[dataset]
    folder = work / folder_name
    if not (folder / "data").is_dir():
        builder = make_builder(name, None, -1, None, 1, work / "cache")
        save_build(folder, name, builder, prepare(builder, 1), builder.plan().profile)
    if not smoke or dataset != "mri":
        return folder
    small = work / "mri_patches_smoke"
    if not (small / "data").is_dir():
        ds, lt = load(folder)
        keep = [c for c in range(lt.num_classes) if c % 6 == 0]  # 20 classes across the whole tail
        remap = {c: i for i, c in enumerate(keep)}
        ds = ds.filter(lambda b: [x in remap for x in b["label"]], batched=True)
        ds = ds.map(lambda b: {"label": [remap[x] for x in b["label"]]}, batched=True)
        from datasets import ClassLabel

        ds = ds.cast_column("label", ClassLabel(names=[lt.class_names[c] for c in keep]))
        counts = np.bincount(ds["train"]["label"], minlength=len(keep)).tolist()
        ds.save_to_disk(str(small / "data"))
        head, medium = groups_by_threshold(counts)
        names = [lt.class_names[c] for c in keep]
        LTProfile(names, counts, counts[0] / counts[-1], head, medium, test_distribution="natural").to_json(
            small / "longtail" / "smoke.json"
        )
    return small


def runnable(methods: list[str], counts: list[int]) -> tuple[list[str], dict[str, str]]:
    """Methods whose loss builds from the class counts alone; the others with the reason."""
    from hubtools.longtail.methods import get_loss, get_method

    ok, skipped = [], {}
    for m in methods:
        if m in CONTROLS:
            ok.append(m)
            continue
        try:
            # the trainer passes num_epochs (LDAM-DRW and its users) and the few-group start (seql)
            params = inspect.signature(get_method(m).loss).parameters
            given = {k: v for k, v in (("num_epochs", 2), ("medium", 1)) if k in params}
            get_loss(m, counts, **given)
            ok.append(m)
        except (ConfigError, TypeError) as err:
            skipped[m] = str(err)
    return ok, skipped


class Runner:
    """Trains (method, seed) once; second stages pull their ``start_from`` run through the same cache.

    A run's cache key is its whole training configuration (including, for second stages, the key of
    the run it starts from) plus the harness's code digest and library versions.
    """

    def __init__(self, dataset: Path, args: argparse.Namespace, bench: Benchmark) -> None:
        self.dataset, self.args, self.bench = dataset, args, bench
        self.done: dict[tuple[str, int], dict] = {}

    def run(self, arm: str, seed: int) -> dict:
        from hubtools.longtail.methods import get_method

        if (arm, seed) in self.done:
            return self.done[(arm, seed)]
        method, augmentation = CONTROLS.get(arm, (arm, None))
        entry = get_method(method)
        second = entry.stage == 2 or entry.group == "post-hoc"
        stage1 = self.run(entry.start_from, seed) if second else None
        key = {
            "dataset": self.args.dataset,
            "smoke_subset": self.args.smoke and self.args.dataset == "mri",
            "method": method,
            "recipe": RECIPE,
            "augmentation": augmentation,
            "augmentation_options": {} if augmentation == "none" else AUGMENTATION_OPTIONS[self.args.dataset],
            "seed": seed,
            "epochs": self.args.epochs,
            "image_size": self.args.image_size,
            "backbone": BACKBONE,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "stage1": stage1["key"] if stage1 else None,
        }
        folder, saved = self.bench.cached(f"{self.args.dataset}-{arm}-s{seed}", key)
        if saved is not None and (Path(saved["folder"]) / "metrics.json").is_file():
            self.done[(arm, seed)] = saved
            return saved
        shutil.rmtree(folder, ignore_errors=True)
        cfg = LongTailTrainConfig(
            recipe=RECIPE,
            augmentation=augmentation,
            augmentation_options=key["augmentation_options"],
            dataset=str(self.dataset),
            method=method,
            backbone=BACKBONE,
            output_dir=folder / "run",
            image_size=self.args.image_size,
            num_epochs=key["epochs"],
            batch_size=BATCH_SIZE,
            lr=LR,
            seed=seed,
            stage1=Path(stage1["folder"]) if stage1 else None,
        )
        start = time.perf_counter()
        model = train_longtail(cfg)
        record = {"folder": str(model), "seconds": round(time.perf_counter() - start, 1),
                  "key": self.bench.cache_key(key)}
        Benchmark.save_record(folder, key, record, self.bench)
        self.done[(arm, seed)] = record
        test = json.loads((model / "metrics.json").read_text())["test"]
        print(
            f"{self.args.dataset} seed {seed} {arm}: balanced {test['balanced_acc']:.2f} "
            f"few {test['few_acc']:.2f} ({record['seconds']} s)",
            flush=True,
        )
        return record


# Methods allowed below half of ERM's balanced accuracy, with the reason the table states. Empty:
# every method must train under the default settings.
BELOW_HALF_REASONS: dict[str, str] = {}


def erm_curve(runner: Runner, seeds: list[int]) -> list[float]:
    """ERM's validation balanced accuracy after each epoch, mean over the seeds that ran."""
    curves = []
    for s in seeds:
        if ("erm", s) not in runner.done:
            continue
        log = Path(runner.done[("erm", s)]["folder"]).parent / "metrics.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        curves.append([r["val_balanced_acc"] for r in rows if "val_balanced_acc" in r])
    n = min((len(c) for c in curves), default=0)
    return np.mean([c[:n] for c in curves], axis=0).round(3).tolist() if n else []


def smoothed(curve: list[float], width: int = 3) -> list[float]:
    """Moving average over ``width`` epochs: with a constant learning rate the per-epoch validation
    accuracy of a converged model still swings by several points, which the plateau rule would read as
    "still changing"; the average of neighbouring epochs separates a trend from that noise."""
    if len(curve) < width:
        return []
    return np.convolve(curve, np.ones(width) / width, mode="valid").round(3).tolist()


def verdict(
    runs: list[Run], methods: list[str], dataset: str, curve: list[float] | None = None
) -> tuple[str, str, dict]:
    """Headline, verdict and per-method paired gains over ERM (balanced and few-shot accuracy).

    A method is *clearly* better than ERM when the paired bootstrap 95 % CI of its gain excludes
    zero on both balanced and few-shot accuracy; with one seed nothing is judged. ``curve`` is ERM's
    validation curve: when it has not plateaued the verdict starts with "budget insufficient".
    """
    gains: dict[str, dict] = {}
    for m in methods:
        if m == "erm":
            continue
        g = {}
        for k in ("balanced_acc", "few_acc"):
            d = paired_by_seed(values_by_seed(runs, m, k), values_by_seed(runs, "erm", k))
            g[k] = d.as_dict() if d else None
        gains[m] = g
    compared = [m for m in gains if m not in CONTROLS]  # a control row is never "the best method"
    if not compared:
        return "only ERM ran", "only ERM ran: no comparison.", {"gains_over_erm": gains}
    best = max(compared, key=lambda m: gains[m]["balanced_acc"]["mean"] if gains[m]["balanced_acc"] else -1e9)
    b, f = gains[best]["balanced_acc"], gains[best]["few_acc"]
    headline = (f"best balanced accuracy: {best}, {b['mean']:+.1f} points over ERM "
                f"(few-shot {f['mean']:+.1f}; {b['n']} paired seed(s))")
    judged = [m for m in compared if gains[m]["balanced_acc"] and gains[m]["balanced_acc"]["clear"] is not None]
    if not judged:
        text = headline + ". One seed only: no method is judged against seed noise."
        return headline, text, {"gains_over_erm": gains}
    clear = [m for m in judged if all(gains[m][k]["clear"] and gains[m][k]["mean"] > 0
                                      for k in ("balanced_acc", "few_acc"))]
    below = [m for m in judged if gains[m]["balanced_acc"]["clear"] and gains[m]["balanced_acc"]["mean"] < 0]
    noop = [m for m in compared if gains[m]["balanced_acc"] and gains[m]["balanced_acc"]["identical"]]
    text = headline + ". "
    for arm in (a for a in gains if a in CONTROLS):
        d = gains[arm]["balanced_acc"]
        text += (f"Control {arm} (ERM without the recipe's augmentation): {d['mean']:+.1f} balanced-accuracy "
                 f"points over ERM, 95 % CI [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]. ")
    trend = smoothed(curve or [])
    budget = budget_verdict(trend) if curve else None
    if budget:
        text += (f"{budget[0].upper()}{budget[1:]} (ERM validation balanced accuracy by epoch, mean over seeds: "
                 f"{curve}; 3-epoch moving average {trend}). ")
    elif curve:
        text += (f"ERM's validation balanced accuracy (mean over seeds, 3-epoch moving average) plateaued: its "
                 f"last 3 values {trend[-3:]} lie within 5 %. ")
    def mean_balanced(arm: str) -> float:
        values = list(values_by_seed(runs, arm, "balanced_acc").values())
        return float(np.mean(values)) if values else float("nan")

    collapsed = [m for m in compared if mean_balanced(m) < 0.5 * mean_balanced("erm")]
    if clear:
        text += (f"Above ERM on both balanced and few-shot accuracy with the paired 95 % CI excluding zero "
                 f"on {dataset} ({len(clear)} of {len(judged)}): {', '.join(clear)}. ")
    else:
        text += f"No method is above ERM on both balanced and few-shot accuracy beyond seed noise on {dataset}. "
    if below:
        text += f"Below ERM in balanced accuracy beyond seed noise: {', '.join(below)}. "
    if noop:
        text += f"Identical to ERM on every seed (no-op, a bug to look at): {', '.join(noop)}. "
    unexplained = [m for m in collapsed if m not in BELOW_HALF_REASONS]
    if collapsed:
        text += "Below half of ERM's balanced accuracy: " + ", ".join(
            f"{m} ({BELOW_HALF_REASONS.get(m, 'no stated reason: a defect')})" for m in collapsed
        ) + ". "
    else:
        text += "No method is below half of ERM's balanced accuracy. "
    checks = {"budget": budget, "erm_val_curve": curve, "erm_val_trend": trend, "below_half": collapsed,
              "below_half_unexplained": unexplained, "noop": noop}
    return headline, text.strip(), {"gains_over_erm": gains, "checks": checks}


def write_results(
    bench: Benchmark, runner: Runner, methods: list[str], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    from hubtools.longtail.table import HEADERS, TABLE_KEYS, load_run

    keys = (*TABLE_KEYS, "macro_auprc")
    order = ["erm"] + [m for m in methods if m != "erm"]
    runs: list[Run] = []
    loaded = {}
    for m in order:
        for s in args.seeds:
            if (m, s) in runner.done:
                r = loaded[(m, s)] = load_run(runner.done[(m, s)]["folder"])
                runs.append(Run(arm=m, seed=s, metrics={k: r.test.get(k) for k in keys},
                                extra={"per_class_recall": r.test["per_class_recall"],
                                       "seconds": runner.done[(m, s)]["seconds"]}))
    first = next(iter(loaded.values()))
    counts = first.cls_num_list
    headline, text, judged = verdict(runs, order, args.dataset, erm_curve(runner, args.seeds))
    from hubtools.longtail.methods import METHODS

    families = {m: "control" if m in CONTROLS else METHODS[m].group for m in order}
    monica = arms_table(runs, keys, baseline="erm", arms=order, digits=1, labels=HEADERS,
                        diff_metrics=["balanced_acc", "few_acc"], title="All metrics (test %)",
                        extra_columns={"family": families})
    plotted = [m for m in ("erm", "rs", "balanced_softmax", "ldam_drw", "crt", "la_posthoc") if m in order]
    series = []
    for m in plotted:
        recalls = np.array([r.extra["per_class_recall"] for r in runs if r.arm == m], dtype=float)
        series.append({"label": m, "x": counts, "y": np.nanmean(recalls, axis=0).round(3).tolist()})
    figure = {
        "file": f"{args.name}.png",
        "title": f"{TITLES[args.dataset]}: per-class test accuracy against class frequency",
        "panels": [{"kind": "scatter", "xscale": "log", "series": series,
                    "xlabel": "train images of the class (log scale)", "ylabel": "test recall (%)"}],
    }
    config = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "epochs_scale": {m: METHODS[m].epochs_scale for m in order if m in METHODS and METHODS[m].epochs_scale != 1},
        "image_size": args.image_size,
        "backbone": BACKBONE,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "classes": len(counts),
        "cls_num_list": counts,
        "groups": [first.head, first.medium],
        "torch_threads": torch.get_num_threads(),
        "methods": order,
        "families": families,
        "recipe": RECIPE,
        "augmentation_options": AUGMENTATION_OPTIONS[args.dataset],
        "controls": {arm: {"method": m, "augmentation": a} for arm, (m, a) in CONTROLS.items() if arm in order},
    }
    bench.write(
        args.name,
        title=f"Long-tail methods on {TITLES[args.dataset]}",
        data=DATA[args.dataset] + (" (smoke: 20 of the 116 classes)" if args.smoke and args.dataset == "mri" else ""),
        config=config,
        runs=runs,
        tables=[monica],
        figures=[figure],
        headline=headline,
        verdict=text,
        details={**judged, "skipped": skipped},
        seeds=sorted({s for (_, s) in runner.done}),
    )


def main(argv: list[str] | None = None) -> None:
    from hubtools.longtail.methods import METHODS

    bench = Benchmark(
        "longtail_mri",
        title="Long-tail methods",
        capability="longtail",
        code=[*TRAINING_CODE, "hubtools/data/offline.py", "dataset_scripts/mri_patches", "dataset_scripts/fashion_mnist"],
        default_seeds=[1, 2, 3],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--dataset", choices=sorted(BUILDS), default="mri")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS) + list(CONTROLS),
        help="default: every registered method and the control " + ", ".join(CONTROLS),
    )
    parser.add_argument("--image-size", type=int, default=16)
    args = bench.parse(parser, argv)
    torch.set_num_threads(1)  # the 2 cores are shared: 2 threads beside another busy process run slower
    lt_trainer.ImageTensors = DecodedOnce  # train_longtail looks the class up at call time
    if args.smoke:
        args.epochs, args.methods = 1, SMOKE_METHODS
    args.name = f"longtail_{args.dataset}"
    dataset = build_set(args.work, args.dataset, args.smoke)
    from hubtools.longtail.datasets import load

    _, lt = load(dataset)
    methods, skipped = runnable(["erm"] + [m for m in args.methods if m != "erm"], lt.cls_num_list)
    for m, why in skipped.items():
        print(f"skipped {m}: {why}", flush=True)
    runner = Runner(dataset, args, bench)
    for seed in args.seeds:
        for method in methods:
            try:
                runner.run(method, seed)
            except Exception as err:  # one broken method must not cost the other results; it is reported
                skipped[method] = f"failed (seed {seed}): {type(err).__name__}: {err}"
                print(f"FAILED {method} seed {seed}: {err!r}", flush=True)
        write_results(bench, runner, methods, skipped, args)  # after every seed, so a cut-short run still reports


if __name__ == "__main__":
    main()
