"""BloodMNIST-LT builder: MedMNIST+ ``bloodmnist_224.npz`` (or ``bloodmnist.npz``, ``bloodmnist_64/128.npz``) -> long-tailed DatasetDict.

Blood cell microscopy, 8 cell types. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build bloodmnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="bloodmnist",
    channels=3,
    official=(11959, 1712, 3421),
    md5_224="b718ff6835fcbdb22ba9eacccd7b2601",
    md5_28="7053d0359d879ad8a5505303e11de1dc",
    names=(
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    lt_to_orig=(6, 1, 3, 7, 2, 5, 0, 4),
    lt_train=(2330, 1207, 625, 324, 168, 87, 45, 23),
    head=3,
    medium=5,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """BloodMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = "BloodMNIST (MedMNIST+): Blood cell microscopy, 8 cell types."
