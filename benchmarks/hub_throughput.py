"""How fast does a file travel through the local Hub, compared with copying it on the same disk?

Starts the hubtools hub in this process on a temporary data dir (under ``--work``), uploads one file of
random bytes with ``HfApi.upload_file`` (LFS "basic": batch, PUT, verify; Xet disabled),
downloads it with ``hf_hub_download`` into a fresh cache and checks its sha256. The
limit it is compared with is a plain ``shutil.copyfile`` of the same bytes on the same
disk; a copy followed by fsync is reported beside it, since the server fsyncs every
blob. Each step runs ``--repeat`` times (fresh random bytes per round, os.urandom); every round is
kept as one run (seed = the round's index; ``--seeds`` is not used), and the tables give the median
and spread over rounds. Client and server share one process and its GIL, as they do in the test
suite and the quickstart. Writes ``hub_throughput.{json,md}`` through the shared harness.

    python benchmarks/hub_throughput.py [--size-mb 200] [--repeat 3]
    python benchmarks/hub_throughput.py --smoke      # 8 MiB once, what the test suite runs

Sizes are MiB (2**20 bytes) and rates MiB/s. Exit status 1 if a downloaded file differs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hubtools.bench import Benchmark, Run, Table
from hubtools.bench.stats import mean_sd

MiB = 2**20
SMOKE_SIZE_MB = 8
STEPS = ("upload", "download", "copy", "copy_fsync")
LABELS = {"upload": "upload (HfApi.upload_file)", "download": "download (hf_hub_download)",
          "copy": "copy (shutil.copyfile)", "copy_fsync": "copy + fsync"}
USER = "bench"
TOKEN = "hf_HubThroughputBenchmarkToken000001"


def write_random_file(path: Path, size: int) -> str:
    """Random bytes in 1 MiB chunks; returns their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(MiB, remaining))
            digest.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def copy_and_fsync(source: Path, target: Path) -> None:
    """The server fsyncs every blob before it answers a PUT, so a copy that also
    fsyncs is the fairer limit for the upload; it is reported beside the plain copy."""
    shutil.copyfile(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(size_mb: int, work: Path, repeat: int) -> dict:
    size = size_mb * MiB
    # Bind first, then point the client at the socket before huggingface_hub is imported:
    # it captures HF_ENDPOINT at import time.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    os.environ.update(
        {
            "HF_ENDPOINT": url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HOME": str(work / "hf_home"),
        }
    )
    os.environ.pop("HF_HUB_OFFLINE", None)
    if "huggingface_hub" in sys.modules:
        raise RuntimeError("huggingface_hub was imported before HF_ENDPOINT was set")
    import huggingface_hub
    from huggingface_hub import HfApi, hf_hub_download

    from hubtools.hashing import sha256_file
    from hubtools.hub.server import HubConfig, HubServer, add_token

    data_dir = work / "hub-data"
    add_token(data_dir, USER, role="write", token=TOKEN)
    source = work / "source.bin"
    copy_target = work / "copy.bin"
    samples: dict[str, list[float]] = {"upload": [], "download": [], "copy": [], "copy_fsync": []}
    hashes = []

    with HubServer(HubConfig(data_dir=data_dir, host="127.0.0.1", port=0), sock=sock):
        api = HfApi(endpoint=url, token=TOKEN)
        repo_id = f"{USER}/throughput"
        api.create_repo(repo_id)
        for i in range(repeat):
            # New random bytes each round: re-uploading identical content would be a no-op.
            uploaded_sha = write_random_file(source, size)
            seconds, _ = timed(
                lambda: api.upload_file(
                    path_or_fileobj=str(source), path_in_repo="payload.bin", repo_id=repo_id
                )
            )
            samples["upload"].append(seconds)
            seconds, local = timed(
                lambda i=i: hf_hub_download(
                    repo_id, "payload.bin", cache_dir=work / f"cache-{i}", endpoint=url, token=TOKEN
                )
            )
            samples["download"].append(seconds)
            hashes.append((uploaded_sha, sha256_file(local)))
            shutil.rmtree(work / f"cache-{i}")

            seconds, _ = timed(lambda: shutil.copyfile(source, copy_target))
            samples["copy"].append(seconds)
            copy_target.unlink()
            seconds, _ = timed(lambda: copy_and_fsync(source, copy_target))
            samples["copy_fsync"].append(seconds)
            copy_target.unlink()

    runs = []
    for i in range(repeat):
        metrics: dict = {f"{step}_s": samples[step][i] for step in STEPS}
        metrics.update({f"{step}_mib_s": size / MiB / samples[step][i] for step in STEPS})
        for step in STEPS:  # the same round's copy: a paired ratio
            metrics[f"{step}_vs_copy"] = metrics[f"{step}_mib_s"] / metrics["copy_mib_s"]
        metrics["upload_vs_copy_fsync"] = metrics["upload_mib_s"] / metrics["copy_fsync_mib_s"]
        metrics["sha256_match"] = hashes[i][0] == hashes[i][1]
        runs.append(Run(arm="round", seed=i, metrics=metrics, extra={"sha256": hashes[i][0]}))
    return {"runs": runs, "huggingface_hub": huggingface_hub.__version__}


def spread(values: list[float], digits: int = 1) -> str:
    """``min–max`` of the rounds (one value alone when there is one round)."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if len(values) == 1 else f"{lo:.{digits}f}–{hi:.{digits}f}"


def table(runs: list[Run], size_mb: int) -> Table:
    rows = []
    for step in STEPS:
        rate = [r.metrics[f"{step}_mib_s"] for r in runs]
        secs = [r.metrics[f"{step}_s"] for r in runs]
        ratio = [r.metrics[f"{step}_vs_copy"] for r in runs]
        m, sd = mean_sd(rate)
        rows.append([LABELS[step], len(runs), round(statistics.median(rate), 1), spread(rate),
                     f"{m:.1f}" + ("" if sd is None else f" ± {sd:.1f}"), round(statistics.median(secs), 4),
                     round(statistics.median(ratio), 3)])
    return Table(
        title=f"{size_mb} MiB of random bytes, per step",
        columns=["step", "rounds", "median MiB/s", "min–max MiB/s", "mean ± sd MiB/s", "median seconds",
                 "median vs copy (same round)"],
        rows=rows,
        note="Each round moves fresh random bytes; 'vs copy' is the step's rate over the plain copy's rate in "
        "the same round, median over rounds; sd is the sample sd (ddof = 1).",
    )


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark(
        "hub_throughput",
        title="Local Hub throughput against a same-disk copy",
        capability="hub",
        code=["hubtools/hub/server", "hubtools/hashing.py"],
        default_seeds=[0],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MiB (default 200; smoke 8)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3, smoke 1)")
    args = bench.parse(parser, argv)
    size_mb = SMOKE_SIZE_MB if args.smoke else args.size_mb
    repeat = args.repeat or (1 if args.smoke else 3)
    if size_mb <= 0 or repeat <= 0:
        parser.error("--size-mb and --repeat must be positive")

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hub-throughput-", dir=args.work))
    try:
        result = run(size_mb, work, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = result["runs"]
    ok = all(r.metrics["sha256_match"] for r in runs)
    med = {k: statistics.median(r.metrics[k] for r in runs)
           for k in ("upload_mib_s", "download_mib_s", "copy_mib_s", "copy_fsync_mib_s",
                     "upload_vs_copy", "download_vs_copy", "upload_vs_copy_fsync")}
    headline = (f"{size_mb} MiB: upload {med['upload_mib_s']:.0f} MiB/s, download {med['download_mib_s']:.0f} MiB/s "
                f"(median of {repeat}) = {med['upload_vs_copy']:.2f}x / {med['download_vs_copy']:.2f}x a "
                f"same-disk copy ({med['copy_mib_s']:.0f} MiB/s); upload {med['upload_vs_copy_fsync']:.2f}x "
                "copy + fsync")
    verdict = ("every downloaded file has the uploaded sha256. " if ok else "FAIL: a downloaded file differs. ")
    verdict += (f"The Hub moves a file at {med['upload_vs_copy_fsync']:.2f}x the speed of a copy that fsyncs "
                "as the server does (upload) and at "
                f"{med['download_vs_copy']:.2f}x a plain copy (download); client and server share one process.")
    bench.write(
        "hub_throughput",
        data=f"{size_mb} MiB of random bytes (os.urandom), fresh per round; no real data set",
        config={"size_mb": size_mb, "size_bytes": size_mb * MiB, "repeat": repeat, "xet": False,
                "lfs_transfer": "basic"},
        runs=runs,
        tables=[table(runs, size_mb)],
        headline=headline,
        verdict=verdict,
        details={"medians": med, "sha256_match": ok, "huggingface_hub": result["huggingface_hub"],
                 "seeds": "each run's seed is its round index (0, 1, ...); --seeds is not used",
                 "load_avg_1min_at_end": os.getloadavg()[0]},
        seeds=list(range(repeat)),
    )
    for row in table(runs, size_mb).rows:
        print(" | ".join(map(str, row)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
