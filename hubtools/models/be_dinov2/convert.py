"""Foreign ViT checkpoints (DINOv2, DINOv2 training runs, RETFound) -> transformers ``be-dinov2`` key names.

Four source layouts, all ``blocks.{i}.attn.qkv`` style (facebookresearch/dinov2, timm):

- ``dinov2``: a torch.hub / ``dinoret.pth`` / ``bedinoret.pth`` backbone state dict (LayerScale
  ``ls1/ls2.gamma``, optional ``register_tokens``).
- ``dinov2-train``: a DINOv2 (or DINORET) training checkpoint, ``teacher.backbone.*`` /
  ``student.backbone.*`` plus ``*.dino_head.*``, ``*.ibot_head.*`` and loss centres. One branch's backbone
  is kept (the teacher unless asked for the student, as DINOv2 evaluates the teacher); heads, the other
  branch and the loss state are dropped and listed in the returned :class:`ConversionInfo`.
- ``retfound-mae``: RETFound's timm ViT (MAE pre-training). Its blocks have no LayerScale; the target
  ``Dinov2Layer`` always multiplies by ``layer_scale{1,2}.lambda1``, so those are written as ones (exact:
  ``x * 1.0 == x``; they stay trainable parameters in fine-tuning, as every LayerScale does). The MAE
  decoder (``decoder_*``) and its ``mask_token`` are dropped; ``fc_norm`` (global-pool checkpoints) becomes
  the final ``layernorm``.
- ``retfound-dinov2``: RETFound trained with the DINOv2 recipe: the ``dinov2``/``dinov2-train`` layout
  (teacher checkpoints included), or timm's export of it (``reg_token``, position embeddings without a
  CLS slot, ``head``/``fc_norm``).

RETFound-based weights are CC BY-NC 4.0: the licence travels in ``ConversionInfo.license`` and the converted
config's ``weights_license``, from which the model card takes its ``license``. Converting by explicit map
(not by letting ``from_pretrained`` initialise missing keys) makes a wrong or partial checkpoint an error.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hubtools.errors import ArtifactError

if TYPE_CHECKING:
    from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2Model

logger = logging.getLogger(__name__)

SOURCES = ("dinov2", "dinov2-train", "retfound-mae", "retfound-dinov2")
DEFAULT_LICENSE = "apache-2.0"  # the official DINOv2 weights
SOURCE_LICENSES = {
    "dinov2": DEFAULT_LICENSE,
    "dinov2-train": DEFAULT_LICENSE,
    "retfound-mae": "cc-by-nc-4.0",
    "retfound-dinov2": "cc-by-nc-4.0",
}
_DINOV2_SOURCES = ("dinov2", "dinov2-train", "retfound-dinov2")

# Loss state saved next to the two branches in a DINOv2 training checkpoint.
_LOSS_PREFIXES = ("dino_loss", "ibot_patch_loss", "koleo_loss")
# Projection heads inside a branch (DINOv2: dino_head, ibot_head; DINO v1: head).
_BRANCH_HEADS = ("dino_head", "ibot_head", "head")
# Wrapper segments of FSDP / activation-checkpointing modules; they never name a tensor.
_WRAPPER_SEGMENT = re.compile(r"(?:^|\.)(?:_fsdp_wrapped_module|_checkpoint_wrapped_module)(?=\.)")
_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # block_chunks checkpoints nest one more index
_BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
}
_EMBED_KEYS = frozenset(
    {
        "cls_token",
        "pos_embed",
        "mask_token",
        "register_tokens",
        "reg_token",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
        "fc_norm.weight",
        "fc_norm.bias",
    }
)


@dataclass
class ConversionInfo:
    """What a conversion did: the source layout, its licence, and everything not carried over."""

    source: str
    license: str
    detected: bool = False  # source inferred from the keys (and file name), not given
    branch: str | None = None  # "teacher" / "student" for training checkpoints
    dropped: dict[str, int] = field(default_factory=dict)  # key pattern -> number of tensors left out
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for logs, the CLI and the model card."""
        how = "detected" if self.detected else "given"
        parts = [f"source {self.source} ({how}), licence {self.license}"]
        if self.branch:
            parts.append(f"kept the {self.branch} backbone")
        if self.dropped:
            parts.append(
                "dropped " + ", ".join(f"{k} ({n} tensors)" for k, n in sorted(self.dropped.items()))
            )
        return "; ".join(parts + self.notes)


def _key_groups(keys) -> Counter:
    """``teacher.backbone.blocks.3.norm1.weight`` -> ``teacher.backbone.blocks``: how a layout is recognised."""
    groups: Counter = Counter()
    for key in keys:
        parts = []
        for part in key.split("."):
            if part.isdigit() or len(parts) == 3:
                break
            parts.append(part)
        groups[".".join(parts)] += 1
    return groups


def _describe(keys) -> str:
    groups = _key_groups(keys)
    shown = ", ".join(f"{g} ({n})" for g, n in groups.most_common(12))
    return shown + (f", ... {len(groups) - 12} more groups" if len(groups) > 12 else "")


def _drop(info: ConversionInfo, group: str, count: int = 1) -> None:
    info.dropped[group] = info.dropped.get(group, 0) + count


def _unwrap_keys(state_dict: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Remove FSDP/checkpoint wrapper segments and a DDP ``module.`` prefix shared by every key."""
    out = {_WRAPPER_SEGMENT.sub("", k): v for k, v in state_dict.items()}
    if len(out) != len(state_dict):
        raise ArtifactError("wrapper segments make two keys of the checkpoint collide")
    if out != state_dict:
        notes.append("removed FSDP/checkpoint wrapper segments from the key names")
    if out and all(k.startswith("module.") for k in out):
        out = {k.removeprefix("module."): v for k, v in out.items()}
        notes.append("removed the DDP 'module.' prefix")
    return out


def _is_training_checkpoint(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("teacher.", "student.")) for k in state_dict)


def _has_layerscale(backbone: dict[str, torch.Tensor]) -> bool:
    return any(_BLOCK_KEY.match(k) and k.endswith((".ls1.gamma", ".ls2.gamma")) for k in backbone)


def _split_training_checkpoint(
    state_dict: dict[str, torch.Tensor], branch: str, info: ConversionInfo
) -> dict[str, torch.Tensor]:
    """The backbone of ``branch``; heads, the other branch and the loss centres go to ``info.dropped``."""
    other = "student" if branch == "teacher" else "teacher"
    backbone: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(f"{branch}."):
            rest = key.removeprefix(f"{branch}.")
            head = rest.split(".", 1)[0]
            if head in _BRANCH_HEADS:
                _drop(info, f"{branch}.{head}.*")
            else:
                backbone[rest.removeprefix("backbone.")] = value
        elif key.startswith(f"{other}."):
            _drop(info, f"{other}.*")
        elif key.split(".", 1)[0] in _LOSS_PREFIXES:
            _drop(info, key.split(".", 1)[0] + ".*")
        else:
            unknown.append(key)
    if unknown:
        raise ArtifactError(
            f"unexpected keys outside the teacher/student branches of a training checkpoint: {_describe(unknown)}"
        )
    if not backbone:
        present = sorted({k.split(".", 1)[0] for k in state_dict})
        raise ArtifactError(f"the training checkpoint has no {branch} backbone (top-level groups: {present})")
    info.branch = branch
    return backbone


def detect_source(state_dict: dict[str, torch.Tensor], name_hint: str | None = None) -> str:
    """The source layout of ``state_dict`` (see the module docstring), from its keys.

    Keys cannot tell RETFound's DINOv2-recipe weights from Meta's, nor a RETFound fine-tune without its MAE
    decoder from any other timm ViT: for those ``name_hint`` (the file name) decides when it contains
    "retfound", otherwise the error asks for an explicit source. Unknown layouts raise with the key groups found.
    """
    sd = _unwrap_keys(state_dict, [])
    retfound = name_hint is not None and "retfound" in name_hint.lower()
    if _is_training_checkpoint(sd):
        branch_keys = {k.split(".", 1)[1] for k in sd if k.startswith(("teacher.", "student."))}
        backbone = {k.removeprefix("backbone."): None for k in branch_keys}
        if not _has_layerscale(backbone):
            raise ArtifactError(
                "a teacher/student training checkpoint whose blocks have no LayerScale (ls1/ls2.gamma): not a "
                f"DINOv2 run; found {_describe(sd)}"
            )
        return "retfound-dinov2" if retfound else "dinov2-train"
    if any(k.startswith("backbone.") for k in sd):
        sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
    if "patch_embed.proj.weight" not in sd or not any(_BLOCK_KEY.match(k) for k in sd):
        raise ArtifactError(
            "unrecognised checkpoint layout: expected a ViT with 'patch_embed.proj.weight' and 'blocks.N.*' "
            "(dinov2, retfound-mae, retfound-dinov2) or 'teacher.*'/'student.*' (dinov2-train); "
            f"found {_describe(sd)}"
        )
    if _has_layerscale(sd):
        return "retfound-dinov2" if retfound else "dinov2"
    if retfound or any(k.startswith("decoder_") for k in sd):
        return "retfound-mae"
    raise ArtifactError(
        "a ViT without LayerScale and without an MAE decoder: cannot tell whose weights these are (their "
        "licence depends on it); if this is RETFound, convert it with source='retfound-mae' "
        "(`hubtools be-dinov2 convert --source retfound-mae`). "
        f"Found {_describe(sd)}"
    )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    source: str | None = None,
    *,
    use_student: bool = False,
    num_attention_heads: int | None = None,
    mlp_ratio: int | None = None,
    name_hint: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, object], ConversionInfo]:
    """Convert a foreign state dict; returns ``(hf_state_dict, be_dinov2_config_kwargs, info)``.

    ``source``: one of :data:`SOURCES`, or ``None`` to detect it (:func:`detect_source`). The config is read
    from tensor shapes; heads are not stored, so ``num_attention_heads`` defaults to ``hidden_size // 64``
    (64-dim heads: every DINOv2 size and RETFound's ViT-L/16). ``image_size`` is ``patch_size`` times the
    stored position grid (16x16 for 224 px at patch 14, 37x37 for 518 px, 14x14 for RETFound-MAE).
    Keys that are neither converted nor known droppable parts (heads, decoder, other branch) are errors.
    """
    notes: list[str] = []
    sd = _unwrap_keys(state_dict, notes)
    detected = source is None
    if source is None:
        source = detect_source(sd, name_hint)
    if source not in SOURCES:
        raise ArtifactError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    info = ConversionInfo(source=source, license=SOURCE_LICENSES[source], detected=detected, notes=notes)
    training = _is_training_checkpoint(sd)
    if training and source in ("dinov2", "retfound-mae"):
        raise ArtifactError(
            f"the keys are a teacher/student training checkpoint ({_describe(sd)}): use source 'dinov2-train' "
            f"(or 'retfound-dinov2'), not {source!r}"
        )
    if source == "dinov2-train" and not training:
        raise ArtifactError(
            f"source 'dinov2-train' needs 'teacher.*'/'student.*' keys; found {_describe(sd)}"
        )
    if use_student and not training:
        raise ArtifactError("use_student needs a training checkpoint with 'student.*' keys")
    if training:
        backbone = _split_training_checkpoint(sd, "student" if use_student else "teacher", info)
    else:
        backbone = sd
        if any(k.startswith("backbone.") for k in backbone):
            backbone = {k.removeprefix("backbone."): v for k, v in backbone.items()}
    hf_state, config = _convert_backbone(backbone, info, num_attention_heads, mlp_ratio)
    logger.info("converted checkpoint: %s", info.summary())
    return hf_state, config, info


def _convert_backbone(
    sd: dict[str, torch.Tensor], info: ConversionInfo, num_attention_heads: int | None, mlp_ratio: int | None
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    mae = info.source == "retfound-mae"
    kept: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key in _EMBED_KEYS and not (mae and key == "mask_token"):
            kept[key] = value
        elif _BLOCK_KEY.match(key):
            kept[key] = value
        elif key.startswith("head."):
            _drop(info, "head.*")  # a classifier (timm / fine-tuned checkpoints)
        elif mae and (key.startswith("decoder_") or key == "mask_token"):
            _drop(info, "decoder_*" if key.startswith("decoder_") else "mask_token (MAE decoder)")
        else:
            unknown.append(key)
    if unknown:
        where = f" inside the {info.branch} branch" if info.branch else ""
        raise ArtifactError(f"unexpected keys for source {info.source!r}{where}: {_describe(unknown)}")
    try:
        cls_token, pos_embed, proj = kept["cls_token"], kept["pos_embed"], kept["patch_embed.proj.weight"]
    except KeyError as err:
        raise ArtifactError(
            f"not a {info.source} ViT state dict: missing key {err.args[0]!r}; found {_describe(sd)}"
        ) from None
    hidden = cls_token.shape[-1]
    patch = proj.shape[-1]

    positions = pos_embed.shape[1]
    if math.isqrt(positions - 1) ** 2 == positions - 1:
        grid = math.isqrt(positions - 1)
    elif math.isqrt(positions) ** 2 == positions:
        # timm's no_embed_class layout (its DINOv2-with-registers export): no CLS slot, and the CLS position
        # embedding is already folded into cls_token, so a zero slot reproduces the original sum.
        grid = math.isqrt(positions)
        pos_embed = torch.cat([pos_embed.new_zeros(1, 1, hidden), pos_embed], dim=1)
        info.notes.append("position embeddings had no CLS slot (timm no_embed_class): CLS slot set to 0")
    else:
        raise ArtifactError(f"pos_embed has {positions} positions: not a square grid with or without CLS")

    if "norm.weight" in kept:
        final_norm = "norm"
        if "fc_norm.weight" in kept:
            _drop(info, "fc_norm.*", sum(k.startswith("fc_norm.") for k in kept))
    elif "fc_norm.weight" in kept:
        final_norm = "fc_norm"
        info.notes.append(
            "fc_norm became the final layernorm, applied per token here; RETFound's global-pool feature is "
            "layernorm(mean of hidden_states[-1][:, 1:])"
        )
    else:
        raise ArtifactError(f"no final norm ('norm.*' or 'fc_norm.*') among {_describe(sd)}")

    out: dict[str, torch.Tensor] = {
        "embeddings.cls_token": cls_token,
        "embeddings.position_embeddings": pos_embed,
        "embeddings.patch_embeddings.projection.weight": proj,
        "embeddings.patch_embeddings.projection.bias": kept["patch_embed.proj.bias"],
        "layernorm.weight": kept[f"{final_norm}.weight"],
        "layernorm.bias": kept[f"{final_norm}.bias"],
    }
    if "mask_token" in kept:
        out["embeddings.mask_token"] = kept["mask_token"].reshape(1, hidden)
    else:
        # DINOv2's own initial value; keeps bool_masked_pos (iBOT in continued pretraining) usable.
        out["embeddings.mask_token"] = torch.zeros(1, hidden, dtype=cls_token.dtype)
        info.notes.append("no backbone mask_token: embeddings.mask_token set to zeros")
    registers = kept.get("register_tokens", kept.get("reg_token"))
    if "register_tokens" in kept and "reg_token" in kept:
        raise ArtifactError("both 'register_tokens' and 'reg_token' present")
    if registers is not None:
        out["embeddings.register_tokens"] = registers.reshape(1, -1, hidden)

    layers: set[int] = set()
    layerscale: set[int] = set()
    swiglu = False
    for key, value in kept.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            continue
        i, rest = int(match.group(1)), match.group(2)
        layers.add(i)
        prefix = f"encoder.layer.{i}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}attention.{name}.{kind}"] = part.clone()
        elif rest in ("mlp.w12.weight", "mlp.w12.bias"):
            swiglu = True
            kind = rest.rsplit(".", 1)[1]
            gate, up = value.chunk(2, dim=0)
            out[f"{prefix}mlp.gate_proj.{kind}"], out[f"{prefix}mlp.up_proj.{kind}"] = (
                gate.clone(),
                up.clone(),
            )
        elif rest in _BLOCK_MAP:
            if rest.startswith("ls"):
                layerscale.add(i)
            out[prefix + _BLOCK_MAP[rest]] = value
        else:
            raise ArtifactError(f"unexpected key {key!r} for source {info.source!r}")
    if layers != set(range(len(layers))):
        raise ArtifactError(f"block indices {sorted(layers)} are not contiguous from 0")
    if mae:
        if layerscale:
            raise ArtifactError(
                "blocks have LayerScale (ls1/ls2.gamma): not an MAE ViT; use source 'retfound-dinov2' or 'dinov2'"
            )
        for i in layers:
            for name in ("layer_scale1", "layer_scale2"):
                out[f"encoder.layer.{i}.{name}.lambda1"] = torch.ones(hidden, dtype=cls_token.dtype)
        info.notes.append("no LayerScale in the MAE blocks: layer_scale1/2 set to exactly 1")
    elif layerscale != layers:
        raise ArtifactError(
            f"blocks {sorted(layers - layerscale)} have no LayerScale (ls1/ls2.gamma), which every "
            f"{info.source} checkpoint has; for RETFound's MAE ViT use source 'retfound-mae'"
        )
    if mlp_ratio is None:
        first_fc1 = next((v for k, v in kept.items() if k.endswith(".mlp.fc1.weight")), None)
        mlp_ratio = 4 if swiglu or first_fc1 is None else first_fc1.shape[0] // hidden
    qkv_bias = any(k.endswith("attn.qkv.bias") for k in kept)
    config: dict[str, object] = {
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": num_attention_heads or max(hidden // 64, 1),
        "mlp_ratio": mlp_ratio,
        "patch_size": patch,
        "image_size": patch * grid,
        "qkv_bias": qkv_bias,
        "use_swiglu_ffn": swiglu,
        "use_mask_token": True,
        "layer_norm_eps": 1e-6,
        "num_register_tokens": 0 if registers is None else out["embeddings.register_tokens"].shape[1],
    }
    return out, config


def is_torch_hub_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for original-format keys (``blocks.*``, ``pos_embed``), possibly under ``teacher.backbone.``."""
    keys = [k.removeprefix("teacher.").removeprefix("backbone.") for k in _unwrap_keys(state_dict, [])]
    return "pos_embed" in keys or any(k.startswith("blocks.") for k in keys)


def torch_hub_to_hf(
    state_dict: dict[str, torch.Tensor],
    num_attention_heads: int | None = None,
    mlp_ratio: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """An official-DINOv2-layout checkpoint (``dinov2`` or ``dinov2-train``) as a plain ``Dinov2Model`` state
    dict and ``Dinov2Config`` kwargs: the base of ``expand_blocks``.

    A plain ``Dinov2Model`` holds neither register tokens nor a licence, so checkpoints with registers and
    RETFound weights (CC BY-NC 4.0) are refused here: :func:`convert_checkpoint` records both.
    """
    hf_state, config, info = convert_state_dict(
        state_dict, num_attention_heads=num_attention_heads, mlp_ratio=mlp_ratio
    )
    if info.source not in ("dinov2", "dinov2-train"):
        raise ArtifactError(
            f"{info.source} weights ({info.license}) must be converted with `hubtools be-dinov2 convert` "
            "(convert_checkpoint) first, which records their licence; use the converted folder as the base"
        )
    if config.pop("num_register_tokens"):
        raise ArtifactError(
            "DINOv2 checkpoints with register tokens convert with `hubtools be-dinov2 convert` "
            "(convert_checkpoint), not into a plain Dinov2Model"
        )
    return hf_state, config


def load_torch_hub_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a foreign ``.pth`` safely (``weights_only=True``: no unpickling of arbitrary objects).

    Training-run files are unwrapped: ``{"model": sd, "optimizer": ...}`` (DINOv2, MAE/RETFound),
    ``{"teacher": sd}`` (DINOv2's ``teacher_checkpoint.pth``, RETFound-DINOv2) and ``{"teacher": ...,
    "student": ...}`` (DINO) become ``teacher.*``/``student.*`` keys. ``argparse.Namespace`` (the ``args``
    entry MAE and DINO save) is allowed: it only holds attribute values.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt/pickled-object files
        raise ArtifactError(f"{path}: cannot read as a weights-only torch checkpoint: {err}") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        branches = {b: obj[b] for b in ("teacher", "student") if isinstance(obj.get(b), dict)}
        if branches:
            obj = {f"{b}.{k}": v for b, sd in branches.items() for k, v in sd.items()}
        else:
            wrapper = next(
                (w for w in ("model", "state_dict", "module") if isinstance(obj.get(w), dict)), None
            )
            if wrapper is not None:
                obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path}: expected a state dict of tensors")
    return obj


def convert_checkpoint(
    path: str | Path,
    expanded_indices: list[int] | None = None,
    num_attention_heads: int | None = None,
    *,
    source: str | None = None,
    use_student: bool = False,
    license: str | None = None,
) -> tuple[BeDinov2Model, ConversionInfo]:
    """A foreign checkpoint as a ``BeDinov2Model`` and what the conversion did (source, licence, dropped keys).

    ``expanded_indices`` marks which blocks were inserted (``bedinoret.pth``: [4, 9, 14], not stored in the
    file); ``source`` is detected from the keys and file name when ``None``; ``use_student`` keeps a training
    checkpoint's student instead of its teacher; ``license`` overrides the source's licence (recorded in the
    config as ``weights_license``). Loaded strictly: nothing is random.
    """
    from hubtools.models.be_dinov2.configuration_be_dinov2 import BeDinov2Config
    from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2Model

    path = Path(path)
    hf_state, config_kwargs, info = convert_state_dict(
        load_torch_hub_checkpoint(path),
        source,
        use_student=use_student,
        num_attention_heads=num_attention_heads,
        name_hint=path.name,
    )
    if license:
        info.license = license
    indices = sorted(expanded_indices or [])
    try:
        config = BeDinov2Config(
            **config_kwargs,
            original_num_hidden_layers=config_kwargs["num_hidden_layers"] - len(indices),
            expanded_layer_indices=indices or None,
            expansion_positions=[i - k - 1 for k, i in enumerate(indices)] or None,
            weights_license=info.license,
        )
    except ValueError as err:
        raise ArtifactError(f"{path}: {err}") from None
    model = BeDinov2Model(config)
    try:
        model.load_state_dict(hf_state, strict=True)
    except RuntimeError as err:
        raise ArtifactError(f"{path}: weights do not match the architecture: {err}") from None
    return model.eval(), info
