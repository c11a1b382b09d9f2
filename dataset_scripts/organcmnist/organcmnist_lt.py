"""OrganCMNIST-LT builder: MedMNIST+ ``organcmnist_224.npz`` (or ``organcmnist.npz``, ``organcmnist_64/128.npz``) -> long-tailed DatasetDict.

Abdominal CT, coronal view, 11 organs. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build organcmnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import ABDOMINAL_ORGANS, MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="organcmnist",
    channels=1,
    official=(12975, 2392, 8216),
    md5_224="050f5e875dc056f6768abf94ec9995d1",
    md5_28="b9ceb9546e10131b32923c5bbeaea2b1",
    names=ABDOMINAL_ORGANS,
    lt_to_orig=(6, 10, 9, 5, 0, 4, 8, 7, 1, 3, 2),
    lt_train=(2986, 1572, 1173, 750, 473, 299, 188, 119, 75, 47, 30),
    head=3,
    medium=6,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """OrganCMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = "OrganCMNIST (MedMNIST+): Abdominal CT, coronal view, 11 organs."
