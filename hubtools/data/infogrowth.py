"""InfoGrowth: online cleaning and information-gain selection for growing datasets.

Reference: "Dataset Growth" (Qin et al., ECCV 2024).
A curator takes batches as they arrive, and for every row

1. **cleans** it: the row's content must agree with its condition (image-text: cosine of
   the two embeddings; image-label: by default a linear probe fit on the trusted seed set must
   give the labelled class a probability above δ, and δ is chosen so that a target share of
   clean rows (``clean_loss``, 5 %) would be lost, estimated by cross-validation on the seed
   set). A disagreeing row goes to a repair hook (recaption / relabel) or is dropped;
2. **scores its information gain**: the mean distance ``1 - cos`` to its k nearest rows
   already kept, read from an ANN index, *then* inserts it. Gains are never recomputed,
   so they record how new the row was when it arrived. A row closer than ``dup_eps`` to a
   kept row is a ``duplicate``: gain 0, not inserted (the k-mean alone does not suppress
   copies: a later copy still averages its distance 0 with k-1 ordinary distances).
   Optionally (``entropy_gain=True``) a label-entropy gain 1 - p̂ joins it, p̂ being the share
   of those neighbours that carry the row's label;
3. leaves the choice to **selection / sampling** by normalised gain: a static subset
   (:func:`select`) or per-epoch samplers (:class:`GainSampler`, :class:`TwoPhaseGainSampler`).

Why faiss (``faiss-cpu``): it ships binary wheels for every platform (hnswlib 0.8 is a
source-only distribution that needs a C++ compiler), it gives both the approximate
``IndexHNSWFlat`` and the exact ``IndexFlatL2`` baseline behind one API, and
``write_index``/``read_index`` persist the whole graph, which is what lets a curator stop
and resume. HNSW settings follow the anchor (M=48, efConstruction=100) except the query
``ef``: the anchor's 32 is an hnswlib setting, and faiss at ef=32 reaches only recall@4 = 0.88
on 10k random 64-d vectors; ef=64 gives 0.976 (the spec asks >= 0.95). Vectors are L2-normalised, so the L2 index orders neighbours by cosine and
``1 - cos = ||a - b||^2 / 2``. Index insertion runs on one thread by default because
faiss's parallel HNSW insertion gives a different graph on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hubtools.errors import HubtoolsError
from hubtools.hashing import sha256_file

logger = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("seed", "kept", "recaptioned", "relabeled", "dropped_noisy", "duplicate")
KEPT_STATUSES: tuple[str, ...] = ("seed", "kept", "recaptioned", "relabeled")
_CODE = {s: i for i, s in enumerate(STATUSES)}
_KEPT_CODES = np.array([_CODE[s] for s in KEPT_STATUSES])
STATE_VERSION = 1
SEED_CHUNK = 4096  # seed rows scored per batch in fit_seed


class InfoGrowthError(HubtoolsError, ValueError):
    """Bad input to the curator: its message names the column, row and value."""


class EmbeddingError(InfoGrowthError):
    """An embedding is not a finite, non-zero vector of the curator's dimension."""


class EmptyBatchError(InfoGrowthError):
    """A batch (or the seed set) has no rows."""


class SeedError(InfoGrowthError):
    """The trusted seed set cannot build the cleaner (too few rows of a class, missing columns)."""


class StateMismatchError(InfoGrowthError):
    """A saved curator state does not fit this curator (other encoder, dimension or settings) or is damaged."""


# --------------------------------------------------------------------------- index


@contextlib.contextmanager
def _faiss_threads(n: int | None) -> Iterator[None]:
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class KnnIndex:
    """A faiss index over L2-normalised vectors that returns cosine distances ``1 - cos``.

    ``kind="hnsw"``: ``IndexHNSWFlat(dim, M)`` with ``efConstruction``/``efSearch`` set (search
    ef is raised to ``k`` when smaller). ``kind="exact"``: ``IndexFlatL2``, brute force.
    ``add_threads=1`` (default) keeps the HNSW graph reproducible; ``None`` uses all cores.
    """

    def __init__(
        self,
        dim: int,
        kind: Literal["hnsw", "exact"] = "hnsw",
        M: int = 48,
        ef_construction: int = 100,
        ef: int = 64,
        add_threads: int | None = 1,
    ) -> None:
        import faiss

        if kind not in ("hnsw", "exact"):
            raise InfoGrowthError(f"index: expected 'hnsw' or 'exact', got {kind!r}")
        self.dim, self.kind, self.M, self.ef, self.add_threads = dim, kind, M, ef, add_threads
        self.ef_construction = ef_construction
        if kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, M)
            self.index.hnsw.efConstruction = ef_construction
            self.index.hnsw.efSearch = ef
        else:
            self.index = faiss.IndexFlatL2(dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances ``1 - cos`` (clipped at 0) and positions of the ``k`` nearest rows; -1 where fewer."""
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef, k)
        d, ids = self.index.search(np.ascontiguousarray(x, dtype=np.float32), k)
        d = np.maximum(d / 2.0, 0.0)
        d[ids < 0] = np.inf
        return d, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of rows ``ids`` (float32 [len(ids), D])."""
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def add(self, x: np.ndarray) -> None:
        if len(x):
            with _faiss_threads(self.add_threads):
                self.index.add(np.ascontiguousarray(x, dtype=np.float32))

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    def load(self, path: Path) -> None:
        """Replace the index by the one saved at ``path``, restoring the HNSW level generator.

        faiss draws one random number per inserted row to pick its HNSW level and does not
        save the generator; replaying the draws makes later insertions build exactly the
        graph an uninterrupted run would have built.
        """
        import faiss

        index = faiss.read_index(str(path))
        if index.d != self.dim:
            raise StateMismatchError(f"{path}: index has dimension {index.d}, expected {self.dim}")
        if self.kind == "hnsw":
            hnsw = faiss.downcast_index(index).hnsw
            for _ in range(index.ntotal):
                hnsw.random_level()
            hnsw.efSearch = self.ef
        self.index = index


# --------------------------------------------------------------------------- helpers


def _as_matrix(values: Any, column: str, dim: int | None) -> np.ndarray:
    """Rows of ``column`` as a float32 [B, D] matrix, L2-normalised; :class:`EmbeddingError` otherwise."""
    try:
        x = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise EmbeddingError(
            f"column '{column}': embeddings must be equal-length float vectors ({err})"
        ) from None
    if x.ndim != 2:
        raise EmbeddingError(
            f"column '{column}': expected one vector per row (a [rows, dim] array), got shape {x.shape}"
        )
    if dim is not None and x.shape[1] != dim:
        raise EmbeddingError(
            f"column '{column}': embeddings have dimension {x.shape[1]}, "
            f"this curator was seeded with dimension {dim}"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise EmbeddingError(
            f"column '{column}': row {int(np.argmax(bad))} of the batch has NaN or infinite "
            f"values ({int(bad.sum())} such rows)"
        )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise EmbeddingError(
            f"column '{column}': row {int(np.argmax(norms[:, 0] == 0))} of the batch is a zero vector"
        )
    return x / norms


def _batch_len(batch: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in batch.values()}
    if len(lengths) > 1:
        raise InfoGrowthError(f"batch columns have different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def normalize_gains(gains: np.ndarray, kept: np.ndarray | None = None, q: float = 0.99) -> np.ndarray:
    """ĝ = clip(g / Q_q(g over kept rows), 0, 1); rows not kept get 0.

    The quantile, not the maximum, is the scale so that a few isolated outliers do not
    squash every other row's weight toward 0 (anchor notebook).
    """
    gains = np.asarray(gains, dtype=np.float64)
    kept = np.ones(len(gains), bool) if kept is None else np.asarray(kept, bool)
    out = np.zeros(len(gains))
    pos = gains[kept]
    if pos.size == 0:
        return out
    scale = float(np.quantile(pos, q))
    if scale <= 0:
        return out
    out[kept] = np.clip(gains[kept] / scale, 0.0, 1.0)
    return out


# --------------------------------------------------------------------------- curator


class InfoGrowth:
    """The online curator. Seed it with :meth:`fit_seed`, then feed batches.

    Columns: ``emb_column`` holds the image (content) embedding; ``label_column`` the class
    label (``mode="image-label"``) or ``text_emb_column`` the caption embedding
    (``mode="image-text"``). ``embed_fn(batch) -> {column: float32[B, D]}`` is applied to
    every batch first when given (its time is counted separately, ``stats["embed_seconds"]``).

    Label cleaning (``score``, image-label mode):

    - ``"probe"`` (default): a multinomial logistic regression on the seed embeddings gives
      p(label | row); a row is dropped when p < δ. ``delta="auto"`` (default) sets δ to the
      ``clean_loss`` quantile (5 %) of the seed rows' cross-validated p of their own label, so
      about that share of *clean* rows is lost, whatever the encoder. Every
      time the stream doubles past ``probe_refit_every`` rows (512, 1024, 2048, ...: a handful of
      refits even for millions of rows) the probe is refit on the seeds plus the kept rows (at most
      ``probe_max_rows`` of them, drawn with the curator seed) and δ re-estimated the same way:
      with few seed rows per class the first probe is weak, and the kept stream is mostly clean.
    - ``"margin"``: cos to the labelled class prototype minus the best other prototype, δ = 0
      (nearest-centroid agreement; drops many clean but atypical rows).
    - ``"cosine"``: cos to the labelled class prototype, δ = the ``clean_loss`` quantile over seeds.
    - ``"none"``: no cleaning (every row is accepted): the gain-only ablation.

    ``entropy_gain=True`` adds the label-entropy gain ``1 - p̂`` (p̂: share of the k nearest kept
    rows carrying the row's label); selection then uses the mean of the normalised distance gain
    and it. Use it after cleaning only: a mislabelled row has foreign neighbours and would get the
    largest entropy gain.

    Repair hooks: ``relabel=True`` moves a disagreeing row to its most likely class (probe) or
    nearest prototype when that class wins by ``relabel_delta``; ``relabel_fn(row, scores) -> label | None``
    replaces that rule. ``recaption_fn(row) -> {column: new value} | None`` returns a new
    caption's columns (the text embedding included); the row is ``recaptioned`` when the
    new pair agrees. ``on_reject(row, status)`` sees every dropped or duplicate row, e.g. to
    queue it for asynchronous repair and re-submission.

    ``encoder_id`` names the embedding model (id + revision); a saved state is refused by a
    curator with another encoder.
    """

    def __init__(
        self,
        mode: Literal["image-label", "image-text"] = "image-label",
        *,
        emb_column: str = "img_emb",
        label_column: str = "label",
        text_emb_column: str = "txt_emb",
        text_column: str | None = None,
        k: int = 4,
        delta: float | Literal["auto"] | None = None,
        score: Literal["probe", "margin", "cosine", "none"] = "probe",
        clean_loss: float = 0.05,
        probe_refit_every: int = 512,
        probe_max_rows: int = 20_000,
        probe_C: float = 10.0,
        entropy_gain: bool = False,
        relabel: bool = False,
        relabel_delta: float = 0.05,
        relabel_fn: Callable[[dict[str, Any], np.ndarray], int | None] | None = None,
        recaption_fn: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None,
        on_reject: Callable[[dict[str, Any], str], None] | None = None,
        embed_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        dup_eps: float = 1e-4,
        index: Literal["hnsw", "exact"] = "hnsw",
        M: int = 48,
        ef_construction: int = 100,
        ef: int = 64,
        add_threads: int | None = 1,
        min_seed_per_class: int = 5,
        encoder_id: str | None = None,
        seed: int = 0,
    ) -> None:
        if mode not in ("image-label", "image-text"):
            raise InfoGrowthError(f"mode: expected 'image-label' or 'image-text', got {mode!r}")
        if score not in ("probe", "margin", "cosine", "none"):
            raise InfoGrowthError(f"score: expected 'probe', 'margin', 'cosine' or 'none', got {score!r}")
        if not 0.0 < clean_loss < 1.0:
            raise InfoGrowthError(f"clean_loss: expected a share in (0, 1), got {clean_loss!r}")
        if not isinstance(probe_refit_every, int) or probe_refit_every < 0:
            raise InfoGrowthError(f"probe_refit_every: expected a row count >= 0, got {probe_refit_every!r}")
        if entropy_gain and mode != "image-label":
            raise InfoGrowthError("entropy_gain needs labels: it is defined for mode='image-label' only")
        if not isinstance(k, int) or k < 1:
            raise InfoGrowthError(f"k: expected a positive integer, got {k!r}")
        if dup_eps < 0:
            raise InfoGrowthError(f"dup_eps: expected >= 0, got {dup_eps!r}")
        if delta is None:
            if mode == "image-label" and score == "margin":
                delta = 0.0
            elif mode == "image-label" and score == "none":
                delta = -math.inf
            else:
                delta = "auto"
        if delta != "auto" and not isinstance(delta, (int, float)):
            raise InfoGrowthError(f"delta: expected a number or 'auto', got {delta!r}")
        self.mode, self.k, self.score, self.delta_setting = mode, k, score, delta
        self.clean_loss, self.probe_refit_every, self.probe_max_rows = (
            clean_loss,
            probe_refit_every,
            probe_max_rows,
        )
        self.probe_C, self.entropy_gain = probe_C, entropy_gain
        self.emb_column, self.label_column, self.text_emb_column = emb_column, label_column, text_emb_column
        self.text_column = text_column
        self.relabel, self.relabel_delta, self.relabel_fn = relabel, relabel_delta, relabel_fn
        self.recaption_fn, self.on_reject, self.embed_fn = recaption_fn, on_reject, embed_fn
        self.dup_eps, self.index_kind, self.M, self.ef_construction, self.ef = (
            dup_eps,
            index,
            M,
            ef_construction,
            ef,
        )
        self.add_threads, self.min_seed_per_class = add_threads, min_seed_per_class
        self.encoder_id, self.seed = encoder_id, seed
        self._reset()

    # ---- state
    def _reset(self) -> None:
        self.dim: int | None = None
        self.delta: float | None = None
        self.classes: np.ndarray | None = None  # sorted seed labels; prototypes[i] is class classes[i]
        self.prototypes: np.ndarray | None = None
        self.probe_w: np.ndarray | None = None  # [classes, D] logistic-regression weights (probe score)
        self.probe_b: np.ndarray | None = None
        self.probe_refits = 0
        self.seed_x: np.ndarray | None = None  # the seed rows, for the probe's refits and calibration
        self.seed_y: np.ndarray | None = None
        self._index_labels = _Growable(np.int64)  # label of every indexed row, in index order
        self.img_index: KnnIndex | None = None
        self.txt_index: KnnIndex | None = None
        self.n_seen = 0  # rows of the stream consumed (seeds excluded), for resume
        self.seed_hash = ""
        self._cols: dict[str, list[np.ndarray]] = {n: [] for n in self._array_names()}
        self.stats: dict[str, Any] = {"embed_seconds": 0.0, "curate_seconds": 0.0}

    @staticmethod
    def _array_names() -> tuple[str, ...]:
        return ("status", "align", "gain", "gain_img", "gain_txt", "gain_ent", "nn1", "label", "orig_label")

    def _array(self, name: str) -> np.ndarray:
        parts = self._cols[name]
        if len(parts) > 1:
            self._cols[name] = parts = [np.concatenate(parts)]
        return parts[0] if parts else np.zeros(0)

    @property
    def n_rows(self) -> int:
        """Rows recorded so far (seeds + stream)."""
        return int(sum(len(p) for p in self._cols["status"]))

    @property
    def is_seeded(self) -> bool:
        return self.dim is not None

    def counts(self) -> dict[str, int]:
        """Rows per status so far."""
        codes = np.bincount(self._array("status").astype(np.int64), minlength=len(STATUSES))
        return {s: int(codes[i]) for i, s in enumerate(STATUSES)}

    def show_counts(self, bar: Any) -> None:
        """Put kept / dropped / duplicate / repaired counts on a tqdm bar (O(rows so far): once per batch)."""
        c = self.counts()
        bar.set_postfix(
            kept=c["kept"] + c["seed"],
            dropped=c["dropped_noisy"],
            dup=c["duplicate"],
            repaired=c["relabeled"] + c["recaptioned"],
            refresh=False,
        )

    # ---- seeding
    def fit_seed(self, seed_rows: Any) -> dict[str, Any]:
        """Insert the trusted seed set: build prototypes, calibrate δ, index the seeds (all kept).

        ``seed_rows``: a ``Dataset``, a column dict, or an iterable of row dicts. Seeds are
        inserted in order, each scored against the seeds before it (anchor "precluster").
        Returns the seed rows' decision columns.
        """
        if self.is_seeded:
            raise InfoGrowthError("fit_seed: this curator is already seeded")
        batch = _to_columns(seed_rows)
        if _batch_len(batch) == 0:
            raise EmptyBatchError("fit_seed: the seed set has no rows")
        batch = self._embed(batch)
        for col in self._needed_columns():
            if col not in batch:
                raise SeedError(f"fit_seed: the seed set has no column '{col}' (columns: {sorted(batch)})")
        x = _as_matrix(batch[self.emb_column], self.emb_column, None)
        dim = x.shape[1]
        t = None
        if self.mode == "image-label":
            y = np.asarray(batch[self.label_column])
            if y.dtype.kind not in "iu":
                raise SeedError(
                    f"fit_seed: column '{self.label_column}' must hold integer labels, got {y.dtype}"
                )
            classes, counts = np.unique(y, return_counts=True)
            few = classes[counts < self.min_seed_per_class]
            if few.size:
                raise SeedError(
                    f"fit_seed: class(es) {few.tolist()} have fewer than {self.min_seed_per_class} seed rows "
                    f"(counts {dict(zip(classes.tolist(), counts.tolist(), strict=True))}); their prototypes would "
                    "be noise. Add verified rows or lower min_seed_per_class"
                )
            protos = np.stack([x[y == c].mean(axis=0) for c in classes])
            protos /= np.linalg.norm(protos, axis=1, keepdims=True)
            self.classes, self.prototypes = classes, protos.astype(np.float32)
            if self.score == "probe":
                self.seed_x, self.seed_y = x.copy(), y.astype(np.int64)
                calibrated = self._fit_probe(np.zeros((0, dim), np.float32), np.zeros(0, np.int64))
            align = self._label_scores(self._class_scores(x), np.searchsorted(classes, y))
        else:
            t = _as_matrix(batch[self.text_emb_column], self.text_emb_column, dim)
            align = np.sum(x * t, axis=1)
        if self.delta_setting != "auto":
            self.delta = float(self.delta_setting)
        elif self.score == "probe" and self.mode == "image-label":
            self.delta = calibrated
        else:
            self.delta = float(np.quantile(align, self.clean_loss))
        self.dim = dim
        self.img_index = KnnIndex(
            dim, self.index_kind, self.M, self.ef_construction, self.ef, self.add_threads
        )
        if self.mode == "image-text":
            self.txt_index = KnnIndex(
                dim, self.index_kind, self.M, self.ef_construction, self.ef, self.add_threads
            )
        self.seed_hash = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        labels = np.asarray(batch[self.label_column]) if self.mode == "image-label" else None
        # scored in chunks: a batch's gains need its rows' pairwise distances (chunk^2 floats)
        if len(x) > SEED_CHUNK:
            batch = {k: v if isinstance(v, (np.ndarray, list)) else list(v) for k, v in batch.items()}
        outs = []
        for s in range(0, len(x), SEED_CHUNK):
            part = slice(s, s + SEED_CHUNK)
            outs.append(
                self._record(
                    {k: v[part] for k, v in batch.items()},
                    x[part],
                    None if t is None else t[part],
                    np.full(len(x[part]), _CODE["seed"], np.int8),
                    align[part],
                    None if labels is None else labels[part],
                    dup_rule=False,
                )
            )
        return outs[0] if len(outs) == 1 else {k: _concat([o[k] for o in outs]) for k in outs[0]}

    def _needed_columns(self) -> tuple[str, ...]:
        if self.mode == "image-label":
            return (self.emb_column, self.label_column)
        return (self.emb_column, self.text_emb_column)

    # ---- the label cleaner
    def _class_scores(self, x: np.ndarray) -> np.ndarray:
        """Per-class scores of rows ``x``: probe probabilities, or cosine to the class prototypes."""
        if self.score == "probe":
            return _softmax_probe(x, self.probe_w, self.probe_b)
        return x @ self.prototypes.T

    def _label_scores(self, sims: np.ndarray, cls_idx: np.ndarray) -> np.ndarray:
        own = sims[np.arange(len(sims)), cls_idx]
        if self.score in ("cosine", "probe", "none"):
            return own
        others = sims.copy()
        others[np.arange(len(sims)), cls_idx] = -np.inf
        return own - others.max(axis=1) if sims.shape[1] > 1 else own

    def _fit_probe(self, x_extra: np.ndarray, y_extra: np.ndarray) -> float:
        """Fit the probe on seeds + ``x_extra`` rows; return the calibrated δ.

        δ is the ``clean_loss`` quantile of each seed row's probability of its own label under a
        probe that did not see that row (stratified K-fold over the seeds, the extra rows always in
        training): an estimate of the threshold that loses that share of clean rows.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        xs, ys = self.seed_x, self.seed_y
        if len(self.classes) == 1:  # one class: every row agrees with it
            self.probe_w, self.probe_b = np.zeros((1, xs.shape[1])), np.zeros(1)
            return 1.0

        def fit(xa: np.ndarray, ya: np.ndarray) -> Any:
            with _quiet_sklearn():
                return LogisticRegression(C=self.probe_C, max_iter=1000).fit(xa, ya)

        model = fit(np.concatenate([xs, x_extra]), np.concatenate([ys, y_extra]))
        w, b = _probe_params(model, self.classes)
        folds = int(min(5, np.bincount(np.searchsorted(self.classes, ys)).min()))
        p_own = np.zeros(len(ys))
        if folds >= 2:
            split = StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(xs, ys)
            for train, held in split:
                m = fit(np.concatenate([xs[train], x_extra]), np.concatenate([ys[train], y_extra]))
                wf, bf = _probe_params(m, self.classes)
                prob = _softmax_probe(xs[held], wf, bf)
                p_own[held] = prob[np.arange(len(held)), np.searchsorted(self.classes, ys[held])]
        else:  # one seed row in some class: in-sample probabilities, optimistic
            prob = _softmax_probe(xs, w, b)
            p_own = prob[np.arange(len(ys)), np.searchsorted(self.classes, ys)]
        self.probe_w, self.probe_b = w, b
        return float(np.quantile(p_own, self.clean_loss))

    def _maybe_refit_probe(self) -> None:
        """Refit the probe on the seeds + kept stream rows when the stream doubles past ``probe_refit_every``."""
        if self.score != "probe" or not self.probe_refit_every:
            return
        if self.n_seen < self.probe_refit_every * 2**self.probe_refits:
            return
        while self.n_seen >= self.probe_refit_every * 2**self.probe_refits:
            self.probe_refits += 1
        n_seed = len(self.seed_y)
        ids = np.arange(n_seed, self.img_index.ntotal)  # kept stream rows, in index order
        if len(ids) > self.probe_max_rows:
            rng = np.random.default_rng([self.seed, self.probe_refits])
            ids = np.sort(rng.choice(ids, self.probe_max_rows, replace=False))
        x_extra = self.img_index.reconstruct(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
        y_extra = self._index_labels.values()[ids]
        calibrated = self._fit_probe(x_extra, y_extra)
        if self.delta_setting == "auto":
            self.delta = calibrated

    def _embed(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.embed_fn is None:
            return batch
        t0 = time.perf_counter()
        batch = {**batch, **self.embed_fn(batch)}
        self.stats["embed_seconds"] += time.perf_counter() - t0
        return batch

    # ---- the stream
    def process_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Clean, score and index one batch (a column dict); return it with the ``ig_*`` columns.

        Every check (dimension, NaN, empty batch, unknown label, repaired values) runs before the
        curator changes, so a refused batch leaves the state as it was.
        """
        if not self.is_seeded:
            raise InfoGrowthError("process_batch: call fit_seed with the trusted seed set first")
        t0 = time.perf_counter()
        batch = dict(batch)
        n = _batch_len(batch)
        if n == 0:
            raise EmptyBatchError("process_batch: the batch has no rows")
        batch = self._embed(batch)
        for col in self._needed_columns():
            if col not in batch:
                raise InfoGrowthError(
                    f"process_batch: the batch has no column '{col}' (columns: {sorted(batch)})"
                )
        x = _as_matrix(batch[self.emb_column], self.emb_column, self.dim)
        status = np.full(n, _CODE["kept"], np.int8)
        t = None
        if self.mode == "image-label":
            labels, align = self._clean_labels(batch, x, status)
        else:
            labels = None
            t, align = self._clean_text(batch, x, status)
        if self.on_reject is not None:
            for i in np.flatnonzero(status == _CODE["dropped_noisy"]):
                self.on_reject(_row(batch, i), "dropped_noisy")
        out = self._record(batch, x, t, status, align, labels, dup_rule=True)
        self.n_seen += n
        self._maybe_refit_probe()
        self.stats["curate_seconds"] += time.perf_counter() - t0
        return out

    def _clean_labels(
        self, batch: dict[str, Any], x: np.ndarray, status: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(batch[self.label_column])
        if y.dtype.kind not in "iu":
            raise InfoGrowthError(f"column '{self.label_column}': labels must be integers, got {y.dtype}")
        cls_idx = np.searchsorted(self.classes, y)
        cls_idx = np.minimum(cls_idx, len(self.classes) - 1)
        unknown = self.classes[cls_idx] != y
        if unknown.any():
            raise InfoGrowthError(
                f"column '{self.label_column}': label {int(y[unknown][0])} has no prototype "
                f"(not in the seed set; seeded classes: {self.classes.tolist()})"
            )
        sims = self._class_scores(x)
        align = self._label_scores(sims, cls_idx)
        new_y = y.copy()
        for i in np.flatnonzero(align < self.delta):
            target = None
            if self.relabel_fn is not None:
                target = self.relabel_fn(_row(batch, i), sims[i])
                if target is not None and target not in self.classes:
                    raise InfoGrowthError(f"relabel_fn returned label {target!r}, which has no prototype")
            elif self.relabel:
                order = np.argsort(-sims[i])
                margin = sims[i, order[0]] - (sims[i, order[1]] if len(order) > 1 else -1.0)
                if margin >= self.relabel_delta:
                    target = int(self.classes[order[0]])
            if target is None:
                status[i] = _CODE["dropped_noisy"]
            else:
                status[i] = _CODE["relabeled"]
                new_y[i] = target
        if self.relabel or self.relabel_fn is not None:  # a stable schema: the column is in every batch
            batch["orig_" + self.label_column] = y.copy()
            batch[self.label_column] = _replace(batch[self.label_column], new_y)
        return new_y, align

    def _clean_text(
        self, batch: dict[str, Any], x: np.ndarray, status: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = _as_matrix(batch[self.text_emb_column], self.text_emb_column, self.dim)
        align = np.sum(x * t, axis=1)
        repairs: dict[int, Mapping[str, Any]] = {}
        for i in np.flatnonzero(align < self.delta):
            fix = self.recaption_fn(_row(batch, i)) if self.recaption_fn is not None else None
            if fix is None or self.text_emb_column not in fix:
                status[i] = _CODE["dropped_noisy"]
                continue
            extra = set(fix) - set(self._recaption_columns(batch))
            if extra:
                raise InfoGrowthError(
                    f"recaption_fn returned column(s) {sorted(extra)}; it may replace only "
                    f"{self._recaption_columns(batch)} (set text_column= for the caption text)"
                )
            new_t = _as_matrix(
                [fix[self.text_emb_column]], f"recaption_fn()['{self.text_emb_column}']", self.dim
            )[0]
            if float(x[i] @ new_t) >= self.delta:
                status[i] = _CODE["recaptioned"]
                repairs[int(i)] = fix
                t[i] = new_t
            else:
                status[i] = _CODE["dropped_noisy"]
        if self.recaption_fn is not None:  # a stable schema: orig_* columns are in every batch
            for col in self._recaption_columns(batch):
                batch["orig_" + col] = list(batch[col])
                values = list(batch[col])
                for i, fix in repairs.items():
                    if col in fix:
                        values[i] = fix[col]
                batch[col] = values
        return t, align

    def _recaption_columns(self, batch: Mapping[str, Any]) -> list[str]:
        cols = [self.text_emb_column] + ([self.text_column] if self.text_column else [])
        missing = [c for c in cols if c not in batch]
        if missing:
            raise InfoGrowthError(f"recaption: the batch has no column(s) {missing}")
        return cols

    def _record(
        self,
        batch: dict[str, Any],
        x: np.ndarray,
        t: np.ndarray | None,
        status: np.ndarray,
        align: np.ndarray,
        labels: np.ndarray | None,
        dup_rule: bool,
    ) -> dict[str, Any]:
        """Gains for the accepted rows (spec 2.3, batched), then index them and append the results."""
        n = len(x)
        accepted = np.flatnonzero(np.isin(status, _KEPT_CODES))
        gain_img = np.zeros(n)
        gain_txt = np.zeros(n)
        gain_ent = np.zeros(n)
        nn1 = np.full(n, np.nan)
        if accepted.size:
            lab = None if labels is None else np.asarray(labels, np.int64)[accepted]
            g, d1, inserted, agree = _batch_gains_labelled(
                self.img_index,
                x[accepted],
                self.k,
                self.dup_eps if dup_rule else None,
                index_labels=self._index_labels.values() if lab is not None else None,
                labels=lab,
            )
            gain_img[accepted], nn1[accepted] = g, d1
            if lab is not None:
                gain_ent[accepted] = 1.0 - agree
                gain_ent[accepted[~inserted]] = 0.0
                self._index_labels.extend(lab[inserted])
            if t is not None:
                gt, _, _ = _batch_gains(self.txt_index, t[accepted], self.k, None, inserted=inserted)
                gain_txt[accepted] = gt
                self.txt_index.add(t[accepted][inserted])
            self.img_index.add(x[accepted][inserted])
            status[accepted[~inserted]] = _CODE["duplicate"]
            gain_img[accepted[~inserted]] = 0.0
            gain_txt[accepted[~inserted]] = 0.0
        gain = (gain_img + gain_txt) / 2 if t is not None else gain_img
        start = self.n_rows
        self._cols["status"].append(status)
        self._cols["align"].append(align.astype(np.float64))
        self._cols["gain"].append(gain)
        self._cols["gain_img"].append(gain_img)
        self._cols["gain_txt"].append(gain_txt)
        self._cols["gain_ent"].append(gain_ent)
        self._cols["nn1"].append(nn1)
        lab = labels if labels is not None else np.full(n, -1)
        orig = np.asarray(batch.get("orig_" + self.label_column, lab)) if labels is not None else lab
        self._cols["label"].append(np.asarray(lab, np.int64))
        self._cols["orig_label"].append(np.asarray(orig, np.int64))
        if self.on_reject is not None and dup_rule:
            for i in np.flatnonzero(status == _CODE["duplicate"]):
                self.on_reject(_row(batch, i), "duplicate")
        out = dict(batch)
        out["ig_status"] = [STATUSES[c] for c in status]
        out["ig_align"] = align.astype(np.float32)
        out["ig_gain"] = gain.astype(np.float32)
        if self.entropy_gain:
            out["ig_gain_ent"] = gain_ent.astype(np.float32)
        if t is not None:
            out["ig_gain_img"] = gain_img.astype(np.float32)
            out["ig_gain_txt"] = gain_txt.astype(np.float32)
        out["ig_nn1"] = nn1.astype(np.float32)
        out["ig_arrival"] = np.arange(start, start + n, dtype=np.int64)
        return out

    def grow_batches(
        self,
        stream: Any,
        batch_size: int = 256,
        *,
        skip_seen: bool = True,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        progress: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """Consume ``stream`` (``Dataset``, ``IterableDataset``, column dict or iterable of row dicts) batch by batch.

        With ``skip_seen`` a resumed curator skips the rows it has already consumed, so resuming is
        "load the state, pass the same stream". ``checkpoint_every=N`` saves the state to
        ``checkpoint_dir`` after every N batches (and at the end). ``progress`` is a tqdm bar to update.
        """
        if checkpoint_every and checkpoint_dir is None:
            raise InfoGrowthError("checkpoint_every needs checkpoint_dir")
        skip = self.n_seen if skip_seen else 0
        done = 0
        for batch in _iter_batches(stream, batch_size, skip):
            out = self.process_batch(batch)
            done += 1
            if progress is not None:
                progress.update(_batch_len(batch))
                self.show_counts(progress)
            if checkpoint_every and done % checkpoint_every == 0:
                self.save_state(checkpoint_dir)
            yield out
        if checkpoint_dir is not None and checkpoint_every:
            self.save_state(checkpoint_dir)

    def grow(self, stream: Any, batch_size: int = 256, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Like :meth:`grow_batches`, one decision (row + ``ig_*`` columns) per row."""
        for out in self.grow_batches(stream, batch_size, **kwargs):
            for i in range(_batch_len(out)):
                yield _row(out, i)

    # ---- results
    def gains_norm(self) -> np.ndarray:
        """ĝ for every recorded row: the gain over its 99th percentile among kept rows, clipped to [0, 1].

        With ``entropy_gain`` it is the mean of that and the entropy gain ``1 - p̂`` (0 for rows not kept).
        """
        status = self._array("status")
        kept = np.isin(status, _KEPT_CODES)
        g = normalize_gains(self._array("gain"), kept)
        if self.entropy_gain:
            g = np.where(kept, (g + self._array("gain_ent")) / 2.0, 0.0)
        return g

    def results(self) -> dict[str, np.ndarray]:
        """The per-row decisions so far as arrays (``ig_arrival`` is the row's position)."""
        status = self._array("status")
        out = {
            "ig_arrival": np.arange(len(status), dtype=np.int64),
            "ig_status": np.array([STATUSES[c] for c in status], dtype=object),
            "ig_align": self._array("align"),
            "ig_gain": self._array("gain"),
            "ig_gain_norm": self.gains_norm(),
            "ig_nn1": self._array("nn1"),
        }
        if self.entropy_gain:
            out["ig_gain_ent"] = self._array("gain_ent")
        if self.mode == "image-text":
            out["ig_gain_img"], out["ig_gain_txt"] = self._array("gain_img"), self._array("gain_txt")
        else:
            out[self.label_column] = self._array("label")
            out["orig_" + self.label_column] = self._array("orig_label")
        return out

    def table(self) -> Any:
        """The decisions as a ``datasets.Dataset`` (one row per seed and stream row)."""
        from datasets import Dataset

        res = self.results()
        res["ig_status"] = res["ig_status"].tolist()
        return Dataset.from_dict(res)

    def per_class(self) -> dict[int, dict[str, int]]:
        """Per original class: rows seen, kept (any kept status) and dropped (noisy or duplicate)."""
        if self.mode != "image-label":
            return {}
        status, orig = self._array("status"), self._array("orig_label")
        out = {}
        for c in self.classes.tolist():
            m = orig == c
            kept = np.isin(status[m], _KEPT_CODES)
            out[int(c)] = {"seen": int(m.sum()), "kept": int(kept.sum()), "dropped": int((~kept).sum())}
        return out

    def settings(self) -> dict[str, Any]:
        """Every parameter that changes the decisions, for the state file and infogrowth.json."""
        return {
            "mode": self.mode,
            "k": self.k,
            "score": self.score,
            "delta_setting": self.delta_setting,
            "delta": self.delta,
            "clean_loss": self.clean_loss,
            "probe_refit_every": self.probe_refit_every,
            "probe_max_rows": self.probe_max_rows,
            "probe_C": self.probe_C,
            "entropy_gain": self.entropy_gain,
            "relabel": self.relabel,
            "relabel_delta": self.relabel_delta,
            "relabel_fn": _fn_name(self.relabel_fn),
            "recaption_fn": _fn_name(self.recaption_fn),
            "dup_eps": self.dup_eps,
            "index": self.index_kind,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "emb_column": self.emb_column,
            "label_column": self.label_column if self.mode == "image-label" else None,
            "text_emb_column": self.text_emb_column if self.mode == "image-text" else None,
            "text_column": self.text_column,
            "min_seed_per_class": self.min_seed_per_class,
            "encoder_id": self.encoder_id,
            "seed": self.seed,
            "prototype_source": "seed" if self.mode == "image-label" else None,
            "probe": "logistic regression on seed + kept rows" if self.score == "probe" else None,
        }

    # ---- save / resume
    def save_state(self, path: str | Path) -> Path:
        """Write index(es), prototypes, decision arrays and settings to the folder ``path`` (atomically)."""
        from hubtools.hub.artifacts import atomic_dir

        if not self.is_seeded:
            raise InfoGrowthError("save_state: nothing to save before fit_seed")
        with atomic_dir(path) as tmp:
            self.img_index.save(tmp / "index_img.faiss")
            if self.txt_index is not None:
                self.txt_index.save(tmp / "index_txt.faiss")
            arrays = {name: self._array(name) for name in self._array_names()}
            arrays["prototypes"] = self.prototypes if self.prototypes is not None else np.zeros((0, self.dim))
            arrays["classes"] = self.classes if self.classes is not None else np.zeros(0, np.int64)
            if self.score == "probe" and self.probe_w is not None:
                arrays.update(
                    probe_w=self.probe_w, probe_b=self.probe_b, seed_x=self.seed_x, seed_y=self.seed_y
                )
            np.savez(tmp / "state.npz", **arrays)
            meta = {
                "version": STATE_VERSION,
                "settings": self.settings(),
                "dim": self.dim,
                "n_seen": self.n_seen,
                "probe_refits": self.probe_refits,
                "seed_hash": self.seed_hash,
                "counts": self.counts(),
                "stats": {k: v for k, v in self.stats.items()},
            }
            (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Path(path)

    def load_state(self, path: str | Path) -> None:
        """Resume from a folder written by :meth:`save_state`.

        Refused with :class:`StateMismatchError` (and this curator left unchanged) when the state
        was made with another encoder, another mode/k/index/dup rule, or is damaged.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "state.json").read_text())
            npz = np.load(path / "state.npz", allow_pickle=False)
            optional = ("gain_ent", "probe_w", "probe_b", "seed_x", "seed_y")
            arrays = {
                name: npz[name]
                for name in (*self._array_names(), "prototypes", "classes", *optional)
                if name in npz.files or name not in optional
            }
        except (OSError, ValueError, KeyError) as err:
            raise StateMismatchError(f"{path}: not a readable InfoGrowth state ({err})") from None
        if meta.get("version") != STATE_VERSION:
            raise StateMismatchError(
                f"{path}: state version {meta.get('version')!r}, expected {STATE_VERSION}"
            )
        saved = meta["settings"]
        if saved.get("encoder_id") != self.encoder_id:
            raise StateMismatchError(
                f"{path}: the state was built with embeddings from encoder {saved.get('encoder_id')!r}, this curator "
                f"uses {self.encoder_id!r}; gains from two embedding spaces cannot be mixed"
            )
        mine = self.settings()
        for key in (
            "mode",
            "k",
            "score",
            "dup_eps",
            "index",
            "M",
            "ef_construction",
            "emb_column",
            "label_column",
            "text_emb_column",
        ):
            if key == "score" and self.mode == "image-text":
                continue  # the label score plays no part in image-text mode
            if saved.get(key) != mine[key]:
                raise StateMismatchError(
                    f"{path}: saved setting {key}={saved.get(key)!r} differs from this "
                    f"curator's {mine[key]!r}"
                )
        for key, old_default in (
            ("entropy_gain", False),
            ("clean_loss", 0.05),
            ("probe_refit_every", mine["probe_refit_every"]),
            ("probe_max_rows", mine["probe_max_rows"]),
            ("probe_C", mine["probe_C"]),
        ):
            if self.score == "probe" or key == "entropy_gain":
                if saved.get(key, old_default) != mine[key]:
                    raise StateMismatchError(
                        f"{path}: saved setting {key}={saved.get(key, old_default)!r} differs from this "
                        f"curator's {mine[key]!r}"
                    )
        if self.score == "probe" and self.mode == "image-label" and "probe_w" not in arrays:
            raise StateMismatchError(
                f"{path}: the state has no probe (it was made with score={saved.get('score')!r})"
            )
        if self.is_seeded and meta["dim"] != self.dim:
            raise StateMismatchError(f"{path}: state has dimension {meta['dim']}, this curator {self.dim}")
        dim = int(meta["dim"])
        img = KnnIndex(dim, self.index_kind, self.M, self.ef_construction, self.ef, self.add_threads)
        img.load(path / "index_img.faiss")
        txt = None
        if self.mode == "image-text":
            txt = KnnIndex(dim, self.index_kind, self.M, self.ef_construction, self.ef, self.add_threads)
            txt.load(path / "index_txt.faiss")
        n_kept = int(np.isin(arrays["status"], _KEPT_CODES).sum())
        if img.ntotal != n_kept:
            raise StateMismatchError(
                f"{path}: index holds {img.ntotal} rows but the state records {n_kept} kept rows"
            )
        # all checks passed: swap the state in
        self.dim, self.delta, self.n_seen = dim, float(saved["delta"]), int(meta["n_seen"])
        self.seed_hash = meta.get("seed_hash", "")
        self.img_index, self.txt_index = img, txt
        if "gain_ent" not in arrays:  # a state from before the entropy gain
            arrays["gain_ent"] = np.zeros(len(arrays["status"]))
        if self.mode == "image-label":
            self.classes, self.prototypes = arrays["classes"], arrays["prototypes"].astype(np.float32)
            if "probe_w" in arrays:
                self.probe_w, self.probe_b = arrays["probe_w"], arrays["probe_b"]
                self.seed_x, self.seed_y = arrays["seed_x"], arrays["seed_y"]
            self.probe_refits = int(meta.get("probe_refits", 0))
        self._cols = {name: [arrays[name]] for name in self._array_names()}
        # the index holds the kept rows in arrival order: their labels, in index order
        self._index_labels = _Growable(np.int64)
        self._index_labels.extend(arrays["label"][np.isin(arrays["status"], _KEPT_CODES)])
        self.stats = {"embed_seconds": 0.0, "curate_seconds": 0.0, **meta.get("stats", {})}

    @classmethod
    def from_state(cls, path: str | Path, **kwargs: Any) -> InfoGrowth:
        """A curator with the settings saved at ``path`` (hooks passed as ``kwargs``), resumed from it."""
        try:
            s = json.loads((Path(path) / "state.json").read_text())["settings"]
        except (OSError, ValueError, KeyError) as err:
            raise StateMismatchError(f"{path}: not a readable InfoGrowth state ({err})") from None
        args = {
            "mode": s["mode"],
            "k": s["k"],
            "score": s["score"],
            "delta": s["delta_setting"],
            "clean_loss": s.get("clean_loss", 0.05),
            "entropy_gain": s.get("entropy_gain", False),
            "relabel": s["relabel"],
            "relabel_delta": s["relabel_delta"],
            "dup_eps": s["dup_eps"],
            "index": s["index"],
            "M": s["M"],
            "ef_construction": s["ef_construction"],
            "ef": s["ef"],
            "emb_column": s["emb_column"],
            "min_seed_per_class": s["min_seed_per_class"],
            "encoder_id": s["encoder_id"],
            "seed": s["seed"],
        }
        for key in ("probe_refit_every", "probe_max_rows", "probe_C"):
            if key in s:
                args[key] = s[key]
        if s.get("label_column"):
            args["label_column"] = s["label_column"]
        if s.get("text_emb_column"):
            args["text_emb_column"] = s["text_emb_column"]
        if s.get("text_column"):
            args["text_column"] = s["text_column"]
        args.update(kwargs)
        ig = cls(**args)
        ig.load_state(path)
        return ig


def _batch_gains(
    index: KnnIndex, x: np.ndarray, k: int, dup_eps: float | None, inserted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gain, nearest distance and "inserted" flag of each row of a batch, as if inserted one by one.

    The pre-batch index gives each row its k nearest older rows; exact distances to the earlier
    inserted rows of the same batch are merged in, so with an exact index the result equals
    row-by-row processing. ``inserted`` (from the image index) fixes which rows enter, for the
    text index of image-text mode.
    """
    gains, nn1, ins, _ = _batch_gains_labelled(index, x, k, dup_eps, inserted)
    return gains, nn1, ins


def _batch_gains_labelled(
    index: KnnIndex,
    x: np.ndarray,
    k: int,
    dup_eps: float | None,
    inserted: np.ndarray | None = None,
    index_labels: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_batch_gains` plus p̂: the share of the same k neighbours whose label equals the row's.

    ``index_labels[i]`` is the label of the index's row ``i``; without labels p̂ is 0. A row with no
    neighbour yet has gain 1 and p̂ 0 (entropy gain 1: nothing is known about it).
    """
    b = len(x)
    c = index.ntotal
    if c:
        d_pre, id_pre = index.search(x, min(k, c))
    else:
        d_pre, id_pre = np.zeros((b, 0), np.float32), np.zeros((b, 0), np.int64)
    intra = np.maximum(1.0 - x @ x.T, 0.0)
    gains, nn1, agree = np.ones(b), np.full(b, np.nan), np.zeros(b)
    decide = inserted is None
    ins = np.zeros(b, bool) if decide else inserted
    with_labels = labels is not None and index_labels is not None
    for i in range(b):
        fin = np.isfinite(d_pre[i])
        prev = np.flatnonzero(ins[:i])
        cand = np.concatenate([d_pre[i][fin], intra[i, prev]])
        if cand.size:
            kk = min(k, cand.size)
            pick = np.argpartition(cand, kk - 1)[:kk]
            near = cand[pick]
            gains[i], nn1[i] = float(near.mean()), float(near.min())
            if with_labels:
                cand_labels = np.concatenate([index_labels[id_pre[i][fin]], labels[prev]])
                agree[i] = float((cand_labels[pick] == labels[i]).mean())
        if decide:
            ins[i] = not (dup_eps is not None and cand.size and nn1[i] < dup_eps)
    return gains, nn1, ins, agree


class _Growable:
    """An append-only 1-D numpy array with amortised O(1) appends (capacity doubles)."""

    def __init__(self, dtype: Any) -> None:
        self._buf = np.zeros(1024, dtype)
        self._n = 0

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, self._buf.dtype)
        need = self._n + len(values)
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf)), self._buf.dtype)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = values
        self._n = need

    def values(self) -> np.ndarray:
        return self._buf[: self._n]


def _probe_params(model: Any, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights [C, D] and biases [C] over ``classes`` from a fitted scikit-learn LogisticRegression.

    A class absent from the fit data gets weight 0 and bias -30 (probability ~0); a binary model's
    single row becomes the two rows [0, w] so that one softmax serves both cases.
    """
    w, b = model.coef_, model.intercept_
    if w.shape[0] == 1:  # binary: p(class 1) = sigmoid(w x + b) = softmax([0, w x + b])[1]
        w, b = np.concatenate([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    W = np.zeros((len(classes), w.shape[1]), np.float64)
    B = np.full(len(classes), -30.0)
    pos = np.searchsorted(classes, model.classes_)
    W[pos], B[pos] = w, b
    return W, B


def _softmax_probe(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) @ w.T + b
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@contextlib.contextmanager
def _quiet_sklearn() -> Iterator[None]:
    """Silence scikit-learn's convergence warnings for the probe (its lbfgs stops at max_iter)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [v for p in parts for v in p]


def _row(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {k: v[i] for k, v in batch.items()}


def _replace(values: Any, new: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return new.astype(values.dtype)
    return new.tolist()


def _fn_name(fn: Any) -> str | None:
    return None if fn is None else getattr(fn, "__qualname__", repr(fn))


def _to_columns(data: Any) -> dict[str, Any]:
    """A column dict from a Dataset, a column dict, or an iterable of row dicts."""
    if isinstance(data, Mapping):
        return dict(data)
    if hasattr(data, "to_dict") and hasattr(data, "column_names") and hasattr(data, "num_rows"):
        return {c: data[c] for c in data.column_names}
    rows = list(data)
    if not rows:
        return {}
    return {k: [r[k] for r in rows] for k in rows[0]}


def _iter_batches(stream: Any, batch_size: int, skip: int) -> Iterator[dict[str, Any]]:
    if batch_size < 1:
        raise InfoGrowthError(f"batch_size: expected a positive integer, got {batch_size!r}")
    from datasets import Dataset, IterableDataset

    if isinstance(stream, Dataset):
        if skip:
            stream = stream.select(range(min(skip, stream.num_rows), stream.num_rows))
        yield from stream.iter(batch_size=batch_size)
        return
    if isinstance(stream, IterableDataset):
        if skip:
            stream = stream.skip(skip)
        yield from stream.iter(batch_size=batch_size)
        return
    if isinstance(stream, Mapping):
        n = _batch_len(stream)
        for s in range(skip, n, batch_size):
            yield {k: v[s : s + batch_size] for k, v in stream.items()}
        return
    rows: list[dict[str, Any]] = []
    it: Iterable[Any] = iter(stream)
    for _ in range(skip):
        next(it, None)
    for row in it:
        rows.append(row)
        if len(rows) == batch_size:
            yield _to_columns(rows)
            rows = []
    if rows:
        yield _to_columns(rows)


# --------------------------------------------------------------------------- selection and sampling


def select(
    gains_norm: np.ndarray,
    budget: float | int,
    method: Literal["proportional", "topk", "random"] = "proportional",
    seed: int = 0,
    eligible: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    min_per_class: int = 0,
) -> np.ndarray:
    """Indices of a static subset of ``budget`` rows (a fraction of all rows, or a count), sorted.

    ``gains_norm``: ĝ per row, or a table with an ``ig_gain_norm`` column (:meth:`InfoGrowth.table`).

    ``proportional``: weighted sampling without replacement with P ∝ ĝ (Efraimidis-Spirakis keys
    u^(1/ĝ)); rows with ĝ = 0 (dropped, duplicates) are never chosen, and when fewer than the
    budget have ĝ > 0 all of them are returned with a warning. ``topk``: the largest ĝ.
    ``random``: uniform over ``eligible`` rows (default: all rows), the baseline.

    Tail protection: with ``labels`` and ``min_per_class=f``, every class first gets
    ``min(f, its candidates)`` rows by the same rule applied within the class, and the rest of the
    budget is filled by the rule over all remaining candidates. Gains favour sparse regions, which
    often are tail classes, but a class whose rows sit close together could still vanish from a
    small budget; the floor makes "every class survives" a guarantee instead of a likelihood.
    """
    if hasattr(gains_norm, "column_names"):  # a results table (ig.table()) or a curated Dataset
        gains_norm = gains_norm["ig_gain_norm"]
    g = np.asarray(gains_norm, dtype=np.float64)
    n = len(g)
    m = _budget_rows(budget, n)
    if min_per_class:
        if labels is None:
            raise InfoGrowthError("select: min_per_class needs the rows' labels (labels=...)")
        return _select_with_floor(g, m, method, seed, eligible, np.asarray(labels), int(min_per_class))
    rng = np.random.default_rng(seed)
    if method == "random":
        pool = np.arange(n) if eligible is None else np.flatnonzero(eligible)
        return np.sort(rng.choice(pool, size=min(m, len(pool)), replace=False))
    if method not in ("proportional", "topk"):
        raise InfoGrowthError(f"method: expected 'proportional', 'topk' or 'random', got {method!r}")
    pos = np.flatnonzero(g > 0)
    if len(pos) <= m:
        if len(pos) < m:
            logger.warning(
                "select: only %d rows have gain > 0, fewer than the budget %d; returning them all",
                len(pos),
                m,
            )
        return pos
    if method == "topk":
        order = np.argsort(-g[pos], kind="stable")
        return np.sort(pos[order[:m]])
    u = rng.random(len(pos))
    keys = np.log(np.maximum(u, 1e-300)) / g[pos]  # log(u^(1/g)): same order, no underflow
    return np.sort(pos[np.argpartition(-keys, m - 1)[:m]])


def _select_with_floor(
    g: np.ndarray, m: int, method: str, seed: int, eligible: np.ndarray | None, labels: np.ndarray, floor: int
) -> np.ndarray:
    if len(labels) != len(g):
        raise InfoGrowthError(f"select: {len(labels)} labels for {len(g)} rows")
    cand = (np.ones(len(g), bool) if eligible is None else np.asarray(eligible, bool)).copy()
    if method != "random":
        cand &= g > 0
    chosen: list[np.ndarray] = []
    for i, c in enumerate(np.unique(labels[cand])):
        rows = np.flatnonzero(cand & (labels == c))
        take = min(floor, len(rows))
        pick = select(g[rows], take, method, seed=seed + 7919 * (i + 1), eligible=None)
        chosen.append(rows[pick])
    base = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    if len(base) >= m:
        logger.warning(
            "select: the per-class floor alone takes %d rows, more than the budget %d", len(base), m
        )
        return np.sort(base)
    rest = cand.copy()
    rest[base] = False
    if rest.any():
        left = min(m - len(base), int(rest.sum()))
        idx = np.flatnonzero(rest)
        pick = select(g[idx], left, method, seed=seed, eligible=None)
        base = np.concatenate([base, idx[pick]])
    return np.sort(base)


def _budget_rows(budget: float | int, n: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise InfoGrowthError(
            f"budget: expected a fraction in (0, 1] or a positive row count, got {budget!r}"
        )
    if isinstance(budget, float) and budget <= 1.0:
        return int(round(budget * n))
    if isinstance(budget, float) and not budget.is_integer():
        raise InfoGrowthError(f"budget: a fraction must be at most 1, got {budget!r}")
    return min(int(budget), n)


class GainSampler:
    """Per-epoch sampler (anchor default "proptional"): rows appear in proportion to ĝ, epoch length N.

    Each epoch repeats {one Bernoulli(ĝ_i) draw per row; shuffle the hits} until N indices, then
    truncates. Every rank draws the same indices from (seed, epoch) and takes ``indices[rank::world]``
    cut to the shortest rank, so DDP ranks stay in step. All-zero gains fall back to a permutation.
    """

    def __init__(self, gains_norm: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        g = np.asarray(gains_norm, dtype=np.float64)
        if g.ndim != 1 or g.size == 0:
            raise InfoGrowthError(f"gains_norm: expected a non-empty 1-D array, got shape {g.shape}")
        if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
            raise InfoGrowthError("gains_norm: expected normalised gains in [0, 1] (see normalize_gains)")
        if not 0 <= rank < world_size:
            raise InfoGrowthError(f"rank {rank} is not in [0, world_size={world_size})")
        self.g, self.seed, self.rank, self.world_size = g, seed, rank, world_size
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _probabilities(self, epoch: int) -> np.ndarray:
        return self.g

    def _draw(self, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
        n = len(p)
        if p.sum() < 1e-12:
            return rng.permutation(n)
        parts, total = [], 0
        while total < n:
            hits = rng.permutation(np.flatnonzero(rng.random(n) < p))
            parts.append(hits)
            total += len(hits)
        return np.concatenate(parts)[:n]

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """All ranks' indices of an epoch (before sharding)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        return self._draw(rng, self._probabilities(epoch))

    def _indices(self) -> np.ndarray:
        if self._cache is None or self._cache[0] != self.epoch:
            full = self.epoch_indices()
            per_rank = len(full) // self.world_size
            self._cache = (self.epoch, full[self.rank :: self.world_size][:per_rank])
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


class TwoPhaseGainSampler(GainSampler):
    """Alternating epochs (anchor): even epochs Bernoulli(ĝ) ("global diversity"), odd epochs
    Bernoulli(max(floor, 1 - ĝ)) ("common but crucial"). One round per epoch, so epochs are shorter
    than N: that is where training compute is saved. Pass only kept rows' gains."""

    def __init__(
        self, gains_norm: np.ndarray, floor: float = 0.1, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(gains_norm, seed, rank, world_size)
        self.floor = floor

    def _probabilities(self, epoch: int) -> np.ndarray:
        return self.g if epoch % 2 == 0 else np.maximum(self.floor, 1.0 - self.g)

    def _draw(self, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
        if p.sum() < 1e-12:
            return rng.permutation(len(p))
        return rng.permutation(np.flatnonzero(rng.random(len(p)) < p))


# --------------------------------------------------------------------------- encoders


class TransformersTextEmbedder:
    """``embed_fn`` from a transformers text encoder (mean-pooled last hidden state, L2-normalised).

    The default encoder is the real all-MiniLM-L6-v2 shipped offline (``minilm_path()``).
    ``encoder_id`` (folder name + sha256 of the safetensors weights) is what the curator's state records.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        input_column: str = "text",
        output_column: str = "txt_emb",
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from hubtools.data.offline import minilm_path

        path = Path(model_path) if model_path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.input_column, self.output_column = input_column, output_column
        self.batch_size, self.max_length = batch_size, max_length
        # the weights' content hash is the revision: a state from other weights is refused on resume
        h = hashlib.sha256("".join(sha256_file(p) for p in sorted(path.glob("*.safetensors"))).encode())
        self.encoder_id = f"{path.name}@{h.hexdigest()[:12]}"

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        texts = list(batch[self.input_column])
        outs = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[s : s + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                h = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
            outs.append(torch.nn.functional.normalize(v, dim=-1).numpy().astype(np.float32))
        return {self.output_column: np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)}


def versions() -> dict[str, str]:
    """Library versions recorded with every selection."""
    import datasets
    import faiss

    import hubtools

    return {
        "hubtools": hubtools.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "datasets": datasets.__version__,
    }


def summary_stats(ig: InfoGrowth) -> dict[str, Any]:
    """Counts per status, δ, per-class drop rates and gain quantiles: the numbers a report must show."""
    res = ig.results()
    g = res["ig_gain"][np.isin(res["ig_status"], KEPT_STATUSES)]
    out: dict[str, Any] = {
        "rows": ig.n_rows,
        "counts": ig.counts(),
        "delta": ig.delta,
        "gain_quantiles": {
            q: float(np.quantile(g, float(q))) if g.size else math.nan for q in ("0.01", "0.5", "0.99")
        },
    }
    pc = ig.per_class()
    if pc:
        out["per_class"] = {
            str(c): {**v, "drop_rate": round(v["dropped"] / max(v["seen"], 1), 4)} for c, v in pc.items()
        }
    return out
