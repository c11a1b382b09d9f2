"""InfoGrowth as a step of the long-tail builders: curate the train split of a built set, keep every class.

``hubtools longtail build NAME --infogrowth`` runs :func:`curate_split` on the ``DatasetDict`` it just
built and writes the result as a config of its own (``<config>-infogrowth``) beside the uncurated one,
so a user can train on either and compare. The curator is :class:`hubtools.data.infogrowth.InfoGrowth`
in image-label mode: a trusted seed set teaches a cleaner (default: a logistic-regression probe whose
threshold δ is calibrated to lose about ``clean_loss`` = 5 % of clean rows), every train row whose label
the cleaner rejects is dropped, exact duplicates are dropped, and every kept row gets an information
gain (mean cosine distance to its k nearest kept rows), which a budget below 1 uses to choose rows.

What long-tailed data needs on top of the curator, and what this module decides:

- **The trusted seed** is the ``validation`` split by default: every builder holds one out per class, its
  labels are the reference the cleaner learns from, so they must be verified (a noisy validation split
  makes the cleaner keep the noise it shares). Its rows only teach the cleaner and seed the gain index;
  they never join the curated train split (that would leak validation into training). ``train:0.05``
  instead takes a seeded per-class sample of train (at least ``min_seed_per_class`` rows per class, all
  of a smaller class) as the seed: use it when the validation split is unverified or lacks classes, and
  verify those rows. The test split is refused: it measures the result.
- **Tail classes with fewer than** ``min_seed_per_class`` (5) **seed rows** (MRI-LT's validation split
  holds 1-3 rows of its rarest regions) are topped up with the train rows of that class nearest to the
  class's seed prototype (cosine to the mean of its seed embeddings): a probe fit on one or two rows of a
  class, calibrated by in-sample probabilities, drops most of that class's clean rows (measured on MRI-LT
  with 20 % flipped labels: 78 % of the few-shot classes' clean rows lost and three classes emptied,
  against 7 % lost and none emptied with the top-up). Borrowed rows are train rows: they stay in the
  curated split with status ``seed`` and the record lists them, since their labels were not verified.
  A class with no seed row at all cannot be judged: its train rows are kept whole, ``unchecked``.
  A seed class absent from train is ignored when it is too small for the cleaner's 5-fold calibration.
- **Tail protection.** Two guarantees keep every class. (1) Survival: a class whose train rows the
  cleaner dropped entirely gets back its ``min_seed_per_class`` most plausible rows (highest cleaner
  score), status ``restored``. (2) The selection floor ``min_per_class`` (default 20) applies when
  ``budget`` < 1: every class first gets min(20, its cleaned rows) before the gain-weighted draw fills
  the rest. 20 is the few-shot threshold of the many/medium/few convention (few: < 20 train images), so
  a budget never takes a row from a class that already is few-shot, and never pushes another class into
  the few-shot group; at ``budget=1.0`` (all cleaned rows) the floor changes nothing.
- **Encoder.** No image encoder weights ship offline, so the default embedding is a PCA of the seed
  images (pixels / 255 after resizing to 32 x 32, 64 components, L2-normalised by the curator), fitted on
  the seed split's rows only; its id is ``pca64-of-seed@<sha256 of the seed row ids>``. Any local or Hub
  transformers image encoder (``encoder=PATH|REPO``, :class:`hubtools.data.embed.ImageEncoder`) replaces it.

The curated profile keeps the class order and the many/medium/few cut-offs of the uncurated set (so
group accuracies of a curated and an uncurated run compare the same classes) and takes its train counts
from the curated rows (the trainer checks them). The record (``infogrowth.json``) holds every setting,
δ, the encoder and seed hashes, counts per status, per-class and per-group drop rates and the ids of
every removed row, so a curation can be audited and reproduced.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hubtools.errors import HubtoolsError

CURATED_SUFFIX = "-infogrowth"
RECORD_FILE = "infogrowth.json"
DEFAULT_SEED_SPLIT = "validation"
DEFAULT_MIN_PER_CLASS = 20
DEFAULT_MIN_SEED_PER_CLASS = 5
PCA_DIM, PCA_IMAGE_SIZE = 64, 32
# per train row: the curator's statuses plus the two decided here
ROW_STATUSES: tuple[str, ...] = (
    "seed",
    "kept",
    "recaptioned",
    "relabeled",
    "dropped_noisy",
    "duplicate",
    "unchecked",
    "restored",
)
_ELIGIBLE = ("seed", "kept", "recaptioned", "relabeled")  # rows the gain-weighted selection draws from
_FORCED = ("unchecked", "restored")  # rows kept outside the budget


class CurationError(HubtoolsError, ValueError):
    """A curation request that cannot run: unknown split, bad budget, missing column; the message names it."""


# --------------------------------------------------------------------------- seed split and names


def parse_seed_split(spec: str) -> tuple[str, float | None]:
    """``"validation"``/``"val"`` -> ``("validation", None)``; ``"train:0.05"`` -> ``("train", 0.05)``.

    Any other split name is taken whole. ``train`` needs a fraction (the whole train split cannot be its
    own trusted seed); ``test`` is refused because it measures the curated set.
    """
    name, _, frac = str(spec).partition(":")
    name = name.strip()
    name = {"val": "validation", "valid": "validation"}.get(name, name)
    if not name:
        raise CurationError(f"seed split {spec!r}: expected a split name, e.g. validation or train:0.05")
    if name == "test":
        raise CurationError(
            "seed split 'test': the test split measures the curated set and must not steer it; "
            "use validation or train:FRACTION"
        )
    if not frac:
        if name == "train":
            raise CurationError(
                "seed split 'train' needs a fraction (train:0.05): a per-class sample of train is the seed"
            )
        return name, None
    try:
        fraction = float(frac)
    except ValueError:
        raise CurationError(f"seed split {spec!r}: {frac!r} is not a fraction") from None
    if name != "train":
        raise CurationError(f"seed split {spec!r}: a fraction applies to the train split only")
    if not 0.0 < fraction < 1.0:
        raise CurationError(f"seed split {spec!r}: the fraction must lie in (0, 1)")
    return name, fraction


def check_budget(budget: float | int) -> float | int:
    """A fraction in (0, 1] or a row count; a whole float above 1 (``--ig-budget 500``) is a row count."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise CurationError(f"budget: expected a fraction in (0, 1] or a row count, got {budget!r}")
    if isinstance(budget, float) and budget > 1.0:
        if not budget.is_integer():
            raise CurationError(f"budget: a fraction must be at most 1, got {budget!r}")
        return int(budget)
    return budget


def curated_config_name(config: str, budget: float | int = 1.0) -> str:
    """``<config>-infogrowth`` (all cleaned rows), ``<config>-infogrowth-b0.5`` for a smaller budget."""
    if isinstance(budget, float) and budget == 1.0:
        return config + CURATED_SUFFIX
    return f"{config}{CURATED_SUFFIX}-b{budget:g}"


def ids_hash(ids: Sequence[str]) -> str:
    """sha256 (12 hex digits) of row ids in order: names the rows an encoder or seed came from."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- encoders


def image_pixels(ds: Any, column: str, size: int, mode: str, batch_size: int = 256) -> np.ndarray:
    """Every image of ``ds[column]`` as ``mode`` (``L``/``RGB``), resized to ``size`` x ``size``, flattened uint8."""
    from PIL import Image

    out = []
    for batch in ds.select_columns([column]).iter(batch_size=batch_size):
        for im in batch[column]:
            if not isinstance(im, Image.Image):
                im = Image.fromarray(np.asarray(im))
            im = im.convert(mode)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            out.append(np.asarray(im, dtype=np.uint8).reshape(-1))
    return np.stack(out) if out else np.zeros((0, size * size * (1 if mode == "L" else 3)), np.uint8)


class PixelPCAEncoder:
    """The offline default encoder: PCA of pixels / 255 fitted on the seed images.

    Why: no image encoder weights ship offline, and a PCA of the trusted rows is what the InfoGrowth
    benchmark measured the cleaner with. Images are resized to ``image_size`` (32) and kept greyscale
    when the first seed image is, RGB otherwise. ``encoder_id`` is ``pca<dim>-of-seed@<hash of seed ids>``:
    the same seed rows give the same encoder (the PCA is seeded), other rows another id.
    """

    def __init__(self, dim: int = PCA_DIM, image_size: int = PCA_IMAGE_SIZE) -> None:
        self.dim, self.image_size = dim, image_size
        self.mode = "L"
        self.pca: Any = None
        self.encoder_id = ""

    def fit(self, ds: Any, column: str, ids: Sequence[str]) -> PixelPCAEncoder:
        from PIL import Image
        from sklearn.decomposition import PCA

        if ds.num_rows == 0:
            raise CurationError("the PCA encoder needs seed images; the seed set is empty")
        first = ds[0][column]
        bands = first.getbands() if isinstance(first, Image.Image) else np.asarray(first).shape[2:]
        self.mode = "L" if len(bands) <= 1 else "RGB"
        x = image_pixels(ds, column, self.image_size, self.mode).astype(np.float32) / 255.0
        dim = int(min(self.dim, x.shape[0], x.shape[1]))
        self.pca = PCA(dim, random_state=0).fit(x)
        self.encoder_id = f"pca{dim}-of-seed@{ids_hash(ids)}"
        return self

    def embed(self, ds: Any, column: str) -> np.ndarray:
        out = []
        for s in range(0, ds.num_rows, 4096):  # pixels of one chunk at a time, embeddings of all
            x = image_pixels(
                ds.select(range(s, min(s + 4096, ds.num_rows))), column, self.image_size, self.mode
            )
            out.append(self.pca.transform(x.astype(np.float32) / 255.0).astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.pca.n_components_), np.float32)


class _EmbedFnEncoder:
    """An ``embed_fn(batch) -> {"img_emb": float32[B, D]}`` (e.g. :func:`hubtools.data.embed.make_embed_fn`)."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], Mapping[str, Any]], encoder_id: str) -> None:
        self.fn, self.encoder_id = fn, encoder_id

    def embed(self, ds: Any, column: str, batch_size: int = 64) -> np.ndarray:
        out = []
        for batch in ds.select_columns([column]).iter(batch_size=batch_size):
            emb = self.fn(batch)
            if "img_emb" not in emb:
                raise CurationError(f"the encoder returned {sorted(emb)}, expected an 'img_emb' column")
            out.append(np.asarray(emb["img_emb"], dtype=np.float32))
        if not out:
            raise CurationError("nothing to embed: the split is empty")
        return np.concatenate(out)


def make_encoder(
    encoder: str | Callable[..., Any],
    revision: str | None = None,
    batch_size: int = 64,
    image_column: str = "image",
) -> PixelPCAEncoder | _EmbedFnEncoder:
    """``"pca"`` -> :class:`PixelPCAEncoder`; a folder or Hub model id -> a transformers image encoder;
    an ``embed_fn`` (with an ``encoder_id`` attribute) as it is."""
    if callable(encoder):
        enc_id = getattr(encoder, "encoder_id", None)
        if not enc_id:
            raise CurationError(
                "an embed_fn encoder needs an encoder_id attribute (recorded with the curation)"
            )
        return _EmbedFnEncoder(encoder, str(enc_id))
    if encoder == "pca":
        return PixelPCAEncoder()
    from hubtools.data.embed import embed_fn_from_flags

    fn, enc_id = embed_fn_from_flags(
        str(encoder), None, image_column=image_column, batch_size=batch_size, image_revision=revision
    )
    assert fn is not None and enc_id is not None
    return _EmbedFnEncoder(fn, enc_id)


# --------------------------------------------------------------------------- curation


def _labels(ds: Any, column: str, where: str) -> np.ndarray:
    if column not in ds.column_names:
        raise CurationError(f"{where}: no column '{column}' (columns: {ds.column_names})")
    y = np.asarray(ds[column])
    if y.size and y.dtype.kind not in "iu":
        raise CurationError(f"{where}: column '{column}' must hold integer class ids, got {y.dtype}")
    return y.astype(np.int64)


def _row_ids(ds: Any, column: str, prefix: str) -> list[str]:
    if column in ds.column_names:
        return [str(v) for v in ds[column]]
    return [f"{prefix}:{i}" for i in range(ds.num_rows)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def curate_split(
    ds_dict: Mapping[str, Any],
    lt_profile: Any,
    *,
    seed_split: str = DEFAULT_SEED_SPLIT,
    encoder: str | Callable[..., Any] = "pca",
    encoder_revision: str | None = None,
    budget: float | int = 1.0,
    score: Literal["probe", "margin", "cosine", "none"] = "probe",
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    min_seed_per_class: int = DEFAULT_MIN_SEED_PER_CLASS,
    clean_loss: float = 0.05,
    dup_eps: float = 1e-4,
    method: Literal["proportional", "topk", "random"] = "proportional",
    k: int = 4,
    index: Literal["hnsw", "exact"] = "hnsw",
    seed: int = 0,
    batch_size: int = 256,
    image_column: str = "image",
    label_column: str = "label",
    id_column: str = "source_id",
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Curate ``ds_dict["train"]`` with InfoGrowth; return the curated train ``Dataset`` and the record.

    ``budget``: 1.0 keeps every row the cleaner kept (the default: cleaning only); a fraction below 1 (of
    the train rows) or a row count draws that many, gain-weighted (``method``), after the per-class floor
    ``min_per_class``. The curated split keeps the train split's columns and row order. The record is
    what ``infogrowth.json`` holds (see the module docstring for every decision it documents).
    """
    from hubtools.data.infogrowth import InfoGrowth, InfoGrowthError, select, versions

    t0 = time.perf_counter()
    if "train" not in ds_dict:
        raise CurationError(f"the dataset has no 'train' split to curate (splits: {list(ds_dict)})")
    budget = check_budget(budget)
    if not isinstance(min_per_class, int) or min_per_class < 0:
        raise CurationError(f"min_per_class: expected an integer >= 0, got {min_per_class!r}")
    if not isinstance(min_seed_per_class, int) or min_seed_per_class < 1:
        raise CurationError(f"min_seed_per_class: expected an integer >= 1, got {min_seed_per_class!r}")
    split_name, fraction = parse_seed_split(seed_split)
    if split_name not in ds_dict:
        raise CurationError(f"seed split {split_name!r} is not in the dataset (splits: {list(ds_dict)})")
    train = ds_dict["train"]
    if image_column not in train.column_names:
        raise CurationError(f"train: no image column '{image_column}' (columns: {train.column_names})")
    n_classes = int(lt_profile.num_classes)
    y = _labels(train, label_column, "train")
    ids = _row_ids(train, id_column, "train")
    n = len(y)
    if n == 0:
        raise CurationError("train: the split is empty")
    if y.max() >= n_classes or y.min() < 0:
        raise CurationError(f"train: labels must lie in [0, {n_classes}), got {int(y.min())}..{int(y.max())}")
    rng = np.random.default_rng(seed)

    # -- the trusted seed: a split, or a per-class sample of train
    if fraction is None:
        seed_ds = ds_dict[split_name]
        seed_y = _labels(seed_ds, label_column, split_name)
        seed_ids = _row_ids(seed_ds, id_column, split_name)
        sampled = np.zeros(0, np.int64)
    else:
        picks = []
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            take = min(len(rows), max(min_seed_per_class, int(round(fraction * len(rows)))))
            picks.append(np.sort(rng.choice(rows, take, replace=False)))
        sampled = np.sort(np.concatenate(picks))
        seed_ds = train.select(sampled.tolist())
        seed_y, seed_ids = y[sampled], [ids[i] for i in sampled]

    # -- embeddings
    t_embed = time.perf_counter()
    enc = make_encoder(encoder, encoder_revision, image_column=image_column)
    if isinstance(enc, PixelPCAEncoder):
        enc.fit(seed_ds, image_column, seed_ids)
    emb_seed = enc.embed(seed_ds, image_column) if fraction is None else None
    emb_train = enc.embed(train, image_column)
    if emb_seed is None:
        emb_seed = emb_train[sampled]
    embed_seconds = time.perf_counter() - t_embed

    # -- seed top-up for tail classes, unchecked and ignored classes
    train_counts = np.bincount(y, minlength=n_classes)
    seed_counts = np.bincount(seed_y, minlength=n_classes) if len(seed_y) else np.zeros(n_classes, np.int64)
    is_seed_row = np.zeros(n, bool)
    is_seed_row[sampled] = True
    borrowed: dict[int, list[int]] = {}
    unchecked = [int(c) for c in np.flatnonzero((train_counts > 0) & (seed_counts == 0))]
    for c in np.flatnonzero((train_counts > 0) & (seed_counts > 0) & (seed_counts < min_seed_per_class)):
        cand = np.flatnonzero((y == c) & ~is_seed_row)
        need = min(min_seed_per_class - int(seed_counts[c]), len(cand))
        if need <= 0:
            continue
        proto = _unit(_unit(emb_seed[seed_y == c]).mean(axis=0, keepdims=True))[0]
        order = np.argsort(-(_unit(emb_train[cand]) @ proto), kind="stable")
        take = np.sort(cand[order[:need]])
        borrowed[int(c)] = take.tolist()
        is_seed_row[take] = True
    keep_seed = np.ones(len(seed_y), bool)
    ignored = [
        int(c)
        for c in np.flatnonzero((train_counts == 0) & (seed_counts > 0) & (seed_counts < min_seed_per_class))
    ]
    keep_seed &= ~np.isin(seed_y, ignored)
    extra = np.array(sorted(i for rows in borrowed.values() for i in rows), np.int64)
    cur_seed_x = np.concatenate([emb_seed[keep_seed], emb_train[extra]])
    cur_seed_y = np.concatenate([seed_y[keep_seed], y[extra]])
    seed_train_rows = np.concatenate([sampled, extra])  # train rows that are seeds, in curator order
    final_seed_counts = np.bincount(cur_seed_y, minlength=n_classes)
    effective_min_seed = int(final_seed_counts[final_seed_counts > 0].min())

    # -- the curator: seeds, then the rest of train in a seeded random order
    ig = InfoGrowth(
        "image-label",
        k=k,
        score=score,
        clean_loss=clean_loss,
        dup_eps=dup_eps,
        index=index,
        min_seed_per_class=min(min_seed_per_class, effective_min_seed),
        encoder_id=enc.encoder_id,
        seed=seed,
    )
    try:
        ig.fit_seed({"img_emb": cur_seed_x, "label": cur_seed_y})
    except InfoGrowthError as err:
        raise CurationError(f"the seed set cannot build the cleaner: {err}") from None
    stream = np.flatnonzero(~is_seed_row & ~np.isin(y, unchecked))
    stream = stream[rng.permutation(len(stream))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stream), desc="infogrowth", unit="row", file=sys.stderr)
    for s in range(0, len(stream), batch_size):
        rows = stream[s : s + batch_size]
        ig.process_batch({"img_emb": emb_train[rows], "label": y[rows]})
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()

    # -- per train row: status, cleaner score, normalised gain
    res = ig.results()
    n_seed_cur = len(cur_seed_y)
    status = np.full(n, "unchecked", dtype=object)
    align = np.full(n, np.nan)
    gain = np.zeros(n)
    n_split_seed = int(keep_seed.sum()) if fraction is None else 0
    seed_pos = np.arange(n_split_seed, n_seed_cur)  # curator positions of the train rows among the seeds
    if fraction is not None:
        seed_pos = np.arange(n_seed_cur)
    status[seed_train_rows] = "seed"
    gain[seed_train_rows] = res["ig_gain_norm"][seed_pos]
    align[seed_train_rows] = res["ig_align"][seed_pos]
    status[stream] = res["ig_status"][n_seed_cur:]
    gain[stream] = res["ig_gain_norm"][n_seed_cur:]
    align[stream] = res["ig_align"][n_seed_cur:]

    # -- survival: a class the cleaner emptied gets back its most plausible rows
    restored: dict[int, list[int]] = {}
    for c in np.flatnonzero(train_counts > 0):
        rows = np.flatnonzero(y == c)
        if np.isin(status[rows], (*_ELIGIBLE, *_FORCED)).any():
            continue
        dropped = rows[status[rows] == "dropped_noisy"]
        back = np.sort(
            dropped[np.argsort(-align[dropped], kind="stable")[: min(min_seed_per_class, len(dropped))]]
        )
        restored[int(c)] = back.tolist()
        status[back] = "restored"

    # -- selection: every eligible row at budget 1.0, else the floor + a gain-weighted draw
    eligible = np.isin(status, _ELIGIBLE)
    forced = np.flatnonzero(np.isin(status, _FORCED))
    target = int(round(budget * n)) if isinstance(budget, float) else min(int(budget), n)
    room = max(0, target - len(forced))
    if room >= int(eligible.sum()):
        chosen = np.flatnonzero(eligible)
    elif room == 0:
        chosen = np.zeros(0, np.int64)
    else:
        g = np.where(eligible, gain, 0.0)
        chosen = select(g, room, method, seed=seed, eligible=eligible, labels=y, min_per_class=min_per_class)
    selected = np.zeros(n, bool)
    selected[chosen] = True
    selected[forced] = True
    curated = train.select(np.flatnonzero(selected).tolist())

    record = _record(
        lt_profile=lt_profile,
        y=y,
        ids=ids,
        status=status,
        selected=selected,
        ig=ig,
        settings={
            "seed_split": split_name,
            "seed_fraction": fraction,
            "encoder": encoder if isinstance(encoder, str) else "embed_fn",
            "encoder_id": enc.encoder_id,
            "encoder_revision": encoder_revision,
            "budget": budget,
            "method": method,
            "min_per_class": min_per_class,
            "min_seed_per_class": min_seed_per_class,
            "min_seed_per_class_effective": min(min_seed_per_class, effective_min_seed),
            "score": score,
            "clean_loss": clean_loss,
            "dup_eps": dup_eps,
            "k": k,
            "index": index,
            "seed": seed,
            "stream_order": f"numpy default_rng({seed}) permutation of the non-seed train rows",
            "batch_size": batch_size,
        },
        seed_info={
            "split": split_name,
            "fraction": fraction,
            "rows_from_split": n_split_seed,
            "sampled_train_rows": len(sampled),
            "borrowed_train_rows": len(extra),
            "borrowed": {str(c): [ids[i] for i in rows] for c, rows in borrowed.items()},
            "ignored_seed_classes": ignored,
            "seed_ids_hash": ids_hash(
                list(np.asarray(seed_ids, dtype=object)[keep_seed]) + [ids[i] for i in extra]
            ),
            "seed_embedding_hash": ig.seed_hash,
            "rows_per_class": final_seed_counts.tolist(),
        },
        unchecked=unchecked,
        restored={str(c): [ids[i] for i in rows] for c, rows in restored.items()},
        seconds={"embed": round(embed_seconds, 3), "total": round(time.perf_counter() - t0, 3)},
        versions=versions(),
    )
    return curated, record


def _record(
    *,
    lt_profile: Any,
    y: np.ndarray,
    ids: list[str],
    status: np.ndarray,
    selected: np.ndarray,
    ig: Any,
    settings: dict[str, Any],
    seed_info: dict[str, Any],
    unchecked: list[int],
    restored: dict[str, list[str]],
    seconds: dict[str, float],
    versions: dict[str, str],
) -> dict[str, Any]:
    """The audit record: settings, δ, counts per status, per-class and per-group rates, removed row ids."""
    n_classes = int(lt_profile.num_classes)
    groups = np.asarray(lt_profile.groups())
    per_class = {}
    for c in range(n_classes):
        m = y == c
        st = status[m]
        judged = int(
            np.isin(st, ("kept", "recaptioned", "relabeled", "dropped_noisy", "duplicate", "restored")).sum()
        )
        per_class[str(c)] = {
            "name": lt_profile.class_names[c],
            "group": lt_profile.group_of(c),
            "train": int(m.sum()),
            **{s: int((st == s).sum()) for s in ROW_STATUSES},
            "selected": int(selected[m].sum()),
            # share of the rows the cleaner judged that it dropped (noisy or duplicate)
            "cleaner_drop_rate": round(
                float(np.isin(st, ("dropped_noisy", "duplicate", "restored")).sum() / judged), 4
            )
            if judged
            else 0.0,
            "removed_rate": round(float(1 - selected[m].mean()), 4) if m.any() else 0.0,
        }
    per_group = {}
    for gi, name in enumerate(("many", "medium", "few")):
        m = groups[y] == gi
        judged = m & ~np.isin(status, ("seed", "unchecked"))
        per_group[name] = {
            "classes": int((groups == gi).sum()),
            "train": int(m.sum()),
            "selected": int(selected[m].sum()),
            "dropped_noisy": int((status[m] == "dropped_noisy").sum()),
            "duplicate": int((status[m] == "duplicate").sum()),
            "cleaner_drop_rate": round(
                float(np.isin(status[judged], ("dropped_noisy", "duplicate", "restored")).mean()), 4
            )
            if judged.any()
            else 0.0,
            "removed_rate": round(float(1 - selected[m].mean()), 4) if m.any() else 0.0,
        }
    present = np.unique(y)
    kept_classes = np.unique(y[selected])
    ids_arr = np.asarray(ids, dtype=object)
    return {
        "settings": settings,
        "curator": ig.settings(),
        "delta": float(ig.delta),
        "probe_refits": int(getattr(ig, "probe_refits", 0)),
        "seed": seed_info,
        "rows": {"train": len(y), "selected": int(selected.sum()), "removed": int((~selected).sum())},
        "counts": {s: int((status == s).sum()) for s in ROW_STATUSES},
        "curator_counts": ig.counts(),
        "classes": {
            "in_train": len(present),
            "kept": len(kept_classes),
            "lost": [int(c) for c in np.setdiff1d(present, kept_classes)],
            "unchecked": unchecked,
            "restored": sorted(int(c) for c in restored),
        },
        "restored": restored,
        "per_group": per_group,
        "per_class": per_class,
        "removed_ids": {
            "dropped_noisy": ids_arr[(status == "dropped_noisy")].tolist(),
            "duplicate": ids_arr[(status == "duplicate")].tolist(),
            "not_selected": ids_arr[~selected & np.isin(status, _ELIGIBLE)].tolist(),
        },
        "versions": versions,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------- the curated config


def replace_train(ds_dict: Any, lt_profile: Any, train: Any, note: str = "") -> tuple[Any, Any]:
    """The set with ``train`` as its train split, and the profile that goes with it.

    Class order and the many/medium/few cut-offs stay those of ``lt_profile`` (a curated and an uncurated
    run then report the same classes as few-shot); train counts, imbalance ratio and split sizes are the
    new train split's, since the trainer checks the counts against the labels.
    """
    from datasets import DatasetDict

    from hubtools.longtail.splits import LTProfile

    out = DatasetDict({s: (train if s == "train" else d) for s, d in ds_dict.items()})
    counts = np.bincount(np.asarray(train["label"], np.int64), minlength=lt_profile.num_classes).tolist()
    nonzero = [c for c in counts if c > 0]
    lt = LTProfile(
        class_names=list(lt_profile.class_names),
        cls_num_list=counts,
        imbalance_ratio=round(max(nonzero) / min(nonzero), 4) if nonzero else 0.0,
        head=lt_profile.head,
        medium=lt_profile.medium,
        test_distribution=lt_profile.test_distribution,
        split_provenance=lt_profile.split_provenance,
        license=lt_profile.license,
        seed=lt_profile.seed,
        split_sizes={s: d.num_rows for s, d in out.items()},
        notes=" ".join(t for t in (lt_profile.notes, note) if t),
        disjoint_by=lt_profile.disjoint_by,
    )
    return out, lt


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def card_section(record: Mapping[str, Any], source_config: str) -> str:
    """The card's InfoGrowth section: settings, counts per status, per-group and per-class drop rates."""
    s, seed, c = record["settings"], record["seed"], record["counts"]
    seed_text = (
        f"`{seed['split']}` split ({seed['rows_from_split']} rows; they teach the cleaner and are not part of "
        "this train split)"
        if seed["fraction"] is None
        else f"a per-class {seed['fraction']:g} sample of train ({seed['sampled_train_rows']} rows, kept as `seed`)"
    )
    floor = (
        f"{s['min_per_class']} rows per class before the gain-weighted draw (a class with fewer cleaned rows "
        "keeps them all)"
        if s["budget"] != 1.0
        else f"{s['min_per_class']} rows per class, inactive at budget 1.0 (every cleaned row is kept)"
    )
    lines = [
        "### InfoGrowth curation",
        "",
        f"This config is the train split of `{source_config}` curated by **InfoGrowth** (hubtools.data.infogrowth; "
        "Qin et al., ECCV 2024): a cleaner learnt from a trusted seed set drops rows whose label disagrees with "
        "the image, exact duplicates are dropped, and every kept row gets an information gain (mean cosine "
        "distance to its k nearest kept rows). Validation and test are those of the uncurated config.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| trusted seed | {seed_text}; {seed['borrowed_train_rows']} train rows borrowed for classes with fewer "
        f"than {s['min_seed_per_class']} seed rows (nearest to the class's seed prototype; listed in "
        "`infogrowth.json`, labels not verified) |",
        f"| encoder | `{s['encoder_id']}` |",
        f"| cleaner | {s['score']}, target clean-row loss {s['clean_loss']:g}, calibrated δ = {record['delta']:.4g} |",
        f"| duplicates | nearest kept row closer than {s['dup_eps']:g} (cosine distance) |",
        f"| gain | k = {s['k']}, {s['index']} index, stream order seeded by {s['seed']} |",
        f"| budget | {s['budget']:g} ({s['method']}) -> {record['rows']['selected']} of "
        f"{record['rows']['train']} train rows |",
        f"| tail floor | {floor} |",
        f"| classes kept | {record['classes']['kept']} of {record['classes']['in_train']} |",
        "",
        "| status (train rows) | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in c.items()],
        "",
        "| group | classes | train rows | kept | dropped by the cleaner | removed |",
        "|---|---|---|---|---|---|",
        *[
            f"| {g} | {v['classes']} | {v['train']} | {v['selected']} | {_pct(v['cleaner_drop_rate'])} | "
            f"{_pct(v['removed_rate'])} |"
            for g, v in record["per_group"].items()
        ],
        "",
        "Per class (dropped by the cleaner = share of the rows it judged that it dropped; removed = share of "
        "the class's train rows not in this split):",
        "",
        "| label | class | group | train | kept | dropped by the cleaner | removed |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {k} | {v['name']} | {v['group']} | {v['train']} | {v['selected']} | "
            f"{_pct(v['cleaner_drop_rate'])} | {_pct(v['removed_rate'])} |"
            for k, v in record["per_class"].items()
        ],
        "",
        "`infogrowth.json` holds every setting, the seed and encoder hashes, the library versions and the ids "
        "of every removed row.",
    ]
    return "\n".join(lines)


def save_curated(
    folder: str | Path,
    name: str,
    builder: Any,
    ds: Any,
    lt: Any,
    record: Mapping[str, Any],
    config: str,
    source_config: str,
    repo_id: str | None = None,
    zoo_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write the curated config like ``save_build`` writes a build, plus ``infogrowth.json`` and a card section.

    The folder has ``data/``, ``longtail/<config>.{json,png}``, ``README.md`` and ``infogrowth.json``, so
    :func:`hubtools.longtail.datasets.load` and :func:`~hubtools.longtail.datasets.publish` take it as
    they take an uncurated build. Written whole or not at all.
    """
    from hubtools.hub.artifacts import atomic_dir, save_card
    from hubtools.longtail.datasets import counts_chart, dataset_card

    with atomic_dir(folder) as tmp:
        ds.save_to_disk(str(tmp / "data"))
        lt.to_json(tmp / "longtail" / f"{config}.json")
        counts_chart(lt, tmp / "longtail" / f"{config}.png", f"{name} ({config}): train images per class")
        card = dataset_card(name, builder, ds, lt, repo_id, config, zoo_fields)
        card.data["pretty_name"] = f"{name} long-tailed ({config}, InfoGrowth-curated train)"
        card.data["tags"] = list(
            dict.fromkeys([*(card.data.get("tags") or []), "infogrowth", "data-curation"])
        )
        section = card_section(record, source_config)
        marker = "\n## Intended use"
        text = card.text
        card.text = (
            text.replace(marker, f"\n{section}\n{marker}", 1) if marker in text else f"{text}\n{section}\n"
        )
        save_card(tmp, card)
        (tmp / RECORD_FILE).write_text(json.dumps({"config": config, **record}, indent=2, default=str) + "\n")
    return Path(folder)


def publish_curated(
    folder: str | Path, repo_id: str, private: bool | None = None, num_proc: int | None = None
) -> str:
    """:func:`~hubtools.longtail.datasets.publish` the curated folder, then its record as ``infogrowth/<config>.json``.

    One repo holds several configs, so each curated config's record gets its own path.
    """
    from huggingface_hub import HfApi

    from hubtools.longtail.datasets import publish

    cfg = publish(folder, repo_id, private=private, num_proc=num_proc)
    HfApi().upload_file(
        path_or_fileobj=str(Path(folder) / RECORD_FILE),
        path_in_repo=f"infogrowth/{cfg}.json",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"InfoGrowth record of {cfg}",
    )
    return cfg


def summary_line(record: Mapping[str, Any]) -> str:
    """One line for the CLI: kept rows, what was dropped, δ, classes kept, few-shot drop rate."""
    c, r = record["counts"], record["rows"]
    few = record["per_group"]["few"]
    return (
        f"infogrowth: kept {r['selected']} of {r['train']} train rows (dropped_noisy {c['dropped_noisy']}, "
        f"duplicate {c['duplicate']}, seed {c['seed']}, restored {c['restored']}, unchecked {c['unchecked']}); "
        f"delta {record['delta']:.4g}; classes kept {record['classes']['kept']}/{record['classes']['in_train']}; "
        f"few-shot cleaner drop rate {_pct(few['cleaner_drop_rate'])}"
    )
