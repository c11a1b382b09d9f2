"""Next-token accuracy and perplexity of a causal LM over teacher-forced positions.

Inputs, one row per scored position: ``predictions`` (argmax token id), ``references`` (gold next token id),
``log_probs`` (the model's natural-log probability of the gold token). Outputs ``accuracy`` (mean of
prediction == reference, in [0, 1]), ``perplexity`` (exp of the mean negative log-probability) and
``inv_perplexity`` (1 / perplexity, in (0, 1], the geometric-mean probability of the gold token).
"""

import math

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = ""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): argmax next-token ids.
    references (list of int): gold next-token ids.
    log_probs (list of float): log-probability the model gives the gold token.
Returns:
    accuracy (float), perplexity (float), inv_perplexity (float), n (int): number of positions.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NextToken(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "log_probs": datasets.Value("float64"),
                }
            ),
        )

    def _compute(self, predictions, references, log_probs):
        n = len(references)
        if n == 0:
            return {
                "accuracy": float("nan"),
                "perplexity": float("nan"),
                "inv_perplexity": float("nan"),
                "n": 0,
            }
        accuracy = sum(int(p == r) for p, r in zip(predictions, references, strict=False)) / n
        mean_nll = -sum(log_probs) / n
        return {
            "accuracy": accuracy,
            "perplexity": math.exp(mean_nll),
            "inv_perplexity": math.exp(-mean_nll),
            "n": n,
        }
