"""The ``evaluate`` metric module of the long-tail report, shipped as a package so a wheel carries it.

``evaluate.load(str(LT_METRIC_DIR))`` loads it offline (``evaluate.load("name")`` would go to the Hub).
"""

from pathlib import Path

LT_METRIC_DIR = Path(__file__).resolve().parent
