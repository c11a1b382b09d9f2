"""``hubtools data ...``: data curation commands. ``hubtools data infogrowth`` streams a dataset split
through the InfoGrowth curator and writes the selected subset as a Hub dataset folder.

The folder is byte-for-byte the dataset repo: ``data/train-*.parquet`` (the selected rows with their
``ig_*`` columns), ``data/rejected-*.parquet`` (dropped and duplicate rows with the reason),
``infogrowth.json`` (settings, calibrated δ, seed hash, counts, encoder, library versions: enough to
audit and reproduce the selection), ``gains.png`` and a ``README.md`` card stating the curation.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np

from hubtools.config import StrictModel, config_option
from hubtools.data.infogrowth import (
    KEPT_STATUSES,
    InfoGrowth,
    InfoGrowthError,
    StateMismatchError,
    normalize_gains,
    select,
    summary_stats,
    versions,
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
    score: Literal["margin", "cosine"] = "margin"
    delta: float | None = None
    relabel: bool = False
    dup_eps: float = 1e-4
    k: int = 4
    index: Literal["hnsw", "exact"] = "hnsw"
    batch_size: int = 256
    seed: int = 0
    encoder_id: str | None = None
    state: Path | None = None
    checkpoint_every: int = 0
    rejected: bool = True
    out: Path | None = None
    push_to_hub: str | None = None
    private: bool = False


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


def _output_rows(
    ds: Any,
    offset: int,
    res: dict[str, np.ndarray],
    gnorm: np.ndarray,
    selected: np.ndarray,
    label_column: str | None,
    batch_size: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Second pass over a split: the selected rows and the rejected rows, with their decision columns."""
    sel, rej = [], []
    pos = offset
    for batch in ds.iter(batch_size=batch_size):
        n = len(next(iter(batch.values())))
        arrival = np.arange(pos, pos + n)
        keep = selected[arrival]
        status = res["ig_status"][arrival]
        rejected = ~np.isin(status, KEPT_STATUSES)
        for mask, sink in ((keep, sel), (rejected, rej)):
            idx = np.flatnonzero(mask)
            if not idx.size:
                continue
            out = {k: [v[i] for i in idx] for k, v in batch.items()}
            a = arrival[idx]
            if label_column is not None:
                if "orig_" + label_column in res:
                    out["orig_" + label_column] = res["orig_" + label_column][a].tolist()
                out[label_column] = res[label_column][a].tolist()
            out["ig_status"] = status[idx].tolist()
            for col in ("ig_align", "ig_gain", "ig_nn1"):
                out[col] = res[col][a].astype(np.float32).tolist()
            out["ig_gain_norm"] = gnorm[a].astype(np.float32).tolist()
            out["ig_arrival"] = a.tolist()
            sink.append(out)
        pos += n
    return sel, rej


def _to_dataset(parts: list[dict[str, Any]], features: Any) -> Any:
    from datasets import Dataset, Features, List, Value, concatenate_datasets

    if not parts:
        return None
    feats = None
    if features is not None:
        feats = Features({**features})
        for col in ("ig_align", "ig_gain", "ig_nn1", "ig_gain_norm"):
            feats[col] = Value("float32")
        feats["ig_status"] = Value("string")
        feats["ig_arrival"] = Value("int64")
        for col in parts[0]:
            if col.startswith("orig_") and col not in feats:
                feats[col] = features.get(col[5:], List(Value("float32")))
        feats = Features({c: feats[c] for c in parts[0]})
    return concatenate_datasets([Dataset.from_dict(p, features=feats) for p in parts])


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
        f"| δ (calibrated) | {ig.delta:.4f} ({s['delta_setting']}) |",
        f"| k / index | {s['k']} / {s['index']} (M={s['M']}, efConstruction={s['ef_construction']}, ef={s['ef']}) |",
        f"| duplicate rule | nearest distance < {s['dup_eps']:g} |",
        f"| relabel | {s['relabel']} |",
        f"| selection | {cfg.method}, budget {cfg.budget:g} -> {n_selected} rows, seed {cfg.seed} |",
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


def curate_to_folder(
    cfg: InfoGrowthConfig, show_progress: bool = True, zoo_fields: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run the whole command: curate, select, write the dataset folder, optionally push. Returns the summary.

    ``zoo_fields`` (modality, anatomy, task, reproduce) go to the dataset card for the model zoo.
    """
    from tqdm.auto import tqdm

    from hubtools.hub.artifacts import atomic_dir
    from hubtools.hub.cards import render_card
    from hubtools.hub.publish import push_artifact

    if not cfg.dataset or cfg.out is None:
        raise InfoGrowthError("--dataset and --out are required (as flags or config keys)")
    if cfg.label_column and cfg.text_emb_column:
        raise InfoGrowthError("give --label-column (image-label) or --text-emb-column (image-text), not both")
    mode = "image-text" if cfg.text_emb_column else "image-label"
    label_column = None if mode == "image-text" else (cfg.label_column or "label")
    kwargs: dict[str, Any] = {
        "emb_column": cfg.emb_column,
        "k": cfg.k,
        "score": cfg.score,
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
    t0 = time.perf_counter()
    seed_ds = _open_split(cfg.dataset, cfg.seed_split, streaming=False)
    stream = _open_split(cfg.dataset, cfg.split, streaming=True)
    needed = [cfg.emb_column, label_column or cfg.text_emb_column]
    for name, ds in (("seed split", seed_ds), ("split", stream)):
        cols = ds.column_names
        if cols is not None and any(c not in cols for c in needed):
            raise InfoGrowthError(
                f"{cfg.dataset}: the {name} lacks column(s) "
                f"{[c for c in needed if c not in cols]} (columns: {cols})"
            )
    state_file = cfg.state / "state.json" if cfg.state else None
    if state_file is not None and state_file.exists():
        ig = InfoGrowth(mode=mode, **kwargs)
        ig.load_state(cfg.state)
        click.echo(f"resumed from {cfg.state}: {ig.n_seen} stream rows already curated", err=True)
    else:
        ig = InfoGrowth(mode=mode, **kwargs)
        ig.fit_seed(seed_ds.select_columns(needed))
    n_seed = int((ig.results()["ig_status"] == "seed").sum())
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
    with bar:
        for _ in ig.grow_batches(
            stream.select_columns(needed),
            cfg.batch_size,
            checkpoint_dir=cfg.state,
            checkpoint_every=cfg.checkpoint_every if cfg.state else 0,
            progress=bar,
        ):
            pass
    res = ig.results()
    gnorm = normalize_gains(res["ig_gain"], np.isin(res["ig_status"], KEPT_STATUSES))
    chosen = select(gnorm, cfg.budget, cfg.method, seed=cfg.seed)
    selected = np.zeros(len(gnorm), bool)
    selected[chosen] = True
    stats = summary_stats(ig)
    stats["selected"] = int(selected.sum())
    sel_parts, rej_parts = _output_rows(seed_ds, 0, res, gnorm, selected, label_column, cfg.batch_size)
    s2, r2 = _output_rows(stream, n_seed, res, gnorm, selected, label_column, cfg.batch_size)
    train = _to_dataset(sel_parts + s2, seed_ds.features)
    rejected = _to_dataset(rej_parts + r2, seed_ds.features) if cfg.rejected else None
    if train is None:
        raise InfoGrowthError("the selection is empty: no row was kept")

    out = Path(cfg.out)
    repo_id = cfg.push_to_hub
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
        "versions": versions(),
        "seconds": {
            "curate": round(ig.stats["curate_seconds"], 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    splits = {"train": train.num_rows}
    data_files = [{"split": "train", "path": "data/train-*.parquet"}]
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir()
        train.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        if rejected is not None:
            rejected.to_parquet(str(tmp / "data" / "rejected-00000-of-00001.parquet"))
            splits["rejected"] = rejected.num_rows
            data_files.append({"split": "rejected", "path": "data/rejected-*.parquet"})
        (tmp / "infogrowth.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        plot_gains(tmp / "gains.png", res, gnorm, selected, stats.get("per_class"))
        name = Path(cfg.dataset).name if Path(cfg.dataset).exists() else cfg.dataset
        card_data: dict[str, Any] = {
            "pretty_name": f"{name} (InfoGrowth selection)",
            "tags": ["infogrowth", "data-curation"],
            "configs": [{"config_name": "default", "data_files": data_files}],
        }
        if not Path(cfg.dataset).exists():
            card_data["source_datasets"] = [cfg.dataset]
        card = render_card(
            "dataset",
            card_data=card_data,
            repo_id=repo_id,
            summary=f"{train.num_rows} rows selected by InfoGrowth from {ig.n_rows} "
            f"({ig.n_seen} streamed + {n_seed} trusted seed rows).",
            features={c: str(f) for c, f in train.features.items()},
            splits=splits,
            source_data=f"`{cfg.dataset}` (split `{cfg.split}`; trusted seed split `{cfg.seed_split}`).",
            curation=_curation_text(cfg, ig, stats, int(selected.sum())),
            **(zoo_fields or {}),
        )
        card.save(tmp / "README.md")
    if repo_id:
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
        "selected": int(selected.sum()),
        "rows": ig.n_rows,
        "delta": ig.delta,
    }


@click.group("data")
def data_group() -> None:
    """Data curation: InfoGrowth online cleaning and selection."""


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
    type=click.Choice(["margin", "cosine"]),
    default="margin",
    show_default=True,
    help="Label agreement score (margin needs no threshold).",
)
@click.option(
    "--delta",
    type=float,
    default=None,
    help="Cleaning threshold; default 0 (margin) or auto (5th pct of seeds).",
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
    help="Curator state folder: resumed from when it exists, written with --checkpoint-every.",
)
@click.option(
    "--checkpoint-every", type=int, default=0, show_default=True, help="Save the state every N batches."
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
