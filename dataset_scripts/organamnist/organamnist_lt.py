"""OrganAMNIST-LT builder: MedMNIST+ ``organamnist_224.npz`` (or ``organamnist.npz``, ``organamnist_64/128.npz``) -> long-tailed DatasetDict.

Abdominal CT, axial view, 11 organs. Train: the exponential profile (ratio 100) over the official train split,
class 0 = the most frequent original class; validation/test: the complete official splits.
Usage: ``hubtools longtail build organamnist --source-dir DIR_WITH_NPZ``; see README.md beside this file.
"""

from hubtools.longtail.sources import ABDOMINAL_ORGANS, MedMNISTInfo, MedMNISTLTBuilder

INFO = MedMNISTInfo(
    flag="organamnist",
    channels=1,
    official=(34561, 6491, 17778),
    md5_224="50747347e05c87dd3aaf92c49f9f3170",
    md5_28="68e3f8846a6bd62f0c9bf841c0d9eacc",
    names=ABDOMINAL_ORGANS,
    lt_to_orig=(6, 4, 8, 7, 5, 10, 9, 0, 3, 1, 2),
    lt_train=(6164, 3889, 2454, 1548, 977, 616, 389, 245, 155, 98, 62),
    head=3,
    medium=6,
    license="cc-by-4.0",
)


class Builder(MedMNISTLTBuilder):
    """OrganAMNIST-LT (MedMNIST+, ratio 100)."""

    INFO = INFO
    DESCRIPTION = "OrganAMNIST (MedMNIST+): Abdominal CT, axial view, 11 organs."
