"""Builder bases shared by several ``dataset_scripts/``: MedMNIST+ npz files and multi-label sheets.

The seven MedMNIST-LT sets differ only in their metadata, so each
``dataset_scripts/<flag>/<flag>_lt.py`` is a :class:`MedMNISTLTBuilder` with its
:class:`MedMNISTInfo`. ODIR-5K, RFMiD and CheXpert are multi-label at the source and the
anchor defines no split for them; :class:`SingleLabelSheetBuilder` keeps the images with
exactly one positive finding (hubtools' rule, marked "not comparable" in the profile).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubtools.longtail.datasets import (
    AnnotationError,
    ChecksumError,
    CorruptSourceFile,
    LongTailBuilder,
    LongTailConfig,
    NpzMember,
    Record,
    SplitMismatchError,
    md5_file,
    read_anchor_lists,
    require_file,
)
from hubtools.longtail.splits import profile

NPZ_SPLITS = {"train": "train", "validation": "val", "test": "test"}


# The 11 abdominal organs shared by OrganAMNIST, OrganCMNIST and OrganSMNIST (MedMNIST+ label order).
ABDOMINAL_ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)


@dataclass(frozen=True)
class MedMNISTInfo:
    """One MedMNIST flag: channels, official split sizes, MD5s, class names and the LT order."""

    flag: str
    channels: int
    official: tuple[int, int, int]  # train, val, test rows
    md5_224: str
    md5_28: str
    names: tuple[str, ...]  # original class names, index = original label
    lt_to_orig: tuple[int, ...]  # LT index -> original label
    lt_train: tuple[int, ...]  # the anchor's LT train counts (r = 100)
    head: int
    medium: int
    license: str = "cc-by-4.0"

    @property
    def lt_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.lt_to_orig)

    def configs(self) -> list[LongTailConfig]:
        """The one config per flag: ``{flag}_lt_100``."""
        return [
            LongTailConfig(
                name=f"{self.flag}_lt_100",
                ratio=100,
                head=self.head,
                medium=self.medium,
                expected_train_counts=self.lt_train,
                description=f"{self.flag} MedMNIST+ long-tailed, ratio 100",
            )
        ]


class MedMNISTLTBuilder(LongTailBuilder):
    """MedMNIST+ ``{flag}_{size}.npz`` -> LT train drawn from the official train, official val/test whole.

    Rows are streamed from the npz (never ``np.load``: a 224-px train array can be 13.5 GB)
    and the file's MD5 is checked first. Never imports ``medmnist`` (it downloads on import).
    """

    INFO: MedMNISTInfo
    TEST_DISTRIBUTION = "natural"
    SOURCE = "MedMNIST+ (Zenodo record 10519652, https://zenodo.org/records/10519652)"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Everything a flag's builder declares follows from its INFO; a script only sets INFO and DESCRIPTION.
        super().__init_subclass__(**kwargs)
        info = cls.__dict__.get("INFO")
        if info is not None:
            cls.CLASS_NAMES = info.lt_names
            cls.LICENSE = info.license
            cls.BUILDER_CONFIGS = info.configs()
            cls.DEFAULT_CONFIG_NAME = cls.BUILDER_CONFIGS[0].name

    def npz_path(self, data_dir: Path) -> Path:
        size = self.config.image_size
        return data_dir / (f"{self.INFO.flag}.npz" if size == 28 else f"{self.INFO.flag}_{size}.npz")

    def scan(self, data_dir: Path) -> list[Record]:
        info, cfg = self.INFO, self.config
        path = require_file(self.npz_path(data_dir), f"{info.flag} npz")
        expected = cfg.md5 or {224: info.md5_224, 28: info.md5_28}.get(cfg.image_size)
        if expected is None:
            raise ChecksumError(
                f"{path}: no published MD5 for size {cfg.image_size}; pass md5=... or md5='skip'"
            )
        if expected != "skip":
            got = md5_file(path)
            if got != expected:
                raise ChecksumError(f"{path}: MD5 {got} differs from the published {expected}")
        records = []
        for split, key in NPZ_SPLITS.items():
            with NpzMember(path, f"{key}_labels") as member:
                labels = member.read_all()
            with NpzMember(path, f"{key}_images") as images:
                n_images, row_shape = len(images), images.row_shape
            if labels.ndim != 2 or labels.shape[1] != 1 or len(labels) != n_images:
                raise CorruptSourceFile(
                    f"{path}: {key}_labels has shape {labels.shape}, expected ({n_images}, 1)"
                )
            want = (row_shape[:2] + (3,)) if info.channels == 3 else row_shape[:2]
            if row_shape != want or len(row_shape) not in (2, 3):
                raise CorruptSourceFile(
                    f"{path}: {key}_images rows have shape {row_shape}; {info.flag} has "
                    f"{info.channels} channel(s)"
                )
            for row, lab in enumerate(labels[:, 0].tolist()):
                if not 0 <= lab < len(info.names):
                    raise AnnotationError(f"{path}: {key}_labels[{row}] = {lab} is not a {info.flag} class")
                records.append(
                    Record(
                        source_id=f"{key}_{row}",
                        orig_label=info.names[lab],
                        split=split,
                        row=row,
                        where=f"{path}:{key}_labels[{row}]",
                    )
                )
        return records

    def class_names(self, records: Sequence[Record] | None = None) -> list[str]:
        return list(self.INFO.lt_names)

    def _anchor_split(self, pool: list[Record], splits_dir: Path) -> dict[str, np.ndarray]:
        # The anchor's MedMNIST train list is `train_<idx>_<orig>.jpg`; val/test are the official splits.
        names = read_anchor_lists(splits_dir, self.config.ratio or 0)["train"]
        by_row = {r.row: i for i, r in enumerate(pool)}
        picked = []
        for name in names:
            m = re.fullmatch(r"train_(\d+)_(\d+)\.(?:jpe?g|png)", Path(name).name)
            if m is None:
                raise SplitMismatchError(
                    f"{splits_dir}: train list entry {name!r} is not 'train_<idx>_<orig>.jpg'"
                )
            idx, orig = int(m.group(1)), int(m.group(2))
            if idx not in by_row:
                raise SplitMismatchError(
                    f"{splits_dir}: train list names row {idx}, outside the npz train split"
                )
            rec = pool[by_row[idx]]
            if self.INFO.names[orig] != rec.orig_label:
                raise SplitMismatchError(
                    f"{splits_dir}: {name} says class {orig} but {rec.where} is {rec.orig_label!r}"
                )
            picked.append(by_row[idx])
        return {"train": np.sort(np.array(picked, dtype=np.int64))}

    def _train_counts(self, available: Sequence[int]) -> list[int]:
        # n_max = largest official train class, each class capped by what it holds, as the anchor's lists are.
        if not self.config.ratio:
            return [int(a) for a in available]
        return profile(
            self.config.n_max or int(max(available)),
            len(available),
            self.config.ratio,
            self.config.rounding,
            available=available,
        )

    def iter_images(self, records: Sequence[Record]) -> Iterator[tuple[Record, Any]]:
        path = self.npz_path(self.data_dir)
        by_split: dict[str, list[Record]] = {}
        for rec in records:
            by_split.setdefault(rec.split or "train", []).append(rec)
        for split, recs in by_split.items():
            recs = sorted(recs, key=lambda r: r.row)
            with NpzMember(path, f"{NPZ_SPLITS[split]}_images") as member:
                for rec, (_, img) in zip(recs, member.rows([r.row for r in recs]), strict=True):
                    yield rec, (np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img.copy())


class SingleLabelSheetBuilder(LongTailBuilder):
    """A multi-label sheet -> images with exactly one positive finding, long-tailed by frequency.

    Subclasses set ``LABEL_COLUMNS`` and implement :meth:`sheet_rows` yielding
    (where, image path, source_id, {column: value}); a value counts as positive when it
    parses as 1 (CheXpert's -1 "uncertain" and blanks are not positive). Class order comes
    from the data (most frequent first); val/test are per-class fractions (natural).
    A sheet that names the patient of each image overrides :meth:`group_id` (and sets
    ``GROUP_NAME``): the fractions are then drawn patient-disjoint.
    """

    CLASS_NAMES = None
    TEST_DISTRIBUTION = "natural"
    COMPARABLE = False
    LABEL_COLUMNS: tuple[str, ...] = ()

    def sheet_rows(self, data_dir: Path) -> Iterator[tuple[str, Path, str, dict[str, str]]]:
        raise NotImplementedError

    def group_id(self, source_id: str, row: dict[str, str]) -> str:
        """The patient (or other group) of one image; "" when the sheet does not say."""
        return ""

    @staticmethod
    def positive(value: str, where: str, column: str) -> bool:
        if value in ("", "nan"):
            return False
        try:
            v = float(value)
        except ValueError:
            raise AnnotationError(
                f"{where}: column {column!r} has value {value!r}, expected 1, 0, -1 or blank"
            ) from None
        if v not in (1.0, 0.0, -1.0):
            raise AnnotationError(
                f"{where}: column {column!r} has value {value!r}, expected 1, 0, -1 or blank"
            )
        return v == 1.0

    def scan(self, data_dir: Path) -> list[Record]:
        records = []
        for where, path, source_id, row in self.sheet_rows(data_dir):
            positives = [c for c in self.LABEL_COLUMNS if self.positive(row.get(c, ""), where, c)]
            if len(positives) != 1:
                continue  # multi-label or unlabelled: outside the single-label subset
            require_file(path, f"image named at {where}")
            records.append(
                Record(
                    source_id=source_id,
                    orig_label=positives[0],
                    where=where,
                    path=path,
                    group=self.group_id(source_id, row),
                )
            )
        if not records:
            raise AnnotationError(
                f"{data_dir}: no image has exactly one positive finding among {self.LABEL_COLUMNS}"
            )
        return sorted(records, key=lambda r: r.source_id)
