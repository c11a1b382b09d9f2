"""SpeeD speed-up benchmark: steps to reach the uniform baseline's final quality on real images.

    python benchmarks/speed.py            # full run: digits + Fashion-MNIST, 3 seeds (about 10 min on 2 cores)
    python benchmarks/speed.py --smoke    # the whole protocol in under a minute (tests run it)

Same as `hubtools diffusion speedup-bench`; every flag of that command works here. Results go to
benchmarks/results/speedup.{json,md} and speed_curves.png (protocol: shared/specs/speed.md section 4).
"""

from hubtools.diffusion.cli import speedup_bench_command

if __name__ == "__main__":
    speedup_bench_command()
