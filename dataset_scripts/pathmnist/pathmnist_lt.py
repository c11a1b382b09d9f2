"""PathMNIST-LT builder: MedMNIST+ ``pathmnist_224.npz`` (or ``pathmnist.npz``, ``pathmnist_64/128.npz``) -> long-tailed DatasetDict.

Colon pathology patches (NCT-CRC-HE-100K / CRC-VAL-HE-7K), 9 tissue types. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build pathmnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="pathmnist",
    channels=3,
    official=(89996, 10004, 7180),
    md5_224="2c51a510bcdc9cf8ddb2af93af1eadec",
    md5_28="a8b06965200029087d5bd730944a56c1",
    names=(
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    lt_to_orig=(8, 5, 3, 2, 1, 7, 0, 4, 6),
    lt_train=(12885, 7246, 4075, 2291, 1289, 725, 407, 229, 129),
    head=2,
    medium=5,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """PathMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = (
        "PathMNIST (MedMNIST+): Colon pathology patches (NCT-CRC-HE-100K / CRC-VAL-HE-7K), 9 tissue types."
    )
