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

Each build runs with ``num_proc`` 1 and 2; reported: rows/s, seconds, Arrow bytes on disk,
and the ratio build/limit (1.0 = as fast as only decoding).

    python benchmarks/build_throughput.py [--isic-images 20000] [--smoke]
                                          [--out benchmarks/results/build_throughput.json]

``--smoke`` (what the test suite runs) uses a coarse MRI grid, 400 ISIC images and num_proc 1 only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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


def run(isic_images: int, smoke: bool, work: Path) -> dict:
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    slice_step = 16 if smoke else 4
    procs = (1,) if smoke else (1, 2)
    result: dict = {
        "smoke": smoke,
        "cpus": os.cpu_count(),
        "load_avg_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "datasets": datasets.__version__,
    }

    limit = mri_limit(slice_step)
    builds = [time_build("mri_patches", None, work / "mri-cache", p, slice_step=slice_step) for p in procs]
    result["mri_patches"] = {
        "grid": f"32 px, stride 4, every {slice_step}th axial slice",
        "limit": limit,
        "builds": builds,
    }

    src = work / "isic"
    t0 = time.perf_counter()
    n = make_isic_folder(src, isic_images, min_per_class=20 if smoke else 160)
    result["isic_folder"] = {
        "images": n,
        "jpeg_px": 128,
        "make_s": time.perf_counter() - t0,
        "jpeg_bytes": sum(p.stat().st_size for p in src.rglob("*.jpg")),
    }
    limit = isic_limit(src)
    quotas = {"val_per_class": 5, "test_per_class": 10} if smoke else {}
    builds = [
        time_build("isic2019", src, work / "isic-cache", p, ratio=0, expected_train_counts=(), **quotas)
        for p in procs
    ]
    result["isic_folder"].update({"limit": limit, "builds": builds})
    for key in ("mri_patches", "isic_folder"):
        for b in result[key]["builds"]:
            b["vs_limit"] = b["rows_per_s"] / result[key]["limit"]["rows_per_s"]
    return result


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in zip(
        axes, ("mri_patches", "isic_folder"), ("MRI patches (real)", "ISIC-format JPEGs"), strict=True
    ):
        r = result[key]
        labels = ["decode only\n(limit)"] + [f"build\nnum_proc={b['num_proc']}" for b in r["builds"]]
        values = [r["limit"]["rows_per_s"]] + [b["rows_per_s"] for b in r["builds"]]
        ax.bar(labels, values, color=["#999999", "#1f77b4", "#ff7f0e"])
        ax.set_title(f"{title}: {r['limit']['rows']} rows")
        ax.set_ylabel("rows / s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isic-images", type=int, default=20000, help="images in the ISIC-format folder")
    parser.add_argument(
        "--smoke", action="store_true", help="coarse MRI grid, 400 ISIC images (the test suite)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    out = args.out or RESULTS_DIR / ("build_throughput_smoke.json" if args.smoke else "build_throughput.json")
    with tempfile.TemporaryDirectory(prefix="build-throughput-") as tmp:
        result = run(400 if args.smoke else args.isic_images, args.smoke, Path(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, out.with_suffix(".png"))
    for key in ("mri_patches", "isic_folder"):
        r = result[key]
        print(f"{key}: limit {r['limit']['rows_per_s']:.0f} rows/s ({r['limit']['rows']} rows)")
        for b in r["builds"]:
            print(
                f"  build num_proc={b['num_proc']}: {b['rows_per_s']:.0f} rows/s, {b['seconds']:.1f} s, "
                f"{b['arrow_bytes'] / 2**20:.1f} MiB Arrow, {b['vs_limit']:.2f} x limit"
            )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
