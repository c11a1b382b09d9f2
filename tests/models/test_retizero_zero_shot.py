"""Zero-shot classification (prompt ensembling, duplicates) and Top-k / retrieval metrics on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_retizero_utils import perturb_lora, retina_images, tiny_processor, tiny_retizero

from hubtools.models.retizero.zero_shot import (
    class_text_embeddings,
    nearest_neighbours,
    retrieval_metrics,
    topk_accuracy,
    zero_shot_classify,
    zero_shot_report,
    zero_shot_report_png,
)


def test_topk_accuracy_hand_case_and_ties() -> None:
    scores = [[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]]
    assert topk_accuracy(scores, [2, 1], ks=(1, 2, 3, 5)) == {"top1": 0.0, "top2": 1.0}
    # Tie between classes 0 and 1: broken by class index, so class 0 ranks first.
    assert topk_accuracy([[0.5, 0.5, 0.0]], [1], ks=(1, 2)) == {"top1": 0.0, "top2": 1.0}


def test_zero_shot_report_hand_case_and_png(tmp_path) -> None:
    scores = [[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.4, 0.2, 0.4]]
    report = zero_shot_report(scores, [2, 1, 2, 1], ["a", "b", "c"], ks=(1, 2))
    # Rows = true class, columns = top-1 prediction; the 0-2 tie in row 4 goes to class 0.
    assert report["confusion_matrix"] == [[0, 0, 0], [2, 0, 0], [0, 1, 1]]
    assert report["top1"] == 0.25 and report["top2"] == 0.75
    assert report["per_class"] == {
        "a": {"n": 0},
        "b": {"n": 2, "top1": 0.0, "top2": 0.5},
        "c": {"n": 2, "top1": 0.5, "top2": 1.0},
    }
    with pytest.raises(ValueError, match="scores of shape"):
        zero_shot_report(scores, [0, 1, 2, 1], ["a", "b"])
    from PIL import Image

    path = zero_shot_report_png(report, tmp_path / "zs.png")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 10  # drawn, not blank


def test_retrieval_precision_hand_case() -> None:
    angles = np.deg2rad([0.0, 10.0, 90.0, 100.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    metrics = retrieval_metrics(emb, ["a", "a", "b", "b"], ks=(1, 3))
    assert metrics["p@1"] == 1.0 and metrics["p@3"] == pytest.approx(1 / 3)
    assert metrics["hit@1"] == 1.0 and metrics["hit@3"] == 1.0
    # Duplicated items: the query never counts itself, its duplicate does.
    dup = retrieval_metrics(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [0, 1, 1], ks=(1,))
    assert dup["p@1"] == pytest.approx(1 / 3)


def test_zero_shot_ensembling_and_duplicate_classes() -> None:
    model, processor = tiny_retizero(), tiny_processor()
    perturb_lora(model)
    names = ["glaucoma", "macular hole", "drusen", "normal"]
    templates = ["A fundus photograph of {}", "a retina with {}"]
    with torch.no_grad():
        ensemble = class_text_embeddings(model, processor, names, templates)
        singles = [class_text_embeddings(model, processor, names, [t]) for t in templates]
        torch.testing.assert_close(ensemble, F.normalize(singles[0] + singles[1], dim=-1))
        images = retina_images(3)
        probs = zero_shot_classify(model, processor, images, names, templates, batch_size=2)
        image = model.get_image_features(processor(images=images)["pixel_values"]).pooler_output
    torch.testing.assert_close(probs, (model.logit_scale.exp() * image @ ensemble.t()).softmax(-1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="duplicate class names.*Glaucoma"):
        zero_shot_classify(model, processor, images, ["Glaucoma", "normal", "glaucoma"])
    with pytest.raises(ValueError, match="placeholder"):
        class_text_embeddings(model, processor, names, ["no placeholder"])


def test_retizero_similarity_matches_the_formula_and_ranks_others() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(7, 5)) * rng.uniform(0.5, 3.0, size=(7, 1))
    expected = np.array(
        [
            [
                np.linalg.norm(e[j]) / 2 / (np.linalg.norm(e[j]) / 2 + np.linalg.norm(e[i] - e[j]))
                for j in range(7)
            ]
            for i in range(7)
        ]
    )
    for i in range(7):
        others = [j for j in np.argsort(-expected[i], kind="stable") if j != i][:3]
        assert nearest_neighbours(e, 3, "retizero")[i].tolist() == others
    # Norm matters (unlike cosine): a long vector in the query's direction outranks a short, closer-angled one.
    pts = np.array([[1.0, 0.0], [4.0, 0.4], [0.3, 0.0]])
    assert (
        nearest_neighbours(pts, 1, "cosine")[0, 0] == 2 and nearest_neighbours(pts, 1, "retizero")[0, 0] == 1
    )
    # Queries 0 and 1 find each other (same label); query 2's best is item 0 (0.5/1.2 > 2.01/5.73): 2 of 3.
    assert retrieval_metrics(pts, [0, 0, 1], ks=(1,), similarity="retizero")["p@1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="similarity"):
        nearest_neighbours(pts, 1, "euclid")
