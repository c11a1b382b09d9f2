"""The embedding step before InfoGrowth: any local transformers image or text encoder, batched, with progress.

InfoGrowth compares rows by the cosine of L2-normalised embeddings, so a dataset needs an image (content)
column ``img_emb`` and, for image-text curation, a caption column ``txt_emb``. This module computes them
from a transformers model given as a local folder or a model repo id on the configured Hub (``HF_ENDPOINT``):

- :class:`ImageEncoder` / :class:`TextEncoder` turn PIL images, numpy arrays, ``datasets`` Image dicts or
  strings into float32, L2-normalised ``[B, D]`` arrays;
- :func:`make_embed_fn` makes the ``embed_fn(batch) -> {column: float32[B, D]}`` the curator applies to every
  batch; :func:`embed_dataset` adds the columns to a ``Dataset`` with ``Dataset.map`` (progress bar, cache);
- ``hubtools data embed`` (:data:`embed_command`) writes an embedded copy of a dataset as a Hub dataset folder.

Pooling (which vector stands for a whole image or text), chosen from the model unless ``pooling=`` says otherwise:

- ``projection`` for joint image-text models (CLIP, SigLIP, BLIP, ALIGN: any model with
  ``get_image_features``/``get_text_features``). Image and caption land in one space, which the image-text
  cleaner needs: it scores a pair by cos(image, caption).
- ``cls`` for image transformers with a class token (ViT, DeiT, DINO, DINOv2): the class token of
  ``last_hidden_state`` (after the final layer norm). DINO/DINOv2 train that token as the global descriptor
  and evaluate it with k-NN, which is what the gain computes. ViT's ``pooler_output`` is not used: it is a
  dense + tanh head that self-supervised checkpoints (DINO, MAE) leave untrained; for DINOv2 it equals the
  class token anyway. Models trained with mean-pooled patches (BEiT, ``use_mean_pooling``) and models without
  a class token (ResNet, ConvNeXt, Swin) use ``pooler``, their own pooled output.
- ``mean`` for text encoders (BERT-like): the mean of the token states under the attention mask, the pooling
  sentence-transformers models such as all-MiniLM-L6-v2 are trained with; a sentence-transformers folder whose
  ``1_Pooling/config.json`` asks for the CLS token gets ``cls``.

Every encoder has an ``encoder_id``, ``"<repo id>@<commit sha>"`` for a Hub model or ``"<folder name>@<hash>"``
for a local folder (sha256 of its weights, configs and tokenizer/processor files, which all change the
vectors), plus ``+<pooling>`` when the pooling was overridden. The curator records it and refuses to resume a
state built by another encoder.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np

from hubtools.config import StrictModel, config_option
from hubtools.errors import HubtoolsError
from hubtools.hashing import sha256_file

logger = logging.getLogger(__name__)

Pooling = Literal["auto", "projection", "cls", "mean", "pooler"]
POOLINGS: tuple[str, ...] = ("auto", "projection", "cls", "mean", "pooler")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
# The files that decide an encoder's vectors: weights, configs, tokenizer/processor files and the
# sentence-transformers pooling config. They are what a Hub download fetches (safetensors only: no pickle)
# and what a local folder's content hash covers.
MODEL_FILE_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "1_Pooling/config.json",
)
_HASHED_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".tiktoken")


class EncoderError(HubtoolsError, ValueError):
    """An encoder cannot be loaded or an input cannot be encoded; the message names the model or the row."""


# --------------------------------------------------------------------------- loading


def folder_hash(folder: str | Path) -> str:
    """sha256 (first 12 hex digits) of the files that decide a model folder's vectors, names included.

    Top-level weights, configs and tokenizer/processor files plus ``1_Pooling/config.json``; a card edit
    (README.md) does not change it, new weights or a new image size do.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in _HASHED_SUFFIXES]
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        files.append(pooling)
    h = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.relative_to(folder).as_posix()):
        h.update(f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()[:12]


def resolve_encoder(name_or_path: str | Path, revision: str | None = None) -> tuple[Path, str]:
    """The local folder of an encoder and its id: a folder as it is, a Hub id downloaded from ``HF_ENDPOINT``.

    A Hub download fetches only :data:`MODEL_FILE_PATTERNS` (safetensors, never pickled weights) at the
    commit ``revision`` resolves to; that commit is the id's revision, so the id names the exact weights.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if revision is not None:
            raise EncoderError(
                f"{name}: is a local folder; a revision ({revision!r}) applies to Hub ids only"
            )
        if not (path / "config.json").is_file():
            raise EncoderError(f"{name}: is not a transformers model folder (it has no config.json)")
        return path, f"{path.resolve().name}@{folder_hash(path)}"
    if path.exists():
        raise EncoderError(f"{name}: is a file; give the model folder (with config.json) or a Hub model id")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise EncoderError(f"{name}: no such model folder")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(name, revision=revision, allow_patterns=list(MODEL_FILE_PATTERNS)))
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EncoderError(
            f"{name}: not a local model folder and not a model repo on {constants.ENDPOINT}"
            f"{f' at revision {revision!r}' if revision else ''} ({type(err).__name__}: {reason})"
        ) from None
    if not (folder / "config.json").is_file():
        raise EncoderError(f"{name}: the Hub repo has no config.json; it is not a transformers model")
    # the Hub cache keeps every snapshot in a folder named by its commit sha
    return folder, f"{name}@{folder.name}"


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise EncoderError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, str(dtype))


# Loaded models, shared while someone uses them: ImageEncoder("clip") and TextEncoder("clip") hold one copy.
_MODELS: weakref.WeakValueDictionary[tuple[str, str, str], Any] = weakref.WeakValueDictionary()


def _load_model(folder: Path, name: str, device: Any, dtype: Any) -> Any:
    from transformers import AutoModel

    key = (str(folder.resolve()), str(device), str(dtype))
    model = _MODELS.get(key)
    if model is None:
        if not any(folder.glob("*.safetensors")):
            raise EncoderError(
                f"{name}: has no safetensors weights in {folder}; hubtools loads safetensors only "
                "(convert with save_pretrained(safe_serialization=True))"
            )
        try:
            model = AutoModel.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError, KeyError) as err:
            raise EncoderError(f"{name}: transformers cannot load this model: {err}") from None
        model = model.to(device).eval()
        _MODELS[key] = model
    return model


# --------------------------------------------------------------------------- inputs


def to_rgb_image(value: Any, where: str = "image") -> Any:
    """An RGB PIL image from a PIL image, a uint8 array (HxW grayscale, HxWx1, HxWx3, HxWx4), a ``datasets``
    Image dict (``bytes`` / ``path``) or a file path. ``where`` names the row in errors.

    Float arrays are refused: 0-1 and 0-255 scales cannot be told apart, and a wrong guess would give
    plausible but wrong embeddings.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(value, Image.Image):
            img = value
        elif isinstance(value, Mapping):
            if value.get("bytes") is not None:
                img = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                img = Image.open(value["path"])
            else:
                raise EncoderError(
                    f"{where}: an image dict needs 'bytes' or 'path', got keys {sorted(value)}"
                )
        elif isinstance(value, (str, os.PathLike)):
            img = Image.open(value)
        else:
            img = Image.fromarray(_uint8_pixels(value, where))
        img.load()
    except (UnidentifiedImageError, OSError) as err:
        raise EncoderError(f"{where}: cannot read the image ({err})") from None
    return img if img.mode == "RGB" else img.convert("RGB")


def _uint8_pixels(value: Any, where: str) -> np.ndarray:
    if value is None:
        raise EncoderError(f"{where}: is None, expected an image")
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biu":
        raise EncoderError(
            f"{where}: expected uint8 pixels, got dtype {arr.dtype}"
            + (
                " (float pixels are ambiguous, 0-1 or 0-255: convert to uint8)"
                if arr.dtype.kind == "f"
                else ""
            )
        )
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise EncoderError(
            f"{where}: expected an HxW or HxWxC (C = 1, 3 or 4) image array, got shape {arr.shape}"
        )
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise EncoderError(f"{where}: pixel values must lie in 0..255, got {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(arr.astype(np.uint8))


# --------------------------------------------------------------------------- encoders


class _Encoder:
    """Shared loading, batching and normalisation; subclasses prepare inputs and pool outputs."""

    modality = ""

    def __init__(
        self,
        name_or_path: str | Path,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | Any | None = None,
        batch_size: int = 64,
        pooling: Pooling = "auto",
    ) -> None:
        import torch

        if pooling not in POOLINGS:
            raise EncoderError(f"pooling: expected one of {', '.join(POOLINGS)}, got {pooling!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise EncoderError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.name_or_path, self.revision = str(name_or_path), revision
        self.folder, base_id = resolve_encoder(name_or_path, revision)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _torch_dtype(dtype)
        self.batch_size = batch_size
        self.model = _load_model(self.folder, self.name_or_path, self.device, self.dtype)
        self._load_preprocessor()
        auto = self._auto_pooling()
        self.pooling: str = auto if pooling == "auto" else pooling
        if (auto == "projection") != (self.pooling == "projection"):
            raise EncoderError(
                f"{self.name_or_path}: pooling {self.pooling!r} does not fit this model: joint image-text models "
                "(with get_image_features/get_text_features) are embedded by their projection, others cannot be"
            )
        # an overridden pooling makes other vectors from the same weights, so it is part of the id
        self.encoder_id = base_id if self.pooling == auto else f"{base_id}+{self.pooling}"
        self._dim: int | None = None

    def _load_preprocessor(self) -> None:
        raise NotImplementedError

    def _auto_pooling(self) -> str:
        raise NotImplementedError

    def _forward(self, items: list[Any]) -> Any:
        raise NotImplementedError

    def _prepare(self, values: Sequence[Any], where: Callable[[int], str]) -> list[Any]:
        raise NotImplementedError

    def _probe(self) -> list[Any]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """The embedding dimension D (read from one probe input, so it holds for any model family)."""
        if self._dim is None:
            self._dim = int(self.encode(self._probe()).shape[1])
        return self._dim

    def encode(
        self,
        values: Sequence[Any],
        *,
        column: str | None = None,
        row_ids: Sequence[int] | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Float32, L2-normalised embeddings ``[len(values), D]``, computed ``batch_size`` rows at a time.

        ``column`` and ``row_ids`` only name the offending row in an :class:`EncoderError`.
        """
        import torch
        from tqdm.auto import tqdm

        def where(i: int) -> str:
            row = row_ids[i] if row_ids is not None else i
            return f"column '{column}', row {row}" if column else f"{self.modality} input {row}"

        outs = []
        starts = range(0, len(values), self.batch_size)
        bar = tqdm(
            starts,
            desc=f"embed {self.encoder_id}",
            unit="batch",
            disable=not show_progress or len(starts) < 2,
            file=sys.stderr,
        )
        with torch.inference_mode():
            for s in bar:  # decode one batch at a time: a long list of images never sits in memory at once
                items = self._prepare(values[s : s + self.batch_size], lambda i, s=s: where(s + i))
                v = self._forward(items).float()
                outs.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        if not outs:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(np.concatenate(outs), dtype=np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder_id!r}, pooling={self.pooling!r}, device={str(self.device)!r})"


def _features(out: Any, name: str) -> Any:
    # CLIP-like get_*_features return a BaseModelOutputWithPooling holding the projection as pooler_output
    # (transformers 5); models that still return the bare tensor are taken as they are
    if hasattr(out, "shape"):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out[name]


class ImageEncoder(_Encoder):
    """Image embeddings from a transformers vision or joint image-text model (see the module docstring).

    Inputs: PIL images, uint8 numpy arrays (grayscale HxW or HxWxC, made RGB), ``datasets`` Image dicts
    or file paths. Preprocessing is the model's own ``AutoImageProcessor`` (``preprocessor_config.json``).
    """

    modality = "image"

    def _load_preprocessor(self) -> None:
        from transformers import AutoImageProcessor

        if not any(
            (self.folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")
        ):
            raise EncoderError(
                f"{self.name_or_path}: has no preprocessor_config.json; an image encoder needs its image "
                "processor (save it beside the model with processor.save_pretrained)"
            )
        try:
            self.processor = AutoImageProcessor.from_pretrained(self.folder)
        except (OSError, ValueError, KeyError) as err:
            raise EncoderError(
                f"{self.name_or_path}: has no usable image processor (preprocessor_config.json): {err}"
            ) from None

    def _auto_pooling(self) -> str:
        if hasattr(self.model, "get_image_features"):
            return "projection"
        embeddings = getattr(self.model, "embeddings", None)
        if getattr(embeddings, "cls_token", None) is not None and not getattr(
            self.model.config, "use_mean_pooling", False
        ):
            return "cls"
        return "pooler"

    def _prepare(self, values: Sequence[Any], where: Callable[[int], str]) -> list[Any]:
        return [to_rgb_image(v, where(i)) for i, v in enumerate(values)]

    def _probe(self) -> list[Any]:
        return [np.zeros((32, 32), np.uint8)]

    def _forward(self, items: list[Any]) -> Any:
        pixels = self.processor(images=items, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        if self.pooling == "projection":
            return _features(self.model.get_image_features(pixel_values=pixels), "image_embeds")
        out = self.model(pixel_values=pixels)
        return _pool(out, None, self.pooling, self.name_or_path)


class TextEncoder(_Encoder):
    """Text embeddings from a transformers text or joint image-text model (see the module docstring).

    Inputs: strings, tokenized by the model's ``AutoTokenizer``, padded per batch and truncated to
    ``max_length`` (default: the smallest of 512, the tokenizer's limit, the position embeddings' limit and
    a sentence-transformers folder's ``max_seq_length``, so long captions never index past the positions).
    """

    modality = "text"

    def __init__(
        self,
        name_or_path: str | Path,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | Any | None = None,
        batch_size: int = 64,
        pooling: Pooling = "auto",
        max_length: int | None = None,
    ) -> None:
        self._max_length_arg = max_length
        super().__init__(name_or_path, revision, device, dtype, batch_size, pooling)
        # encoder-decoder models (T5) embed with their encoder alone
        self._module = (
            self.model.get_encoder()
            if getattr(self.model.config, "is_encoder_decoder", False)
            else self.model
        )
        target = self.model.get_text_features if self.pooling == "projection" else self._module.forward
        self._accepted = set(inspect.signature(target).parameters)

    def _load_preprocessor(self) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EncoderError(f"{self.name_or_path}: has no usable tokenizer: {err}") from None
        limits = [512]
        if self._max_length_arg is not None:
            limits = [self._max_length_arg]
        else:
            if 0 < (self.tokenizer.model_max_length or 0) < 1_000_000:
                limits.append(int(self.tokenizer.model_max_length))
            st_config = self.folder / "sentence_bert_config.json"  # sentence-transformers' own limit
            st_limit = (
                json.loads(st_config.read_text()).get("max_seq_length") if st_config.is_file() else None
            )
            if st_limit:
                limits.append(int(st_limit))
            text_cfg = self.model.config.get_text_config()
            if getattr(text_cfg, "max_position_embeddings", None):
                limits.append(int(text_cfg.max_position_embeddings))
        self.max_length = min(limits)

    def _auto_pooling(self) -> str:
        if hasattr(self.model, "get_text_features"):
            return "projection"
        st_pooling = self.folder / "1_Pooling" / "config.json"
        if st_pooling.is_file():
            cfg = json.loads(st_pooling.read_text())
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if not cfg.get("pooling_mode_mean_tokens", True):
                raise EncoderError(
                    f"{st_pooling}: asks for a pooling hubtools does not reproduce ({cfg}); "
                    "pass pooling='mean' or 'cls' explicitly"
                )
        return "mean"

    def _prepare(self, values: Sequence[Any], where: Callable[[int], str]) -> list[Any]:
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            raise EncoderError(f"{where(bad[0])}: expected a string, got {type(values[bad[0]]).__name__}")
        return list(values)

    def _probe(self) -> list[Any]:
        return ["a"]

    def _forward(self, items: list[Any]) -> Any:
        enc = self.tokenizer(
            items, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._accepted}
        if self.pooling == "projection":
            return _features(self.model.get_text_features(**inputs), "text_embeds")
        return _pool(
            self._module(**inputs), enc["attention_mask"].to(self.device), self.pooling, self.name_or_path
        )


def _pool(out: Any, mask: Any, pooling: str, name: str) -> Any:
    """One vector per input from a model output: ``cls``, (masked) ``mean`` or the model's ``pooler``."""
    if pooling == "pooler":
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise EncoderError(f"{name}: the model gives no pooler_output; use pooling 'cls' or 'mean'")
        return pooled.flatten(1)
    h = out.last_hidden_state
    if h.ndim == 4:  # convolutional feature map [B, C, H, W]: no tokens, average the positions
        if pooling == "cls":
            raise EncoderError(
                f"{name}: a convolutional model has no class token; use pooling 'mean' or 'pooler'"
            )
        return h.mean(dim=(2, 3))
    if pooling == "cls":
        return h[:, 0]
    if mask is None:
        return h.mean(dim=1)
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


# --------------------------------------------------------------------------- embed_fn and datasets


class EmbedFn:
    """``embed_fn(batch) -> {column: float32[B, D]}`` for InfoGrowth and ``Dataset.map(batched=True)``.

    ``encoder_id`` is the combined id to record with the embeddings: the encoder's id when there is one
    encoder or both columns come from the same joint model, else ``"image=<id>;text=<id>"``.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder | None = None,
        text_encoder: TextEncoder | None = None,
        image_column: str = "image",
        text_column: str = "text",
        emb_column: str = "img_emb",
        text_emb_column: str = "txt_emb",
    ) -> None:
        if image_encoder is None and text_encoder is None:
            raise EncoderError("an embed_fn needs an image encoder, a text encoder or both")
        if image_encoder is not None and text_encoder is not None and emb_column == text_emb_column:
            raise EncoderError(f"the image and text embeddings cannot share the column '{emb_column}'")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_column, self.text_column = image_column, text_column
        self.emb_column, self.text_emb_column = emb_column, text_emb_column
        self._owner_pid = os.getpid()  # Dataset.map(num_proc>1) calls copies of this object in forked workers

    @property
    def encoder_id(self) -> str:
        ids = [e.encoder_id for e in (self.image_encoder, self.text_encoder) if e is not None]
        if len(ids) == 1 or ids[0] == ids[1]:
            return ids[0]
        return f"image={ids[0]};text={ids[1]}"

    def _jobs(self) -> list[tuple[_Encoder, str, str]]:
        jobs: list[tuple[_Encoder, str, str]] = []
        if self.image_encoder is not None:
            jobs.append((self.image_encoder, self.image_column, self.emb_column))
        if self.text_encoder is not None:
            jobs.append((self.text_encoder, self.text_column, self.text_emb_column))
        return jobs

    @property
    def input_columns(self) -> list[str]:
        """The raw columns read (image and/or text)."""
        return [src for _, src, _ in self._jobs()]

    @property
    def dims(self) -> dict[str, int]:
        """Output column -> embedding dimension."""
        return {dst: enc.dim for enc, _, dst in self._jobs()}

    def cache_key(self) -> str:
        """Everything that changes the output columns: ids, columns, dtype, text length limit."""
        parts = [
            {
                "id": enc.encoder_id,
                "src": src,
                "dst": dst,
                "dtype": str(enc.dtype),
                "max_length": getattr(enc, "max_length", None),
            }
            for enc, src, dst in self._jobs()
        ]
        return json.dumps(parts, sort_keys=True)

    def check_columns(self, columns: Sequence[str], source: str = "the dataset") -> None:
        """:class:`EncoderError` naming the missing input column(s) before any work starts."""
        missing = [c for c in self.input_columns if c not in columns]
        if missing:
            raise EncoderError(f"{source} has no column(s) {missing} to embed (columns: {list(columns)})")

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        if os.getpid() != self._owner_pid:
            self._in_forked_worker()
        out = {}
        for enc, src, dst in self._jobs():
            if src not in batch:
                raise EncoderError(f"the batch has no column '{src}' to embed (columns: {sorted(batch)})")
            out[dst] = enc.encode(batch[src], column=src, row_ids=indices)
        return out

    @staticmethod
    def _in_forked_worker() -> None:
        import torch

        if torch.get_num_threads() > 1:
            # a forked worker must not enter the OpenMP thread pool its parent started: it hangs forever.
            # num_proc workers of one thread each use the cores instead
            torch.set_num_threads(1)


def make_embed_fn(
    image_encoder: ImageEncoder | None = None,
    text_encoder: TextEncoder | None = None,
    image_column: str = "image",
    text_column: str = "text",
    emb_column: str = "img_emb",
    text_emb_column: str = "txt_emb",
) -> EmbedFn:
    """An ``embed_fn`` for ``InfoGrowth(embed_fn=..., encoder_id=fn.encoder_id)`` or :func:`embed_dataset`."""
    return EmbedFn(image_encoder, text_encoder, image_column, text_column, emb_column, text_emb_column)


def embed_dataset(
    ds: Any,
    embed_fn: EmbedFn,
    batch_size: int = 64,
    num_proc: int | None = None,
    show_progress: bool = True,
) -> Any:
    """``ds`` with the embedding columns added, typed ``List(Value("float32"), length=D)``.

    A ``Dataset`` is mapped with a progress bar named after the encoder and a fingerprint made of the
    source's fingerprint and :meth:`EmbedFn.cache_key`, so a rerun with the same encoder reads the cached
    columns and another encoder never does. ``num_proc`` splits the work over forked CPU processes of one
    thread each; it is refused for encoders on a GPU, because CUDA cannot be used in a forked process
    (embed one shard per GPU process instead: ``ds.shard(n, i)``). An ``IterableDataset`` is mapped lazily:
    its embeddings are computed on every pass over it, so precompute on a ``Dataset`` when possible.
    """
    from datasets import Dataset, Features, IterableDataset, List, Value
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    if not isinstance(ds, (Dataset, IterableDataset)):
        raise EncoderError(
            f"embed_dataset: expected a datasets Dataset or IterableDataset, got {type(ds).__name__}"
        )
    embed_fn.check_columns(ds.column_names or list(embed_fn.input_columns))
    if num_proc is not None and num_proc > 1:
        gpu = [e.encoder_id for e, _, _ in embed_fn._jobs() if e.device.type != "cpu"]
        if gpu:
            raise EncoderError(
                f"num_proc={num_proc} forks worker processes, which cannot use the GPU encoder(s) {gpu}; "
                "use num_proc=None (one process per GPU: embed ds.shard(n, i) in each)"
            )
    features = None
    if ds.features is not None:
        features = Features(
            {**ds.features, **{c: List(Value("float32"), length=d) for c, d in embed_fn.dims.items()}}
        )
    if isinstance(ds, IterableDataset):
        return ds.map(embed_fn, with_indices=True, batched=True, batch_size=batch_size, features=features)
    fingerprint = hashlib.sha256(f"{ds._fingerprint}|embed|{embed_fn.cache_key()}".encode()).hexdigest()[:32]
    was_enabled = is_progress_bar_enabled()
    (enable_progress_bar if show_progress else disable_progress_bar)()
    try:
        return ds.map(
            embed_fn,
            with_indices=True,
            batched=True,
            batch_size=batch_size,
            features=features,
            num_proc=num_proc,
            new_fingerprint=fingerprint,
            desc=f"embed {embed_fn.encoder_id}",
        )
    finally:
        (enable_progress_bar if was_enabled else disable_progress_bar)()


def embed_fn_from_flags(
    image_encoder: str | None,
    text_encoder: str | None,
    image_column: str = "image",
    text_column: str = "text",
    emb_column: str = "img_emb",
    text_emb_column: str | None = "txt_emb",
    batch_size: int = 64,
    *,
    image_revision: str | None = None,
    text_revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[EmbedFn | None, str | None]:
    """``(embed_fn, encoder_id)`` for ``hubtools data infogrowth --image-encoder X [--text-encoder Y]``.

    Contract:
    - neither encoder given: ``(None, None)``; the dataset must already hold the embedding columns;
    - ``image_encoder`` fills ``emb_column`` from ``image_column``; ``text_encoder`` fills ``text_emb_column``
      from ``text_column`` (``text_emb_column=None``, image-label mode, with a text encoder is an error);
    - both given: they must be the same joint image-text model (CLIP-like, ``projection`` pooling), because
      the image-text cleaner scores a pair by cos(image, caption), which is meaningless across two
      unrelated embedding spaces; the model is loaded once;
    - the returned ``encoder_id`` is what ``InfoGrowth(encoder_id=...)`` records, so a state built with one
      encoder is refused by a run with another.
    Raises :class:`EncoderError` (a ``HubtoolsError``) naming the folder, repo id or column.
    """
    if image_encoder is None and text_encoder is None:
        return None, None
    if text_encoder is not None and text_emb_column is None:
        raise EncoderError(
            "--text-encoder embeds captions for image-text curation: give --text-emb-column, or drop --text-encoder"
        )
    img = (
        ImageEncoder(image_encoder, image_revision, device, dtype, batch_size)
        if image_encoder is not None
        else None
    )
    txt = (
        TextEncoder(text_encoder, text_revision, device, dtype, batch_size)
        if text_encoder is not None
        else None
    )
    if (
        img is not None
        and txt is not None
        and (img.encoder_id != txt.encoder_id or img.pooling != "projection")
    ):
        raise EncoderError(
            f"image-text curation compares image and caption embeddings by cosine, so both must come from one "
            f"joint image-text model (CLIP-like); got image encoder {img.encoder_id} ({img.pooling} pooling) and "
            f"text encoder {txt.encoder_id} ({txt.pooling} pooling)"
        )
    fn = make_embed_fn(img, txt, image_column, text_column, emb_column, text_emb_column or "txt_emb")
    return fn, fn.encoder_id


# --------------------------------------------------------------------------- CLI


class EmbedConfig(StrictModel):
    """``hubtools data embed`` settings (the flags' names), for ``--config FILE.yaml``."""

    dataset: str | None = None
    split: tuple[str, ...] = ()
    image_encoder: str | None = None
    image_revision: str | None = None
    image_column: str = "image"
    text_encoder: str | None = None
    text_revision: str | None = None
    text_column: str = "text"
    emb_column: str = "img_emb"
    text_emb_column: str = "txt_emb"
    batch_size: int = 64
    num_proc: int | None = None
    device: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    out: Path | None = None
    push_to_hub: str | None = None
    private: bool = False


def _split_names(dataset: str) -> list[str]:
    from datasets import get_dataset_split_names

    path = Path(dataset)
    if (path / "dataset_dict.json").is_file():
        return list(json.loads((path / "dataset_dict.json").read_text())["splits"])
    if (path / "dataset_info.json").is_file():
        return ["train"]  # a save_to_disk Dataset: one unnamed split
    try:
        return list(get_dataset_split_names(str(path) if path.is_dir() else dataset))
    except (ValueError, FileNotFoundError, OSError) as err:
        raise EncoderError(f"{dataset}: cannot list its splits: {err}") from None


def _open_splits(dataset: str, splits: Sequence[str]) -> Iterator[tuple[str, Any]]:
    from hubtools.data.cli import _open_split  # lazy: cli.py imports this module

    path = Path(dataset)
    if not path.exists() and (dataset.startswith(("/", ".", "~")) or dataset.count("/") > 1):
        raise EncoderError(f"{dataset}: no such dataset folder")
    for split in splits or _split_names(dataset):
        yield split, _open_split(dataset, split, streaming=False)


def embed_to_folder(cfg: EmbedConfig, show_progress: bool = True) -> dict[str, Any]:
    """Run ``hubtools data embed``: embed every chosen split, write a Hub dataset folder, optionally push.

    The folder is the dataset repo: ``data/<split>-00000-of-00001.parquet`` (all source columns plus the
    embedding columns; image files are embedded as bytes, as ``push_to_hub`` does), ``embed.json`` (encoder
    ids, columns, dimensions, rows, library versions, seconds) and a ``README.md`` card.
    """
    import datasets
    import torch
    import transformers
    from datasets.features.features import require_storage_embed
    from datasets.table import embed_table_storage

    import hubtools
    from hubtools.hub.artifacts import atomic_dir
    from hubtools.hub.cards import render_card
    from hubtools.hub.publish import push_artifact

    if not cfg.dataset or cfg.out is None:
        raise EncoderError("--dataset and --out are required (as flags or config keys)")
    if cfg.image_encoder is None and cfg.text_encoder is None:
        raise EncoderError("give --image-encoder, --text-encoder or both")
    t0 = time.perf_counter()
    img = (
        ImageEncoder(cfg.image_encoder, cfg.image_revision, cfg.device, cfg.dtype, cfg.batch_size)
        if cfg.image_encoder
        else None
    )
    txt = (
        TextEncoder(cfg.text_encoder, cfg.text_revision, cfg.device, cfg.dtype, cfg.batch_size)
        if cfg.text_encoder
        else None
    )
    fn = make_embed_fn(img, txt, cfg.image_column, cfg.text_column, cfg.emb_column, cfg.text_emb_column)
    embedded = {}
    for split, ds in _open_splits(cfg.dataset, cfg.split):
        fn.check_columns(ds.column_names, f"{cfg.dataset} split '{split}'")
        embedded[split] = embed_dataset(ds, fn, cfg.batch_size, cfg.num_proc, show_progress)
    out = Path(cfg.out)
    encoders = {col: enc.encoder_id for enc, _, col in fn._jobs()}
    record = {
        "source": {"dataset": cfg.dataset, "splits": list(embedded)},
        "encoder_id": fn.encoder_id,
        "encoders": {
            dst: {
                "encoder_id": enc.encoder_id,
                "input_column": src,
                "pooling": enc.pooling,
                "dim": enc.dim,
                "dtype": str(enc.dtype).removeprefix("torch."),
            }
            for enc, src, dst in fn._jobs()
        },
        "rows": {s: d.num_rows for s, d in embedded.items()},
        "versions": {
            "hubtools": hubtools.__version__,
            "datasets": datasets.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir()
        for split, ds in embedded.items():
            if require_storage_embed(ds.features):  # image paths would dangle once pushed: store the bytes
                ds = ds.with_format("arrow").map(
                    embed_table_storage,
                    batched=True,
                    keep_in_memory=True,
                    desc=f"store {split} files as bytes",
                )
            ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        (tmp / "embed.json").write_text(json.dumps(record, indent=2) + "\n")
        first = next(iter(embedded.values()))
        name = Path(cfg.dataset).name if Path(cfg.dataset).exists() else cfg.dataset
        card_data: dict[str, Any] = {
            "pretty_name": f"{name} (embedded)",
            "tags": ["embeddings", "infogrowth"],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in embedded],
                }
            ],
        }
        if not Path(cfg.dataset).exists():
            card_data["source_datasets"] = [cfg.dataset]
        card = render_card(
            "dataset",
            card_data=card_data,
            repo_id=cfg.push_to_hub,
            summary=f"`{cfg.dataset}` with embedding columns {', '.join(f'`{c}`' for c in encoders)} "
            f"computed by hubtools (`hubtools data embed`), ready for `hubtools data infogrowth`.",
            features={c: str(f) for c, f in first.features.items()},
            splits=record["rows"],
            source_data=f"`{cfg.dataset}`, splits {', '.join(f'`{s}`' for s in embedded)}.",
            curation="\n".join(
                [
                    "| column | from | encoder | pooling | dim |",
                    "|---|---|---|---|---|",
                    *[
                        f"| `{dst}` | `{v['input_column']}` | `{v['encoder_id']}` | {v['pooling']} | {v['dim']} |"
                        for dst, v in record["encoders"].items()
                    ],
                    "",
                    "Vectors are float32 and L2-normalised. `embed.json` records the encoders (id@revision) "
                    "and library versions.",
                ]
            ),
        )
        card.save(tmp / "README.md")
    if cfg.push_to_hub:
        push_artifact(
            out,
            cfg.push_to_hub,
            repo_type="dataset",
            private=cfg.private,
            commit_message=f"Embeddings of {cfg.dataset} ({fn.encoder_id})",
        )
    return {
        "out": str(out),
        "repo_id": cfg.push_to_hub,
        "encoder_id": fn.encoder_id,
        "rows": record["rows"],
        "dims": fn.dims,
    }


@click.command("embed")
@click.option("--dataset", default=None, help="Hub dataset repo id, a data folder, or a save_to_disk folder.")
@click.option("--split", multiple=True, help="Split(s) to embed (repeat the flag); default: every split.")
@click.option(
    "--image-encoder", default=None, help="Image encoder: a transformers model folder or Hub model id."
)
@click.option("--image-revision", default=None, help="Branch, tag or commit of a Hub image encoder.")
@click.option("--image-column", default="image", show_default=True, help="Column holding the images.")
@click.option(
    "--text-encoder", default=None, help="Text encoder: a transformers model folder or Hub model id."
)
@click.option("--text-revision", default=None, help="Branch, tag or commit of a Hub text encoder.")
@click.option("--text-column", default="text", show_default=True, help="Column holding the captions.")
@click.option("--emb-column", default="img_emb", show_default=True, help="Output column of image embeddings.")
@click.option(
    "--text-emb-column", default="txt_emb", show_default=True, help="Output column of text embeddings."
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Rows per forward pass.")
@click.option("--num-proc", type=int, default=None, help="CPU worker processes (CPU encoders only).")
@click.option("--device", default=None, help="torch device; default cuda when available, else cpu.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help="Model dtype.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output dataset folder."
)
@click.option("--push-to-hub", default=None, help="Publish the folder as this dataset repo.")
@click.option("--private", is_flag=True, help="Create the pushed repo private.")
@config_option(EmbedConfig)
def embed_command(**kwargs: Any) -> None:
    """Add image and/or text embedding columns to DATASET with a transformers encoder.

    CLIP-like models give projected features (image and text in one space); ViT/DINOv2 the class
    token; text encoders the attention-masked mean of token states. Vectors are float32, L2-normalised,
    typed List(float32, length=D). A progress bar per split names the encoder (id@revision).
    """
    try:
        cfg = EmbedConfig(**kwargs)
        summary = embed_to_folder(cfg)
    except HubtoolsError as err:
        raise click.ClickException(str(err)) from None
    except ValueError as err:  # pydantic validation of the settings
        raise click.UsageError(str(err)) from None
    rows = " ".join(f"{s}={n}" for s, n in summary["rows"].items())
    dims = " ".join(f"{c}[{d}]" for c, d in summary["dims"].items())
    click.echo(f"embedded {rows} -> {dims} with {summary['encoder_id']} -> {summary['out']}")
    if summary["repo_id"]:
        click.echo(f"pushed to datasets/{summary['repo_id']}")
