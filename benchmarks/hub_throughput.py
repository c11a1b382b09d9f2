"""How fast does a file travel through the local Hub, compared with copying it on the same disk?

Starts the hubtools hub in this process on a temporary data dir, uploads one file of
random bytes with ``HfApi.upload_file`` (LFS "basic": batch, PUT, verify; Xet disabled),
downloads it with ``hf_hub_download`` into a fresh cache and checks its sha256. The
limit it is compared with is a plain ``shutil.copyfile`` of the same bytes on the same
disk; a copy followed by fsync is reported beside it, since the server fsyncs every
blob. Each step runs ``--repeat`` times (fresh random bytes per round); the best round
is reported, the median beside it. Client and server share one process and its GIL,
as they do in the test suite and the quickstart.

    python benchmarks/hub_throughput.py [--size-mb 200] [--repeat 3] [--smoke]
                                        [--out benchmarks/results/hub_throughput.json]

Sizes are MiB (2**20 bytes) and rates MiB/s. ``--smoke`` moves 8 MiB once and is what
the test suite runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20
SMOKE_SIZE_MB = 8
RESULTS_DIR = Path(__file__).resolve().parent / "results"
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
    """The server fsyncs every blob before it answers a PUT (spec 2.8), so a copy that also
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
    # it captures HF_ENDPOINT at import time (spec section 2.2).
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

    def rate(seconds: float) -> float:
        return size / MiB / seconds

    result: dict = {"size_mb": size_mb, "size_bytes": size, "repeat": repeat}
    for step, times in samples.items():
        result[f"{step}_s"] = min(times)
        result[f"{step}_s_all"] = times
        result[f"{step}_mib_s"] = rate(min(times))
        result[f"{step}_mib_s_median"] = rate(statistics.median(times))
    result["upload_vs_copy"] = result["upload_mib_s"] / result["copy_mib_s"]
    result["download_vs_copy"] = result["download_mib_s"] / result["copy_mib_s"]
    result["upload_vs_copy_fsync"] = result["upload_mib_s"] / result["copy_fsync_mib_s"]
    result["sha256_uploaded"], result["sha256_downloaded"] = hashes[-1]
    result["sha256_match"] = all(up == down for up, down in hashes)
    result.update(
        {
            "huggingface_hub": huggingface_hub.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        }
    )
    return result


def print_table(result: dict) -> None:
    print(
        f"hub throughput: {result['size_mb']} MiB of random bytes, best of {result['repeat']} "
        f"(sha256 match: {result['sha256_match']})"
    )
    print(f"{'step':<11} {'seconds':>8} {'MiB/s':>8} {'median':>8} {'vs copy':>8}")
    for step in ("upload", "download", "copy", "copy_fsync"):
        print(
            f"{step.replace('_', '+'):<11} {result[f'{step}_s']:>8.3f} {result[f'{step}_mib_s']:>8.1f} "
            f"{result[f'{step}_mib_s_median']:>8.1f} {result[f'{step}_mib_s'] / result['copy_mib_s']:>8.3f}"
        )
    print(
        f"upload/copy {result['upload_vs_copy']:.3f}, download/copy {result['download_vs_copy']:.3f}, "
        f"upload/(copy+fsync) {result['upload_vs_copy_fsync']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MiB (default 200)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SIZE_MB} MiB, for the test suite")
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds, best one reported (default 3, smoke 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/...)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="parent of the temporary dir (default: TMPDIR)"
    )
    args = parser.parse_args(argv)
    size_mb = SMOKE_SIZE_MB if args.smoke else args.size_mb
    repeat = args.repeat or (1 if args.smoke else 3)
    if size_mb <= 0 or repeat <= 0:
        parser.error("--size-mb and --repeat must be positive")
    out = args.out or RESULTS_DIR / ("hub_throughput_smoke.json" if args.smoke else "hub_throughput.json")

    work = Path(tempfile.mkdtemp(prefix="hub-throughput-", dir=args.work_dir))
    try:
        result = run(size_mb, work, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["smoke"] = args.smoke
    print_table(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["sha256_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
