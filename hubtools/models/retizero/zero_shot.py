"""Zero-shot classification from prompts (with prompt ensembling) and image-to-image retrieval (faiss), with
Top-k accuracy and precision@k / hit@k computed locally (no `evaluate`, which needs the Hub)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hubtools.models.retizero.modeling_retizero import RetiZeroModel
from hubtools.models.retizero.processing_retizero import RetiZeroProcessor

DEFAULT_TEMPLATE = "A fundus photograph of {}"
KS = (1, 3, 5)


def check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n).strip() for n in class_names]
    if len(names) < 2:
        raise ValueError(f"zero-shot classification needs at least 2 class names, got {names}")
    by_key: dict[str, list[str]] = {}
    for name in names:
        by_key.setdefault(name.lower(), []).append(name)
    duplicates = [spellings for spellings in by_key.values() if len(spellings) > 1]
    if duplicates:
        raise ValueError(f"duplicate class names (case-insensitive): {duplicates}")
    if any(not n for n in names):
        raise ValueError(f"empty class name in {list(class_names)}")
    return names


@torch.no_grad()
def class_text_embeddings(
    model: RetiZeroModel,
    processor: RetiZeroProcessor,
    class_names: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
) -> torch.Tensor:
    """One embedding per class: the normalised mean of the normalised embeddings of each template's prompt."""
    names = check_class_names(class_names)
    templates = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(
            f"every template needs a '{{}}' placeholder for the class name, got {bad or templates}"
        )
    per_template = []
    for template in templates:
        enc = processor(text=[template.format(n) for n in names]).to(model.device)
        per_template.append(model.get_text_features(**enc).pooler_output.float())
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


@torch.no_grad()
def image_features(
    model: RetiZeroModel,
    processor: RetiZeroProcessor,
    images: Sequence,
    kind: str = "embedding",
    batch_size: int = 64,
) -> torch.Tensor:
    """Float32 features of ``images`` on the model's device, in batches: ``"embedding"`` (projected, normalised),
    ``"cls"`` (the vision tower's CLS token, what a linear probe sees) or ``"retrieval"``
    (:meth:`RetiZeroModel.get_retrieval_features`)."""
    if kind not in ("embedding", "cls", "retrieval"):
        raise ValueError(f"kind must be 'embedding', 'cls' or 'retrieval', got {kind!r}")
    images = list(images)
    feats = []
    for i in range(0, len(images), batch_size):
        pixels = processor(images=images[i : i + batch_size])["pixel_values"].to(model.device)
        if kind == "embedding":
            feats.append(model.get_image_features(pixels).pooler_output)
        elif kind == "cls":
            feats.append(model.vision_model(pixel_values=pixels).last_hidden_state[:, 0])
        else:
            feats.append(model.get_retrieval_features(pixels))
    return torch.cat(feats).float()


@torch.no_grad()
def zero_shot_classify(
    model: RetiZeroModel,
    processor: RetiZeroProcessor,
    images: Sequence,
    class_names: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    batch_size: int = 32,
) -> torch.Tensor:
    """``softmax(exp(s)·I·Tᵀ)`` over classes, shape (n_images, n_classes)."""
    text = class_text_embeddings(model, processor, class_names, templates)
    image = image_features(model, processor, images, batch_size=batch_size)
    return (model.effective_logit_scale() * image @ text.t()).softmax(dim=-1).cpu()


def topk_accuracy(
    scores: np.ndarray | torch.Tensor, labels: Sequence[int], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Fraction of rows whose true class is among the k highest scores (ties broken by class index);
    only k < number of classes is reported."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == labels[:, None], axis=1)
    return {f"top{k}": float((rank < k).mean()) for k in ks if k < n_classes}


def zero_shot_report(
    scores: np.ndarray | torch.Tensor,
    labels: Sequence[int],
    class_names: Sequence[str],
    ks: Sequence[int] = KS,
) -> dict:
    """Top-k accuracy overall and per class, and the confusion matrix (rows = true class, columns = the top-1
    prediction, ties broken by class index) of a zero-shot run."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = len(class_names)
    if scores.shape != (len(labels), n_classes):
        raise ValueError(f"scores of shape {scores.shape} for {len(labels)} labels and {n_classes} classes")
    predicted = np.argsort(-scores, axis=1, kind="stable")[:, 0]
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for c, name in enumerate(class_names):
        rows = labels == c
        per_class[name] = {
            "n": int(rows.sum()),
            **(topk_accuracy(scores[rows], labels[rows], ks) if rows.any() else {}),
        }
    return {
        **topk_accuracy(scores, labels, ks),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def zero_shot_report_png(report: dict, path: str | Path) -> Path:
    """The picture of :func:`zero_shot_report`: the confusion matrix (counts) and per-class Top-k bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["per_class"])
    confusion = np.asarray(report["confusion_matrix"])
    ks = [key for key in ("top1", "top3", "top5") if key in report]
    n = len(names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 0.5 * n, 2.5 + 0.35 * n))
    left.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            color = "white" if count > confusion.max() / 2 else "black"
            left.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    left.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
    left.set_yticks(range(n), names, fontsize=7)
    left.set_xlabel("predicted (top-1)")
    left.set_ylabel("true class")
    left.set_title(f"confusion matrix, top-1 {report['top1']:.3f}", fontsize=9)
    width = 0.8 / max(1, len(ks))
    for i, key in enumerate(ks):
        values = [report["per_class"][name].get(key, np.nan) for name in names]
        right.barh([y + (i - (len(ks) - 1) / 2) * width for y in range(n)], values, width, label=key)
    right.set_yticks(range(n), names, fontsize=7)
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.axvline(1 / n, color="grey", linestyle="--", linewidth=1, label="chance top-1")
    right.set_xlabel("accuracy")
    right.set_title("per-class Top-k", fontsize=9)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


SIMILARITIES = ("cosine", "retizero")


def retizero_similarity(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The anchor's (not symmetric) similarity ``s_ij = (‖e_j‖/2) / (‖e_j‖/2 + ‖e_i − e_j‖)`` on raw features."""
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    half = x.norm(dim=1)[None, :] / 2
    return half / (half + torch.cdist(x, x))


CLUSTER_DOWNWEIGHT = 0.5


def cluster_labels(
    embeddings: np.ndarray | torch.Tensor,
    n_components: int = 256,
    min_cluster_size: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Cluster ids (-1 = noise) for the anchor's optional cluster weighting: the anchor reduces with UMAP to 256-d
    (n_neighbors 20, min_dist 0) and runs HDBSCAN (min_cluster_size 100, leaf selection). ``umap-learn`` is not a
    hubtools dependency, so this reduces with PCA (seeded) instead, then runs scikit-learn's
    ``HDBSCAN(min_cluster_size, cluster_selection_method="leaf")``: same clustering, a different (linear)
    reduction, so clusters can differ from the anchor's."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float64)
    components = min(n_components, x.shape[0], x.shape[1])
    reduced = PCA(n_components=components, random_state=seed).fit_transform(x)
    clustering = HDBSCAN(min_cluster_size=min_cluster_size, cluster_selection_method="leaf", copy=False)
    return clustering.fit_predict(reduced)


def cluster_weights(clusters: Sequence[int]) -> np.ndarray:
    """``w_ij = 0.5`` where item j lies outside query i's cluster, else 1. A noise query (id -1) has no cluster,
    so its row stays 1 (nothing to be "outside" of); a noise item is outside every cluster."""
    c = np.asarray(clusters)
    outside = (c[:, None] != c[None, :]) & (c[:, None] >= 0)
    return np.where(outside, CLUSTER_DOWNWEIGHT, 1.0)


def cap_per_class(labels: Sequence, max_per_class: int | None = 8000, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping at most ``max_per_class`` items of each label (the anchor's gallery holds up to 8000
    images per class), drawn with a seeded generator; ``None``/0 keeps all."""
    labels = np.asarray(labels)
    if not max_per_class:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        keep.append(
            members if len(members) <= max_per_class else rng.choice(members, max_per_class, replace=False)
        )
    return np.sort(np.concatenate(keep))


def nearest_neighbours(
    embeddings: np.ndarray | torch.Tensor,
    k: int,
    similarity: str = "cosine",
    clusters: Sequence[int] | None = None,
) -> np.ndarray:
    """Indices (n, k) of each item's k most similar OTHER items; the query is dropped by index, so an exact
    duplicate of it still counts. ``"cosine"``: faiss inner-product index on unit vectors; ``"retizero"``:
    :func:`retizero_similarity`, brute force (n × n). With ``clusters`` (:func:`cluster_labels`), similarities are
    multiplied by :func:`cluster_weights` (brute force); cosine is then mapped to ``(1 + cos)/2`` ∈ [0, 1] first
    (same ranking) so that the ×0.5 always lowers a score (a negative cosine would rise)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    n = len(embeddings)
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and the number of items - 1 ({n - 1}), got {k}")
    if clusters is not None and len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} items")
    if similarity == "retizero" or clusters is not None:
        if similarity == "retizero":
            scores = retizero_similarity(embeddings)
        else:
            x = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float64), dim=-1)
            scores = (1 + x @ x.t()) / 2
        if clusters is not None:
            scores = scores * torch.from_numpy(cluster_weights(clusters))
        scores.fill_diagonal_(-float("inf"))
        return np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
    import faiss

    x = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=-1).numpy()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    return np.array([[j for j in row if j != i and j >= 0][:k] for i, row in enumerate(found)])


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: Sequence,
    ks: Sequence[int] = KS,
    similarity: str = "cosine",
    clusters: Sequence[int] | None = None,
) -> dict[str, float]:
    """Image-to-image retrieval, each item querying all OTHER items (``similarity`` and the optional cluster
    weighting ``clusters`` as in :func:`nearest_neighbours`): ``p@k`` = share of the top k with the query's
    label, ``hit@k`` = any of the top k has it (only k < number of items)."""
    labels = np.asarray(labels)
    ks = [k for k in ks if k < len(labels)]
    same = labels[nearest_neighbours(embeddings, max(ks), similarity, clusters)] == labels[:, None]
    metrics = {}
    for k in ks:
        metrics[f"p@{k}"] = float(same[:, :k].mean())
        metrics[f"hit@{k}"] = float(same[:, :k].any(axis=1).mean())
    return metrics


def retrieval_grid_png(
    images: Sequence, labels: Sequence, neighbours: np.ndarray, path: str | Path, n_queries: int = 6
) -> Path:
    """A PNG grid: one row per query (first column), then its retrieved images; green/red titles = same/other
    label. The ``n_queries`` queries are spread evenly over the items (datasets are often sorted by class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = min(n_queries, len(images)), neighbours.shape[1] + 1
    queries = np.linspace(0, len(images) - 1, rows).round().astype(int)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for r, q in enumerate(queries):
        for c in range(cols):
            j = q if c == 0 else int(neighbours[q, c - 1])
            ax = axes[r][c]
            ax.imshow(images[j])
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black" if c == 0 else ("green" if labels[j] == labels[q] else "red")
            ax.set_title(("query: " if c == 0 else f"#{c}: ") + str(labels[j]), fontsize=7, color=color)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "CLUSTER_DOWNWEIGHT",
    "DEFAULT_TEMPLATE",
    "cap_per_class",
    "check_class_names",
    "cluster_labels",
    "cluster_weights",
    "class_text_embeddings",
    "image_features",
    "nearest_neighbours",
    "retrieval_grid_png",
    "retizero_similarity",
    "retrieval_metrics",
    "topk_accuracy",
    "zero_shot_classify",
    "zero_shot_report",
    "zero_shot_report_png",
]
