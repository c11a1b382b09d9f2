"""Streaming Parquet I/O for ``hubtools data infogrowth``: one pass over the source, bounded memory.

Why two stages. The curator decides each row's status and raw gain as the row arrives, but the
selection needs the normalised gain ĝ = clip(g / Q_0.99(g over kept rows), 0, 1) and a budget over
all rows, which exist only at the end of the stream. So rows are written twice, never held:

1. **Staging** (:class:`Staging`): every processed batch is split into kept rows (``seed``,
   ``kept``, ``relabeled``, ``recaptioned``) and rejected rows (``dropped_noisy``, ``duplicate``),
   each appended to its own staging shard with all source columns and the ``ig_*`` columns (raw
   gain included). A staging shard is closed when the next batch would push it past the shard size.
2. **Final shards** (:class:`ShardedParquetWriter`, :func:`write_split`): the kept staging shards
   are read back one row group at a time, the selected rows get ``ig_gain_norm`` and go to
   ``data/train-XXXXX-of-YYYYY.parquet``; rejected rows likewise to ``data/rejected-*``.

Resumable at any instant. With a state folder, :meth:`Staging.checkpoint` closes the open staging
shards, saves the curator (``InfoGrowth.save_state``) into the slot the last checkpoint did not
use, and only then commits ``checkpoint.json`` (write + rename) naming that slot, the stream rows
consumed and the finished shards. A process killed anywhere (SIGKILL included) leaves either the
old or the new manifest; :meth:`Staging.resume` loads the curator it names and deletes every staging
file written after it, so the rerun redoes exactly the lost batches. The final shards depend only
on the sequence of selected rows (row groups of a fixed row count, re-chunked whatever the staging
layout, shard breaks decided from exact encoded sizes), so a resumed run writes byte-identical
``data/*.parquet`` to an uninterrupted one.

Memory: one batch, one staging row group and one final row group of rows at a time, plus what the
curator itself keeps (its ANN index and a few numbers per row).

Test hook: the environment variable ``HUBTOOLS_INFOGROWTH_TEST_KILL=POINT:N`` makes the process
SIGKILL itself at a chosen spot, so tests can check the resume guarantee at the dangerous instants:
``batch:N`` right after the N-th stream batch of this process is staged (open shards half written),
``checkpoint:N`` inside the N-th checkpoint (curator saved, manifest not yet committed), ``final:N``
after the N-th final shard is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubtools.data.infogrowth import KEPT_STATUSES, InfoGrowth, InfoGrowthError, StateMismatchError

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = "500MB"
# datasets' own cap on a row group (config.MAX_ROW_GROUP_SIZE): readers load a row group at once
MAX_ROW_GROUP_BYTES = 100 * 10**6
# final row groups hold a fixed number of rows, sized from the first rows of the split
SIZE_SAMPLE_ROWS = 1000
ROW_GROUPS_PER_SHARD = 10
# slack per column chunk for the footer offsets of a shard growing larger than a lone row group
FOOTER_SLACK_PER_CHUNK = 64
MANIFEST = "checkpoint.json"
STAGING_VERSION = 1
CURATOR_SLOTS = ("curator-a", "curator-b")
_TEST_KILL_ENV = "HUBTOOLS_INFOGROWTH_TEST_KILL"
_kill_counts: dict[str, int] = {}


def kill_point_hook(point: str) -> None:
    """Test hook: SIGKILL this process at the N-th pass through ``point`` (``HUBTOOLS_INFOGROWTH_TEST_KILL``)."""
    spec = os.environ.get(_TEST_KILL_ENV)
    if not spec or not spec.startswith(point + ":"):
        return
    _kill_counts[point] = _kill_counts.get(point, 0) + 1
    if _kill_counts[point] == int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def parse_shard_size(value: str | int) -> int:
    """Bytes from ``500MB`` / ``1GiB`` / an int, as ``datasets``' ``push_to_hub(max_shard_size=...)`` reads it."""
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(value)
    except (ValueError, TypeError):
        raise InfoGrowthError(
            f"max_shard_size: expected a size such as '500MB', '1GiB' or a byte count, got {value!r}"
        ) from None
    if size <= 0:
        raise InfoGrowthError(f"max_shard_size: expected a positive size, got {value!r}")
    return int(size)


# --------------------------------------------------------------------------- schemas and columns


def ig_feature(name: str) -> Any:
    """The feature of a decision column: ``ig_status`` text, ``ig_arrival`` int64, every score float32."""
    from datasets import Value

    return Value({"ig_status": "string", "ig_arrival": "int64"}.get(name, "float32"))


def staging_features(source: Any, ig_columns: Sequence[str], repaired: Sequence[str]) -> Any:
    """Source columns (any older ``ig_*``/``orig_*`` of the same names replaced), ``orig_<col>`` for
    every column the curator may repair, then the decision columns in the curator's order."""
    from datasets import Features

    produced = set(ig_columns) | {"ig_gain_norm"} | {f"orig_{c}" for c in repaired}
    feats = {name: f for name, f in source.items() if name not in produced}
    feats |= {f"orig_{c}": source[c] for c in repaired}
    return Features(feats | {c: ig_feature(c) for c in ig_columns})


def final_features(staging: Any) -> Any:
    """The published columns: the staging ones with ``ig_gain_norm`` before ``ig_arrival``."""
    from datasets import Features, Value

    out = {}
    for name, f in staging.items():
        if name == "ig_arrival":
            out["ig_gain_norm"] = Value("float32")
        out[name] = f
    return Features(out)


def curator_columns(table: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The columns the curator reads, as NumPy: vectors as one [rows, dim] matrix, no Python lists."""
    import pyarrow as pa

    out: dict[str, Any] = {}
    for name in columns:
        arr = table.column(name).combine_chunks()
        if (
            pa.types.is_fixed_size_list(arr.type)
            or pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)
        ):
            out[name] = _vectors(arr)
        else:
            out[name] = arr.to_numpy(zero_copy_only=False)
    return out


def _vectors(arr: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(arr) and arr.null_count == 0:
        if pa.types.is_fixed_size_list(arr.type):
            width = arr.type.list_size
        else:
            lengths = pc.list_value_length(arr).to_numpy()
            width = int(lengths[0]) if lengths.min() == lengths.max() else -1
        flat = arr.flatten()  # honours the slice offset, unlike .values
        numeric = pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)
        if width >= 0 and flat.null_count == 0 and numeric:
            return flat.to_numpy(zero_copy_only=False).reshape(len(arr), width)
    return arr.to_pylist()  # ragged or holed: the curator names the bad row


def _to_arrow(values: Any, type_: Any) -> Any:
    import pyarrow as pa

    if isinstance(values, np.ndarray) and values.ndim == 2:
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1]).cast(type_)
    return pa.array(values, type=type_)


class DecisionTables:
    """Turns a source batch (Arrow) plus the curator's output for it into one staging table.

    ``ig_columns`` are the decision columns the curator returns (``InfoGrowth.fit_seed`` tells
    which); ``repaired`` the source columns it may rewrite (the label with relabelling), kept as
    ``orig_<col>``. Source columns are cast to the seed split's features (files a feature refers
    to embedded, as ``push_to_hub`` does), so every batch gets the same schema.
    """

    def __init__(self, features: Any, ig_columns: Sequence[str], repaired: Sequence[str]) -> None:
        from datasets import Features
        from datasets.features.features import require_storage_embed

        self.features, self.ig, self.repaired = features, list(ig_columns), list(repaired)
        self.schema = features.arrow_schema
        derived = set(self.ig) | {f"orig_{c}" for c in repaired}
        self.source_names = [n for n in features if n not in derived]
        self.source_schema = Features({n: features[n] for n in self.source_names}).arrow_schema
        self.embed = any(require_storage_embed(features[n]) for n in self.source_names)

    @classmethod
    def for_source(cls, source: Any, ig_columns: Sequence[str], repaired: Sequence[str]) -> DecisionTables:
        return cls(staging_features(source, ig_columns, repaired), ig_columns, repaired)

    def source_table(self, table: Any, where: str) -> Any:
        from datasets.table import embed_table_storage, table_cast

        have = set(table.column_names) - set(self.ig) - {"ig_gain_norm"}
        missing = [n for n in self.source_names if n not in have]
        extra = sorted(have - set(self.source_names) - {f"orig_{c}" for c in self.repaired})
        if missing or extra:
            raise InfoGrowthError(
                f"{where}: its columns differ from the seed split's (missing {missing}, extra {extra}); "
                "the curated rows of both are written to one table"
            )
        try:
            src = table_cast(table.select(self.source_names), self.source_schema)
        except (ValueError, TypeError, NotImplementedError) as err:
            raise InfoGrowthError(
                f"{where}: cannot cast a batch to the seed split's features ({err})"
            ) from None
        return embed_table_storage(src) if self.embed else src

    def table(self, source: Any, out: Mapping[str, Any], where: str) -> Any:
        """The staging table of one batch: source columns, curator repairs, ``ig_*`` decisions."""
        import pyarrow as pa

        src = self.source_table(source, where)
        unknown = sorted(k for k in out if k.startswith(("ig_", "orig_")) and k not in self.schema.names)
        if unknown or any(c not in out for c in self.ig):
            raise InfoGrowthError(
                f"{where}: the curator returned decision columns {sorted(k for k in out if k.startswith('ig_'))}"
                f"{' and ' + str(unknown) if unknown else ''}; the staged table has {self.ig}"
            )
        arrays = []
        for field in self.schema:
            name = field.name
            if name in self.ig:
                arrays.append(_to_arrow(out[name], field.type))
            elif name.startswith("orig_") and name[5:] in self.repaired:
                base = name[5:]
                arrays.append(_to_arrow(out[name], field.type) if name in out else src.column(base))
            elif name in self.repaired and f"orig_{name}" in out:
                arrays.append(_to_arrow(out[name], field.type))
            else:
                arrays.append(src.column(name))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def with_gain_norm(table: Any, gains_norm: np.ndarray, features: Any) -> Any:
    """A staging table with its ``ig_gain_norm`` column, in the published schema."""
    import pyarrow as pa

    at = table.schema.get_field_index("ig_arrival")
    table = table.add_column(at, pa.field("ig_gain_norm", pa.float32()), pa.array(gains_norm, pa.float32()))
    return pa.Table.from_arrays(table.columns, schema=features.arrow_schema)


def split_kept(table: Any) -> tuple[Any, Any]:
    """(kept rows, rejected rows) of a staging table, by ``ig_status``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kept = pc.is_in(table.column("ig_status"), value_set=pa.array(KEPT_STATUSES))
    return table.filter(kept), table.filter(pc.invert(kept))


# --------------------------------------------------------------------------- final shards


def parquet_options(features: Any, schema: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """``pq.ParquetWriter`` settings and footer metadata as ``datasets`` writes Parquet for the Hub:
    content-defined chunking (Xet deduplicates re-uploads), page index, media columns stored plain."""
    from datasets import config
    from datasets.arrow_writer import get_parquet_column_options

    cdc = config.DEFAULT_CDC_OPTIONS
    opts = {"use_content_defined_chunking": cdc, "write_page_index": True}
    return opts | get_parquet_column_options(features, schema), {"content_defined_chunking": json.dumps(cdc)}


class ShardedParquetWriter:
    """Tables in, ``{split}-XXXXX-of-YYYYY.parquet`` shards out, each at most ``max_shard_size`` bytes.

    Row groups hold a fixed number of rows, chosen once from the encoded size of the split's first
    rows (about a tenth of a shard, at most 100 MB), and are re-chunked whatever the incoming table
    sizes: the bytes depend on the rows alone. Before each row group is appended, it is encoded alone
    in memory; its exact size decides whether it still fits the open shard or starts a new one. A
    shard is larger than ``max_shard_size`` only when a single row group is.
    """

    def __init__(self, folder: Path, split: str, features: Any, max_shard_size: int) -> None:
        self.folder, self.split, self.max_shard_size = Path(folder), split, max_shard_size
        self.schema = features.arrow_schema
        self.options, self.footer = parquet_options(features, self.schema)
        self.slack = FOOTER_SLACK_PER_CHUNK * sum(_leaf_count(f.type) for f in self.schema)
        self.row_group_rows: int | None = None
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer: Any = None
        self._sink: Any = None
        self._bound = 0
        self._shard_groups = 0
        self._paths: list[Path] = []
        self.rows = 0
        self.row_groups = 0

    def write(self, table: Any) -> None:
        if table.num_rows == 0:
            return
        if not table.schema.equals(self.schema, check_metadata=False):
            raise InfoGrowthError(
                f"{self.split}: a table with schema {table.schema} does not fit {self.schema}"
            )
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self.row_group_rows is None and self._pending_rows < SIZE_SAMPLE_ROWS:
            return
        self._flush(final=False)

    def close(self) -> list[Path]:
        """Write what is left, close the last shard and give every shard its ``-of-YYYYY`` name."""
        self._flush(final=True)
        self._close_shard()
        n = len(self._paths)
        final = []
        for i, p in enumerate(self._paths):
            target = self.folder / f"{self.split}-{i:05d}-of-{n:05d}.parquet"
            p.rename(target)
            final.append(target)
        return final

    def _flush(self, final: bool) -> None:
        if not self._pending_rows:
            return
        if self.row_group_rows is None:
            sample = self._take(min(SIZE_SAMPLE_ROWS, self._pending_rows), keep=True)
            per_row = self._encoded_size(sample) / sample.num_rows
            target = min(MAX_ROW_GROUP_BYTES, self.max_shard_size // ROW_GROUPS_PER_SHARD)
            self.row_group_rows = max(1, int(target // per_row))
        while self._pending_rows >= self.row_group_rows or (final and self._pending_rows):
            self._write_group(self._take(min(self.row_group_rows, self._pending_rows)))

    def _take(self, n: int, keep: bool = False) -> Any:
        """The first ``n`` pending rows as one contiguous table (removed from the queue unless ``keep``)."""
        import pyarrow as pa

        taken, rest, need = [], [], n
        for t in self._pending:
            if need <= 0:
                rest.append(t)
            elif t.num_rows <= need:
                taken.append(t)
                need -= t.num_rows
            else:
                taken.append(t.slice(0, need))
                rest.append(t.slice(need))
                need = 0
        # one chunk per column, so that the encoding cannot depend on how the rows arrived
        out = pa.concat_tables(taken).combine_chunks()
        if not keep:
            self._pending, self._pending_rows = rest, self._pending_rows - n
        return out

    def _encoded_size(self, table: Any) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = pa.BufferOutputStream()
        writer = pq.ParquetWriter(buf, self.schema, **self.options)
        writer.write_table(table, row_group_size=table.num_rows)
        writer.add_key_value_metadata(self.footer)
        writer.close()
        return buf.getvalue().size

    def _write_group(self, table: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_arrays(table.columns, schema=self.schema)
        cost = self._encoded_size(table) + self.slack
        if self._writer is not None and self._bound + cost > self.max_shard_size:
            self._close_shard()
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f".{self.split}-{len(self._paths):05d}.parquet.partial"
            self._paths.append(path)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self.schema, **self.options)
            self._bound, self._shard_groups = 0, 0
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._bound += cost
        self._shard_groups += 1
        self.rows += table.num_rows
        self.row_groups += 1

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.add_key_value_metadata(self.footer)
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        size = self._paths[-1].stat().st_size
        if size > self.max_shard_size:
            logger.warning(
                "%s: shard %d is %d bytes, above max_shard_size %d (%d row group(s) of %d rows)",
                self.split,
                len(self._paths) - 1,
                size,
                self.max_shard_size,
                self._shard_groups,
                self.row_group_rows,
            )
        kill_point_hook("final")


def _leaf_count(type_: Any) -> int:
    """Parquet column chunks a field of this Arrow type makes (one per leaf)."""
    import pyarrow as pa

    if pa.types.is_struct(type_):
        return sum(_leaf_count(type_.field(i).type) for i in range(type_.num_fields))
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaf_count(type_.value_type)
    if pa.types.is_map(type_):
        return _leaf_count(type_.key_type) + _leaf_count(type_.item_type)
    return 1


def row_groups(files: Sequence[Path]) -> Iterator[Any]:
    """The row groups of Parquet ``files`` in order, one table at a time."""
    import pyarrow.parquet as pq

    for path in files:
        with pq.ParquetFile(path) as pf:
            for i in range(pf.num_row_groups):
                yield pf.read_row_group(i)


def merge_by_arrival(*parts: Iterator[Any]) -> Iterator[Any]:
    """Tables from several streams, each sorted by ``ig_arrival``, as one stream in arrival order.

    Kept and rejected rows are staged apart; a selection that may hold both (the ``random``
    baseline draws from every row) reads them back interleaved, still one row group at a time.
    """
    heads = [next(p, None) for p in parts]
    while True:
        live = [i for i, h in enumerate(heads) if h is not None]
        if not live:
            return
        firsts = {i: heads[i].column("ig_arrival")[0].as_py() for i in live}
        i = min(live, key=firsts.__getitem__)
        others = [firsts[j] for j in live if j != i]
        arrival = heads[i].column("ig_arrival").to_numpy()
        n = len(arrival) if not others else int(np.searchsorted(arrival, min(others)))
        yield heads[i].slice(0, n)
        heads[i] = heads[i].slice(n) if n < len(arrival) else next(parts[i], None)
        while heads[i] is not None and heads[i].num_rows == 0:
            heads[i] = next(parts[i], None)


def write_split(
    tables: Iterator[Any], writer: ShardedParquetWriter, transform: Callable[[Any], Any]
) -> list[Path]:
    """``transform`` each staged table (e.g. :func:`row_groups`), write the final shards, name them."""
    for table in tables:
        writer.write(transform(table))
    return writer.close()


# --------------------------------------------------------------------------- staging and checkpoints


class _StagingShards:
    """Append-only staging shards of one kind (``kept`` or ``rejected``): one row group per batch."""

    def __init__(self, folder: Path, kind: str, finished: list[dict[str, Any]]) -> None:
        self.folder, self.kind, self.finished = folder, kind, finished
        self._writer: Any = None
        self._sink: Any = None
        self._path: Path | None = None
        self._rows = 0
        self.last_write = 0

    @property
    def bytes_open(self) -> int:
        return self._sink.tell() if self._sink is not None else 0

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.finished) + self._rows

    def write(self, table: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return
        if self._writer is None:
            self._path = self.folder / f"{self.kind}-{len(self.finished):05d}.parquet"
            self._sink = pa.OSFile(str(self._path), "wb")
            # a scratch format: fast to write and read back; dictionaries only inflate embeddings
            self._writer = pq.ParquetWriter(
                self._sink, table.schema, compression="snappy", use_dictionary=False, write_statistics=False
            )
        before = self._sink.tell()
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.last_write = self._sink.tell() - before
        self._rows += table.num_rows

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        self.finished.append(
            {"file": self._path.name, "rows": self._rows, "bytes": self._path.stat().st_size}
        )
        self._writer = self._sink = self._path = None
        self._rows = 0

    def abort(self) -> None:
        """Close without recording (the process is failing; a rerun deletes the file)."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


class Staging:
    """The kept and rejected rows of a curation in progress, and (in a state folder) its checkpoints.

    Layout of ``root``: ``checkpoint.json`` (the commit point), ``curator-a/`` and ``curator-b/`` (two
    slots for ``InfoGrowth.save_state``, used in turn so that the committed one is never overwritten)
    and ``staging/{kept,rejected}-XXXXX.parquet``. ``persistent=False`` (no ``--state``): shards only,
    no curator saves, the folder is temporary.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_shard_size: int,
        source: Mapping[str, Any],
        stage_rejected: bool,
        persistent: bool,
    ) -> None:
        self.root, self.max_shard_size, self.persistent = Path(root), max_shard_size, persistent
        self.source, self.stage_rejected = dict(source), stage_rejected
        self.folder = self.root / "staging"
        self.manifest: dict[str, Any] | None = None
        self.kept: _StagingShards | None = None
        self.rejected: _StagingShards | None = None
        self.dirty = False
        # the decision and repaired columns of the staged tables, recorded with every checkpoint
        self.columns: dict[str, list[str]] = {}

    # ---- opening
    def read_manifest(self) -> dict[str, Any] | None:
        """The committed checkpoint, or None; refused (StateMismatchError) when it does not fit this run."""
        path = self.root / MANIFEST
        if not path.exists():
            if (self.root / "state.json").exists():
                raise StateMismatchError(
                    f"{self.root}: a curator state without staged rows (written by an older hubtools that "
                    "read the source twice); it cannot be resumed in one pass: delete the folder and rerun"
                )
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise StateMismatchError(f"{path}: not a readable checkpoint ({err})") from None
        if manifest.get("version") != STAGING_VERSION:
            raise StateMismatchError(
                f"{path}: checkpoint version {manifest.get('version')!r}, expected {STAGING_VERSION}"
            )
        for key, value in self.source.items():
            if manifest["source"].get(key) != value:
                raise StateMismatchError(
                    f"{path}: the state was made with {key}={manifest['source'].get(key)!r}, this run has "
                    f"{value!r}; resuming would mix two streams (delete the state folder to start over)"
                )
        if self.stage_rejected and not manifest["rejected_staged"]:
            raise StateMismatchError(
                f"{path}: the state was made with --no-rejected, so it has no rejected rows to write; "
                "rerun with --no-rejected or delete the state folder"
            )
        for entry in manifest["kept"] + manifest["rejected"]:
            f = self.folder / entry["file"]
            if not f.is_file() or f.stat().st_size != entry["bytes"]:
                raise StateMismatchError(f"{f}: staged shard missing or changed since the checkpoint")
        self.manifest = manifest
        self.columns = manifest["columns"]
        return manifest

    @property
    def curator_dir(self) -> Path:
        assert self.manifest is not None
        return self.root / self.manifest["curator"]

    def resume(self, ig: InfoGrowth) -> None:
        """After ``ig.load_state(self.curator_dir)``: check it against the manifest, drop uncommitted files."""
        assert self.manifest is not None
        m = self.manifest
        status = ig.results()["ig_status"]
        n_kept = int(np.isin(status, KEPT_STATUSES).sum())
        staged = (sum(e["rows"] for e in m["kept"]), sum(e["rows"] for e in m["rejected"]))
        if (
            ig.n_seen != m["rows_seen"]
            or staged[0] != n_kept
            or (m["rejected_staged"] and staged[1] != len(status) - n_kept)
        ):
            raise StateMismatchError(
                f"{self.root}: the curator state ({ig.n_seen} stream rows, {n_kept} kept) does not match the "
                f"staged shards ({m['rows_seen']} rows, {staged[0]} kept): the folder was changed by hand"
            )
        committed = {e["file"] for e in m["kept"] + m["rejected"]}
        for f in self.folder.iterdir():
            if f.name not in committed:
                f.unlink()
        self._remove_partial_saves()
        self._open(m["kept"], m["rejected"] if self.stage_rejected else [])

    def start(self) -> None:
        """A fresh curation: remove what a run killed before its first checkpoint left behind."""
        if self.persistent:
            for name in (*CURATOR_SLOTS, "staging"):
                shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / (MANIFEST + ".tmp")).unlink(missing_ok=True)
            self._remove_partial_saves()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest = None
        self._open([], [])

    def _remove_partial_saves(self) -> None:
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(tuple(f".{s}." for s in CURATOR_SLOTS)):
                    shutil.rmtree(p, ignore_errors=True)

    def _open(self, kept: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
        self.kept = _StagingShards(self.folder, "kept", list(kept))
        self.rejected = (
            _StagingShards(self.folder, "rejected", list(rejected)) if self.stage_rejected else None
        )

    # ---- writing
    def write(self, table: Any) -> None:
        """Append a staging table's rows to the kept and rejected shards."""
        kept, rejected = split_kept(table)
        self.kept.write(kept)
        if self.rejected is not None:
            self.rejected.write(rejected)
        self.dirty = True

    def shard_full(self) -> bool:
        """Whether another batch like the last would push an open staging shard past the shard size."""
        return any(
            s is not None and s.bytes_open and s.bytes_open + s.last_write > self.max_shard_size
            for s in (self.kept, self.rejected)
        )

    def checkpoint(self, ig: InfoGrowth) -> None:
        """Close the open shards; with a state folder, save the curator and commit the manifest."""
        for s in (self.kept, self.rejected):
            if s is not None:
                s.close()
        self.dirty = False
        if not self.persistent:
            return
        used = self.manifest["curator"] if self.manifest else None
        slot = CURATOR_SLOTS[1] if used == CURATOR_SLOTS[0] else CURATOR_SLOTS[0]
        ig.save_state(self.root / slot)
        kill_point_hook("checkpoint")
        manifest = {
            "version": STAGING_VERSION,
            "source": self.source,
            "rejected_staged": self.stage_rejected,
            "curator": slot,
            "columns": self.columns,
            "rows_seen": ig.n_seen,
            "rows": ig.n_rows,
            "kept": self.kept.finished,
            "rejected": self.rejected.finished if self.rejected is not None else [],
        }
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, self.root / MANIFEST)
        self.manifest = manifest

    def abort(self) -> None:
        for s in (self.kept, self.rejected):
            if s is not None:
                s.abort()

    # ---- reading back
    def files(self, kind: str) -> list[Path]:
        shards = self.kept if kind == "kept" else self.rejected
        return [] if shards is None else [self.folder / e["file"] for e in shards.finished]

    def rows(self, kind: str) -> int:
        shards = self.kept if kind == "kept" else self.rejected
        return 0 if shards is None else shards.rows

    def features(self) -> Any:
        """The staged rows' features, read from the first kept shard (it always holds seed rows)."""
        import pyarrow.parquet as pq
        from datasets import Features

        first = self.manifest["kept"][0]["file"] if self.manifest else None
        if first is None:
            raise StateMismatchError(f"{self.root}: the checkpoint has no staged rows")
        return Features.from_arrow_schema(pq.read_schema(self.folder / first))


def split_features(ds: Any) -> Any:
    """A split's features, from its info or else from the Arrow schema of its first rows."""
    from datasets import Features

    if ds.features is not None:
        return ds.features
    first = next(iter_arrow_batches(ds, 1), None)
    if first is None:
        raise InfoGrowthError("the split has no rows")
    return Features.from_arrow_schema(first.schema)


def read_columns(ds: Any, columns: Sequence[str], batch_size: int) -> dict[str, Any]:
    """Some columns of a (small) split in memory, as :func:`curator_columns` gives them: the seed set
    for ``InfoGrowth.fit_seed``, read without decoding or caching the rest of the dataset."""
    parts: dict[str, list[Any]] = {c: [] for c in columns}
    for table in iter_arrow_batches(ds.select_columns(list(columns)), batch_size):
        for c, v in curator_columns(table, columns).items():
            parts[c].append(v)
    out: dict[str, Any] = {}
    for c, vs in parts.items():
        if all(isinstance(v, np.ndarray) for v in vs) and len({v.shape[1:] for v in vs}) <= 1:
            out[c] = np.concatenate(vs) if vs else np.zeros(0)
        else:  # ragged or holed vectors: let the curator name the bad row
            out[c] = [x for v in vs for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    return out


def iter_arrow_batches(ds: Any, batch_size: int, skip: int = 0) -> Iterator[Any]:
    """Batches of ``batch_size`` rows of a ``Dataset``/``IterableDataset`` as Arrow tables, media undecoded."""
    from datasets import Dataset

    if skip:
        ds = (
            ds.select(range(min(skip, ds.num_rows), ds.num_rows))
            if isinstance(ds, Dataset)
            else ds.skip(skip)
        )
    yield from ds.with_format("arrow").iter(batch_size=batch_size)
