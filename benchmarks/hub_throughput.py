"""How fast does the local Hub move files, compared with copying them on the same disk, and how quickly
does it answer while it works?

Five cases, each timed per round (``--repeat`` rounds, fresh random bytes per round, os.urandom):

* big file, one process: the hub runs in this process on a temporary data dir (under ``--work``), as in
  the test suite and the quickstart, so client and server share one GIL. One file of random bytes goes
  up with ``HfApi.upload_file`` (LFS "basic": batch, PUT, verify; Xet disabled) and comes back with
  ``hf_hub_download`` into a fresh cache; its sha256 is checked. The limit it is compared with is a plain
  ``shutil.copyfile`` of the same bytes on the same disk; a copy followed by fsync is reported beside
  it, since the server fsyncs every blob.
* big file, separate server process: the same file, uploaded to and downloaded from a second hub started
  as ``python -m hubtools.hub.server`` (the ``hubtools hub serve`` CLI) on a free 127.0.0.1 port with its
  own temporary data dir, so client and server do not share a GIL.
* many small files: ``HfApi.upload_folder`` of ``--small-files`` files of 2-6 KiB each (random bytes,
  30 sub-folders) into a new repo on the separate server, then ``snapshot_download`` into a fresh cache
  with every file's sha256 checked.
* validate-yaml: an anonymous ``POST /api/validate-yaml`` of a ~0.95 MB YAML header (under the server's
  1 MiB cap) to the separate server, while this process sends anonymous ``GET /api/models/...`` every
  50 ms; reported: the slowest GET during the call, less the median GET of an idle server.
* model_info on a ~4 MiB card (a ~0.95 MB YAML header and a long body, committed as README.md to the
  separate server, one repo per round): the anonymous ``GET /api/models/...`` that ``HfApi.model_info``
  sends, first call after the commit (the commit has parsed the card) and then cached (median of 3 calls);
  then once more after the separate server is restarted, when the first call must parse the card again.

Every round and case is kept as one run (arm = the case, seed = the round's index; ``--seeds`` is not
used), and the tables give the median and spread over rounds. Servers listen on 127.0.0.1 only and are
stopped at the end. Writes ``hub_throughput.{json,md}`` through the shared harness.

    python benchmarks/hub_throughput.py [--size-mb 200] [--repeat 3] [--small-files 1500]
    python benchmarks/hub_throughput.py --smoke      # 8 MiB and 100 small files once, what the test suite runs

Sizes are MiB (2**20 bytes) and rates MiB/s. Exit status 1 if a downloaded file differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from hubtools.bench import Benchmark, Run, Table
from hubtools.bench.stats import mean_sd

MiB = 2**20
SMOKE_SIZE_MB = 8
SMOKE_SMALL_FILES = 100
DEFAULT_SMALL_FILES = 1500
SMALL_FOLDERS = 30
YAML_BYTES = 950_000  # the YAML header of the validate-yaml body and of the big card; the server caps it at 1 MiB
CARD_BYTES = 4 * MiB
GET_INTERVAL_S = 0.05
CACHED_CALLS = 3
SERVER_START_S = 120.0
STEPS = ("upload", "download", "copy", "copy_fsync", "upload_process", "download_process")
LABELS = {"upload": "upload (HfApi.upload_file)", "download": "download (hf_hub_download)",
          "copy": "copy (shutil.copyfile)", "copy_fsync": "copy + fsync",
          "upload_process": "upload (HfApi.upload_file), server in its own process", "download_process":
          "download (hf_hub_download), server in its own process"}
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


def write_small_files(folder: Path, n: int) -> dict[str, str]:
    """``n`` files of 2-6 KiB of random bytes in ``SMALL_FOLDERS`` sub-folders; ``{path in repo: sha256}``."""
    digests = {}
    for i in range(n):
        rel = f"d{i % SMALL_FOLDERS:02d}/f{i:05d}.bin"
        data = os.urandom((2 + i % 5) * 1024)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def check_snapshot(snapshot: Path, expected: dict[str, str]) -> int:
    """How many of the expected files are missing from the snapshot or differ from what was uploaded."""
    bad = 0
    for rel, sha in expected.items():
        path = snapshot / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            bad += 1
    return bad


def yaml_header(size: int, tag: str) -> str:
    """A YAML front matter of about ``size`` bytes (nested lists and maps, quoted text), made unique by
    ``tag`` so that no round finds the previous round's parse in the server's card cache."""
    lines = ["---", f"tag: {tag}", "items:"]
    total, i = 0, 0
    while total < size:
        item = (f"  - name: item{i}\n    values: [1, 2, 3, {{a: b, c: [x, y]}}]\n"
                f"    text: 'some quoted text {i}'")
        lines.append(item)
        total += len(item) + 1
        i += 1
    return "\n".join(lines) + "\n---\n"


def big_card(size: int, yaml_size: int, tag: str) -> bytes:
    body_line = ("lorem ipsum " * 80).rstrip() + "\n"
    head = yaml_header(yaml_size, tag) + "# A card with a large header\n\n"
    n = max(0, (size - len(head)) // len(body_line))
    return (head + body_line * n).encode()


def copy_and_fsync(source: Path, target: Path) -> None:
    """The server fsyncs every blob before it answers a PUT, so a copy that also
    fsyncs is the fairer limit for the upload; it is reported beside the plain copy."""
    shutil.copyfile(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())


def timed(fn: Callable) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@contextlib.contextmanager
def server_process(data_dir: Path, log_path: Path) -> Iterator[str]:
    """``python -m hubtools.hub.server`` on a free 127.0.0.1 port with its own data dir and ``TOKEN``;
    yields its URL and stops it (SIGTERM, then SIGKILL) on the way out, error or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    cmd = [sys.executable, "-m", "hubtools.hub.server", "--host", "127.0.0.1", "--port", "0",
           "--data", str(data_dir), "--user", USER, "--token", TOKEN]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + SERVER_START_S
        url = None
        while url is None:
            for line in log_path.read_text().splitlines():
                if line.startswith("hubtools-hub listening on "):
                    url = line.split()[3]
            if url is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the hub server process exited ({proc.returncode}): {log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the hub server process did not start in {SERVER_START_S:.0f} s")
                time.sleep(0.05)
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the hub server process listens on {url}, not on 127.0.0.1")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_latency_during(url: str, repo_id: str, content: str) -> dict:
    """Anonymous GETs of a model's info every GET_INTERVAL_S while an anonymous validate-yaml of ``content``
    runs in a thread; the idle GET latency is measured first, on the same connection."""
    import httpx

    info_url = f"{url}/api/models/{repo_id}"
    with httpx.Client(timeout=None) as client:
        idle = []
        for _ in range(5):
            seconds, r = timed(lambda: client.get(info_url))
            r.raise_for_status()
            idle.append(seconds)
        result: dict = {}

        def validate() -> None:
            try:
                seconds, r = timed(lambda: httpx.post(f"{url}/api/validate-yaml", timeout=None,
                                                      json={"content": content, "repoType": "model"}))
                result["status"], result["seconds"] = r.status_code, seconds
            except BaseException as exc:  # reported below
                result["error"] = exc

        thread = threading.Thread(target=validate, name="validate-yaml")
        thread.start()
        during = []
        while thread.is_alive():
            seconds, r = timed(lambda: client.get(info_url))
            r.raise_for_status()
            during.append(seconds)
            time.sleep(GET_INTERVAL_S)
        thread.join()
    if "error" in result:
        raise result["error"]
    idle_ms = statistics.median(idle) * 1000
    max_ms = max(during) * 1000 if during else None
    return {
        "validate_yaml_s": result["seconds"],
        "validate_yaml_status": result["status"],
        "yaml_bytes": len(content.encode()),
        "get_idle_median_ms": idle_ms,
        "get_during_n": len(during),
        "get_during_max_ms": max_ms,
        "get_during_median_ms": statistics.median(during) * 1000 if during else None,
        "get_delay_ms": None if max_ms is None else max_ms - idle_ms,
    }


def info_calls(url: str, repo_id: str, tag: str) -> tuple[float, float, float]:
    """The anonymous ``GET /api/models/{repo}`` that ``HfApi.model_info`` sends, 1 + CACHED_CALLS times:
    the first call's ms, the median and the max of the others; checks the card's metadata comes back."""
    import httpx

    calls = []
    with httpx.Client(timeout=None) as client:
        for _ in range(1 + CACHED_CALLS):
            seconds, r = timed(lambda: client.get(f"{url}/api/models/{repo_id}"))
            r.raise_for_status()
            if (r.json().get("cardData") or {}).get("tag") != tag:
                raise RuntimeError(f"model_info of {repo_id} did not return the card's metadata")
            calls.append(seconds * 1000)
    return calls[0], statistics.median(calls[1:]), max(calls[1:])


def model_info_latency(url: str, api, repo_id: str, card: bytes, tag: str) -> dict:
    """Commit ``card`` as README.md, then time model_info: the first call after the commit and the cached ones."""
    commit_s, _ = timed(lambda: api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=repo_id))
    first, cached, cached_max = info_calls(url, repo_id, tag)
    return {"card_bytes": len(card), "commit_s": commit_s, "first_ms": first, "cached_ms": cached,
            "cached_max_ms": cached_max}


def run(size_mb: int, work: Path, repeat: int, small_files: int) -> dict:
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
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    from hubtools.hashing import sha256_file
    from hubtools.hub.server import HubConfig, HubServer, add_token

    data_dir = work / "hub-data"
    add_token(data_dir, USER, role="write", token=TOKEN)
    source = work / "source.bin"
    copy_target = work / "copy.bin"
    samples: dict[str, list[float]] = {step: [] for step in STEPS}
    hashes: dict[str, list[tuple[str, str]]] = {"in_process": [], "process": []}
    small_runs: list[dict] = []
    yaml_runs: list[dict] = []
    info_runs: list[dict] = []

    process_data = work / "hub-data-process"
    with (HubServer(HubConfig(data_dir=data_dir, host="127.0.0.1", port=0), sock=sock),
          server_process(process_data, work / "server-process.log") as process_url):
        api = HfApi(endpoint=url, token=TOKEN)
        papi = HfApi(endpoint=process_url, token=TOKEN)
        repo_id = f"{USER}/throughput"
        api.create_repo(repo_id)
        papi.create_repo(repo_id)
        for i in range(repeat):
            # New random bytes each round: re-uploading identical content would be a no-op.
            uploaded_sha = write_random_file(source, size)
            for setting, endpoint, client, up, down in (("in_process", url, api, "upload", "download"),
                                                        ("process", process_url, papi, "upload_process",
                                                         "download_process")):
                seconds, _ = timed(
                    lambda client=client: client.upload_file(
                        path_or_fileobj=str(source), path_in_repo="payload.bin", repo_id=repo_id
                    )
                )
                samples[up].append(seconds)
                cache = work / f"cache-{setting}-{i}"
                seconds, local = timed(
                    lambda endpoint=endpoint, cache=cache: hf_hub_download(
                        repo_id, "payload.bin", cache_dir=cache, endpoint=endpoint, token=TOKEN
                    )
                )
                samples[down].append(seconds)
                hashes[setting].append((uploaded_sha, sha256_file(local)))
                shutil.rmtree(cache)

            seconds, _ = timed(lambda: shutil.copyfile(source, copy_target))
            samples["copy"].append(seconds)
            copy_target.unlink()
            seconds, _ = timed(lambda: copy_and_fsync(source, copy_target))
            samples["copy_fsync"].append(seconds)
            copy_target.unlink()

            # Many small files: a new repo each round, so every round commits the same number of new files.
            folder = work / f"small-{i}"
            expected = write_small_files(folder, small_files)
            small_repo = f"{USER}/small-{i}"
            papi.create_repo(small_repo)
            up_s, _ = timed(partial(papi.upload_folder, folder_path=str(folder), repo_id=small_repo))
            cache = work / f"snapshot-cache-{i}"
            down_s, snapshot = timed(partial(snapshot_download, small_repo, cache_dir=cache, endpoint=process_url,
                                             token=TOKEN))
            bad = check_snapshot(Path(snapshot), expected)
            n_files = sum(1 for p in Path(snapshot).rglob("*") if p.is_file())
            shutil.rmtree(cache)
            shutil.rmtree(folder)
            small_bytes = sum((2 + k % 5) * 1024 for k in range(small_files))
            small_runs.append({
                "files": small_files, "bytes": small_bytes, "upload_s": up_s, "download_s": down_s,
                "upload_files_per_s": small_files / up_s, "download_files_per_s": small_files / down_s,
                "upload_mib_s": small_bytes / MiB / up_s, "download_mib_s": small_bytes / MiB / down_s,
                "files_differing": bad, "files_in_snapshot": n_files, "sha256_match": bad == 0,
            })

            yaml_runs.append(get_latency_during(process_url, repo_id, yaml_header(YAML_BYTES, f"round{i}")))
            card_repo = f"{USER}/card-{i}"
            papi.create_repo(card_repo)
            info_runs.append(model_info_latency(process_url, papi, card_repo,
                                                big_card(CARD_BYTES, YAML_BYTES, f"card{i}"), f"card{i}"))

    # The card cache lives in the server's memory: a restarted server reads and parses each card afresh.
    with server_process(process_data, work / "server-process-restarted.log") as process_url:
        for i in range(repeat):
            first, cached, cached_max = info_calls(process_url, f"{USER}/card-{i}", f"card{i}")
            info_runs[i].update({"after_restart_first_ms": first, "after_restart_cached_ms": cached,
                                 "after_restart_cached_max_ms": cached_max})

    runs = []
    for i in range(repeat):
        metrics: dict = {f"{step}_s": samples[step][i] for step in ("upload", "download", "copy", "copy_fsync")}
        metrics.update({f"{step}_mib_s": size / MiB / samples[step][i]
                        for step in ("upload", "download", "copy", "copy_fsync")})
        for step in ("upload", "download", "copy", "copy_fsync"):  # the same round's copy: a paired ratio
            metrics[f"{step}_vs_copy"] = metrics[f"{step}_mib_s"] / metrics["copy_mib_s"]
        metrics["upload_vs_copy_fsync"] = metrics["upload_mib_s"] / metrics["copy_fsync_mib_s"]
        metrics["sha256_match"] = hashes["in_process"][i][0] == hashes["in_process"][i][1]
        runs.append(Run(arm="big_file", seed=i, metrics=metrics, extra={"sha256": hashes["in_process"][i][0]}))
    for i in range(repeat):
        metrics = {}
        for step in ("upload", "download"):
            seconds = samples[f"{step}_process"][i]
            metrics[f"{step}_s"] = seconds
            metrics[f"{step}_mib_s"] = size / MiB / seconds
            metrics[f"{step}_vs_copy"] = metrics[f"{step}_mib_s"] / runs[i].metrics["copy_mib_s"]
            metrics[f"{step}_vs_in_process"] = metrics[f"{step}_mib_s"] / runs[i].metrics[f"{step}_mib_s"]
        metrics["upload_vs_copy_fsync"] = metrics["upload_mib_s"] / runs[i].metrics["copy_fsync_mib_s"]
        metrics["sha256_match"] = hashes["process"][i][0] == hashes["process"][i][1]
        runs.append(Run(arm="big_file_process", seed=i, metrics=metrics, extra={"sha256": hashes["process"][i][0]}))
    runs += [Run(arm="small_files", seed=i, metrics=m) for i, m in enumerate(small_runs)]
    runs += [Run(arm="validate_yaml", seed=i, metrics=m) for i, m in enumerate(yaml_runs)]
    runs += [Run(arm="model_info", seed=i, metrics=m) for i, m in enumerate(info_runs)]
    return {"runs": runs, "huggingface_hub": huggingface_hub.__version__}


def spread(values: list[float], digits: int = 1) -> str:
    """``min–max`` of the rounds (one value alone when there is one round)."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if len(values) == 1 else f"{lo:.{digits}f}–{hi:.{digits}f}"


def values(runs: list[Run], arm: str, metric: str) -> list:
    return [r.metrics[metric] for r in runs if r.arm == arm and r.metrics.get(metric) is not None]


def median(runs: list[Run], arm: str, metric: str) -> float | None:
    vals = values(runs, arm, metric)
    return statistics.median(vals) if vals else None


def big_file_table(runs: list[Run], size_mb: int) -> Table:
    rows = []
    for step in STEPS:
        arm, metric = ("big_file_process", step.removesuffix("_process")) if step.endswith("_process") \
            else ("big_file", step)
        rate = values(runs, arm, f"{metric}_mib_s")
        secs = values(runs, arm, f"{metric}_s")
        ratio = values(runs, arm, f"{metric}_vs_copy")
        m, sd = mean_sd(rate)
        rows.append([LABELS[step], len(rate), round(statistics.median(rate), 1), spread(rate),
                     f"{m:.1f}" + ("" if sd is None else f" ± {sd:.1f}"), round(statistics.median(secs), 4),
                     round(statistics.median(ratio), 3)])
    return Table(
        title=f"{size_mb} MiB of random bytes, per step",
        columns=["step", "rounds", "median MiB/s", "min–max MiB/s", "mean ± sd MiB/s", "median seconds",
                 "median vs copy (same round)"],
        rows=rows,
        note="Each round moves fresh random bytes; 'vs copy' is the step's rate over the plain copy's rate in "
        "the same round, median over rounds; sd is the sample sd (ddof = 1). The first two rows share one "
        "process (and GIL) with their server; the last two talk to a server started as its own process.",
    )


def small_files_table(runs: list[Run], small_files: int) -> Table:
    rows = []
    for step, label in (("upload", "upload (HfApi.upload_folder)"), ("download", "download (snapshot_download)")):
        secs = values(runs, "small_files", f"{step}_s")
        rate = values(runs, "small_files", f"{step}_files_per_s")
        mib = values(runs, "small_files", f"{step}_mib_s")
        rows.append([label, len(secs), round(statistics.median(secs), 3), spread(secs, 3),
                     round(statistics.median(rate), 1), round(statistics.median(mib), 2)])
    return Table(
        title=f"{small_files} small files (2–6 KiB of random bytes each), server in its own process",
        columns=["step", "rounds", "median seconds", "min–max seconds", "median files/s", "median MiB/s"],
        rows=rows,
        note="One new repo per round; the download goes into a fresh cache and every file's sha256 is checked.",
    )


def latency_table(runs: list[Run]) -> Table:
    specs = [
        ("validate_yaml", "get_idle_median_ms", "GET /api/models/… on an idle server (median of 5)", "ms", 1),
        ("validate_yaml", "get_during_max_ms", "slowest GET during a ~1 MB anonymous validate-yaml", "ms", 1),
        ("validate_yaml", "get_delay_ms", "GET delay (slowest during − idle median)", "ms", 1),
        ("validate_yaml", "validate_yaml_s", "the validate-yaml call itself", "s", 3),
        ("model_info", "commit_s", "commit of the ~4 MiB card (HfApi.upload_file)", "s", 3),
        ("model_info", "first_ms", "model_info, first call after the commit", "ms", 1),
        ("model_info", "cached_ms", f"model_info, cached (median of {CACHED_CALLS})", "ms", 1),
        ("model_info", "after_restart_first_ms", "model_info, first call after a server restart (cold)", "ms", 1),
        ("model_info", "after_restart_cached_ms", f"model_info after the restart, cached (median of {CACHED_CALLS})",
         "ms", 1),
    ]
    rows = []
    for arm, metric, label, unit, digits in specs:
        vals = values(runs, arm, metric)
        if not vals:
            rows.append([label, 0, None, None, unit])
            continue
        rows.append([label, len(vals), round(statistics.median(vals), digits), spread(vals, digits), unit])
    return Table(
        title="Latency against the server in its own process (anonymous requests)",
        columns=["measure", "rounds", "median", "min–max", "unit"],
        rows=rows,
        note=f"GETs go out every {GET_INTERVAL_S * 1000:.0f} ms on one kept-alive connection while the "
        "validate-yaml call runs; each round's YAML header and card are new, so no round hits the previous "
        "round's card cache. model_info is timed as its HTTP call (no client-side parsing). Headers this large are "
        "parsed in the server's YAML worker process, started on first use: round 0's validate-yaml and first "
        "model_info after the restart also pay for starting it.",
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
    parser.add_argument("--small-files", type=int, default=None, metavar="N",
                        help=f"files in the many-small-files case (default {DEFAULT_SMALL_FILES}; "
                        f"smoke {SMOKE_SMALL_FILES})")
    args = bench.parse(parser, argv)
    size_mb = SMOKE_SIZE_MB if args.smoke else args.size_mb
    repeat = args.repeat or (1 if args.smoke else 3)
    small_files = args.small_files or (SMOKE_SMALL_FILES if args.smoke else DEFAULT_SMALL_FILES)
    if size_mb <= 0 or repeat <= 0 or small_files <= 0:
        parser.error("--size-mb, --repeat and --small-files must be positive")

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hub-throughput-", dir=args.work))
    try:
        result = run(size_mb, work, repeat, small_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = result["runs"]
    ok = all(r.metrics["sha256_match"] for r in runs if "sha256_match" in r.metrics)
    med = {k: median(runs, "big_file", k)
           for k in ("upload_mib_s", "download_mib_s", "copy_mib_s", "copy_fsync_mib_s",
                     "upload_vs_copy", "download_vs_copy", "upload_vs_copy_fsync")}
    med.update({f"process_{k}": median(runs, "big_file_process", k)
                for k in ("upload_mib_s", "download_mib_s", "upload_vs_in_process", "download_vs_in_process")})
    med.update({f"small_files_{k}": median(runs, "small_files", k)
                for k in ("upload_s", "download_s", "upload_files_per_s", "download_files_per_s")})
    med.update({k: median(runs, "validate_yaml", k)
                for k in ("get_delay_ms", "get_during_max_ms", "get_idle_median_ms", "validate_yaml_s")})
    med.update({f"model_info_{k}": median(runs, "model_info", k) for k in ("first_ms", "cached_ms", "after_restart_first_ms",
                                                                   "after_restart_cached_ms")})
    delay = med["get_delay_ms"]
    delay_text = "no GET went out during it" if delay is None else f"delays a concurrent GET by {delay:.0f} ms"
    headline = (f"{size_mb} MiB: upload {med['upload_mib_s']:.0f} MiB/s, download {med['download_mib_s']:.0f} MiB/s "
                f"(median of {repeat}) = {med['upload_vs_copy']:.2f}x / {med['download_vs_copy']:.2f}x a "
                f"same-disk copy ({med['copy_mib_s']:.0f} MiB/s); upload {med['upload_vs_copy_fsync']:.2f}x "
                f"copy + fsync; server in its own process: {med['process_upload_mib_s']:.0f} / "
                f"{med['process_download_mib_s']:.0f} MiB/s; {small_files} small files: upload_folder "
                f"{med['small_files_upload_s']:.2f} s, snapshot_download {med['small_files_download_s']:.2f} s; "
                f"validate-yaml of ~1 MB {delay_text}; model_info on a 4 MiB card "
                f"{med['model_info_first_ms']:.0f} ms first, {med['model_info_cached_ms']:.0f} ms cached, "
                f"{med['model_info_after_restart_first_ms']:.0f} ms first after a server restart")
    verdict = ("every downloaded file has the uploaded sha256. " if ok else "FAIL: a downloaded file differs. ")
    verdict += (f"The Hub moves a file at {med['upload_vs_copy_fsync']:.2f}x the speed of a copy that fsyncs "
                "as the server does (upload) and at "
                f"{med['download_vs_copy']:.2f}x a plain copy (download) when client and server share one process; "
                f"with the server in its own process the rates are {med['process_upload_vs_in_process']:.2f}x "
                f"(upload) and {med['process_download_vs_in_process']:.2f}x (download) the shared-process ones. "
                f"{small_files} small files go up at {med['small_files_upload_files_per_s']:.0f} files/s and come "
                f"down at {med['small_files_download_files_per_s']:.0f} files/s. Issue 25's targets: a concurrent "
                f"GET delayed < 100 ms by a big validate-yaml ({'met' if delay is not None and delay < 100 else 'not met'}"
                f"), a cached model_info on a 4 MiB card < 200 ms ("
                f"{'met' if med['model_info_cached_ms'] < 200 else 'not met'}).")
    tables = [big_file_table(runs, size_mb), small_files_table(runs, small_files), latency_table(runs)]
    bench.write(
        "hub_throughput",
        data=f"{size_mb} MiB of random bytes and {small_files} files of 2–6 KiB (os.urandom), fresh per round; "
        f"generated YAML headers of ~{YAML_BYTES / 1e6:.2f} MB and a ~{CARD_BYTES / MiB:.0f} MiB card; "
        "no real data set",
        config={"size_mb": size_mb, "size_bytes": size_mb * MiB, "repeat": repeat, "xet": False,
                "lfs_transfer": "basic", "small_files": small_files, "small_file_kib": [2, 6],
                "small_file_folders": SMALL_FOLDERS, "yaml_bytes": YAML_BYTES, "card_bytes": CARD_BYTES,
                "get_interval_s": GET_INTERVAL_S, "cached_calls": CACHED_CALLS},
        runs=runs,
        tables=tables,
        headline=headline,
        verdict=verdict,
        details={"medians": med, "sha256_match": ok, "huggingface_hub": result["huggingface_hub"],
                 "arms": {"big_file": "client and server in this process", "big_file_process":
                          "the same file against a server in its own process", "small_files":
                          "upload_folder + snapshot_download, server in its own process",
                          "validate_yaml": "GET latency during an anonymous validate-yaml, server in its own process",
                          "model_info": "model_info on a 4 MiB card, server in its own process"},
                 "seeds": "each run's seed is its round index (0, 1, ...); --seeds is not used",
                 "load_avg_1min_at_end": os.getloadavg()[0]},
        seeds=list(range(repeat)),
    )
    for t in tables:
        print(f"## {t.title}")
        for row in t.rows:
            print(" | ".join(map(str, row)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
