"""Long-tail report (MONICA) as an ``evaluate`` metric: top-1, balanced accuracy, many/medium/few, group average.

Load it offline by path (``evaluate.load("accuracy")``-style names fetch code from the Hub)::

    import evaluate
    from hubtools.longtail.lt_metric import LT_METRIC_DIR

    metric = evaluate.load(str(LT_METRIC_DIR))
    metric.add_batch(predictions=logits, references=labels)   # logits N x C, labels N
    metric.compute(cls_num_list=[5000, 2590, ...], head=2, medium=5)

The numbers are those of :func:`hubtools.longtail.metrics.lt_report` (percent); without ``head`` and
``medium`` the groups come from the many > 100 / few < 20 train-image thresholds.
"""

import datasets
import evaluate
import numpy as np

from hubtools.longtail.metrics import lt_report
from hubtools.longtail.splits import LTProfile

_DESCRIPTION = "Long-tailed classification report: overall, per-group (many/medium/few) and macro metrics."
_KWARGS_DESCRIPTION = """
Args:
    predictions: logits (or scores), one list of C floats per sample.
    references: integer class ids in long-tail order (class 0 has the most train images).
    cls_num_list: train images per class (required).
    head, medium: index cut-offs of the many and medium groups (optional, both or neither).
    auc_input: "probs" (AUROC/AUPRC on softmax probabilities, default) or "logits".
    per_class: also return the per-class lists (default False).
Returns:
    top1, balanced_acc, group_avg_acc, many_acc, medium_acc, few_acc, macro_f1, macro_auroc, macro_auprc,
    group_avg_f1, group_avg_auroc, group_avg_auprc, num_samples (percent, except num_samples).
"""
_CITATION = """@article{ju2024monica,
  title={MONICA: Benchmarking on Long-tailed Medical Image Classification},
  author={Ju, Lie and Yan, Siyuan and Zhou, Yukun and others},
  journal={arXiv preprint arXiv:2410.02010},
  year={2024}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LtMetric(evaluate.Metric):
    """``evaluate`` wrapper of ``lt_report``: batches are accumulated by evaluate, the report is computed once."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2410.02010"],
        )

    def _compute(
        self,
        predictions,
        references,
        cls_num_list=None,
        head=None,
        medium=None,
        auc_input="probs",
        per_class=False,
    ):
        if cls_num_list is None:
            raise ValueError("lt_metric needs cls_num_list (train images per class, long-tail order)")
        if (head is None) != (medium is None):
            raise ValueError("give both head and medium cut-offs, or neither")
        counts = [int(n) for n in cls_num_list]
        profile = counts
        if head is not None:
            names = [str(i) for i in range(len(counts))]
            profile = LTProfile(names, counts, counts[0] / max(1, counts[-1]), int(head), int(medium))
        report = lt_report(
            np.asarray(predictions, dtype=np.float64), np.asarray(references), profile, auc_input
        )
        if not per_class:
            report = {k: v for k, v in report.items() if not k.startswith("per_class_")}
        return report
