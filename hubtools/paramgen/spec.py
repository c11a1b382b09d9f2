"""`ParamSpec`: which tensors of a network a parameter generator produces, and in what order.

p-diff learns a distribution over *flat vectors*; everything that turns a vector back into
tensors of a real network (names, shapes, order) lives here, so a generated vector can be
checked against the network it is written into instead of failing deep inside torch.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# This file is also shipped inside every saved pipeline folder, where diffusers loads it as remote
# code in a process that may not have hubtools: there plain ValueError stands in for hubtools' error
# classes (which hubtools' CLI reports cleanly). They are looked up with importlib, not a `from`
# import in this try block, because diffusers scans shipped files for `from X import` lines and
# warns that a missing X is required, wherever the line stands.
try:
    _errors = importlib.import_module("hubtools.errors")
    ConfigError = _errors.ConfigError
    ArtifactError = _errors.ArtifactError
except ImportError:
    ConfigError = ArtifactError = ValueError


class ParamSpecError(ConfigError):
    """A parameter pattern matches nothing, or a vector/state dict does not fit the spec."""


@dataclass(frozen=True)
class ParamEntry:
    """One tensor of the subset: its name in the host's state dict, shape and offset in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class ParamSpec:
    """Ordered ``(name, shape, offset)`` entries; ``dim`` is the length of the flat vector."""

    def __init__(self, entries: Iterable[tuple[str, Iterable[int]]]) -> None:
        self.entries: list[ParamEntry] = []
        offset = 0
        for name, shape in entries:
            entry = ParamEntry(str(name), tuple(int(s) for s in shape), offset)
            self.entries.append(entry)
            offset += entry.numel
        if not self.entries:
            raise ParamSpecError("empty ParamSpec: no tensor selected")
        self.dim = offset

    @classmethod
    def from_model(cls, model: nn.Module, include: str | Iterable[str]) -> ParamSpec:
        """Select parameters by a regex (``re.search`` on the name) or an explicit list of names.

        ``named_parameters()`` order is kept, so the flat layout does not depend on how the
        pattern was written.
        """
        params = dict(model.named_parameters())
        if isinstance(include, str):
            pattern = re.compile(include)
            names = [n for n in params if pattern.search(n)]
            if not names:
                raise ParamSpecError(
                    f"parameter pattern {include!r} matches none of the model's "
                    f"{len(params)} parameters (e.g. {list(params)[:4]})"
                )
        else:
            wanted = list(include)
            missing = [n for n in wanted if n not in params]
            if missing:
                raise ParamSpecError(f"parameters {missing} are not in the model")
            names = [n for n in params if n in set(wanted)]
        return cls((n, params[n].shape) for n in names)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> ParamSpec:
        """Every tensor of ``state`` sorted by key (the layout COND P-DIFF uses for LoRA adapters)."""
        return cls((k, state[k].shape) for k in sorted(state))

    @classmethod
    def from_peft(cls, peft_model: nn.Module, include_modules_to_save: bool = False) -> ParamSpec:
        """The ``lora_A``/``lora_B`` tensors of a PEFT model's saved state dict, sorted by key."""
        # importlib, not a `from peft import` line: a shipped copy of this file would make diffusers warn
        # that peft is required just to load a pipeline (see the hubtools.errors look-up above).
        state = importlib.import_module("peft").get_peft_model_state_dict(peft_model)
        keep = {
            k: v
            for k, v in state.items()
            if "lora_A" in k or "lora_B" in k or (include_modules_to_save and "modules_to_save" in k)
        }
        if not keep:
            raise ParamSpecError(
                f"the PEFT model's state dict has no lora_A/lora_B tensors (keys: {list(state)[:4]})"
            )
        return cls.from_state_dict(keep)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def flatten(self, source: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The float32 vector [dim] of the subset taken from a model or a state dict."""
        state = dict(source.named_parameters()) if isinstance(source, nn.Module) else source
        parts = []
        for e in self.entries:
            if e.name not in state:
                raise ParamSpecError(f"tensor {e.name!r} of the spec is missing from the source")
            t = state[e.name]
            if tuple(t.shape) != e.shape:
                raise ParamSpecError(f"tensor {e.name!r} has shape {tuple(t.shape)}, the spec says {e.shape}")
            parts.append(t.detach().reshape(-1).float().cpu())
        return torch.cat(parts)

    def check_vector(self, vec: torch.Tensor) -> torch.Tensor:
        if vec.dim() != 1 or vec.numel() != self.dim:
            raise ParamSpecError(
                f"parameter vector has shape {tuple(vec.shape)}; this spec needs ({self.dim},)"
            )
        return vec

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """``name -> tensor`` views of ``vec`` in the spec's shapes."""
        vec = self.check_vector(vec)
        return {e.name: vec[e.offset : e.offset + e.numel].reshape(e.shape) for e in self.entries}

    def load_into(self, model: nn.Module, vec: torch.Tensor) -> nn.Module:
        """Write ``vec`` into ``model``'s parameters in place and return the model."""
        params = dict(model.named_parameters())
        tensors = self.unflatten(vec)
        for name, value in tensors.items():
            if name not in params or tuple(params[name].shape) != tuple(value.shape):
                got = tuple(params[name].shape) if name in params else "missing"
                raise ParamSpecError(
                    f"the model does not fit the spec: {name!r} is {got}, the spec says {tuple(value.shape)}"
                )
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value.to(params[name].dtype))
        return model

    def model_with(self, host: nn.Module, vec: torch.Tensor) -> nn.Module:
        """A deep copy of ``host`` (eval mode) holding ``vec``: the host itself is never modified."""
        return self.load_into(copy.deepcopy(host), vec).eval()

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "entries": [{"name": e.name, "shape": list(e.shape)} for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        try:
            spec = cls((e["name"], e["shape"]) for e in data["entries"])
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"malformed parameter spec: {err!r}") from None
        if "dim" in data and int(data["dim"]) != spec.dim:
            raise ArtifactError(f"parameter spec says dim {data['dim']} but its entries add up to {spec.dim}")
        return spec

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ParamSpec:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactError(f"{path}: cannot read parameter spec: {err}") from None
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpec) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"ParamSpec(dim={self.dim}, tensors={len(self.entries)})"
