"""Wrong-prediction IoU and agreement (p-diff's memorisation test) against a plain-Python recomputation."""

import numpy as np
import pytest

from hubtools.paramgen.similarity import agreement_matrix, nearest_similarity, wrong_iou_matrix


def _iou_by_sets(a, b, y) -> float:
    wa = {i for i, (p, t) in enumerate(zip(a, y, strict=True)) if p != t}
    wb = {i for i, (p, t) in enumerate(zip(b, y, strict=True)) if p != t}
    return 1.0 if not (wa | wb) else len(wa & wb) / len(wa | wb)


def test_iou_and_agreement_match_a_set_computation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    a = np.where(rng.random((5, 40)) < 0.3, rng.integers(0, 3, (5, 40)), y)
    b = np.where(rng.random((4, 40)) < 0.3, rng.integers(0, 3, (4, 40)), y)
    iou = wrong_iou_matrix(a, b, y)
    agree = agreement_matrix(a, b)
    for i in range(5):
        for j in range(4):
            assert iou[i, j] == pytest.approx(_iou_by_sets(a[i], b[j], y))
            assert agree[i, j] == pytest.approx(sum(p == q for p, q in zip(a[i], b[j], strict=True)) / 40)


def test_two_perfect_models_have_identical_error_sets():
    y = np.array([0, 1, 2, 1])
    assert wrong_iou_matrix(y, y, y)[0, 0] == 1.0
    assert wrong_iou_matrix(y, np.array([1, 1, 2, 1]), y)[0, 0] == 0.0


def test_nearest_never_picks_itself_among_the_same_models():
    y = np.zeros(6, dtype=int)
    models = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0]])
    sim = nearest_similarity(models, models, y, same_models=True)
    assert sim.nearest.tolist() == [1, 0, 0]  # model 2 shares no error: its best is IoU 0 (ties -> first)
    assert sim.max_iou.tolist() == [1.0, 1.0, 0.0]
    assert sim.agreement[2] == pytest.approx(1 / 6)
    # without same_models each model finds itself
    assert nearest_similarity(models, models, y).max_iou.tolist() == [1.0, 1.0, 1.0]


def test_shape_errors_are_raised():
    with pytest.raises(ValueError, match="labels"):
        wrong_iou_matrix(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        nearest_similarity(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(3), same_models=True)
