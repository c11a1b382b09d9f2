"""RetiZero few-shot head (anchor Finetuning.py), retrieval cluster weighting and the per-class gallery cap."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file
from test_retizero_utils import tiny_processor, tiny_retizero

from hubtools.data.offline import fashion_mnist
from hubtools.models.retizero.cli import retizero_group
from hubtools.models.retizero.few_shot import head_logits, sample_shots, train_few_shot_head
from hubtools.models.retizero.zero_shot import (
    cap_per_class,
    cluster_labels,
    cluster_weights,
    image_features,
    nearest_neighbours,
)


def _separable(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes in 6-d: class c sits at 2·e_c plus noise of at most 0.3 per coordinate (margin by hand)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    features = 2.0 * np.eye(6)[labels] + rng.uniform(-0.3, 0.3, size=(len(labels), 6))
    return features.astype(np.float32), labels


def test_few_shot_head_separates_and_its_logits_are_the_linear_map() -> None:
    x, y = _separable(4, seed=0)
    result = train_few_shot_head(x, y, epochs=100, lr=0.05, seed=0)
    assert result.head.weight.shape == (3, 6) and result.head.bias.shape == (3,)
    assert result.metrics["train_accuracy"] == 1.0
    assert result.losses[-1] < 0.5 * result.losses[0] and len(result.losses) == 100
    test_x, test_y = _separable(10, seed=1)
    logits = head_logits(result.head, test_x)
    w = result.head.weight.detach().numpy().astype(np.float64)
    b = result.head.bias.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(logits.numpy(), test_x.astype(np.float64) @ w.T + b, rtol=0, atol=1e-5)
    assert (logits.argmax(dim=1).numpy() == test_y).all()


def test_few_shot_head_is_seeded_and_leaves_the_global_rng_alone() -> None:
    x, y = _separable(5, seed=2)
    before = torch.get_rng_state()
    a = train_few_shot_head(x, y, epochs=20, lr=0.01, batch_size=4, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(123)  # a different global state must not matter
    b = train_few_shot_head(x, y, epochs=20, lr=0.01, batch_size=4, seed=7)
    c = train_few_shot_head(x, y, epochs=20, lr=0.01, batch_size=4, seed=8)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert a.losses == b.losses
    assert not torch.equal(a.head.weight, c.head.weight)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_few_shot_head(x, y, n_classes=2)


def test_sample_shots_draws_k_per_class() -> None:
    labels = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    picked = sample_shots(labels, 2, seed=0)
    assert np.bincount(np.asarray(labels)[picked]).tolist() == [2, 2, 2]
    assert picked.tolist() == sorted(set(picked.tolist()))
    assert np.array_equal(picked, sample_shots(labels, 2, seed=0))
    with pytest.raises(ValueError, match="fewer than 3 shots"):
        sample_shots(labels, 3)


def test_cluster_weights_and_weighted_ranking_match_a_hand_computation() -> None:
    clusters = np.array([0, 0, 1, -1])
    expected = np.array(
        [
            [1.0, 1.0, 0.5, 0.5],
            [1.0, 1.0, 0.5, 0.5],
            [0.5, 0.5, 1.0, 0.5],
            [1.0, 1.0, 1.0, 1.0],  # a noise query has no cluster: nothing is down-weighted
        ]
    )
    np.testing.assert_array_equal(cluster_weights(clusters), expected)

    # Item 0's nearest item is 2 (other cluster) by raw similarity, but 1 (same cluster) once weighted.
    e = np.array([[1.0, 0.0], [1.4, 0.0], [1.1, 0.0], [3.0, 0.0]])

    def retizero_sim(i: int, j: int) -> float:
        half = math.hypot(*e[j]) / 2
        return half / (half + math.dist(e[i], e[j]))

    def ranking(i: int, weighted: bool, sim) -> list[int]:
        scores = {j: sim(i, j) * (expected[i, j] if weighted else 1.0) for j in range(4) if j != i}
        return sorted(scores, key=lambda j: (-scores[j], j))

    def cos01(i: int, j: int) -> float:
        cos = float(e[i] @ e[j]) / (np.linalg.norm(e[i]) * np.linalg.norm(e[j]))
        return (1 + cos) / 2

    assert nearest_neighbours(e, 1, "retizero")[0, 0] == 2
    got = nearest_neighbours(e, 3, "retizero", clusters)
    assert got.tolist() == [ranking(i, True, retizero_sim) for i in range(4)]
    assert got[0, 0] == 1
    # Cosine: rotate so cosines differ; weighted (1 + cos)/2 ranking vs the hand computation.
    e = np.array([[1.0, 0.0], [0.6, 0.8], [0.9, 0.3], [-1.0, 0.1]])
    got = nearest_neighbours(e, 3, "cosine", clusters)
    assert got.tolist() == [ranking(i, True, cos01) for i in range(4)]
    assert nearest_neighbours(e, 3, "cosine").tolist() == [ranking(i, False, cos01) for i in range(4)]


def test_cluster_labels_pca_hdbscan_find_separated_blobs() -> None:
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(0, 0.1, (25, 12)), rng.normal(5, 0.1, (25, 12))])
    truth = np.repeat([0, 1], 25)
    found = cluster_labels(blobs, n_components=4, min_cluster_size=10)
    assert len(set(found[found >= 0])) >= 2
    for c in set(found[found >= 0]):  # every cluster lies inside one blob
        assert len(set(truth[found == c])) == 1


def test_cap_per_class() -> None:
    labels = ["a"] * 5 + ["b"] * 2 + ["c"] * 4
    kept = cap_per_class(labels, 3, seed=0)
    counts = {v: int((np.asarray(labels)[kept] == v).sum()) for v in "abc"}
    assert counts == {"a": 3, "b": 2, "c": 3} and np.array_equal(kept, np.sort(kept))
    assert np.array_equal(kept, cap_per_class(labels, 3, seed=0))
    assert cap_per_class(labels, None).tolist() == list(range(11))


def test_fewshot_and_weighted_retrieve_commands(tmp_path) -> None:
    from hubtools.models.retizero.train import save_retizero

    save_retizero(tiny_retizero(), tiny_processor(), tmp_path / "model", merge_lora=False)
    names = ["T-shirt", "trouser", "pullover"]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    splits = {}
    for split in ("train", "test"):
        images, labels = fashion_mnist(split)
        rows = np.flatnonzero(labels < 3)[:24]
        pil = [PILImage.fromarray(images[i]).convert("RGB") for i in rows]
        splits[split] = Dataset.from_dict({"image": pil, "label": labels[rows].tolist()}, features=features)
    DatasetDict(splits).save_to_disk(tmp_path / "data")

    args = ["fewshot", "--model", tmp_path / "model", "--data", tmp_path / "data", "--shots", 3]
    args += ["--epochs", 30, "--lr", 0.01, "--out", tmp_path / "fs.json"]
    result = CliRunner().invoke(retizero_group, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "fs.json").read_text())
    assert report["n_train"] == 9 and report["n_test"] == 24 and report["classes"] == names
    # Independent check: the saved head on independently computed CLS features gives the reported Top-1.
    head = load_file(tmp_path / "fs.safetensors")
    from hubtools.models.retizero import RetiZeroModel, RetiZeroProcessor

    model = RetiZeroModel.from_pretrained(tmp_path / "model").eval()
    processor = RetiZeroProcessor.from_pretrained(tmp_path / "model")
    test = splits["test"]
    x = image_features(model, processor, [im.convert("RGB") for im in test["image"]], "cls")
    predicted = (x @ head["weight"].T + head["bias"]).argmax(dim=1).numpy()
    assert report["top1"] == pytest.approx(float((predicted == np.asarray(test["label"])).mean()))

    args = ["retrieve", "--model", tmp_path / "model", "--data", tmp_path / "data", "--max-per-class", 5]
    args += ["--cluster-weighting", "--min-cluster-size", 3, "--similarity", "retizero"]
    result = CliRunner().invoke(retizero_group, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    retrieval = json.loads(result.output)
    assert retrieval["n_images"] == 15 and retrieval["n_images_before_cap"] == 24
    assert retrieval["cluster_weighting"]["reduction"] == "pca-256"
    assert 0.0 <= retrieval["p@1"] <= 1.0
