"""TissueMNIST-LT builder: MedMNIST+ ``tissuemnist_224.npz`` (or ``tissuemnist.npz``, ``tissuemnist_64/128.npz``) -> long-tailed DatasetDict.

Kidney cortex microscopy, 8 cell types (LT order and counts inferred from the profile, not read from an anchor list: check them). Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build tissuemnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="tissuemnist",
    channels=1,
    official=(165466, 23640, 47280),
    md5_224="b077128c4a949f0a4eb01517f9037b9c",
    md5_28="ebe78ee8b05294063de985d821c1c34b",
    names=(
        "Collecting Duct/Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial",
        "Interstitial endothelial",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule",
        "Thick Ascending Limb",
    ),
    lt_to_orig=(0, 6, 7, 3, 4, 1, 5, 2),
    lt_train=(53075, 27490, 14238, 7375, 3820, 1978, 1025, 531),
    head=3,
    medium=5,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """TissueMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = "TissueMNIST (MedMNIST+): Kidney cortex microscopy, 8 cell types (LT order and counts inferred from the profile, not read from an anchor list: check them)."
