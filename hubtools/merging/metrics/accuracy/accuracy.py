"""Classification accuracy: the fraction of predictions equal to the references (in [0, 1])."""

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = ""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
Returns:
    accuracy (float), n (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        n = len(references)
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=False))
        return {"accuracy": correct / n if n else float("nan"), "n": n}
