"""One-pass InfoGrowth output: sharded Parquet equal to the in-memory selection, resumable byte for byte.

The source is synthetic on purpose: clustered random embeddings with integer labels, 15% flipped
labels, 7.5% off-cluster rows and 5% exact copies give every status (seed, kept, relabeled, dropped_noisy, duplicate) in a
few thousand rows, and a tiny ``max_shard_size`` makes several shards per split.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hubtools.cli import main
from hubtools.data.cli import InfoGrowthConfig, curate_to_folder
from hubtools.data.infogrowth import KEPT_STATUSES, InfoGrowth, normalize_gains, select
from hubtools.data.infogrowth_io import ShardedParquetWriter

DIM, N_STREAM, BATCH = 32, 3000, 256
SHARD = "60KB"
SHARD_BYTES = 60_000


def _build_source(path: Path) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)

    def rows(n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        c = rng.integers(0, 20, n)
        x = centres[c] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
        y = c % 10
        flip = rng.random(n) < noise
        y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
        junk = (
            rng.random(n) < noise / 2
        )  # off every cluster: no class wins clearly, so relabelling drops them
        x[junk] = rng.standard_normal((junk.sum(), DIM))
        return x, y

    xs, ys = rows(400, 0.0)
    keep = np.concatenate([np.flatnonzero(ys == k)[:30] for k in range(10)])
    x, y = rows(N_STREAM, 0.15)
    dup = rng.choice(N_STREAM - 1, N_STREAM // 20, replace=False)
    x[dup + 1], y[dup + 1] = x[dup], y[dup]
    feats = Features(
        {
            "img_emb": List(Value("float32"), length=DIM),
            "label": ClassLabel(num_classes=10),
            "payload": Value("string"),
            "row_id": Value("int64"),
        }
    )

    def table(x: np.ndarray, y: np.ndarray, first_id: int) -> Dataset:
        ids = np.arange(first_id, first_id + len(y))
        return Dataset.from_dict(
            {"img_emb": x, "label": y, "payload": [f"row {i} " + "x" * (i % 40) for i in ids], "row_id": ids},
            features=feats,
        )

    DatasetDict({"trusted": table(xs[keep], ys[keep], 10**6), "train": table(x, y, 0)}).save_to_disk(
        str(path)
    )
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _build_source(tmp_path_factory.mktemp("src") / "synthetic")


def _args(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        "data",
        "infogrowth",
        "--dataset",
        str(src),
        "--label-column",
        "label",
        "--relabel",
        "--max-shard-size",
        SHARD,
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """An uninterrupted run without --state (staging in a temporary folder next to --out)."""
    out = tmp_path_factory.mktemp("ref") / "selection"
    cfg = InfoGrowthConfig(
        dataset=str(source), label_column="label", relabel=True, max_shard_size=SHARD, out=out
    )
    summary = curate_to_folder(cfg, show_progress=False)
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]  # the temporary staging is gone
    return out, summary


def _read(out: Path, split: str) -> pa.Table:
    files = sorted((out / "data").glob(f"{split}-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_shards_equal_the_in_memory_selection_row_for_row(source, reference):
    from datasets import load_from_disk

    out, summary = reference
    dd = load_from_disk(str(source))
    seed, stream = dd["trusted"].with_format("numpy"), dd["train"].with_format("numpy")
    # the curator the CLI's defaults describe, fed straight from NumPy in the CLI's batches
    ig = InfoGrowth("image-label", relabel=True, k=4, dup_eps=1e-4, index="hnsw", seed=0)
    ig.fit_seed({"img_emb": seed["img_emb"], "label": seed["label"]})
    x, y = stream["img_emb"], stream["label"]
    for s in range(0, N_STREAM, BATCH):
        ig.process_batch({"img_emb": x[s : s + BATCH], "label": y[s : s + BATCH]})
    res = ig.results()
    kept = np.isin(res["ig_status"], KEPT_STATUSES)
    gnorm = normalize_gains(res["ig_gain"], kept)
    chosen = select(gnorm, 0.3, "proportional", seed=0)
    assert {"seed", "kept", "relabeled", "dropped_noisy", "duplicate"} <= set(res["ig_status"])

    row_id = np.concatenate([seed["row_id"], stream["row_id"]])
    emb = np.concatenate([seed["img_emb"], x])
    label_in = np.concatenate([seed["label"], y])
    for split, rows in (("train", chosen), ("rejected", np.flatnonzero(~kept))):
        t = _read(out, split)
        assert t.column("ig_arrival").to_numpy().tolist() == rows.tolist()
        assert t.column("row_id").to_numpy().tolist() == row_id[rows].tolist()
        assert t.column("payload").to_pylist() == [f"row {i} " + "x" * (i % 40) for i in row_id[rows]]
        got_emb = np.asarray(t.column("img_emb").combine_chunks().flatten()).reshape(-1, DIM)
        assert np.array_equal(got_emb, emb[rows])
        assert t.column("ig_status").to_pylist() == res["ig_status"][rows].tolist()
        assert np.array_equal(t.column("ig_gain").to_numpy(), res["ig_gain"][rows].astype(np.float32))
        assert np.array_equal(t.column("ig_align").to_numpy(), res["ig_align"][rows].astype(np.float32))
        assert np.array_equal(t.column("label").to_numpy(), res["label"][rows])
        assert np.array_equal(t.column("orig_label").to_numpy(), label_in[rows])
        want_norm = gnorm[rows].astype(np.float32) if split == "train" else np.zeros(len(rows), np.float32)
        assert np.array_equal(t.column("ig_gain_norm").to_numpy(), want_norm)
    assert summary["selected"] == len(chosen)

    # the random baseline draws from every row, rejected ones included (staged even with --no-rejected)
    out_r = out.parent / "random"
    cfg = InfoGrowthConfig(
        dataset=str(source),
        label_column="label",
        relabel=True,
        method="random",
        rejected=False,
        max_shard_size=SHARD,
        out=out_r,
    )
    curate_to_folder(cfg, show_progress=False)
    rows = select(gnorm, 0.3, "random", seed=0)
    assert (~kept[rows]).any() and not list((out_r / "data").glob("rejected-*"))
    t = _read(out_r, "train")
    assert t.column("ig_arrival").to_numpy().tolist() == rows.tolist()
    assert t.column("row_id").to_numpy().tolist() == row_id[rows].tolist()
    assert t.column("ig_status").to_pylist() == res["ig_status"][rows].tolist()


def test_entropy_gain_and_class_floor_reach_the_written_selection(source, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "floor"
    r = CliRunner().invoke(
        main,
        _args(source, out, "--entropy-gain", "--min-per-class", "40", "--budget", "0.1", "--score", "probe"),
    )
    assert r.exit_code == 0, r.output
    dd = load_from_disk(str(source))
    seed, stream = dd["trusted"].with_format("numpy"), dd["train"].with_format("numpy")
    ig = InfoGrowth("image-label", relabel=True, entropy_gain=True, seed=0)
    ig.fit_seed({"img_emb": seed["img_emb"], "label": seed["label"]})
    for s in range(0, N_STREAM, BATCH):
        ig.process_batch(
            {"img_emb": stream["img_emb"][s : s + BATCH], "label": stream["label"][s : s + BATCH]}
        )
    res = ig.results()
    chosen = select(res["ig_gain_norm"], 0.1, "proportional", seed=0, labels=res["label"], min_per_class=40)
    plain = select(res["ig_gain_norm"], 0.1, "proportional", seed=0)
    t = _read(out, "train")
    assert t.column("ig_arrival").to_numpy().tolist() == chosen.tolist()
    assert np.array_equal(t.column("ig_gain_ent").to_numpy(), res["ig_gain_ent"][chosen].astype(np.float32))
    counts = np.bincount(t.column("label").to_numpy(), minlength=10)
    available = np.bincount(res["label"][res["ig_gain_norm"] > 0], minlength=10)
    assert (counts >= np.minimum(40, available)).all()
    assert np.bincount(res["label"][plain], minlength=10).min() < 40  # the floor changed the selection


def test_shards_respect_max_shard_size_and_load_with_datasets(reference):
    from datasets import load_dataset

    out, summary = reference
    for split in ("train", "rejected"):
        files = sorted((out / "data").glob(f"{split}-*.parquet"))
        n = len(files)
        assert n >= 2 and [f.name for f in files] == [f"{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        sizes = [f.stat().st_size for f in files]
        assert max(sizes) <= SHARD_BYTES
        groups = [pq.ParquetFile(f).metadata for f in files]
        assert all(m.num_row_groups >= 2 for m in groups[:-1])  # several row groups per shard
        counts = [m.row_group(i).num_rows for m in groups for i in range(m.num_row_groups)]
        assert len(set(counts[:-1])) == 1 and counts[-1] <= counts[0]  # a fixed row count per group
    record = json.loads((out / "infogrowth.json").read_text())
    assert record["output"]["max_shard_size"] == SHARD_BYTES
    back = load_dataset(str(out))
    assert back["train"].num_rows == summary["selected"]
    assert back["train"].features["img_emb"].length == DIM
    assert back["train"].features["label"].num_classes == 10  # the ClassLabel survives


def test_sharded_writer_bytes_depend_on_the_rows_only(tmp_path):
    """Re-chunked into fixed row groups: how the rows arrive does not change a byte."""
    from datasets import Features, List, Value

    feats = Features({"v": List(Value("float32"), length=8), "s": Value("string")})
    rng = np.random.default_rng(1)
    v = rng.standard_normal((2500, 8)).astype(np.float32)
    full = pa.Table.from_pydict(
        {"v": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 8), "s": [f"s{i}" for i in range(2500)]},
        schema=feats.arrow_schema,
    )
    outs = []
    for name, cuts in (("a", [2500]), ("b", [1, 999, 7, 1493]), ("c", [256] * 9 + [196])):
        w = ShardedParquetWriter(tmp_path / name, "train", feats, 30_000)
        pos = 0
        for n in cuts:
            w.write(full.slice(pos, n))
            pos += n
        outs.append(w.close())
        assert w.rows == 2500 and all(p.stat().st_size <= 30_000 for p in outs[-1])
    assert len(outs[0]) >= 3
    assert (
        [p.read_bytes() for p in outs[0]]
        == [p.read_bytes() for p in outs[1]]
        == [p.read_bytes() for p in outs[2]]
    )


def _cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HUBTOOLS_INFOGROWTH_TEST_KILL", None)
    if kill_at:
        env["HUBTOOLS_INFOGROWTH_TEST_KILL"] = kill_at
    code = "import sys; from hubtools.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_sigkill_anywhere_then_rerun_gives_byte_identical_shards(source, reference, tmp_path):
    ref, _ = reference
    out, state = tmp_path / "sel", tmp_path / "state"
    args = _args(source, out, "--state", str(state))
    # 1. killed after the 8th stream batch: the staging shards opened after the last checkpoint are half written
    r = _cli(args, "batch:8")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    manifest = json.loads((state / "checkpoint.json").read_text())
    assert 0 < manifest["rows_seen"] < 8 * BATCH  # a shard boundary checkpointed without --checkpoint-every
    committed = {e["file"] for e in manifest["kept"] + manifest["rejected"]}
    assert {p.name for p in (state / "staging").iterdir()} - committed  # uncommitted shards on disk
    # 2. killed inside the 2nd checkpoint of the rerun: curator saved, manifest not yet committed
    r = _cli(args, "checkpoint:2")
    assert r.returncode == -signal.SIGKILL and f"resumed from {state}: {manifest['rows_seen']} " in r.stderr
    # 3. killed after the 2nd final shard: the stream is done, the output folder half written
    r = _cli(args, "final:2")
    assert r.returncode == -signal.SIGKILL and "resumed from" in r.stderr
    assert json.loads((state / "checkpoint.json").read_text())["rows_seen"] == N_STREAM
    assert not out.exists()
    # 4. the rerun finishes
    r = _cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in (ref / "data").iterdir())
    assert names == sorted(p.name for p in (out / "data").iterdir()) and len(names) >= 6
    # byte-identical: every data/*.parquet shard and the card; infogrowth.json differs only in its timings
    for name in names:
        assert (out / "data" / name).read_bytes() == (ref / "data" / name).read_bytes(), name
    assert (out / "README.md").read_bytes() == (ref / "README.md").read_bytes()
    a, b = (json.loads((d / "infogrowth.json").read_text()) for d in (out, ref))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_state_alone_checkpoints_and_refuses_another_stream(source, tmp_path):
    out, state = tmp_path / "sel", tmp_path / "state"
    r = CliRunner().invoke(main, _args(source, out, "--state", str(state)))
    assert r.exit_code == 0, r.output
    manifest = json.loads((state / "checkpoint.json").read_text())
    assert manifest["rows_seen"] == N_STREAM and (state / manifest["curator"] / "state.json").exists()
    assert len(manifest["kept"]) >= 3  # the seed set, then every staging-shard boundary, then the end
    staged = sum(e["rows"] for e in manifest["kept"])
    record = json.loads((out / "infogrowth.json").read_text())
    c = record["statistics"]["counts"]
    assert staged == c["seed"] + c["kept"] + c["relabeled"]
    # a checkpoint made with other batches would mix two streams: refused, nothing changed
    r = CliRunner().invoke(main, _args(source, out, "--state", str(state), "--batch-size", "128"))
    assert r.exit_code == 1 and "batch_size=256" in r.output
    assert json.loads((state / "checkpoint.json").read_text()) == manifest


def test_bad_max_shard_size_names_the_key(source, tmp_path):
    args = _args(source, tmp_path / "o")
    args[args.index("--max-shard-size") + 1] = "lots"
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "max_shard_size" in r.output and "'lots'" in r.output
    assert not (tmp_path / "o").exists()
