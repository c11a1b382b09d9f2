"""DermaMNIST-LT builder: MedMNIST+ ``dermamnist_224.npz`` (or ``dermamnist.npz``, ``dermamnist_64/128.npz``) -> long-tailed DatasetDict.

Dermatoscopic images (HAM10000), 7 skin lesion types. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build dermamnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="dermamnist",
    channels=3,
    official=(7007, 1003, 2005),
    md5_224="8974907d8e169bef5f5b96bc506ae45d",
    md5_28="0744692d530f8e62ec473284d019b0c7",
    names=(
        "akiec",
        "bcc",
        "bkl",
        "df",
        "melanoma",
        "nevi",
        "vascular",
    ),
    lt_to_orig=(5, 4, 2, 1, 0, 6, 3),
    lt_train=(4693, 779, 769, 359, 218, 99, 47),
    head=1,
    medium=5,
    license="cc-by-nc-4.0",
)


class Builder(MedMNISTLTBuilder):
    """DermaMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    PRIVATE_BY_DEFAULT = True
    DESCRIPTION = "DermaMNIST (MedMNIST+): Dermatoscopic images (HAM10000), 7 skin lesion types."
