"""How fast do the long-tail builders write a dataset, compared with only decoding its images?

Two sources, each built with the real ``dataset_scripts`` builder into a fresh Arrow cache:

- **MRI patches** (real: Debian mricron-data, default grid, 23,133 32x32 patches). Its limit
  is a bare loop doing the unavoidable work: cut the patches (``load_mri_patches``) and
  PNG-encode each one with Pillow, as the Image feature does.
- **ISIC-format folder** (synthetic: ``--isic-images`` JPEGs in the ISIC 2019 layout, GT and
  metadata CSVs, class sizes in ISIC 2019's proportions). The pixels are 128x128 crops of the
  real fundus photo shipped with scikit-image, so JPEG decoding costs what real photos cost;
  all images are written (natural ratio, 50/100 held out per class). Its limit is a bare
  loop that reads and fully decodes the same files with Pillow; the builder does that
  too (to reject damaged files) and then writes Arrow.

Each build runs with ``num_proc`` 1 and 2, ``--repeats`` times (limits and builds interleaved per
round); every round is one run (seed = the round's index; ``--seeds`` is not used) and the tables give
the median and spread: rows/s, seconds, Arrow bytes on disk, and the ratio build/limit of the same
round (1.0 = as fast as only decoding). Writes ``build_throughput.{json,md,png}`` through the shared harness.

    python benchmarks/build_throughput.py [--isic-images 20000] [--repeats 3]
    python benchmarks/build_throughput.py --smoke    # coarse MRI grid, 400 ISIC images, num_proc 1, one round

Work files (the ISIC folder, the Arrow caches) go to a temporary folder under ``--work`` and are removed.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hubtools.bench import Benchmark, Run, Table
from hubtools.bench.stats import mean_sd

SOURCES = {"mri_patches": "MRI patches (real)", "isic_folder": "ISIC-format JPEGs"}
ISIC_2019_COUNTS = {
    "NV": 12875,
    "MEL": 4522,
    "BCC": 3323,
    "BKL": 2624,
    "AK": 867,
    "SCC": 628,
    "VASC": 253,
    "DF": 239,
}
GT_COLUMNS = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.arrow"))


def make_isic_folder(
    root: Path, n_images: int, size: int = 128, seed: int = 0, min_per_class: int = 160
) -> int:
    """ISIC 2019 layout with ``n_images`` JPEGs cropped from the real scikit-image retina photo."""
    import csv

    from PIL import Image
    from skimage.data import retina

    photo = retina()
    rng = np.random.default_rng(seed)
    total = sum(ISIC_2019_COUNTS.values())
    counts = {c: max(min_per_class, round(n * n_images / total)) for c, n in ISIC_2019_COUNTS.items()}
    counts["NV"] += n_images - sum(counts.values())
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    rows, meta, k = [], [], 0
    for cls, count in counts.items():
        for _ in range(count):
            y, x = rng.integers(200, photo.shape[0] - 2 * size - 200, 2)
            crop = photo[y : y + 2 * size, x : x + 2 * size]
            buf = io.BytesIO()
            Image.fromarray(crop).resize((size, size)).save(buf, format="JPEG", quality=90)
            image_id = f"ISIC_{k:07d}"
            (images / f"{image_id}.jpg").write_bytes(buf.getvalue())
            rows.append([image_id] + [f"{float(c == cls):.1f}" for c in GT_COLUMNS[1:]])
            meta.append([image_id, f"IL_{k // 3:07d}"])
            k += 1
    for name, header, data in (
        ("ISIC_2019_Training_GroundTruth.csv", GT_COLUMNS, rows),
        ("ISIC_2019_Training_Metadata.csv", ["image", "lesion_id"], meta),
    ):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(data)
    return k


def time_build(name: str, source: Path | None, cache: Path, num_proc: int, **config: object) -> dict:
    from hubtools.longtail.datasets import make_builder, prepare

    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    builder = make_builder(name, source, cache_dir=cache, **config)
    ds = prepare(builder, num_proc)
    seconds = time.perf_counter() - t0
    rows = sum(d.num_rows for d in ds.values())
    return {
        "num_proc": num_proc,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "arrow_bytes": folder_bytes(cache),
    }


def mri_limit(slice_step: int) -> dict:
    from PIL import Image

    from hubtools.data.mri_patches import load_mri_patches

    t0 = time.perf_counter()
    m = load_mri_patches(patch_size=32, stride=4, slices=slice(None, None, slice_step))
    for img in m.images:
        Image.fromarray(img).save(io.BytesIO(), format="PNG")
    seconds = time.perf_counter() - t0
    return {"rows": len(m.labels), "seconds": seconds, "rows_per_s": len(m.labels) / seconds}


def isic_limit(root: Path) -> dict:
    from PIL import Image

    files = sorted((root / "ISIC_2019_Training_Input").glob("*.jpg"))
    t0 = time.perf_counter()
    for path in files:
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            im.load()
    seconds = time.perf_counter() - t0
    return {"rows": len(files), "seconds": seconds, "rows_per_s": len(files) / seconds}


def run(isic_images: int, smoke: bool, repeats: int, work: Path) -> tuple[list[Run], dict]:
    """One run per (source, arm, round): the decode-only limit and each num_proc build."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    slice_step = 16 if smoke else 4
    procs = (1,) if smoke else (1, 2)
    details: dict = {
        "load_avg_1min_at_start": os.getloadavg()[0],
        "mri_grid": f"32 px, stride 4, every {slice_step}th axial slice",
        "seeds": "each run's seed is its round index (0, 1, ...); --seeds is not used",
    }
    src = work / "isic"
    t0 = time.perf_counter()
    n = make_isic_folder(src, isic_images, min_per_class=20 if smoke else 160)
    details["isic_folder"] = {
        "images": n,
        "jpeg_px": 128,
        "make_s": round(time.perf_counter() - t0, 2),
        "jpeg_bytes": sum(p.stat().st_size for p in src.rglob("*.jpg")),
    }
    quotas = {"val_per_class": 5, "test_per_class": 10} if smoke else {}
    runs: list[Run] = []
    for r in range(repeats):
        for source in SOURCES:
            if source == "mri_patches":
                limit = mri_limit(slice_step)
                builds = [time_build("mri_patches", None, work / "mri-cache", p, slice_step=slice_step)
                          for p in procs]
            else:
                limit = isic_limit(src)
                builds = [time_build("isic2019", src, work / "isic-cache", p, ratio=0, expected_train_counts=(),
                                     **quotas) for p in procs]
            runs.append(Run(arm=f"{source}/limit", seed=r, metrics=limit))
            for b in builds:
                b["vs_limit"] = b["rows_per_s"] / limit["rows_per_s"]
                runs.append(Run(arm=f"{source}/build_np{b.pop('num_proc')}", seed=r, metrics=b))
            print(f"round {r} {source}: limit {limit['rows_per_s']:.0f} rows/s; "
                  + ", ".join(f"{x.arm.split('/')[1]} {x.metrics['rows_per_s']:.0f} rows/s "
                              f"({x.metrics['vs_limit']:.2f} x limit)" for x in runs[-len(builds):]), flush=True)
    return runs, details


def _arms(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r.arm for r in runs))


def _label(arm: str) -> str:
    kind = arm.split("/")[1]
    return "decode only (limit)" if kind == "limit" else f"build num_proc={kind.removeprefix('build_np')}"


def _values(runs: list[Run], arm: str, key: str) -> list[float]:
    return [r.metrics[key] for r in runs if r.arm == arm]


def table(runs: list[Run]) -> Table:
    rows = []
    for arm in _arms(runs):
        rate = _values(runs, arm, "rows_per_s")
        m, sd = mean_sd(rate)
        ratio = _values(runs, arm, "vs_limit") if "vs_limit" in next(r for r in runs if r.arm == arm).metrics else []
        arrow = _values(runs, arm, "arrow_bytes") if ratio else []
        rows.append([
            SOURCES[arm.split("/")[0]], _label(arm), len(rate), _values(runs, arm, "rows")[0],
            round(statistics.median(rate), 1),
            f"{min(rate):.0f}–{max(rate):.0f}" if len(rate) > 1 else f"{rate[0]:.0f}",
            f"{m:.0f}" + ("" if sd is None else f" ± {sd:.0f}"),
            round(statistics.median(_values(runs, arm, "seconds")), 2),
            round(statistics.median(ratio), 3) if ratio else 1.0,
            round(statistics.median(arrow) / 2**20, 1) if arrow else None,
        ])
    return Table(
        title="Rows per second: builds against their decode-only limit",
        columns=["source", "arm", "rounds", "rows", "median rows/s", "min–max rows/s", "mean ± sd rows/s",
                 "median seconds", "median vs limit (same round)", "Arrow MiB"],
        rows=rows,
        note="Limit: the unavoidable work only (MRI: cut and PNG-encode each patch; ISIC: read and decode each "
        "JPEG). 'vs limit' is a build's rows/s over the limit's rows/s in the same round, median over rounds; "
        "sd is the sample sd (ddof = 1).",
    )


def figure(runs: list[Run]) -> dict:
    panels = []
    for source, title in SOURCES.items():
        arms = [a for a in _arms(runs) if a.startswith(source + "/")]
        stats = [mean_sd(_values(runs, a, "rows_per_s")) for a in arms]
        yerr = [sd for _, sd in stats] if all(sd is not None for _, sd in stats) else None
        panels.append({
            "kind": "bar",
            "title": f"{title}: {_values(runs, arms[0], 'rows')[0]} rows",
            "ylabel": "rows / s (median over rounds; bar: sample sd)",
            "series": [{"label": "", "x": [_label(a) for a in arms],
                        "y": [round(statistics.median(_values(runs, a, "rows_per_s")), 1) for a in arms],
                        "yerr": yerr}],
        })
    return {"file": "build_throughput.png", "title": "Long-tail builders against decode-only limits",
            "panels": panels}


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark(
        "build_throughput",
        title="Long-tail dataset build throughput",
        capability="longtail",
        code=["hubtools/longtail/datasets.py", "hubtools/longtail/splits.py", "dataset_scripts/mri_patches",
              "dataset_scripts/isic2019", "hubtools/data/mri_patches.py"],
        default_seeds=[0],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--isic-images", type=int, default=20000, help="images in the ISIC-format folder (smoke 400)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3, smoke 1)")
    args = bench.parse(parser, argv)
    repeats = args.repeats or (1 if args.smoke else 3)
    isic_images = 400 if args.smoke else args.isic_images
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-throughput-", dir=args.work) as tmp:
        runs, details = run(isic_images, args.smoke, repeats, Path(tmp))
    med = {a: statistics.median(_values(runs, a, "rows_per_s")) for a in _arms(runs)}
    ratio = {a: statistics.median(_values(runs, a, "vs_limit")) for a in _arms(runs) if "build" in a}
    headline = (f"num_proc 1 builds at {ratio['mri_patches/build_np1']:.2f}x the decode-only limit for MRI patches "
                f"({med['mri_patches/build_np1']:.0f} rows/s) and {ratio['isic_folder/build_np1']:.2f}x for "
                f"ISIC-format JPEGs ({med['isic_folder/build_np1']:.0f} rows/s), median of {repeats}")
    verdict = headline + ". "
    if "mri_patches/build_np2" in med:
        verdict += ("num_proc 2 against 1: " + ", ".join(
            f"{SOURCES[s]} {med[f'{s}/build_np2'] / med[f'{s}/build_np1']:.2f}x" for s in SOURCES)
            + f" on {os.cpu_count()} CPUs (1-minute load {details['load_avg_1min_at_start']:.1f} at the start).")
    else:
        verdict += "num_proc 2 was not run (smoke)."
    bench.write(
        "build_throughput",
        data="brain MRI patches cut from Debian mricron-data's MNI template by the AAL atlas (real); an "
        f"ISIC 2019-layout folder of {isic_images:,} synthetic 128 px JPEGs cropped from scikit-image's real "
        "fundus photo (retina), class sizes in ISIC 2019's proportions",
        config={"isic_images": isic_images, "repeats": repeats, "num_proc": [1] if args.smoke else [1, 2],
                "mri_slice_step": 16 if args.smoke else 4, "mri_patch": 32, "mri_stride": 4,
                "isic_quotas": {"val_per_class": 5, "test_per_class": 10} if args.smoke else "50/100 per class"},
        runs=runs,
        tables=[table(runs)],
        figures=[figure(runs)],
        headline=headline,
        verdict=verdict,
        details={**details, "median_rows_per_s": med, "median_vs_limit": ratio},
        seeds=list(range(repeats)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
