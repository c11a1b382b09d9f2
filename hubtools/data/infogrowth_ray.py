"""InfoGrowth beyond one process: shard the stream on Ray Data, curate the shards in parallel, merge by the gain rule.

One :class:`~hubtools.data.infogrowth.InfoGrowth` curator holds one k-NN index and reads the
stream in order; an index of about a million rows fills a machine, and cleaning plus embedding
use one process. :func:`curate_on_ray` spreads the work:

1. **Split.** The stream (a ``ray.data.Dataset``, Parquet files, a ``datasets.Dataset`` or a
   column dict) is cut into ``num_shards`` *contiguous* ranges of its order: shard 0 is the first
   rows, shard 1 the next, and so on. Contiguous ranges are what make the merge order below the
   stream order.
2. **First pass, in parallel.** Every shard gets its own curator seeded with the same trusted
   seed rows and runs the full single-process pipeline (embed, clean, score, duplicate rule,
   insert) over its rows. Gains and duplicates are judged against the seeds and the shard's own
   kept rows only, so they are provisional. Cleaning is per row given the seeds (prototypes, δ,
   the seed probe), so every cleaning decision equals a single curator's: ``kept`` /
   ``relabeled`` / ``recaptioned`` / ``dropped_noisy`` and the agreement score ``ig_align``. One
   exception: ``score="probe"`` with ``probe_refit_every > 0`` refits the probe on the kept
   stream rows seen so far; shard 0 sees the same rows as a single curator, a later shard only
   its own, so its cleaning can differ (pass ``probe_refit_every=0`` for identical cleaning).
3. **Merge.** One merge curator (cleaning off, same k, ``dup_eps``, index and entropy setting,
   seeded with the same seeds) takes the rows each shard kept -- shard 0's in arrival order,
   then shard 1's, ... -- and re-scores each against the seeds and every row the merge kept
   before it, re-applying the duplicate rule. Cross-shard duplicates are caught here. The
   final gains are those a single curator computes for the stream "shard 0 rows, then shard 1
   rows, ...", i.e. the stream order, restricted to the rows the first pass kept.

How the selection differs from one curator over the same stream order, and why:

- A row dropped as a duplicate in the first pass stays dropped. A single curator would have
  compared it with *its* kept set, where the row it copied may be missing (that row itself a
  duplicate of a row in an earlier shard). Conversely a row can survive the merge that a single
  curator drops as a copy of such a missing row. Both need a near-duplicate *chain* across
  shards (a ~ b and b ~ c within ``dup_eps`` but a !~ c): exact copies and copy groups tighter
  than ``dup_eps`` never form one.
- With an exact index and no such chain, statuses, cleaning scores and gains equal the single
  curator's (gains up to float32 rounding, since batches fall differently); only ``ig_nn1`` of
  a row dropped in the first pass may differ (its distance to the same-shard copy it matched,
  where one curator measures the nearest kept member of the group).
- With HNSW both runs are approximate and their graphs differ (other rows, other insertion
  batches), so neighbours and hence gains differ slightly; the duplicate rule is affected only
  where HNSW misses a copy.
- The first-pass gains (:meth:`ShardedCuration.first_pass`) are higher than the final ones for
  later shards (fewer kept rows to be near; diminishing returns), which is why they are not
  used for selection.
- Gains depend on order. Shards in another order give the gains a single curator computes for
  that concatenated order.

Cost: the first pass scales with the workers; the merge is one process that searches and
inserts every first-pass-kept row, so it costs about what a single curator spends on the kept
rows (less the dropped and in-shard duplicate rows), and its index holds every kept row, like a
single curator's. What parallelises is embedding (``embed_fn``), cleaning and in-shard
de-duplication. The merge actor is fed the shards in order as they finish, so merging shard 0
overlaps with later shards' first passes where cores allow.

Ray is an optional extra (``pip install "hubtools[distributed]"``). On a laptop Ray starts a
local cluster on first use (or call ``ray.init(num_cpus=...)``); on a cluster call
``ray.init(address=...)`` first: the same code then runs the shards on the cluster's workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as _err:  # an optional extra: say how to get it instead of a bare ModuleNotFoundError
    raise ImportError(
        "hubtools.data.infogrowth_ray needs Ray Data, an optional extra: "
        'pip install "hubtools[distributed]"' + f" ({_err})"
    ) from _err

from hubtools.data.infogrowth import (
    KEPT_STATUSES,
    STATUSES,
    EmptyBatchError,
    InfoGrowth,
    InfoGrowthError,
    SeedError,
    normalize_gains,
)

logger = logging.getLogger(__name__)

_KEPT = np.array([STATUSES.index(s) for s in KEPT_STATUSES])
_DUPLICATE = STATUSES.index("duplicate")
# curator settings the merge curator shares with the shards: everything the gain rule depends on
_MERGE_KEYS = (
    "mode",
    "emb_column",
    "label_column",
    "text_emb_column",
    "k",
    "dup_eps",
    "index",
    "M",
    "ef_construction",
    "ef",
    "add_threads",
    "min_seed_per_class",
    "encoder_id",
    "seed",
    "entropy_gain",
)
_DECISION_COLUMNS = (
    "status",
    "align",
    "gain",
    "gain_img",
    "gain_txt",
    "gain_ent",
    "nn1",
    "label",
    "orig_label",
)
_GAIN_COLUMNS = ("gain", "gain_img", "gain_txt", "gain_ent", "nn1")


# --------------------------------------------------------------------------- arrow <-> columns


def columns_from_arrow(table: pa.Table | pa.RecordBatch) -> dict[str, Any]:
    """A column dict the curator reads: fixed- or equal-length numeric list columns become [rows, D] arrays.

    Ray Data's ``batch_format="numpy"`` turns such columns into object arrays of rows, which the
    curator would have to stack per batch; Arrow's flat child buffer reshapes without a copy.
    """
    out: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        t = col.type
        listy = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
        if listy and _numeric(t.value_type) and col.null_count == 0:
            flat = col.flatten().to_numpy(zero_copy_only=False)
            lengths = np.full(len(col), t.list_size) if pa.types.is_fixed_size_list(t) else None
            if lengths is None:
                lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            if len(col) == 0 or (lengths == lengths[0]).all():
                width = (
                    int(lengths[0]) if len(col) else (t.list_size if pa.types.is_fixed_size_list(t) else 0)
                )
                out[name] = flat.reshape(len(col), width)
                continue
        if isinstance(t, pa.ExtensionType) and hasattr(col, "to_numpy"):  # Ray's tensor extension type
            out[name] = col.to_numpy()
            continue
        out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def arrow_from_columns(columns: Mapping[str, Any], float32: Sequence[str] = ()) -> pa.Table:
    """An Arrow table from a column dict; [rows, D] arrays become ``fixed_size_list`` (``datasets``' ``List(length=D)``).

    Columns named in ``float32`` (the embeddings) are stored as float32 whatever a repair hook
    returned, so batches with and without repaired rows share one schema.
    """
    arrays = {}
    for name, values in columns.items():
        v = values
        if not isinstance(v, np.ndarray):
            seq = list(v)
            v = _matrix_or_none(seq)
            if v is None:
                arrays[name] = pa.array(seq)
                continue
        if name in float32 and v.dtype.kind in "fiu":
            v = v.astype(np.float32, copy=False)
        if v.ndim == 2 and v.dtype != object:
            arrays[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(v).reshape(-1)), v.shape[1]
            )
        elif v.dtype == object:
            arrays[name] = pa.array(v.tolist())
        else:
            arrays[name] = pa.array(v)
    return pa.table(arrays)


def _matrix_or_none(seq: list) -> np.ndarray | None:
    """Rows of equal-length numeric vectors as one [rows, D] array (e.g. a column a repair hook rewrote)."""
    if not seq or not isinstance(seq[0], (np.ndarray, list, tuple)):
        return None
    try:
        a = np.asarray(seq)
    except ValueError:
        return None
    return a if a.ndim == 2 and a.dtype.kind in "fiub" else None


def _take(values: Any, idx: np.ndarray) -> Any:
    return values[idx] if isinstance(values, np.ndarray) else [values[i] for i in idx.tolist()]


# --------------------------------------------------------------------------- first pass (one shard)


@dataclass
class ShardPass:
    """One shard's first pass: each row's decision against the seeds and the shard's own kept rows.

    ``columns`` holds the stream rows only (status as codes into ``STATUSES``); ``seed_columns`` the
    seed rows' decisions, identical in every shard. ``seed_hash`` fingerprints the seed embeddings,
    so shards whose ``embed_fn`` embedded the seeds differently are noticed.
    """

    shard: int
    start: int
    n_rows: int
    columns: dict[str, np.ndarray]
    seed_columns: dict[str, np.ndarray]
    seed_hash: str
    delta: float | None
    seconds: float
    cpu_seconds: float
    embed_seconds: float
    curate_seconds: float


@dataclass
class KeptRows:
    """What the merge needs from one shard: its first-pass kept rows' vectors (and labels), in arrival order.

    ``positions`` are row numbers within the shard. Vectors are the curated values (after
    ``embed_fn`` and any recaption), not yet normalised: the merge curator normalises them with
    the same arithmetic, so it indexes the very vectors a single curator would.
    """

    shard: int
    positions: np.ndarray
    img: np.ndarray
    txt: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positions)


def first_pass(
    shard: int,
    start: int,
    batches: Iterable[Mapping[str, Any]],
    seed_rows: Any,
    curator_kwargs: Mapping[str, Any],
    keep_rows: bool = False,
) -> tuple[ShardPass, KeptRows, dict[str, Any], pa.Table | None]:
    """Curate one shard with its own seeded curator (no Ray needed: the Ray task wraps this).

    Returns the pass, the kept rows' vectors for the merge, the seed rows as the curator embedded
    them (the merge curator is seeded with those, so ``embed_fn`` runs in the shards only), and,
    with ``keep_rows``, the kept rows' own columns (seed rows first, ``_ig_pos`` = row in shard,
    -1 for seeds) for writing.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    ig = InfoGrowth(**curator_kwargs)
    seed_out = ig.fit_seed(seed_rows)
    emb, txt, lab = ig.emb_column, ig.text_emb_column, ig.label_column
    text_mode = ig.mode == "image-text"
    kept_pos: list[np.ndarray] = []
    kept_img: list[np.ndarray] = []
    kept_txt: list[np.ndarray] = []
    kept_lab: list[np.ndarray] = []
    tables: list[pa.Table] = []
    embeddings = (emb, txt) if text_mode else (emb,)
    if keep_rows and shard == 0:  # the seed rows are written once, before shard 0's rows
        n_seed_rows = len(seed_out[emb])
        tables.append(_row_table(seed_out, np.arange(n_seed_rows), np.full(n_seed_rows, -1), embeddings))
    n = 0
    for batch in batches:
        out = ig.process_batch(batch)
        status = np.asarray(out["ig_status"], dtype=object)
        idx = np.flatnonzero(np.isin(status, KEPT_STATUSES))
        kept_pos.append(n + idx)
        kept_img.append(np.asarray(_take(out[emb], idx), dtype=np.float32).reshape(len(idx), ig.dim))
        if text_mode:
            kept_txt.append(np.asarray(_take(out[txt], idx), dtype=np.float32).reshape(len(idx), ig.dim))
        else:
            kept_lab.append(np.asarray(_take(out[lab], idx), dtype=np.int64))
        if keep_rows and len(idx):
            tables.append(_row_table(out, idx, n + idx, embeddings))
        n += len(status)
    res = ig.results()
    n_seed = ig.n_rows - n
    codes = np.array([STATUSES.index(s) for s in res["ig_status"]], dtype=np.int8)
    arrays = {
        "status": codes,
        "align": res["ig_align"],
        "gain": res["ig_gain"],
        "gain_img": res.get("ig_gain_img", res["ig_gain"] * 0),
        "gain_txt": res.get("ig_gain_txt", res["ig_gain"] * 0),
        "gain_ent": res.get("ig_gain_ent", res["ig_gain"] * 0),
        "nn1": res["ig_nn1"],
        "label": res.get(lab, np.full(len(codes), -1, np.int64)),
        "orig_label": res.get("orig_" + lab, np.full(len(codes), -1, np.int64)),
    }
    dim = ig.dim
    kept = KeptRows(
        shard=shard,
        positions=np.concatenate(kept_pos) if kept_pos else np.zeros(0, np.int64),
        img=np.concatenate(kept_img) if kept_img else np.zeros((0, dim), np.float32),
        txt=(np.concatenate(kept_txt) if kept_txt else np.zeros((0, dim), np.float32)) if text_mode else None,
        labels=None if text_mode else (np.concatenate(kept_lab) if kept_lab else np.zeros(0, np.int64)),
    )
    seed_vectors = {c: np.asarray(seed_out[c]) for c in ((emb, txt) if text_mode else (emb, lab))}
    rows = pa.concat_tables(tables, promote_options="permissive") if tables else None
    passed = ShardPass(
        shard=shard,
        start=start,
        n_rows=n,
        columns={k: v[n_seed:] for k, v in arrays.items()},
        seed_columns={k: v[:n_seed] for k, v in arrays.items()},
        seed_hash=ig.seed_hash,
        delta=ig.delta,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        embed_seconds=float(ig.stats["embed_seconds"]),
        curate_seconds=float(ig.stats["curate_seconds"]),
    )
    return passed, kept, seed_vectors, rows


def _row_table(
    out: Mapping[str, Any], idx: np.ndarray, pos: np.ndarray, embeddings: Sequence[str]
) -> pa.Table:
    cols = {k: _take(v, idx) for k, v in out.items() if not k.startswith("ig_")}
    cols["_ig_pos"] = np.asarray(pos, np.int64)
    return arrow_from_columns(cols, float32=embeddings)


# --------------------------------------------------------------------------- merge


@dataclass
class MergeScores:
    """The merge's verdict on one shard's kept rows: inserted (still kept) or a cross-shard duplicate, and gains."""

    shard: int
    positions: np.ndarray
    inserted: np.ndarray
    columns: dict[str, np.ndarray]
    seconds: float
    cpu_seconds: float


class GainMerger:
    """The merge step: one curator with cleaning off that re-scores the shards' kept rows in shard order.

    Cleaning is off (``score="none"``, δ = -inf) because every row it sees already passed the
    shards' cleaning with the labels and captions it now carries; what is left is the gain rule
    (k-NN mean of ``1 - cos``, duplicate rule, optional entropy gain), computed by the curator's
    own code. Plain Python: :func:`curate_on_ray` runs it as a Ray actor, another engine can too.
    """

    def __init__(self, curator_kwargs: Mapping[str, Any], batch_size: int = 1024) -> None:
        kwargs = {k: v for k, v in curator_kwargs.items() if k in _MERGE_KEYS}
        self.curator = InfoGrowth(**kwargs, score="none", delta=-math.inf)
        self.batch_size = batch_size
        self.next_shard = 0

    def seed(self, seed_vectors: Mapping[str, Any]) -> str:
        """Insert the seed rows (already embedded); returns their fingerprint."""
        self.curator.fit_seed(seed_vectors)
        return self.curator.seed_hash

    def add(self, kept: KeptRows) -> MergeScores:
        """Re-score one shard's kept rows against everything merged so far; shards must come in order."""
        if kept.shard != self.next_shard:
            raise InfoGrowthError(
                f"merge: got shard {kept.shard}, expected shard {self.next_shard}; the merge order is the shard order"
            )
        self.next_shard += 1
        t0, c0 = time.perf_counter(), time.process_time()
        ig = self.curator
        n = len(kept)
        for s in range(0, n, self.batch_size):
            batch = {ig.emb_column: kept.img[s : s + self.batch_size]}
            if ig.mode == "image-text":
                batch[ig.text_emb_column] = kept.txt[s : s + self.batch_size]
            else:
                batch[ig.label_column] = kept.labels[s : s + self.batch_size]
            ig.process_batch(batch)
        res = ig.results()  # float64, as a single curator records them
        last = slice(ig.n_rows - n, ig.n_rows)
        zeros = np.zeros(n)
        cols = {
            "gain": res["ig_gain"][last].copy(),
            "nn1": res["ig_nn1"][last].copy(),
            **{
                c: (res["ig_" + c][last].copy() if "ig_" + c in res else zeros)
                for c in ("gain_img", "gain_txt", "gain_ent")
            },
        }
        inserted = res["ig_status"][last] == "kept"
        return MergeScores(
            kept.shard, kept.positions, inserted, cols, time.perf_counter() - t0, time.process_time() - c0
        )


# --------------------------------------------------------------------------- result


@dataclass
class ShardedCuration:
    """The merged decisions for every seed and stream row, in stream order (seeds first).

    :meth:`results` has the keys and dtypes of :meth:`InfoGrowth.results`, so ``normalize_gains``,
    ``select`` and the samplers apply unchanged. :meth:`first_pass` adds each row's shard and its
    provisional first-pass status and gain.
    """

    mode: str
    label_column: str
    entropy_gain: bool
    columns: dict[str, np.ndarray]
    shard_bounds: list[int]
    n_seed: int
    settings: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    output_path: str | None = None

    @property
    def n_rows(self) -> int:
        return len(self.columns["status"])

    def kept_mask(self) -> np.ndarray:
        return np.isin(self.columns["status"], _KEPT)

    def gains_norm(self) -> np.ndarray:
        """ĝ as :meth:`InfoGrowth.gains_norm` computes it, over the merged kept rows."""
        kept = self.kept_mask()
        g = normalize_gains(self.columns["gain"], kept)
        if self.entropy_gain:
            g = np.where(kept, (g + self.columns["gain_ent"]) / 2.0, 0.0)
        return g

    def results(self) -> dict[str, np.ndarray]:
        """Per-row decisions with the columns of :meth:`InfoGrowth.results` (``ig_arrival`` = position, seeds first)."""
        c = self.columns
        out = {
            "ig_arrival": np.arange(self.n_rows, dtype=np.int64),
            "ig_status": np.array([STATUSES[s] for s in c["status"]], dtype=object),
            "ig_align": c["align"],
            "ig_gain": c["gain"],
            "ig_gain_norm": self.gains_norm(),
            "ig_nn1": c["nn1"],
        }
        if self.entropy_gain:
            out["ig_gain_ent"] = c["gain_ent"]
        if self.mode == "image-text":
            out["ig_gain_img"], out["ig_gain_txt"] = c["gain_img"], c["gain_txt"]
        else:
            out[self.label_column] = c["label"]
            out["orig_" + self.label_column] = c["orig_label"]
        return out

    def first_pass(self) -> dict[str, np.ndarray]:
        """Each row's shard (-1 for seeds) and its first-pass status, gain and nearest distance."""
        c = self.columns
        return {
            "ig_shard": c["shard"],
            "ig_shard_status": np.array([STATUSES[s] for s in c["shard_status"]], dtype=object),
            "ig_shard_gain": c["shard_gain"],
            "ig_shard_nn1": c["shard_nn1"],
        }

    def counts(self) -> dict[str, int]:
        codes = np.bincount(self.columns["status"].astype(np.int64), minlength=len(STATUSES))
        return {s: int(codes[i]) for i, s in enumerate(STATUSES)}

    def cross_shard_duplicates(self) -> int:
        """Rows the first pass kept and the merge found to copy a row of an earlier shard."""
        return int(
            ((self.columns["shard_status"] != _DUPLICATE) & (self.columns["status"] == _DUPLICATE)).sum()
        )

    def table(self) -> Any:
        """The decisions as a ``datasets.Dataset``, like :meth:`InfoGrowth.table`."""
        from datasets import Dataset

        res = self.results()
        res["ig_status"] = res["ig_status"].tolist()
        return Dataset.from_dict(res)


def assemble(
    passes: Sequence[ShardPass], merges: Sequence[MergeScores], curator: InfoGrowth, settings: dict[str, Any]
) -> ShardedCuration:
    """Stream-order arrays from the first passes, with the merge's verdict on every first-pass-kept row."""
    passes = sorted(passes, key=lambda p: p.shard)
    by_shard = {m.shard: m for m in merges}
    first = passes[0]
    n_seed = len(first.seed_columns["status"])
    names = (*_DECISION_COLUMNS, "shard", "shard_status", "shard_gain", "shard_nn1")
    parts: dict[str, list[np.ndarray]] = {c: [] for c in names}
    for c in _DECISION_COLUMNS:
        parts[c].append(first.seed_columns[c])
    parts["shard"].append(np.full(n_seed, -1, np.int64))
    parts["shard_status"].append(first.seed_columns["status"])
    parts["shard_gain"].append(first.seed_columns["gain"])
    parts["shard_nn1"].append(first.seed_columns["nn1"])
    for p in passes:
        cols = {c: np.array(p.columns[c], copy=True) for c in _DECISION_COLUMNS}
        m = by_shard.get(p.shard)
        if m is not None and len(m.positions):
            pos = m.positions
            for c in _GAIN_COLUMNS:
                cols[c][pos] = m.columns[c]
            cols["status"][pos[~m.inserted]] = _DUPLICATE
        for c in _DECISION_COLUMNS:
            parts[c].append(cols[c])
        parts["shard"].append(np.full(p.n_rows, p.shard, np.int64))
        parts["shard_status"].append(p.columns["status"])
        parts["shard_gain"].append(p.columns["gain"])
        parts["shard_nn1"].append(p.columns["nn1"])
    columns = {c: np.concatenate(v) for c, v in parts.items()}
    columns["status"] = columns["status"].astype(np.int8)
    bounds = [p.start for p in passes] + [passes[-1].start + passes[-1].n_rows]
    return ShardedCuration(
        mode=curator.mode,
        label_column=curator.label_column,
        entropy_gain=bool(curator.entropy_gain),
        columns=columns,
        shard_bounds=bounds,
        n_seed=n_seed,
        settings=settings,
    )


# --------------------------------------------------------------------------- Ray


def _first_pass_task(
    shard: int,
    start: int,
    dataset: ray.data.Dataset,
    seed_rows: Any,
    curator_kwargs: Mapping[str, Any],
    batch_size: int,
    keep_rows: bool,
) -> tuple[ShardPass, KeptRows, dict[str, Any] | None, pa.Table | None]:
    dataset.context.execution_options.preserve_order = True  # this worker's copy of the context
    batches = (
        columns_from_arrow(b) for b in dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow")
    )
    passed, kept, seed_vectors, rows = first_pass(shard, start, batches, seed_rows, curator_kwargs, keep_rows)
    return passed, kept, seed_vectors if shard == 0 else None, rows


def _final_rows(
    rows: pa.Table, final: dict[str, np.ndarray], n_seed: int, start: int, shard: int
) -> pa.Table:
    """The shard's kept rows with their merged ``ig_*`` columns; rows the merge dropped are left out."""
    pos = rows.column("_ig_pos").to_numpy()
    is_seed = pos < 0  # only shard 0's table has the seed rows, first
    arrival = np.where(is_seed, np.cumsum(is_seed) - 1, n_seed + start + pos)
    keep = np.isin(final["status"][arrival], _KEPT)
    rows = rows.drop_columns(["_ig_pos"]).filter(pa.array(keep))
    arrival = arrival[keep]
    extra = arrow_from_columns(
        {
            "ig_arrival": arrival.astype(np.int64),
            "ig_status": [STATUSES[s] for s in final["status"][arrival]],
            **{k: v[arrival].astype(np.float32) for k, v in final.items() if k != "status"},
            "ig_shard": np.where(is_seed[keep], -1, shard).astype(np.int64),
        }
    )
    for name in extra.column_names:
        rows = rows.append_column(name, extra.column(name))
    return rows


_first_pass_remote = ray.remote(_first_pass_task)
_final_rows_remote = ray.remote(_final_rows)
_MergerActor = ray.remote(GainMerger)


@contextlib.contextmanager
def _ordered(ds: ray.data.Dataset) -> Iterator[None]:
    """Execute ``ds`` with block order preserved (Ray Data may otherwise emit blocks as they finish)."""
    opts = ds.context.execution_options
    before = opts.preserve_order
    opts.preserve_order = True
    try:
        yield
    finally:
        opts.preserve_order = before


def _as_dataset(data: Any) -> ray.data.Dataset:
    if isinstance(data, ray.data.Dataset):
        return data
    if isinstance(data, (str, Path)):
        return ray.data.read_parquet(str(data))
    if isinstance(data, Sequence) and data and all(isinstance(p, (str, Path)) for p in data):
        return ray.data.read_parquet([str(p) for p in data])
    if hasattr(data, "with_format") and hasattr(data, "column_names"):  # a datasets.Dataset
        return ray.data.from_arrow(data.with_format("arrow")[:])
    if isinstance(data, Mapping):
        return ray.data.from_arrow(arrow_from_columns(data))
    raise InfoGrowthError(
        "data: expected a ray.data.Dataset, Parquet path(s), a datasets.Dataset or a column dict, "
        f"got {type(data).__name__}"
    )


def _seed_columns(seed_rows: Any) -> dict[str, Any]:
    """The seed rows as a plain column dict, so every shard task receives the same picklable values."""
    if seed_rows is None:
        raise SeedError(
            "seed_rows is required: every shard's curator is seeded with the same trusted seed rows "
            "(its prototypes, δ and first index rows come from them); without them the shards could not "
            "clean alike"
        )
    if isinstance(seed_rows, ray.data.Dataset):
        refs = seed_rows.to_arrow_refs()
        cols = columns_from_arrow(pa.concat_tables(ray.get(refs))) if refs else {}
    elif hasattr(seed_rows, "with_format") and hasattr(seed_rows, "column_names"):
        cols = columns_from_arrow(seed_rows.with_format("arrow")[:])
    elif isinstance(seed_rows, Mapping):
        cols = dict(seed_rows)
    else:
        rows = list(seed_rows)
        cols = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    if not cols or min(len(v) for v in cols.values()) == 0:
        raise EmptyBatchError("seed_rows: the trusted seed set has no rows")
    return cols


def _unwrap(err: ray.exceptions.RayTaskError) -> BaseException:
    """The curator's own error out of Ray's wrapper (its message names the column, row and value)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, InfoGrowthError) else err


def curate_on_ray(
    data: Any,
    seed_rows: Any,
    *,
    num_shards: int,
    curator_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    merge_batch_size: int = 1024,
    num_cpus_per_shard: float = 1.0,
    merge_num_cpus: float = 0.0,
    output_path: str | Path | None = None,
) -> ShardedCuration:
    """Curate a stream on Ray: ``num_shards`` contiguous shards in parallel, then the gain-rule merge.

    ``data``: a ``ray.data.Dataset``, a Parquet file / folder / list of files (read in the given
    order), a ``datasets.Dataset`` or a column dict; its row order is the stream order.
    ``seed_rows``: the trusted seed set (column dict, ``datasets.Dataset``, ``ray.data.Dataset`` or
    row dicts), given to every shard. ``curator_kwargs``: :class:`InfoGrowth` arguments
    (``embed_fn`` and the repair hooks run in the shard workers and must pickle; ``on_reject`` is
    refused, since it would run in a worker process where its side effects are lost: use the
    returned ``ig_status``). ``batch_size``: rows per curator batch in the first pass;
    ``merge_batch_size`` in the merge. ``merge_num_cpus``: the merge actor reserves no CPU by
    default, so it can never starve the shard tasks it waits for.

    ``output_path``: write the kept rows (seeds included) with their own columns plus the merged
    ``ig_*`` columns as Parquet through Ray Data (a local folder is written atomically; sort by
    ``ig_arrival`` for the stream order).
    """
    kwargs = dict(curator_kwargs or {})
    if kwargs.get("on_reject") is not None:
        raise InfoGrowthError(
            "curator_kwargs: on_reject is not supported on Ray (it would run inside a worker process); "
            "read the rejected rows from the returned ig_status instead"
        )
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise InfoGrowthError(f"num_shards: expected a positive integer, got {num_shards!r}")
    for name, value in (("batch_size", batch_size), ("merge_batch_size", merge_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InfoGrowthError(f"{name}: expected a positive integer, got {value!r}")
    curator = InfoGrowth(**kwargs)  # validates every argument before anything starts
    seeds = _seed_columns(seed_rows)
    cleaning_identical = not (
        curator.mode == "image-label" and curator.score == "probe" and curator.probe_refit_every > 0
    )
    if not cleaning_identical and num_shards > 1:
        logger.warning(
            "score='probe' with probe_refit_every=%d refits the probe on the kept rows seen so far: shards "
            "after the first refit on their own rows only, so their cleaning can differ from one curator's "
            "(probe_refit_every=0 makes it identical)",
            curator.probe_refit_every,
        )
    t0 = time.perf_counter()
    ds = _as_dataset(data)
    with _ordered(ds):
        n = ds.count()
        bounds = [int(round(i * n / num_shards)) for i in range(num_shards + 1)]
        shards = ds.split_at_indices(bounds[1:-1]) if num_shards > 1 else [ds.materialize()]
    t_split = time.perf_counter()
    keep_rows = output_path is not None
    seeds_ref = ray.put(seeds)
    task_refs = [
        _first_pass_remote.options(num_cpus=num_cpus_per_shard, num_returns=4).remote(
            s, bounds[s], shards[s], seeds_ref, kwargs, batch_size, keep_rows
        )
        for s in range(num_shards)
    ]
    merge_kwargs = {k: v for k, v in kwargs.items() if k in _MERGE_KEYS}
    merger = _MergerActor.options(num_cpus=merge_num_cpus).remote(merge_kwargs, merge_batch_size)
    try:
        # the actor runs its calls in submission order: seed, then shard 0, 1, ... each as soon as it is ready
        merger_seed = merger.seed.remote(task_refs[0][2])
        merge_refs = [merger.add.remote(task_refs[s][1]) for s in range(num_shards)]
        try:
            passes = ray.get([r[0] for r in task_refs])
            t_first = time.perf_counter()
            merge_hash = ray.get(merger_seed)
            merges = ray.get(merge_refs)
        except ray.exceptions.RayTaskError as err:
            for refs in task_refs:
                ray.cancel(refs[0])
            raise _unwrap(err) from None
    finally:
        ray.kill(merger)
    t_merge = time.perf_counter()
    hashes = {p.seed_hash for p in passes} | {merge_hash}
    if len(hashes) > 1:
        logger.warning(
            "the shards embedded the seed rows differently (%d distinct fingerprints): embed_fn is not "
            "deterministic, so cleaning may differ from one curator's",
            len(hashes),
        )
    settings = {
        **{k: v for k, v in curator.settings().items()},
        "delta": passes[0].delta,
        "num_shards": num_shards,
        "shard_bounds": bounds,
        "merge_order": "shard 0 kept rows in arrival order, then shard 1's, ... (= stream order)",
        "batch_size": batch_size,
        "merge_batch_size": merge_batch_size,
        "cleaning_identical_to_single_process": cleaning_identical,
    }
    result = assemble(passes, merges, curator, settings)
    if output_path is not None:
        _write_rows(result, task_refs, bounds, output_path)
        result.output_path = str(output_path)
    t_end = time.perf_counter()
    result.stats = {
        "rows": n,
        "seed_rows": result.n_seed,
        "num_shards": num_shards,
        "split_seconds": t_split - t0,
        "first_pass_wall_seconds": t_first - t_split,
        "merge_tail_seconds": t_merge - t_first,
        "merge_seconds": float(sum(m.seconds for m in merges)),
        "merge_cpu_seconds": float(sum(m.cpu_seconds for m in merges)),
        "write_seconds": t_end - t_merge if output_path is not None else 0.0,
        "wall_seconds": t_end - t0,
        "cross_shard_duplicates": result.cross_shard_duplicates(),
        "shards": [
            {
                "shard": p.shard,
                "start": p.start,
                "rows": p.n_rows,
                "kept_first_pass": int(np.isin(p.columns["status"], _KEPT).sum()),
                "seconds": p.seconds,
                "cpu_seconds": p.cpu_seconds,
                "curate_seconds": p.curate_seconds,
                "embed_seconds": p.embed_seconds,
            }
            for p in sorted(passes, key=lambda p: p.shard)
        ],
        "seed_fingerprints_agree": len(hashes) == 1,
    }
    logger.info(
        "curate_on_ray: %d rows in %d shards, %.1f s (split %.1f, first pass %.1f, merge tail %.1f); %d cross-shard duplicates",
        n,
        num_shards,
        result.stats["wall_seconds"],
        result.stats["split_seconds"],
        result.stats["first_pass_wall_seconds"],
        result.stats["merge_tail_seconds"],
        result.stats["cross_shard_duplicates"],
    )
    return result


def _write_rows(result: ShardedCuration, task_refs: list, bounds: list[int], output_path: str | Path) -> None:
    final = {"status": result.columns["status"]}
    res = result.results()
    for c in ("ig_align", "ig_gain", "ig_gain_norm", "ig_nn1", "ig_gain_ent", "ig_gain_img", "ig_gain_txt"):
        if c in res:
            final[c] = np.asarray(res[c], np.float64)
    final_ref = ray.put(final)
    kept, shard = result.kept_mask(), result.columns["shard"]
    refs = [
        _final_rows_remote.remote(task_refs[s][3], final_ref, result.n_seed, bounds[s], s)
        for s in range(len(task_refs))
        if s == 0 or (kept & (shard == s)).any()  # a shard that kept nothing returned no table
    ]
    out = ray.data.from_arrow_refs(refs)
    if "://" in str(output_path):  # object storage: no rename, written in place
        out.write_parquet(str(output_path))
        return
    from hubtools.hub.artifacts import atomic_dir

    with atomic_dir(output_path) as tmp:
        out.write_parquet(str(tmp))
