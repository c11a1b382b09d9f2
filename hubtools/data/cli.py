"""``hubtools data ...``: data curation commands. ``hubtools data infogrowth`` streams a dataset split
through the InfoGrowth curator and writes the selected subset as a Hub dataset folder.

The folder is byte-for-byte the dataset repo: ``data/train-XXXXX-of-YYYYY.parquet`` (the selected rows
with every source column and their ``ig_*`` columns), ``data/rejected-XXXXX-of-YYYYY.parquet`` (dropped
and duplicate rows with the reason), both in shards of at most ``--max-shard-size`` (500MB, as
``push_to_hub``), ``infogrowth.json`` (settings, calibrated δ, seed hash, counts, encoder, library
versions, output files: enough to audit and reproduce the selection), ``gains.png`` and a ``README.md``
card stating the curation. The source is read once and rows are never collected in memory
(:mod:`hubtools.data.infogrowth_io`); ``--state DIR`` makes the run resumable after any crash.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
from pydantic import field_validator

from hubtools.config import StrictModel, config_option
from hubtools.data.embed import embed_command, embed_dataset, embed_fn_from_flags
from hubtools.data.infogrowth import (
    KEPT_STATUSES,
    InfoGrowth,
    InfoGrowthError,
    StateMismatchError,
    select,
    summary_stats,
    versions,
)
from hubtools.data.infogrowth_io import (
    DEFAULT_MAX_SHARD_SIZE,
    DecisionTables,
    ShardedParquetWriter,
    Staging,
    curator_columns,
    final_features,
    iter_arrow_batches,
    kill_point_hook,
    merge_by_arrival,
    parse_shard_size,
    read_columns,
    row_groups,
    split_features,
    with_gain_norm,
    write_split,
)
from hubtools.errors import HubtoolsError


class InfoGrowthConfig(StrictModel):
    """``hubtools data infogrowth`` settings (the flags' names), for ``--config FILE.yaml``."""

    dataset: str | None = None
    split: str = "train"
    seed_split: str = "trusted"
    emb_column: str = "img_emb"
    label_column: str | None = None
    text_emb_column: str | None = None
    budget: float = 0.3
    method: Literal["proportional", "topk", "random"] = "proportional"
    score: Literal["probe", "margin", "cosine", "none"] = "probe"
    clean_loss: float = 0.05
    delta: float | None = None
    entropy_gain: bool = False
    min_per_class: int = 0
    image_encoder: str | None = None
    text_encoder: str | None = None
    image_column: str = "image"
    text_column: str = "text"
    embed_batch_size: int = 64
    relabel: bool = False
    dup_eps: float = 1e-4
    k: int = 4
    index: Literal["hnsw", "exact"] = "hnsw"
    batch_size: int = 256
    seed: int = 0
    encoder_id: str | None = None
    state: Path | None = None
    checkpoint_every: int = 0
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE
    rejected: bool = True
    out: Path | None = None
    push_to_hub: str | None = None
    private: bool = False

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value: str | int) -> str | int:
        parse_shard_size(value)
        return value


def _open_split(dataset: str, split: str, streaming: bool) -> Any:
    """A split of a Hub repo, a data folder (Parquet/CSV/JSON...) or a ``save_to_disk`` folder."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    path = Path(dataset)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists()):
            loaded = load_from_disk(str(path))
            if isinstance(loaded, DatasetDict):
                if split not in loaded:
                    raise InfoGrowthError(f"{dataset}: no split '{split}' (splits: {sorted(loaded)})")
                loaded = loaded[split]
            assert isinstance(loaded, Dataset)
            return loaded.to_iterable_dataset() if streaming else loaded
        return load_dataset(str(path) if path.is_dir() else dataset, split=split, streaming=streaming)
    except InfoGrowthError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise InfoGrowthError(f"{dataset}: cannot open split '{split}': {err}") from None


def plot_gains(
    path: Path,
    res: dict[str, np.ndarray],
    gnorm: np.ndarray,
    selected: np.ndarray,
    per_class: dict[str, Any] | None,
) -> None:
    """Gain histogram (kept vs selected), rows per status and, for labels, the drop rate per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if per_class else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    kept = np.isin(res["ig_status"], KEPT_STATUSES)
    bins = np.linspace(0, max(float(res["ig_gain"][kept].max(initial=0)), 1e-6), 40)
    axes[0].hist(res["ig_gain"][kept], bins=bins, alpha=0.6, label=f"kept ({int(kept.sum())})")
    axes[0].hist(res["ig_gain"][selected], bins=bins, alpha=0.6, label=f"selected ({int(selected.sum())})")
    axes[0].set(xlabel="information gain (mean 1-cos to k kept neighbours)", ylabel="rows", title="gain")
    axes[0].legend()
    names, counts = np.unique(res["ig_status"], return_counts=True)
    axes[1].bar(names, counts, color=["C2" if n in KEPT_STATUSES else "C3" for n in names])
    axes[1].set(title="rows per status", ylabel="rows")
    axes[1].tick_params(axis="x", rotation=30)
    if per_class:
        cls = list(per_class)
        axes[2].bar(range(len(cls)), [per_class[c]["drop_rate"] for c in cls])
        axes[2].set(title="dropped per class (noisy + duplicate)", xlabel="class", ylabel="drop rate")
        axes[2].set_xticks(range(len(cls)), cls if len(cls) <= 20 else [""] * len(cls))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curation_text(cfg: InfoGrowthConfig, ig: InfoGrowth, stats: dict[str, Any], n_selected: int) -> str:
    c = stats["counts"]
    s = ig.settings()
    lines = [
        "Selected with **InfoGrowth** (hubtools.data.infogrowth; Qin et al., ECCV 2024): a trusted seed split, "
        "online cleaning, information gain = mean cosine distance to the k nearest kept rows in an ANN index "
        "(faiss), then a gain-weighted static selection.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| source | `{cfg.dataset}` split `{cfg.split}`, seed split `{cfg.seed_split}` |",
        f"| mode / score | {s['mode']} / {s['score'] if s['mode'] == 'image-label' else 'cosine(image, text)'} |",
        f"| δ (calibrated) | {ig.delta:.4f} ({s['delta_setting']}{_calibration(s)}) |",
        f"| gain | mean 1 - cos to the k nearest kept rows{' + label entropy' if s['entropy_gain'] else ''} |",
        f"| k / index | {s['k']} / {s['index']} (M={s['M']}, efConstruction={s['ef_construction']}, ef={s['ef']}) |",
        f"| duplicate rule | nearest distance < {s['dup_eps']:g} |",
        f"| relabel | {s['relabel']} |",
        f"| selection | {cfg.method}, budget {cfg.budget:g} -> {n_selected} rows, seed {cfg.seed}"
        f"{f', at least {cfg.min_per_class} rows per class' if cfg.min_per_class else ''} |",
        f"| encoder | {s['encoder_id'] or 'not recorded'} |",
        "",
        "| status | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in c.items()],
        "",
        "Gains depend on arrival order (they are never recomputed). `infogrowth.json` holds every parameter, "
        "the seed hash and the library versions; `gains.png` shows the gain distribution and what was dropped.",
    ]
    return "\n".join(lines)


def _calibration(s: Mapping[str, Any]) -> str:
    """How δ was set, for the card: the clean-row loss it was calibrated for, and the probe's refits."""
    if s["delta_setting"] != "auto":
        return ""
    text = f", for a {s['clean_loss']:.0%} clean-row loss on the seed split"
    if s["score"] == "probe":
        text += f"; probe refit on kept rows as the stream doubled past {s['probe_refit_every']} rows"
    return text


def _source_id(dataset: str) -> str:
    """The source as a checkpoint records it: a local folder by its absolute path, else the repo id."""
    path = Path(dataset)
    return str(path.resolve()) if path.exists() else dataset


def _temp_staging(out: Path) -> Path:
    """A staging folder next to ``out`` (same disk), named after this process.

    Folders left by killed processes (their pid no longer runs) are removed first: without
    ``--state`` a killed run cannot be resumed, and its shards can be as large as the output.
    """
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.staging-"
    for old in out.parent.glob(prefix + "*"):
        pid = old.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def curate_to_folder(
    cfg: InfoGrowthConfig, show_progress: bool = True, zoo_fields: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run the whole command: curate, select, write the dataset folder, optionally push. Returns the summary.

    One pass over the split, bounded memory: each processed batch goes to kept / rejected staging
    shards as it arrives (all source columns plus the ``ig_*`` decisions), and the final ``train``
    and ``rejected`` shards are written from the staging shards, one row group at a time, once the
    normalised gains and the budget over all rows are known (:mod:`hubtools.data.infogrowth_io`).
    With ``cfg.state`` the staging lives in the state folder and a checkpoint (curator + finished
    shards) is committed after the seed set, at every staging-shard boundary, every
    ``checkpoint_every`` batches and at the end: rerunning the same command after a crash resumes
    and writes byte-identical ``data/*.parquet``. Without it the staging is a temporary folder next
    to ``cfg.out``. ``zoo_fields`` (modality, anatomy, task, reproduce) go to the dataset card.
    """
    if not cfg.dataset or cfg.out is None:
        raise InfoGrowthError("--dataset and --out are required (as flags or config keys)")
    if cfg.label_column and cfg.text_emb_column:
        raise InfoGrowthError("give --label-column (image-label) or --text-emb-column (image-text), not both")
    mode = "image-text" if cfg.text_emb_column else "image-label"
    label_column = None if mode == "image-text" else (cfg.label_column or "label")
    max_shard_size = parse_shard_size(cfg.max_shard_size)
    kwargs: dict[str, Any] = {
        "emb_column": cfg.emb_column,
        "k": cfg.k,
        "score": cfg.score,
        "clean_loss": cfg.clean_loss,
        "entropy_gain": cfg.entropy_gain,
        "relabel": cfg.relabel,
        "dup_eps": cfg.dup_eps,
        "index": cfg.index,
        "encoder_id": cfg.encoder_id,
        "seed": cfg.seed,
    }
    if cfg.delta is not None:
        kwargs["delta"] = cfg.delta
    if label_column:
        kwargs["label_column"] = label_column
    else:
        kwargs["text_emb_column"] = cfg.text_emb_column
    if cfg.min_per_class and mode != "image-label":
        raise InfoGrowthError(
            "--min-per-class is a per-class floor: it needs --label-column (image-label mode)"
        )
    embed_fn, embed_id = embed_fn_from_flags(
        cfg.image_encoder,
        cfg.text_encoder,
        cfg.image_column,
        cfg.text_column,
        cfg.emb_column,
        cfg.text_emb_column,
        cfg.embed_batch_size,
    )
    if embed_fn is not None:
        if cfg.encoder_id and cfg.encoder_id != embed_id:
            raise InfoGrowthError(
                f"--encoder-id {cfg.encoder_id!r} disagrees with the encoder(s) given ({embed_id})"
            )
        kwargs["encoder_id"] = embed_id
    t0 = time.perf_counter()
    if embed_fn is None:
        # both splits stream: a non-streaming load_dataset of a Parquet folder or Hub repo would first
        # convert every split of it (the big one included) to an Arrow cache
        seed_ds = _open_split(cfg.dataset, cfg.seed_split, streaming=True)
        stream = _open_split(cfg.dataset, cfg.split, streaming=True)
    else:
        # embedded first, as a cached Dataset.map (a rerun or resume reads the cached columns), then
        # streamed: the output rows carry the embeddings next to the source columns
        seed_ds, stream = (
            embed_dataset(
                _open_split(cfg.dataset, split, streaming=False),
                embed_fn,
                cfg.embed_batch_size,
                show_progress=show_progress,
            ).to_iterable_dataset()
            for split in (cfg.seed_split, cfg.split)
        )
    needed = [cfg.emb_column, label_column or cfg.text_emb_column]
    for name, ds in (("seed split", seed_ds), ("split", stream)):
        cols = ds.column_names
        if cols is not None and any(c not in cols for c in needed):
            raise InfoGrowthError(
                f"{cfg.dataset}: the {name} lacks column(s) "
                f"{[c for c in needed if c not in cols]} (columns: {cols})"
            )
    persistent = cfg.state is not None
    root = Path(cfg.state) if persistent else _temp_staging(Path(cfg.out))
    staging = Staging(
        root,
        max_shard_size=max_shard_size,
        source={
            "dataset": _source_id(cfg.dataset),
            "split": cfg.split,
            "seed_split": cfg.seed_split,
            "batch_size": cfg.batch_size,
        },
        # the random baseline may select rejected rows, so they are staged even with --no-rejected
        stage_rejected=cfg.rejected or cfg.method == "random",
        persistent=persistent,
    )
    try:
        ig, decisions = _curate(
            cfg, mode, label_column, kwargs, seed_ds, stream, needed, staging, show_progress
        )
        return _write_folder(cfg, ig, decisions, staging, max_shard_size, t0, zoo_fields)
    except BaseException:
        staging.abort()
        raise
    finally:
        if not persistent:
            shutil.rmtree(root, ignore_errors=True)


def _curate(
    cfg: InfoGrowthConfig,
    mode: str,
    label_column: str | None,
    kwargs: dict[str, Any],
    seed_ds: Any,
    stream: Any,
    needed: list[str],
    staging: Staging,
    show_progress: bool,
) -> tuple[InfoGrowth, DecisionTables]:
    """Seed (or resume) the curator and stream the split through it into the staging shards."""
    from tqdm.auto import tqdm

    repaired = [label_column] if label_column and cfg.relabel else []
    ig = InfoGrowth(mode=mode, **kwargs)
    if staging.persistent and staging.read_manifest() is not None:
        ig.load_state(staging.curator_dir)  # refuses another encoder or settings before anything changes
        decisions = DecisionTables(staging.features(), **staging.columns)
        expected = DecisionTables.for_source(split_features(seed_ds), **staging.columns).features
        if decisions.features != expected or staging.columns["repaired"] != repaired:
            raise StateMismatchError(
                f"{cfg.state}: the staged rows have columns {decisions.features}, this run would write "
                f"{expected}; the source or --relabel changed since the state was made"
            )
        staging.resume(ig)
        click.echo(f"resumed from {cfg.state}: {ig.n_seen} stream rows already curated", err=True)
    else:
        staging.start()
        # the curator reads the seed embeddings once; the full seed rows are then staged batch by batch
        seed_out = ig.fit_seed(read_columns(seed_ds, needed, cfg.batch_size))
        ig_columns = [c for c in seed_out if c.startswith("ig_") and c != "ig_gain_norm"]
        staging.columns = {"ig_columns": ig_columns, "repaired": repaired}
        decisions = DecisionTables.for_source(split_features(seed_ds), ig_columns, repaired)
        pos = 0
        for table in iter_arrow_batches(seed_ds, cfg.batch_size):
            part = {c: seed_out[c][pos : pos + table.num_rows] for c in ig_columns}
            staging.write(decisions.table(table, part, f"{cfg.dataset} split '{cfg.seed_split}'"))
            pos += table.num_rows
        staging.checkpoint(ig)
    total = None
    if getattr(stream, "info", None) is not None and stream.info.splits and cfg.split in stream.info.splits:
        total = stream.info.splits[cfg.split].num_examples
    bar = tqdm(
        total=total,
        initial=ig.n_seen,
        desc="infogrowth",
        unit="row",
        disable=not show_progress,
        file=sys.stderr,
    )
    where = f"{cfg.dataset} split '{cfg.split}'"
    every = cfg.checkpoint_every if staging.persistent else 0
    with bar:
        for table in iter_arrow_batches(stream, cfg.batch_size, skip=ig.n_seen):
            out = ig.process_batch(curator_columns(table, needed))
            staging.write(decisions.table(table, out, where))
            kill_point_hook("batch")
            bar.update(table.num_rows)
            if not bar.disable:
                ig.show_counts(bar)
            batches = -(-ig.n_seen // cfg.batch_size)  # stream batches so far, resumed runs included
            if staging.shard_full() or (every and batches % every == 0):
                staging.checkpoint(ig)
        if staging.dirty:
            staging.checkpoint(ig)
    return ig, decisions


def _write_folder(
    cfg: InfoGrowthConfig,
    ig: InfoGrowth,
    decisions: DecisionTables,
    staging: Staging,
    max_shard_size: int,
    t0: float,
    zoo_fields: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Select from the curator's decisions, write the final shards from the staging ones, card, push."""
    from hubtools.hub.artifacts import atomic_dir
    from hubtools.hub.cards import render_card
    from hubtools.hub.publish import push_artifact

    res = ig.results()
    kept = np.isin(res["ig_status"], KEPT_STATUSES)
    gnorm = res["ig_gain_norm"]  # the curator's ĝ (with the entropy gain when it is on)
    labels = res.get(ig.label_column) if ig.mode == "image-label" else None
    chosen = select(
        gnorm, cfg.budget, cfg.method, seed=cfg.seed, labels=labels, min_per_class=cfg.min_per_class
    )
    selected = np.zeros(len(gnorm), bool)
    selected[chosen] = True
    if not selected.any():
        raise InfoGrowthError("the selection is empty: no row was kept")
    n_seed = int((res["ig_status"] == "seed").sum())
    stats = summary_stats(ig)
    stats["selected"] = int(selected.sum())
    features = final_features(decisions.features)
    gnorm32 = gnorm.astype(np.float32)

    def train_rows(table: Any) -> Any:
        arrival = table.column("ig_arrival").to_numpy()
        keep = selected[arrival]
        return with_gain_norm(table.filter(keep), gnorm32[arrival[keep]], features)

    def rejected_rows(table: Any) -> Any:
        return with_gain_norm(table, np.zeros(table.num_rows, np.float32), features)

    out = Path(cfg.out)
    repo_id = cfg.push_to_hub
    with atomic_dir(out) as tmp:
        data = tmp / "data"
        staged = row_groups(staging.files("kept"))
        if selected[~kept].any():  # the random baseline draws from every row, rejected ones included
            staged = merge_by_arrival(staged, row_groups(staging.files("rejected")))
        files = {
            "train": write_split(
                staged, ShardedParquetWriter(data, "train", features, max_shard_size), train_rows
            )
        }
        splits = {"train": int(selected.sum())}
        if cfg.rejected and staging.rows("rejected"):
            files["rejected"] = write_split(
                row_groups(staging.files("rejected")),
                ShardedParquetWriter(data, "rejected", features, max_shard_size),
                rejected_rows,
            )
            splits["rejected"] = staging.rows("rejected")
        record = {
            "settings": ig.settings(),
            "selection": {
                "method": cfg.method,
                "budget": cfg.budget,
                "seed": cfg.seed,
                "rows": int(selected.sum()),
            },
            "source": {
                "dataset": cfg.dataset,
                "split": cfg.split,
                "seed_split": cfg.seed_split,
                "stream_rows": ig.n_seen,
                "seed_rows": n_seed,
            },
            "seed_hash": ig.seed_hash,
            "statistics": stats,
            "output": {
                "max_shard_size": max_shard_size,
                "files": {s: [f"data/{p.name}" for p in fs] for s, fs in files.items()},
                "bytes": {s: sum(p.stat().st_size for p in fs) for s, fs in files.items()},
            },
            "versions": versions(),
            "seconds": {
                "curate": round(ig.stats["curate_seconds"], 3),
                "total": round(time.perf_counter() - t0, 3),
            },
        }
        (tmp / "infogrowth.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        plot_gains(tmp / "gains.png", res, gnorm, selected, stats.get("per_class"))
        name = Path(cfg.dataset).name if Path(cfg.dataset).exists() else cfg.dataset
        card_data: dict[str, Any] = {
            "pretty_name": f"{name} (InfoGrowth selection)",
            "tags": ["infogrowth", "data-curation"],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in files],
                }
            ],
        }
        if not Path(cfg.dataset).exists():
            card_data["source_datasets"] = [cfg.dataset]
        card = render_card(
            "dataset",
            card_data=card_data,
            repo_id=repo_id,
            summary=f"{splits['train']} rows selected by InfoGrowth from {ig.n_rows} "
            f"({ig.n_seen} streamed + {n_seed} trusted seed rows).",
            features={c: str(f) for c, f in features.items()},
            splits=splits,
            source_data=f"`{cfg.dataset}` (split `{cfg.split}`; trusted seed split `{cfg.seed_split}`).",
            curation=_curation_text(cfg, ig, stats, splits["train"]),
            **(zoo_fields or {}),
        )
        card.save(tmp / "README.md")
    if repo_id:
        # the folder is pushed as it is: the Hub gets the same max_shard_size shards
        push_artifact(
            out,
            repo_id,
            repo_type="dataset",
            private=cfg.private,
            commit_message=f"InfoGrowth selection of {cfg.dataset}",
        )
    return {
        "out": str(out),
        "repo_id": repo_id,
        "counts": stats["counts"],
        "selected": splits["train"],
        "rows": ig.n_rows,
        "delta": ig.delta,
        "files": {s: [str(p.relative_to(tmp)) for p in fs] for s, fs in files.items()},
    }


@click.group("data")
def data_group() -> None:
    """Data curation: InfoGrowth online cleaning and selection; embedding columns from any encoder."""


data_group.add_command(embed_command)


@data_group.command("infogrowth")
@click.option("--dataset", default=None, help="Hub dataset repo id, a data folder, or a save_to_disk folder.")
@click.option("--split", default="train", show_default=True, help="The split to stream and curate.")
@click.option(
    "--seed-split", default="trusted", show_default=True, help="The verified clean split (always kept)."
)
@click.option("--emb-column", default="img_emb", show_default=True, help="Content (image) embedding column.")
@click.option("--label-column", default=None, help="Class label column: image-label mode (default 'label').")
@click.option("--text-emb-column", default=None, help="Caption embedding column: image-text mode.")
@click.option(
    "--image-encoder",
    default=None,
    help="Embed --image-column with this transformers model (folder or Hub id) into --emb-column.",
)
@click.option(
    "--text-encoder",
    default=None,
    help="Embed --text-column into --text-emb-column (the same joint CLIP-like model as --image-encoder).",
)
@click.option(
    "--image-column", default="image", show_default=True, help="Raw image column (--image-encoder)."
)
@click.option("--text-column", default="text", show_default=True, help="Raw caption column (--text-encoder).")
@click.option("--embed-batch-size", type=int, default=64, show_default=True, help="Rows per encoder pass.")
@click.option(
    "--budget",
    type=float,
    default=0.3,
    show_default=True,
    help="Rows to select: a fraction of all rows (seed + stream) or, above 1, a count.",
)
@click.option(
    "--method",
    type=click.Choice(["proportional", "topk", "random"]),
    default="proportional",
    show_default=True,
    help="Static selection: gain-weighted sampling, largest gains, or uniform.",
)
@click.option(
    "--score",
    type=click.Choice(["probe", "margin", "cosine", "none"]),
    default="probe",
    show_default=True,
    help="Label cleaner: a probe fit on the seed split (calibrated to --clean-loss), the nearest class "
    "prototype (margin), the cosine to it, or none (no cleaning).",
)
@click.option(
    "--clean-loss",
    type=float,
    default=0.05,
    show_default=True,
    help="Share of clean rows the cleaner may drop; sets δ (probe, cosine) from the seed split.",
)
@click.option(
    "--delta",
    type=float,
    default=None,
    help="A fixed cleaning threshold instead (probe: probability; margin default 0).",
)
@click.option(
    "--entropy-gain",
    is_flag=True,
    help="Add the label-entropy gain (share of neighbours with another label).",
)
@click.option(
    "--min-per-class",
    type=int,
    default=0,
    show_default=True,
    help="Selection floor: every class keeps at least this many rows (or all it has).",
)
@click.option(
    "--relabel",
    is_flag=True,
    help="Relabel disagreeing rows to their nearest prototype when it wins clearly.",
)
@click.option(
    "--dup-eps",
    type=float,
    default=1e-4,
    show_default=True,
    help="A row closer than this (1 - cos) to a kept row is a duplicate.",
)
@click.option("--k", type=int, default=4, show_default=True, help="Neighbours averaged in the gain.")
@click.option("--index", type=click.Choice(["hnsw", "exact"]), default="hnsw", show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Selection seed.")
@click.option("--encoder-id", default=None, help="Name + revision of the model that made the embeddings.")
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Checkpoint folder: staged rows + curator, committed at every staging-shard boundary and at "
    "the end; rerunning the same command resumes where it stopped.",
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=0,
    show_default=True,
    help="With --state, also checkpoint every N batches (0: shard boundaries and the end only).",
)
@click.option(
    "--max-shard-size",
    default=DEFAULT_MAX_SHARD_SIZE,
    show_default=True,
    help="Largest Parquet shard, e.g. 500MB or 1GiB, for the folder and for what --push-to-hub uploads.",
)
@click.option(
    "--rejected/--no-rejected", default=True, show_default=True, help="Also write the 'rejected' split."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output dataset folder."
)
@click.option("--push-to-hub", default=None, help="Publish the folder as this dataset repo.")
@click.option("--private", is_flag=True, help="Create the pushed repo private.")
@config_option(InfoGrowthConfig)
def infogrowth_command(**kwargs: Any) -> None:
    """Stream DATASET's split through InfoGrowth and write the selected subset as a Hub dataset.

    A progress bar shows kept / dropped / duplicate / repaired counts. The folder gets the
    selected rows as Parquet (with ig_* columns), a 'rejected' split, infogrowth.json,
    gains.png and a card stating the curation settings and statistics.
    """
    try:
        cfg = InfoGrowthConfig(**kwargs)
        summary = curate_to_folder(cfg)
    except (HubtoolsError, StateMismatchError) as err:
        raise click.ClickException(str(err)) from None
    except ValueError as err:  # pydantic validation of flag combinations
        raise click.UsageError(str(err)) from None
    c = summary["counts"]
    click.echo(
        f"rows={summary['rows']} selected={summary['selected']} seed={c['seed']} kept={c['kept']} "
        f"relabeled={c['relabeled']} recaptioned={c['recaptioned']} dropped_noisy={c['dropped_noisy']} "
        f"duplicate={c['duplicate']} delta={summary['delta']:.4f} -> {summary['out']}"
    )
    if summary["repo_id"]:
        click.echo(f"pushed to datasets/{summary['repo_id']}")
