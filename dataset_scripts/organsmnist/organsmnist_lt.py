"""OrganSMNIST-LT builder: MedMNIST+ ``organsmnist_224.npz`` (or ``organsmnist.npz``, ``organsmnist_64/128.npz``) -> long-tailed DatasetDict.

Abdominal CT, sagittal view, 11 organs. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build organsmnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import ABDOMINAL_ORGANS, MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="organsmnist",
    channels=1,
    official=(13932, 2452, 8827),
    md5_224="b354719e553fbbb2513d5533f52a4cb1",
    md5_28="9ab87b696fb54e2a387ebe992d6ed5f1",
    names=ABDOMINAL_ORGANS,
    lt_to_orig=(6, 9, 10, 0, 4, 5, 8, 7, 3, 1, 2),
    lt_train=(3464, 2004, 1379, 870, 549, 346, 219, 138, 87, 55, 35),
    head=3,
    medium=6,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """OrganSMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = "OrganSMNIST (MedMNIST+): Abdominal CT, sagittal view, 11 organs."
