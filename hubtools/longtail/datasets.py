"""Long-tailed dataset builders: raw files a user downloaded -> ``datasets.DatasetDict`` + :class:`LTProfile`.

``datasets`` 5.x runs no loading scripts, so each dataset in ``dataset_scripts/<name>/``
is a :class:`LongTailBuilder` (a ``GeneratorBasedBuilder``) instantiated directly on a
local folder. This module holds what they share: the config, the plan (scan the source,
check it, order classes long-tail first, draw the splits), the readers that turn bad
input into errors naming the file and row, the registry behind
``hubtools longtail build NAME``, and publishing (card, ``LTProfile`` JSON, Parquet via
``DatasetDict.push_to_hub``).

A builder never yields a partial dataset: the whole source is scanned and checked before
the first example is written, and every image is decoded while it is written.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
import sys
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hubtools.data.offline import DataUnavailable
from hubtools.errors import HubtoolsError
from hubtools.longtail.splits import (
    LTProfile,
    draw_splits,
    group_codes,
    groups_by_threshold,
    profile,
    quota_shortfall,
    stratified_holdout,
)

SCRIPTS_ENV = "HUBTOOLS_DATASET_SCRIPTS"
SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------- errors


class SourceError(HubtoolsError, ValueError):
    """The raw files of a dataset are unusable; the message names the file (and row)."""


class MissingSourceFile(SourceError, FileNotFoundError):
    """A file or folder the source must hold is not there."""


class ChecksumError(SourceError):
    """A file's MD5 differs from the published one (wrong resolution, damaged or edited download)."""


class CorruptSourceFile(SourceError):
    """A file is truncated or does not decode (npz member, image)."""


class AnnotationError(SourceError):
    """A label sheet has missing columns, an unknown label, or a row that fits no single class."""


class SplitMismatchError(SourceError):
    """Anchor split lists name unknown images, or their per-class counts differ from MONICA's published ones."""


class UnknownDatasetError(HubtoolsError, KeyError):
    """``hubtools longtail build NAME`` with a NAME no builder is registered for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# --------------------------------------------------------------------------- config and records


@dataclass
class LongTailConfig(datasets.BuilderConfig):
    """One long-tailed configuration of a source: ratio, quotas, seed (a ``datasets.BuilderConfig``).

    ``val_per_class``/``test_per_class`` set balanced held-out splits (MONICA's ISIC, NCT,
    Kvasir); when they are None and the source has no official split, ``val_fraction`` and
    ``test_fraction`` of each class are held out (natural distribution). ``ratio=None`` keeps
    the natural train distribution (so does 0: ``datasets`` ignores None overrides, pass 0 or ``()``
    to switch a default off). ``head``/``medium`` are the group cut-offs (None: the
    many > 100 / few < 20 convention on the train counts). ``expected_train_counts`` are the
    per-class counts of MONICA's split files; a build that draws other counts fails.
    """

    ratio: float | None = 100
    n_max: int | None = None
    rounding: str = "round"
    val_per_class: int | None = None
    test_per_class: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    head: int | None = None
    medium: int | None = None
    seed: int = 1
    splits_dir: str | None = None
    expected_train_counts: tuple[int, ...] | None = None
    md5: str | None = None  # MedMNIST: expected MD5 of the npz; "skip" to skip the check
    image_size: int = 224  # MedMNIST: which npz resolution ({flag}_{size}.npz, 28 -> {flag}.npz)
    patch_size: int = 32  # MRI patches
    stride: int = 4
    slice_step: int = 4
    axis: int = 2


@dataclass
class Record:
    """One source image before it is written: its id, source label, split (if the source fixes it)."""

    source_id: str
    orig_label: str
    where: str  # "file:row" or a path, for error messages
    split: str | None = None
    path: Path | None = None
    row: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    label: int = -1
    group: str = ""  # lesion / patient id: records sharing one never straddle splits ("" = unknown)


@dataclass
class Plan:
    """The records of each split (labels set) and the profile they make."""

    splits: dict[str, list[Record]]
    profile: LTProfile


# --------------------------------------------------------------------------- readers


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: Path, what: str = "file") -> Path:
    """``path`` if it exists, else :class:`MissingSourceFile` naming it."""
    if not path.exists():
        raise MissingSourceFile(f"{path}: missing {what}")
    return path


def read_csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV; :class:`AnnotationError` naming missing columns."""
    require_file(path, "label sheet")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {missing}; found {header}")
        rows = []
        for row in reader:
            rows.append((reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in row.items()}))
    return header, rows


def decode_image_file(path: Path, where: str, mode: str | None = "RGB") -> dict[str, Any]:
    """The Image-feature value of a file: its original bytes when already in ``mode``, else re-encoded PNG.

    The image is fully decoded so a truncated or damaged file fails here, naming it, instead
    of in a user's training loop.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingSourceFile(f"{where}: image {path} is missing") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if mode is None or im.mode == mode:
                return {"bytes": data, "path": path.name}
            buf = io.BytesIO()
            im.convert(mode).save(buf, format="PNG")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptSourceFile(f"{where}: image {path} does not decode: {err}") from None
    return {"bytes": buf.getvalue(), "path": path.with_suffix(".png").name}


class NpzMember:
    """Row-by-row reader of one array inside an ``.npz`` (zip) without loading it whole.

    ``np.load`` ignores ``mmap_mode`` for npz and PathMNIST_224's train images alone are
    13.5 GB, so rows are streamed from the (possibly deflated) zip member: the ``.npy``
    header gives shape and dtype, then each row is ``prod(shape[1:]) * itemsize`` bytes.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CorruptSourceFile(f"{path}: not a readable npz ({err})") from None
        name = f"{key}.npy"
        if name not in self._zip.namelist():
            self._zip.close()
            raise CorruptSourceFile(f"{path}: has no array '{key}' (found {sorted(self._zip.namelist())})")
        self._file = self._zip.open(name)
        try:
            version = np.lib.format.read_magic(self._file)
            reader = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            self.shape, fortran, self.dtype = reader(self._file)
        except (ValueError, EOFError, zipfile.BadZipFile) as err:
            self.close()
            raise CorruptSourceFile(f"{path}: array '{key}' has a damaged header ({err})") from None
        if fortran:
            self.close()
            raise CorruptSourceFile(f"{path}: array '{key}' is Fortran-ordered; expected C order")
        self.row_shape = tuple(self.shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._next = 0

    def __len__(self) -> int:
        return int(self.shape[0])

    def rows(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, row) for increasing ``indices``, skipping the rows in between."""
        for idx in indices:
            if idx < self._next or idx >= len(self):
                raise ValueError(
                    f"{self.path}:{self.key}: rows must be increasing and < {len(self)}, got {idx}"
                )
            skip = (idx - self._next) * self.row_bytes
            while skip:
                got = len(self._file.read(min(skip, 1 << 24)))
                if got == 0:
                    raise CorruptSourceFile(f"{self.path}: array '{self.key}' is truncated before row {idx}")
                skip -= got
            buf = self._read_exact(idx)
            self._next = idx + 1
            yield idx, np.frombuffer(buf, dtype=self.dtype).reshape(self.row_shape)

    def _read_exact(self, idx: int) -> bytes:
        try:
            buf = self._file.read(self.row_bytes)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise CorruptSourceFile(
                f"{self.path}: array '{self.key}' is damaged at row {idx} ({err})"
            ) from None
        if len(buf) != self.row_bytes:
            raise CorruptSourceFile(f"{self.path}: array '{self.key}' is truncated at row {idx}")
        return buf

    def read_all(self) -> np.ndarray:
        """The whole array (for the small label arrays)."""
        return (
            np.stack([r for _, r in self.rows(range(len(self)))])
            if len(self)
            else np.zeros(self.shape, self.dtype)
        )

    def close(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()
        self._zip.close()

    def __enter__(self) -> NpzMember:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_anchor_lists(splits_dir: Path, ratio: float) -> dict[str, list[str]]:
    """The anchor's ``{train,val,test}_{r}.npy`` name lists (plain string arrays, no pickle)."""
    out = {}
    for split, fname in (("train", "train"), ("validation", "val"), ("test", "test")):
        path = splits_dir / f"{fname}_{ratio:g}.npy"
        if not path.exists():
            continue
        try:
            names = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise SplitMismatchError(f"{path}: not a plain array of names ({err})") from None
        out[split] = [str(n) for n in names.tolist()]
    if "train" not in out:
        raise MissingSourceFile(f"{splits_dir / f'train_{ratio:g}.npy'}: missing anchor split list")
    return out


def fitting_n_max(available: Sequence[int], ratio: float) -> int:
    """The largest n_max whose exponential profile fits under every class's availability.

    For sources without a published n_max (the MRI patches, the single-label sheets) this
    makes ``--ratio`` the ratio the train split really has, instead of a profile whose tail
    is cut back to what a rare class holds.
    """
    c = len(available)
    if c == 1:
        return int(available[0])
    return max(1, int(min(a * ratio ** (i / (c - 1)) for i, a in enumerate(available))))


# --------------------------------------------------------------------------- the builder base


class LongTailBuilder(datasets.GeneratorBasedBuilder):
    """Base of every long-tailed builder: plan once, then write images with their LT labels.

    Subclasses set ``CLASS_NAMES`` (LT order, index 0 = largest; None: ordered by the source's
    frequency), ``LICENSE``, ``SOURCE`` (what the source is and where to download it: the page,
    archive or Debian package, quoted in every missing-file error), and implement :meth:`scan`;
    sources that are not image files override :meth:`iter_images`. A scan that knows which
    images show one lesion or patient sets ``Record.group`` and ``GROUP_NAME``: the seeded
    re-draw then keeps every group in one split.
    """

    BUILDER_CONFIG_CLASS = LongTailConfig
    CLASS_NAMES: tuple[str, ...] | None = None
    LICENSE = "other"  # a Hub license id; "other" with LICENSE_NAME for the rest
    LICENSE_NAME = ""
    SOURCE = ""
    DESCRIPTION = ""
    IMAGE_MODE: str | None = "RGB"
    TEST_DISTRIBUTION = "balanced"
    PRIVATE_BY_DEFAULT = False
    EXTRA_FEATURES: dict[str, Any] = {}
    PARALLEL_BUILD = True  # `longtail build` uses several processes unless a source sets False
    SHARDS = 8  # chunks per split that num_proc workers share
    COMPARABLE = True  # False: the anchor defines no split, hubtools' single-label rule is its own
    GROUP_NAME = (
        ""  # what Record.group identifies ("lesion_id", "patient"); recorded as LTProfile.disjoint_by
    )

    _plan: Plan | None = None

    # -- to implement
    def scan(self, data_dir: Path) -> list[Record]:
        """Every usable record of the source, checked (labels known, files present), in a sorted order."""
        raise NotImplementedError

    def anchor_key(self, name: str) -> str:
        """The source_id an anchor list entry names (default: match on the file's base name)."""
        return Path(name).name

    def split_groups(self, pool: Sequence[Record]) -> list[str] | None:
        """Group id of every pool record for a group-disjoint draw, or None to draw image by image.

        Default: the scan's ``Record.group`` ids when it set any. Builders with a config switch
        (ISIC's ``lesion_disjoint``) override this to return None when it is off.
        """
        return [r.group for r in pool] if any(r.group for r in pool) else None

    def scan_source(self) -> list[Record]:
        """:meth:`scan` of :attr:`data_dir`, a missing file or folder reported with where to download the source.

        Every builder's missing-data error goes through here, so each names ``SOURCE`` (its
        download page, archive or Debian package) without repeating it in every ``require_file``.
        """
        try:
            return self.scan(self.data_dir)
        except (MissingSourceFile, DataUnavailable) as err:
            raise type(err)(f"{err}; get the source from {self.SOURCE}") from None

    # -- plan
    @property
    def data_dir(self) -> Path:
        if not self.config.data_dir:
            raise MissingSourceFile(
                f"{type(self).__name__}: no data_dir given (the folder holding the raw files)"
            )
        path = Path(self.config.data_dir)
        if not path.is_dir():
            raise MissingSourceFile(f"{path}: source folder does not exist")
        return path

    def class_names(self, records: Sequence[Record] | None = None) -> list[str]:
        if self.CLASS_NAMES is not None:
            return list(self.CLASS_NAMES)
        counts = Counter(r.orig_label for r in records or [])
        return sorted(counts, key=lambda name: (-counts[name], name))

    def plan(self) -> Plan:
        """Scan and check the source, set LT labels, draw the splits (cached)."""
        if self._plan is not None:
            return self._plan
        cfg = self.config
        records = self.scan_source()  # scans return records in a sorted, file-system independent order
        names = self.class_names(records)
        index = {n: i for i, n in enumerate(names)}
        for r in records:
            if r.orig_label not in index:
                raise AnnotationError(f"{r.where}: unknown label {r.orig_label!r}; expected one of {names}")
            r.label = index[r.orig_label]
        fixed = {s: [r for r in records if r.split == s] for s in ("validation", "test")}
        pool = [r for r in records if r.split in (None, "train")]
        labels = np.array([r.label for r in pool], dtype=np.int64)
        available = np.bincount(labels, minlength=len(names))
        provenance = "seeded-redraw"
        groups = self.split_groups(pool)
        notes = (
            [] if self.COMPARABLE else ["Single-label subset chosen by hubtools; not comparable to MONICA."]
        )
        if cfg.splits_dir:
            split_idx = self._anchor_split(pool, Path(cfg.splits_dir))
            provenance = "monica-lists"
            if groups is not None:
                notes.append(self._report_shared_groups(groups, split_idx, Path(cfg.splits_dir)))
                groups = None  # the lists decide; the profile must not claim disjoint splits
        elif cfg.val_per_class is not None or cfg.test_per_class is not None:
            val, test = cfg.val_per_class or 0, cfg.test_per_class or 0
            short = [(names[c], int(a)) for c, a in enumerate(available) if a < val + test + 1]
            if short:
                raise SourceError(
                    f"{self.data_dir}: classes {short} hold fewer images than the held-out "
                    f"quotas ({val} validation + {test} test) plus one for training"
                )
            left = (available - val - test).tolist()
            train = self._train_counts(left)
            if groups is None:
                split_idx = draw_splits(labels, train, val, test, seed=cfg.seed)
            else:
                # Whole groups may not add up to a quota: take what fits and say so. A natural
                # train set takes every group left over; a MONICA config's train counts are still
                # checked below, so a short ISIC train split fails there.
                quotas = {"validation": [val] * len(names), "test": [test] * len(names)}
                if cfg.ratio:
                    quotas["train"] = train
                split_idx = draw_splits(
                    labels,
                    train if cfg.ratio else available.tolist(),
                    val,
                    test,
                    seed=cfg.seed,
                    strict=False,
                    groups=groups,
                )
                short = quota_shortfall(labels, split_idx, quotas)
                if short:
                    text = f"{self.data_dir}: {short}; config {cfg.name} keeps each {self.GROUP_NAME} in one split."
                    warnings.warn(text, stacklevel=2)
                    notes.append(text)
        else:
            if fixed["validation"] or fixed["test"]:
                held = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.arange(len(pool))]
                groups = None  # the source fixes its held-out splits; nothing to keep apart
            else:
                held = stratified_holdout(
                    labels, (cfg.val_fraction, cfg.test_fraction), seed=cfg.seed, groups=groups
                )
            rest = held[2]
            train = self._train_counts(np.bincount(labels[rest], minlength=len(names)).tolist())
            drawn = draw_splits(
                labels[rest],
                train,
                seed=cfg.seed,
                strict=False,
                groups=None if groups is None else [groups[i] for i in rest],
            ).get("train", np.zeros(0, np.int64))
            split_idx = {"train": np.sort(rest[drawn]), "validation": held[0], "test": held[1]}
            if not cfg.ratio:
                provenance = "natural"
        splits = {s: [pool[i] for i in split_idx.get(s, [])] for s in SPLITS}
        for s, recs in fixed.items():
            splits[s] = splits[s] + recs
        splits = {s: recs for s, recs in splits.items() if recs}
        train_counts = np.bincount([r.label for r in splits.get("train", [])], minlength=len(names)).tolist()
        if cfg.expected_train_counts and tuple(train_counts) != tuple(cfg.expected_train_counts):
            raise SplitMismatchError(
                f"{self.data_dir}: drawn train counts {train_counts} differ from MONICA's "
                f"{list(cfg.expected_train_counts)} for config {cfg.name}"
            )
        head, medium = (cfg.head, cfg.medium) if cfg.head is not None else groups_by_threshold(train_counts)
        nonzero = [n for n in train_counts if n > 0]
        lt = LTProfile(
            class_names=names,
            cls_num_list=train_counts,
            imbalance_ratio=round(nonzero[0] / nonzero[-1], 4) if nonzero else 0.0,
            head=head,
            medium=max(head, medium if medium is not None else head),
            test_distribution=self.TEST_DISTRIBUTION,
            split_provenance=provenance,
            license=self.LICENSE,
            seed=cfg.seed,
            split_sizes={s: len(r) for s, r in splits.items()},
            notes=" ".join(notes),
            disjoint_by=self.GROUP_NAME if groups is not None else "",
        )
        self._plan = Plan(splits=splits, profile=lt)
        return self._plan

    def _train_counts(self, available: Sequence[int]) -> list[int]:
        cfg = self.config
        if not cfg.ratio:
            return [int(a) for a in available]
        n_max = cfg.n_max or fitting_n_max(available, cfg.ratio)
        return profile(n_max, len(available), cfg.ratio, cfg.rounding, available=available)

    def _anchor_split(self, pool: list[Record], splits_dir: Path) -> dict[str, np.ndarray]:
        lists = read_anchor_lists(splits_dir, self.config.ratio or 0)
        by_key = {self.anchor_key(r.source_id): i for i, r in enumerate(pool)}
        out = {}
        for split, names in lists.items():
            unknown = [n for n in names if self.anchor_key(n) not in by_key]
            if unknown:
                raise SplitMismatchError(
                    f"{splits_dir}: {split} list names {len(unknown)} image(s) not in the "
                    f"source, e.g. {unknown[:3]}"
                )
            out[split] = np.sort(np.array([by_key[self.anchor_key(n)] for n in names], dtype=np.int64))
        self.check_anchor_rows(pool, out, splits_dir)
        return out

    def _report_shared_groups(
        self, groups: Sequence[str], split_idx: Mapping[str, np.ndarray], splits_dir: Path
    ) -> str:
        """Warn how many groups (lesions, patients) the anchor's lists put in both train and test.

        The lists are used as they are (reproduction needs them), so the leak is reported,
        not fixed; the returned sentence goes into the profile's notes and the card.
        """
        codes = group_codes(groups, len(groups))  # an unknown id is its own group, never shared
        train, test = (codes[split_idx.get(s, np.zeros(0, np.int64))] for s in ("train", "test"))
        shared = np.intersect1d(train, test)
        if not shared.size:
            return f"The anchor's lists share no {self.GROUP_NAME} between train and test."
        text = (
            f"The anchor's lists ({splits_dir}) share {shared.size} {self.GROUP_NAME} value(s) between "
            f"train and test ({int(np.isin(train, shared).sum())} train / "
            f"{int(np.isin(test, shared).sum())} test images): these splits are not "
            f"{self.GROUP_NAME}-disjoint."
        )
        warnings.warn(text, stacklevel=3)
        return text

    def check_anchor_rows(
        self, pool: list[Record], split_idx: dict[str, np.ndarray], splits_dir: Path
    ) -> None:
        """Hook: datasets whose anchor names carry a label check it here."""

    # -- datasets API
    def _info(self) -> datasets.DatasetInfo:
        names = list(self.CLASS_NAMES) if self.CLASS_NAMES is not None else self.plan().profile.class_names
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=names),
                "orig_label": datasets.Value("string"),
                "source_id": datasets.Value("string"),
                **self.EXTRA_FEATURES,
            }
        )
        return datasets.DatasetInfo(
            description=self.DESCRIPTION, features=features, license=self.LICENSE, homepage=self.SOURCE
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # Contiguous chunks are the units `num_proc` workers share: one per record would make
        # datasets account (and pickle) thousands of shards.
        plan = self.plan()
        out = []
        for split, recs in plan.splits.items():
            n = max(1, min(self.SHARDS, len(recs)))
            bounds = np.linspace(0, len(recs), n + 1).astype(int)
            chunks = [recs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            out.append(datasets.SplitGenerator(name=split, gen_kwargs={"chunks": chunks}))
        return out

    def _generate_examples(self, chunks: list[list[Record]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for rec, image in (pair for chunk in chunks for pair in self.iter_images(chunk)):
            yield (
                rec.source_id,
                {
                    "image": image,
                    "label": rec.label,
                    "orig_label": rec.orig_label,
                    "source_id": rec.source_id,
                    **rec.extra,
                },
            )

    def iter_images(self, records: Sequence[Record]) -> Iterator[tuple[Record, Any]]:
        """(record, Image-feature value) for image-file sources; array sources override this."""
        for rec in records:
            assert rec.path is not None
            yield rec, decode_image_file(rec.path, rec.where, self.IMAGE_MODE)


# --------------------------------------------------------------------------- registry and build


@dataclass(frozen=True)
class DatasetEntry:
    """Where the builder of ``hubtools longtail build NAME`` lives and how its config names read."""

    script: str  # relative to dataset_scripts/
    builder: str
    default_ratio: float | None
    config_prefix: str


DATASETS: dict[str, DatasetEntry] = {
    "isic2019": DatasetEntry("isic2019/isic2019_lt.py", "ISIC2019LT", 100, "isic2019_lt"),
    "nct": DatasetEntry("nct_crc/nct_crc_lt.py", "NCTCRCLT", 100, "nct_lt"),
    "kvasir": DatasetEntry("kvasir/hyperkvasir_lt.py", "HyperKvasirLT", 20, "kvasir_lt"),
    **{
        flag: DatasetEntry(f"{flag}/{flag}_lt.py", "Builder", 100, f"{flag}_lt")
        for flag in (
            "pathmnist",
            "dermamnist",
            "bloodmnist",
            "tissuemnist",
            "organamnist",
            "organcmnist",
            "organsmnist",
        )
    },
    "odir": DatasetEntry("odir/odir_lt.py", "ODIRLT", 100, "odir_lt"),
    "rfmid": DatasetEntry("rfmid/rfmid_lt.py", "RFMiDLT", 100, "rfmid_lt"),
    "chexpert": DatasetEntry("chexpert/chexpert_lt.py", "CheXpertLT", 100, "chexpert_lt"),
    "mri_patches": DatasetEntry("mri_patches/mri_patches_lt.py", "MRIPatchesLT", None, "mri_patches_lt"),
    "fashion_mnist": DatasetEntry(
        "fashion_mnist/fashion_mnist_lt.py", "FashionMNISTLT", 100, "fashion_mnist_lt"
    ),
}


def scripts_dir() -> Path:
    """``$HUBTOOLS_DATASET_SCRIPTS`` or ``<repo>/dataset_scripts`` (source checkout)."""
    env = os.environ.get(SCRIPTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "dataset_scripts"


def builder_class(name: str) -> type[LongTailBuilder]:
    """Import ``dataset_scripts/<...>.py`` of dataset ``name`` and return its builder class."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    entry = DATASETS[name]
    module_name = f"hubtools_dataset_scripts.{Path(entry.script).stem}"
    module = sys.modules.get(module_name)
    if module is None:
        path = require_file(scripts_dir() / entry.script, "builder script")
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # workers started by num_proc find the class by name
        spec.loader.exec_module(module)
    return getattr(module, entry.builder)


def config_name(name: str, ratio: float | None) -> str:
    entry = DATASETS[name]
    return entry.config_prefix if not ratio else f"{entry.config_prefix}_{ratio:g}"


def source_fingerprint(source_dir: Path) -> str:
    """Hash of relative paths, sizes and mtimes: a changed source gets a fresh builder cache."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(source_dir):
        dirs.sort()
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            h.update(
                f"{os.path.relpath(os.path.join(root, f), source_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    return h.hexdigest()[:16]


def make_builder(
    name: str,
    source_dir: str | Path | None,
    ratio: float | None = -1,
    splits_dir: str | Path | None = None,
    seed: int = 1,
    cache_dir: str | Path | None = None,
    **config_kwargs: Any,
) -> LongTailBuilder:
    """The builder of dataset ``name`` on ``source_dir``; ``ratio=-1`` means the dataset's default ratio."""
    cls = builder_class(name)
    entry = DATASETS[name]
    ratio = entry.default_ratio if ratio == -1 else ratio
    cfg_name = config_name(name, ratio)
    known = {c.name for c in cls.BUILDER_CONFIGS}
    kwargs: dict[str, Any] = dict(config_kwargs)
    if cfg_name not in known:
        default = config_name(name, entry.default_ratio)
        if default not in known:
            raise UnknownDatasetError(f"{name}: no builder config {cfg_name!r} ({sorted(known)})")
        kwargs["ratio"] = ratio or 0  # datasets ignores None overrides: 0 means the natural distribution
        kwargs.setdefault("expected_train_counts", ())
        kwargs["name"] = cfg_name  # the default config's settings under this ratio's own name
        cfg_name = default
    if splits_dir is not None:
        kwargs["splits_dir"] = str(Path(splits_dir).resolve())
    if seed != 1:
        kwargs["seed"] = seed
    src = Path(source_dir).resolve() if source_dir is not None else None
    return cls(
        config_name=cfg_name,
        data_dir=str(src) if src else None,
        cache_dir=str(cache_dir) if cache_dir else None,
        hash=source_fingerprint(src) if src and src.is_dir() else None,
        **kwargs,
    )


def build(
    name: str,
    source_dir: str | Path | None,
    ratio: float | None = -1,
    splits_dir: str | Path | None = None,
    seed: int = 1,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    **config_kwargs: Any,
) -> tuple[datasets.DatasetDict, LTProfile]:
    """Build the long-tailed DatasetDict of ``name`` from raw files in ``source_dir``.

    The builder's Arrow cache (``cache_dir``, default the datasets cache) is keyed by the
    config and a fingerprint of the source files, so re-running after an interruption or
    with unchanged files reuses what was written.
    """
    builder = make_builder(name, source_dir, ratio, splits_dir, seed, cache_dir, **config_kwargs)
    return prepare(builder, num_proc), builder.plan().profile


def prepare(builder: LongTailBuilder, num_proc: int | None = None) -> datasets.DatasetDict:
    """``download_and_prepare`` + ``as_dataset``, with our own bad-input errors unwrapped.

    datasets wraps any exception raised while writing in ``DatasetGenerationError``; a
    :class:`SourceError` (the file and row at fault) is what the user should see.
    """
    builder.plan()
    try:
        builder.download_and_prepare(num_proc=num_proc if num_proc and num_proc > 1 else None)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, SourceError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    return builder.as_dataset()


def load(repo_or_dir: str | Path, config: str | None = None) -> tuple[datasets.DatasetDict, LTProfile | None]:
    """A published long-tailed set and its profile: a Hub repo id, or a folder written by ``longtail build``."""
    path = Path(repo_or_dir)
    if path.is_dir():
        ds = datasets.load_from_disk(str(path / "data"))
        prof = next(iter(sorted((path / "longtail").glob("*.json"))), None)
        return ds, LTProfile.from_json(prof) if prof else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    ds = datasets.load_dataset(str(repo_or_dir), config)
    try:
        prof_path = hf_hub_download(
            str(repo_or_dir), f"longtail/{config or 'default'}.json", repo_type="dataset"
        )
    except EntryNotFoundError:
        return ds, None
    return ds, LTProfile.from_json(Path(prof_path))


# --------------------------------------------------------------------------- reporting and publishing


def counts_table(lt: LTProfile) -> str:
    """Plain-text table: class id, name, group, train count (what ``longtail build`` prints)."""
    width = max(len(n) for n in lt.class_names)
    lines = [f"{'id':>4}  {'class':<{width}}  {'group':<6}  {'train':>6}"]
    for i, (n, c) in enumerate(zip(lt.class_names, lt.cls_num_list, strict=True)):
        lines.append(f"{i:>4}  {n:<{width}}  {lt.group_of(i):<6}  {c:>6}")
    lines.append(
        f"classes {lt.num_classes}, train {sum(lt.cls_num_list)}, head {lt.cls_num_list[0]}, "
        f"tail {lt.cls_num_list[-1]}, imbalance {lt.imbalance_ratio:g}, groups many/medium/few = "
        f"{lt.head}/{lt.medium - lt.head}/{lt.num_classes - lt.medium}, splits {lt.split_sizes}"
    )
    return "\n".join(lines)


def counts_chart(lt: LTProfile, path: Path, title: str) -> Path:
    """Bar chart of train counts per class in LT order, coloured by group (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.array(["#1f77b4", "#ff7f0e", "#d62728"])[lt.groups()]
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * lt.num_classes + 3), 3.5))
    ax.bar(np.arange(lt.num_classes), lt.cls_num_list, color=colours, width=0.85)
    ax.set_yscale("log")
    ax.set_xlabel("class (long-tail order)")
    ax.set_ylabel("train images")
    ax.set_title(title)
    if lt.num_classes <= 20:
        ax.set_xticks(np.arange(lt.num_classes), lt.class_names, rotation=60, ha="right", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("#1f77b4", "#ff7f0e", "#d62728")]
    ax.legend(handles, ["many", "medium", "few"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_build(
    folder: str | Path,
    name: str,
    builder: LongTailBuilder,
    ds: datasets.DatasetDict,
    lt: LTProfile,
    repo_id: str | None = None,
    zoo_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write the local artifact: ``data/`` (save_to_disk), ``longtail/<config>.json`` and ``.png``, ``README.md``.

    Written through :func:`hubtools.hub.artifacts.atomic_dir`: whole or not at all. ``zoo_fields``
    (modality, anatomy, task, reproduce) go to the card for the model zoo.
    """
    from hubtools.hub.artifacts import atomic_dir, save_card

    cfg = builder.config.name
    with atomic_dir(folder) as tmp:
        ds.save_to_disk(str(tmp / "data"))
        lt.to_json(tmp / "longtail" / f"{cfg}.json")
        counts_chart(lt, tmp / "longtail" / f"{cfg}.png", f"{name} ({cfg}): train images per class")
        save_card(tmp, dataset_card(name, builder, ds, lt, repo_id, cfg, zoo_fields))
    return Path(folder)


def publish(
    folder: str | Path, repo_id: str, private: bool | None = None, num_proc: int | None = None
) -> str:
    """Publish a folder written by :func:`save_build` as one config of the dataset repo ``repo_id``.

    The card and ``longtail/<config>.{json,png}`` go up in one commit (keeping the ``configs``
    and ``dataset_info`` metadata earlier configs wrote), then ``DatasetDict.push_to_hub``
    writes the Parquet shards and adds this config to the card, so ``load_dataset(repo_id,
    config)`` gives the same rows. Returns the config name.
    """
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    folder = Path(folder)
    profiles = sorted((folder / "longtail").glob("*.json"))
    if len(profiles) != 1 or not (folder / "README.md").is_file():
        raise SourceError(
            f"{folder}: not a folder written by `hubtools longtail build` (README.md + one profile)"
        )
    cfg = profiles[0].stem
    ds = datasets.load_from_disk(str(folder / "data"))
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    card = DatasetCard.load(folder / "README.md")
    try:
        old = DatasetCard.load(repo_id, repo_type="dataset")
        for key in ("configs", "dataset_info"):
            if key in old.data:
                card.data[key] = old.data[key]
    except (EntryNotFoundError, RepositoryNotFoundError):
        pass
    ops = [CommitOperationAdd("README.md", str(card).encode("utf-8"))]
    ops += [CommitOperationAdd(f"longtail/{p.name}", str(p)) for p in sorted((folder / "longtail").iterdir())]
    api.create_commit(
        repo_id, ops, repo_type="dataset", commit_message=f"Card and long-tail profile of {cfg}"
    )
    ds.push_to_hub(
        repo_id,
        config_name=cfg,
        private=private,
        max_shard_size="500MB",
        num_proc=num_proc,
        commit_message=f"Parquet shards of {cfg}",
    )
    return cfg


def _feature_type(feature: Any) -> str:
    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel({feature.num_classes} classes)"
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.List):
        return f"List({_feature_type(feature.feature)})"
    return type(feature).__name__


def dataset_card(
    name: str,
    builder: LongTailBuilder,
    ds: datasets.DatasetDict,
    lt: LTProfile,
    repo_id: str | None,
    cfg_name: str,
    zoo_fields: Mapping[str, str] | None = None,
) -> Any:
    """The dataset card (``hubtools.hub.cards`` "dataset" template) with the long-tail facts."""
    from hubtools.hub.cards import render_card

    features = {k: _feature_type(v) for k, v in ds[next(iter(ds))].features.items()}
    n = sum(d.num_rows for d in ds.values())
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    card_data = {
        "license": builder.LICENSE,
        "pretty_name": f"{name} long-tailed ({cfg_name})",
        "task_categories": ["image-classification"],
        "size_categories": [size],
        "tags": ["hubtools", "long-tailed", "medical", "monica"],
    }
    if builder.LICENSE == "other":
        card_data["license_name"] = builder.LICENSE_NAME or f"{name}-source-terms"
    table = "\n".join(
        f"| {i} | {c} | {lt.group_of(i)} | {n} |"
        for i, (c, n) in enumerate(zip(lt.class_names, lt.cls_num_list, strict=True))
    )
    summary = (
        f"{builder.DESCRIPTION}\n\nLong-tailed configuration `{cfg_name}`: {lt.num_classes} classes in "
        f"long-tail order (class 0 is the largest), train counts {lt.cls_num_list[0]} -> {lt.cls_num_list[-1]} "
        f"(imbalance {lt.imbalance_ratio:g}), groups many/medium/few = classes [0,{lt.head}) / "
        f"[{lt.head},{lt.medium}) / [{lt.medium},{lt.num_classes}). The profile (class names, train counts, "
        f"groups, provenance) is in `longtail/{cfg_name}.json`, a bar chart in `longtail/{cfg_name}.png`.\n\n"
        f"| label | class | group | train |\n|---|---|---|---|\n{table}"
    )
    return render_card(
        "dataset",
        card_data=card_data,
        pretty_name=card_data["pretty_name"],
        summary=summary,
        repo_id=repo_id,
        config_name=cfg_name,
        features=features,
        splits={s: d.num_rows for s, d in ds.items()},
        source_data=f"Built locally by `hubtools longtail build {name}` from the raw files of {builder.SOURCE}; "
        "each row keeps `orig_label` (source label) and `source_id` (file or npz row) to trace it back.",
        curation=(
            f"Split provenance: {lt.split_provenance} (seed {lt.seed}); "
            + (f"every {lt.disjoint_by} lies in one split only; " if lt.disjoint_by else "")
            + f"test distribution: {lt.test_distribution}. {lt.notes}"
        ).strip(),
        medical=True,
        license=f"{builder.LICENSE} ({builder.LICENSE_NAME})" if builder.LICENSE_NAME else builder.LICENSE,
        **(zoo_fields or {}),
    )
