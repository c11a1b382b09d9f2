"""SpeeD speed-up benchmark: steps to reach the uniform baseline's final quality on real images.

    python benchmarks/speed.py                 # digits + Fashion-MNIST, 3 arms, seeds 0 1 2 (about 27 min of CPU on 2 cores)
    python benchmarks/speed.py --smoke         # the whole protocol in well under a minute (tests run it)
    python benchmarks/speed.py --config configs/diffusion/speed_bench_quick.yaml   # digits, uniform vs speed

Same as `hubtools diffusion speedup-bench` (same flags); the protocol and its verdicts live in
``hubtools.diffusion.bench``. Writes speedup.{json,md} and speed_curves.png through the shared
harness (default benchmarks/results; --smoke: a temporary folder). A verdict is "budget insufficient"
whenever the uniform baseline's FID curve has not plateaued (last 3 evaluations within 5 %).
"""

from __future__ import annotations

from pathlib import Path

from hubtools.diffusion.bench import main as _main


def main(argv: list[str] | None = None) -> Path:
    return _main(argv)


if __name__ == "__main__":
    main()
