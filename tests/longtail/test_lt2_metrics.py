"""lt_report's AUPRC and group averages against scikit-learn, and the offline `evaluate` metric module."""

import evaluate
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, recall_score, roc_auc_score

from hubtools.longtail.lt_metric import LT_METRIC_DIR
from hubtools.longtail.metrics import lt_report
from hubtools.longtail.splits import LTProfile

COUNTS = [900, 400, 200, 90, 40, 15, 6]
PROFILE = LTProfile([f"c{i}" for i in range(7)], COUNTS, 150.0, head=2, medium=4)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(7), [40, 30, 20, 15, 10, 6, 4])
    z = rng.normal(size=(y.size, 7))
    z[np.arange(y.size), y] += rng.uniform(0, 2.0, size=y.size)
    return z, y


def test_auprc_and_group_averages_match_sklearn(data):
    z, y = data
    r = lt_report(z, y, PROFILE)
    p = softmax(z)
    ap = np.array([average_precision_score(y == c, p[:, c]) for c in range(7)])
    np.testing.assert_allclose(r["per_class_auprc"], 100 * ap, rtol=1e-9)
    assert r["macro_auprc"] == pytest.approx(100 * ap.mean(), rel=1e-9)
    groups = [slice(0, 2), slice(2, 4), slice(4, 7)]
    f1 = f1_score(y, z.argmax(1), average=None)
    auc = np.array([roc_auc_score(y == c, p[:, c]) for c in range(7)])
    rec = recall_score(y, z.argmax(1), average=None)
    for key, per_class in (("f1", f1), ("auroc", auc), ("auprc", ap)):
        expected = np.mean([per_class[g].mean() for g in groups])
        assert r[f"group_avg_{key}"] == pytest.approx(100 * expected, rel=1e-9), key
    assert r["group_avg_acc"] == pytest.approx(100 * np.mean([rec[g].mean() for g in groups]), rel=1e-9)
    # logits rank samples differently per class than probabilities do: the option is honoured
    raw = lt_report(z, y, PROFILE, auc_input="logits")
    assert raw["per_class_auprc"][5] == pytest.approx(
        100 * average_precision_score(y == 5, z[:, 5]), rel=1e-9
    )


def test_auprc_with_tied_scores_matches_sklearn():
    # coarse scores: many ties, where a step-wise AP must take tied samples together
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    z = np.round(rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[y], 0)
    r = lt_report(z, y, [500, 60, 10], auc_input="logits")
    for c in range(3):
        assert r["per_class_auprc"][c] == pytest.approx(
            100 * average_precision_score(y == c, z[:, c]), rel=1e-9
        )


def test_absent_class_has_undefined_auprc():
    y = np.array([0, 0, 1, 1])
    z = np.array([[2.0, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])
    r = lt_report(z, y, [500, 50, 5])
    assert np.isnan(r["per_class_auprc"][2]) and not np.isnan(r["macro_auprc"])
    # F1 of class 0 (1 of 2 found, 1 predicted) 2/3, class 1 (1 of 2, 2 predicted) 1/2; the few group left out
    assert r["group_avg_f1"] == pytest.approx(100 * np.mean([2 / 3, 1 / 2]))


def test_evaluate_module_loads_offline_and_equals_lt_report(data, monkeypatch):
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    z, y = data
    metric = evaluate.load(str(LT_METRIC_DIR))
    for i in range(0, len(y), 32):  # batches accumulate as with any evaluate metric
        metric.add_batch(predictions=z[i : i + 32], references=y[i : i + 32])
    out = metric.compute(cls_num_list=COUNTS, head=2, medium=4)
    ref = lt_report(z, y, PROFILE)
    assert set(out) == {k for k in ref if not k.startswith("per_class_")}
    for k, v in out.items():
        assert v == pytest.approx(ref[k], rel=1e-5), k  # predictions pass through float32
    # without cut-offs: the counts thresholds (many > 100, few < 20), as lt_report with a count list
    plain = metric.compute(predictions=z, references=y, cls_num_list=COUNTS, per_class=True)
    assert plain["few_acc"] == pytest.approx(lt_report(z, y, COUNTS)["few_acc"], rel=1e-5)
    assert len(plain["per_class_recall"]) == 7
    with pytest.raises(ValueError, match="cls_num_list"):
        metric.compute(predictions=z, references=y)
    with pytest.raises(ValueError, match="both head and medium"):
        metric.compute(predictions=z, references=y, cls_num_list=COUNTS, head=2)
