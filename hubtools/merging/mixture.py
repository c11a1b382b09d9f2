"""Model-GLUE mixtures of merged clusters (spec 2.8): model, block and FFN level, loadable by ``from_pretrained``.

- ``level="model"`` / ``"block"`` write hubtools' registered ``model_type: hubtools_glue_mixture``
  (:mod:`hubtools.merging.mixture_model`).
- ``level="ffn"`` writes a plain ``MixtralForCausalLM`` through mergekit-moe's Python API
  (``is_bad_config`` first, because ``build()`` calls ``sys.exit`` on a bad config; device cpu).

Gates are built here, not by mergekit: ``v_e = normalize(mean_P pool(h) - mean_N pool(h))`` with the same
padding-free pooling the router uses (``pool_hidden``), optionally centred by ``b_e = -v_e . mu``. mergekit's
``hidden`` mode pools the last token (every prompt of a task may end in the same token) and ``hidden_avg``
averages padding in, and neither matches the pooling at routing time.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from hubtools.errors import ConfigError

__all__ = ["GATE_COND_WARN", "build_mixture", "route_prompts", "routing_accuracy"]

GATE_COND_WARN = 5.0
MIXTURE_INFO_FILENAME = "mixture.json"
MOE_RECIPE_FILENAME = "mergekit_moe_config.yml"
LEVELS = ("model", "block", "ffn")
IO_MODES = ("auto", "dense", "expert")
AUTO_IO_THRESHOLD = 0.5

PathLike = str | os.PathLike


def _check_prompts(
    name: str, prompts: Sequence[Sequence[str]] | None, n: int, required: bool
) -> list[list[str]] | None:
    if prompts is None:
        if required:
            raise ConfigError(f"{name}: one list of gate prompts per expert is required")
        return None
    if isinstance(prompts, str) or len(prompts) != n:
        got = "a string" if isinstance(prompts, str) else f"{len(prompts)} lists"
        raise ConfigError(f"{name}: expected {n} lists of prompts (one per expert), got {got}")
    out = []
    for e, group in enumerate(prompts):
        if isinstance(group, str) or not all(isinstance(p, str) and p.strip() for p in group):
            raise ConfigError(f"{name}[{e}]: must be a list of non-empty strings")
        if required and not group:
            raise ConfigError(f"{name}[{e}]: expert {e} has no prompts; every expert needs at least one")
        out.append(list(group))
    return out


def _default_negatives(prompts: list[list[str]]) -> list[list[str]]:
    """N_e = the union of the other experts' positive prompts (deduplicated, order kept)."""
    out = []
    for e in range(len(prompts)):
        seen: dict[str, None] = {}
        for j, group in enumerate(prompts):
            if j != e:
                seen.update(dict.fromkeys(p for p in group if p not in prompts[e]))
        out.append(list(seen))
    return out


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Right-padded batch: positions of real tokens do not depend on the batch, so gates are batch-free."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{folder}: no usable tokenizer ({err}); gate prompts need the dense model's tokenizer"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.pad_token is None:
        raise ConfigError(f"{folder}: the tokenizer has neither a pad nor an eos token")
    return tok


def _gate_vectors(
    pooled: dict[str, torch.Tensor], prompts: list[list[str]], negatives: list[list[str]], center: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """W [E, H] and b [E] from pooled states per prompt (spec 2.8)."""
    rows, biases = [], []
    mu = torch.stack(list(pooled.values())).mean(dim=0)
    for pos, neg in zip(prompts, negatives, strict=True):
        v = torch.stack([pooled[p] for p in pos]).mean(dim=0)
        if neg:
            v = v - torch.stack([pooled[q] for q in neg]).mean(dim=0)
        v = v / v.norm().clamp(min=1e-8)
        rows.append(v)
        biases.append(-(v @ mu) if center else torch.zeros(()))
    return torch.stack(rows), torch.stack(biases)


def _warn_condition(weights: torch.Tensor, layer: int, default_negatives: bool) -> float:
    """cond(W_l), with a warning above 5 (spec 2.8).

    Two experts with the default negatives have rows v and -v by construction (a single separating
    direction, which is what a 2-way split needs), so that case is reported but not warned about.
    """
    cond = float(torch.linalg.cond(weights.double())) if weights.shape[0] > 1 else 1.0
    if cond > GATE_COND_WARN and not (default_negatives and weights.shape[0] == 2):
        warnings.warn(
            f"gate at layer {layer}: condition number {cond:.1f} > {GATE_COND_WARN}; the experts' prompts are too "
            "similar in this model's hidden states, so one expert will take most inputs",
            RuntimeWarning,
            stacklevel=4,
        )
    return cond


def _unique(prompts: list[list[str]], negatives: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(p for group in prompts + negatives for p in group))


def _public(path: Path) -> str:
    from hubtools.merging.recipe import HUB_REFS

    return HUB_REFS.get(str(path), str(path))


def _check_vocab(dense_tok: Any, expert: Path) -> None:
    """Whole experts read the dense tokenizer's ids: token -> id must agree on the shared vocabulary."""
    if not any((expert / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return
    theirs = _load_tokenizer(expert).get_vocab()
    ours = dense_tok.get_vocab()
    shared = set(ours) & set(theirs)
    if len(shared) < min(len(ours), len(theirs)) or any(ours[t] != theirs[t] for t in shared):
        raise ConfigError(
            f"{expert}: its tokenizer assigns different ids than the dense model's; experts must "
            "share the tokenizer's ids"
        )


def build_mixture(
    dense: PathLike,
    experts: Sequence[PathLike],
    out_dir: PathLike,
    *,
    level: Literal["model", "block", "ffn"] = "model",
    num_dense_layers: int = 0,
    prompts: Sequence[Sequence[str]] | None = None,
    negative_prompts: Sequence[Sequence[str]] | None = None,
    gate_pooling: Literal["mean", "last"] = "mean",
    router_bias: Literal["center", "none"] = "center",
    top_k: int = 1,
    io: Literal["auto", "dense", "expert"] = "auto",
    gate_mode: str = "hidden",
) -> Path:
    """Build a mixture of ``experts`` around ``dense`` into ``out_dir`` (written atomically) and return it.

    Args:
        dense: the dense model (the merge of the largest or best family): its embeddings, norm, head and
            layers below ``num_dense_layers`` are shared, and its hidden states define the gates.
        experts: expert models (merged family models); Hub ids or folders.
        prompts: positive gate prompts, one non-empty list per expert (required).
        negative_prompts: per expert; default = the other experts' positive prompts.
        gate_pooling: masked ``"mean"`` over non-padding tokens or the ``"last"`` non-padding token, for
            gates and routing alike (FFN level routes per token, so it always uses the mean).
        router_bias: ``"center"`` adds ``b_e = -v_e . mu`` (mu = mean pooled state of all gate prompts).
            Mixtral's router has no bias, so FFN level ignores it.
        top_k: experts per sequence (block) or per token (FFN); model level is top-1.
        io: ``"dense"`` splices expert layers onto the dense stream, ``"expert"`` runs the whole chosen
            expert (model level only), ``"auto"`` picks ``expert`` for an expert whose weight similarity
            to the dense model is below 0.5.
        gate_mode: ``"hidden"`` (prompt-based gates); ``"mlp"`` routers exist neither in mergekit nor in
            the reference and raise NotImplementedError.

    Raises:
        NotImplementedError: ``gate_mode="mlp"``.
        ConfigError: missing or malformed prompts, unknown level/io/pooling, incompatible experts; raised
            before anything is written.
    """
    if gate_mode == "mlp":
        raise NotImplementedError(
            "gate_mode 'mlp' (trained MLP routers) exists neither in mergekit nor in the "
            "Model-GLUE reference code; use prompt-based 'hidden' gates"
        )
    if gate_mode != "hidden":
        raise ConfigError(f"gate_mode must be 'hidden' (or the unimplemented 'mlp'), got {gate_mode!r}")
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    if io not in IO_MODES:
        raise ConfigError(f"io must be one of {IO_MODES}, got {io!r}")
    if gate_pooling not in ("mean", "last"):
        raise ConfigError(f"gate_pooling must be 'mean' or 'last', got {gate_pooling!r}")
    if router_bias not in ("center", "none"):
        raise ConfigError(f"router_bias must be 'center' or 'none', got {router_bias!r}")
    if isinstance(experts, (str, os.PathLike)) or not experts:
        raise ConfigError("experts: a non-empty list of models is required")
    n = len(experts)
    positives = _check_prompts("prompts", prompts, n, required=True)
    negatives = _check_prompts("negative_prompts", negative_prompts, n, required=False) or _default_negatives(
        positives
    )
    if not 1 <= top_k <= n:
        raise ConfigError(f"top_k must be in [1, {n}], got {top_k}")
    if level == "model" and top_k != 1:
        raise ConfigError("model-level routing is top-1 (spec 2.8); use level='block' or 'ffn' for top_k > 1")
    if level != "model" and io == "expert":
        raise ConfigError(f"io='expert' runs whole experts and needs level='model', not {level!r}")

    from hubtools.merging.recipe import resolve_model

    dense_path = resolve_model(dense)
    expert_paths = [resolve_model(e) for e in experts]
    out = Path(out_dir).absolute()
    io_modes, sims = _resolve_io(dense_path, expert_paths, io)
    if level != "model" and "expert" in io_modes:
        far = [str(p) for p, m in zip(expert_paths, io_modes, strict=True) if m == "expert"]
        raise ConfigError(
            f"{far}: weight similarity to the dense model < {AUTO_IO_THRESHOLD} (another "
            f"initialisation); splicing their layers at level {level!r} is meaningless. Use "
            "level='model' (io='expert' runs them whole)"
        )
    info = {
        "level": level,
        "dense": _public(dense_path),
        "experts": [_public(p) for p in expert_paths],
        "io": io_modes,
        "similarity_to_dense": sims,
        "num_dense_layers": num_dense_layers,
        "gate_pooling": gate_pooling if level != "ffn" else "mean",
        "router_bias": router_bias if level != "ffn" else "none",
        "top_k": top_k,
        "prompts": positives,
        "negative_prompts": negatives,
        "default_negatives": negative_prompts is None,
    }
    if level == "ffn":
        return _build_ffn(dense_path, expert_paths, out, positives, negatives, num_dense_layers, top_k, info)
    return _build_glue_mixture(dense_path, expert_paths, out, positives, negatives, info)


def _resolve_io(dense: Path, experts: list[Path], io: str) -> tuple[list[str], list[float | None]]:
    if io != "auto":
        return [io] * len(experts), [None] * len(experts)
    from hubtools.merging.similarity import ArchitectureMismatch, similarity

    modes, sims = [], []
    for expert in experts:
        try:
            sim = similarity(dense, expert).all
        except ArchitectureMismatch:  # different shapes: cannot be spliced at all
            sim = float("nan")
        sims.append(sim)
        modes.append("dense" if sim >= AUTO_IO_THRESHOLD else "expert")  # NaN compares False -> expert
    return modes, sims


def _load_causal_lm(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def _build_glue_mixture(
    dense_path: Path,
    expert_paths: list[Path],
    out: Path,
    positives: list[list[str]],
    negatives: list[list[str]],
    info: dict,
) -> Path:
    from hubtools.hub.artifacts import atomic_dir
    from hubtools.merging.mixture_model import GlueMixtureConfig, GlueMixtureForCausalLM, pool_hidden

    tokenizer = _load_tokenizer(dense_path)
    dense = _load_causal_lm(dense_path)
    k, level = info["num_dense_layers"], info["level"]
    n_layers = dense.config.num_hidden_layers
    if not 0 <= k < n_layers:
        raise ConfigError(f"num_dense_layers must be in [0, {n_layers}), got {k}")
    expert_models = [_load_causal_lm(p) for p in expert_paths]
    expert_configs: list[dict | None] = []
    for path, model, mode in zip(expert_paths, expert_models, info["io"], strict=True):
        if mode == "expert":
            _check_vocab(tokenizer, path)
            expert_configs.append(model.config.to_dict())
            continue
        if model.config.num_hidden_layers != n_layers:
            raise ConfigError(
                f"{path}: {model.config.num_hidden_layers} layers, the dense model has {n_layers}; "
                "spliced experts need the same depth"
            )
        expert_configs.append(None)
    vocab = max(
        [dense.config.vocab_size]
        + [m.config.vocab_size for m, c in zip(expert_models, expert_configs, strict=True) if c is not None]
    )
    special = {
        key: getattr(dense.config, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    config = GlueMixtureConfig(
        dense_config=dense.config.to_dict(),
        expert_configs=expert_configs,
        level=level,
        num_dense_layers=k,
        router_top_k=info["top_k"],
        gate_pooling=info["gate_pooling"],
        vocab_size=vocab,
        architectures=[GlueMixtureForCausalLM.__name__],
        **special,
    )
    mixture = GlueMixtureForCausalLM(config).eval()
    with torch.no_grad():
        mixture.dense.load_state_dict(dense.state_dict())
        for e, (path, model) in enumerate(zip(expert_paths, expert_models, strict=True)):
            target = mixture.experts[e]
            if expert_configs[e] is not None:
                target.load_state_dict(model.state_dict())
                continue
            for i in range(k, n_layers):
                src, dst = model.model.layers[i].state_dict(), target.layers[str(i)].state_dict()
                bad = [name for name in dst if name not in src or src[name].shape != dst[name].shape]
                if bad:
                    raise ConfigError(
                        f"{path}: layer {i} does not match the dense model's layer shapes ({bad[0]})"
                    )
                target.layers[str(i)].load_state_dict(src)

        unique = _unique(positives, negatives)
        enc = _tokenize(tokenizer, unique)
        gate_layers = [k] if level == "model" else list(range(k, n_layers))
        states = mixture.dense_hidden_states(enc["input_ids"], enc["attention_mask"], gate_layers[-1])
        conds = []
        for g, layer in enumerate(gate_layers):
            pooled = pool_hidden(states[layer], enc["attention_mask"], info["gate_pooling"])
            weights, bias = _gate_vectors(
                dict(zip(unique, pooled, strict=True)), positives, negatives, info["router_bias"] == "center"
            )
            mixture.gate_weight[g].copy_(weights)
            mixture.gate_bias[g].copy_(bias)
            conds.append(_warn_condition(weights, layer, info["default_negatives"]))
    info["gate_layers"], info["gate_condition"] = gate_layers, conds
    with atomic_dir(out) as tmp:
        mixture.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_info(tmp, info)
    return out


def _mlp_inputs(model: Any, enc: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the masked-mean over tokens of the MLP input (what Mixtral's per-token router sees)."""
    from hubtools.merging.mixture_model import pool_hidden

    captured: list[torch.Tensor] = []
    hooks = [
        layer.mlp.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        for h in hooks:
            h.remove()
    return [pool_hidden(x, enc["attention_mask"], "mean") for x in captured]


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _build_ffn(
    dense_path: Path,
    expert_paths: list[Path],
    out: Path,
    positives: list[list[str]],
    negatives: list[list[str]],
    k: int,
    top_k: int,
    info: dict,
) -> Path:
    import yaml
    from mergekit.moe.config import MoEMergeConfig, is_bad_config
    from mergekit.moe.mixtral import MixtralMoE
    from mergekit.options import MergeOptions

    from hubtools.hub.artifacts import atomic_dir

    config = MoEMergeConfig.model_validate(
        {
            "base_model": str(dense_path),
            "experts": [
                {"source_model": str(p), "positive_prompts": pos, "negative_prompts": neg}
                for p, pos, neg in zip(expert_paths, positives, negatives, strict=True)
            ],
            "gate_mode": "hidden",
            "dtype": "float32",
            "experts_per_token": top_k,
        }
    )
    capture = _LogCapture()
    logging.getLogger().addHandler(capture)
    try:
        bad = is_bad_config(config, allow_all_same=False)
    finally:
        logging.getLogger().removeHandler(capture)
    if bad:
        raise ConfigError(
            "mergekit-moe rejects this mixture: " + (" ".join(capture.messages) or "bad config")
        )
    arch = MixtralMoE()
    if not arch.supports_config(config):
        raise ConfigError(
            "FFN-level mixtures (Mixtral output) need Llama or Mistral models of one architecture"
        )

    tokenizer = _load_tokenizer(dense_path)
    dense = _load_causal_lm(dense_path)
    n_layers = dense.config.num_hidden_layers
    if not 0 <= k < n_layers:
        raise ConfigError(f"num_dense_layers must be in [0, {n_layers}), got {k}")
    unique = _unique(positives, negatives)
    per_layer = _mlp_inputs(dense, _tokenize(tokenizer, unique))
    routers, conds = [], []
    for layer, pooled in enumerate(per_layer):
        weights, _ = _gate_vectors(dict(zip(unique, pooled, strict=True)), positives, negatives, center=False)
        routers.append(weights)
        conds.append(_warn_condition(weights, layer, info["default_negatives"]) if layer >= k else None)
    info["gate_layers"], info["gate_condition"] = list(range(k, n_layers)), conds
    options = MergeOptions(device="cpu", write_model_card=False, quiet=True, random_seed=42)
    public = config.model_copy(deep=True)
    with atomic_dir(out) as tmp:
        arch.write_model(str(tmp), config, options, router_weights=routers)
        if k:
            _densify_ffn_layers(tmp, dense, len(expert_paths), k)
        tokenizer.save_pretrained(tmp)
        recipe = public.model_dump(mode="json", exclude_none=True)
        recipe["base_model"] = _public(dense_path)
        for entry, path in zip(recipe["experts"], expert_paths, strict=True):
            entry["source_model"] = _public(path)
        (tmp / MOE_RECIPE_FILENAME).write_text(yaml.safe_dump(recipe, sort_keys=False))
        _write_info(tmp, info)
    return out


def _densify_ffn_layers(folder: Path, dense: Any, n_experts: int, k: int) -> None:
    """Hybrid FFN level: every expert slot of layers < k gets the dense MLP, so those layers equal the dense model.

    The fused tensors are built with mergekit's own checkpoint conversion, as ``write_model`` builds them.
    """
    from mergekit.architecture.conversion import convert_checkpoint_tensors
    from safetensors.torch import load_file, save_file

    replace: dict[str, torch.Tensor] = {}
    for i in range(k):
        prefix = f"model.layers.{i}.mlp"
        mlp = dense.model.layers[i].mlp
        gate_up, down = {}, {}
        for e in range(n_experts):
            gate_up[f"{prefix}.experts.{e}.w1.weight"] = mlp.gate_proj.weight.detach()
            gate_up[f"{prefix}.experts.{e}.w3.weight"] = mlp.up_proj.weight.detach()
            down[f"{prefix}.experts.{e}.w2.weight"] = mlp.down_proj.weight.detach()
        replace[f"{prefix}.experts.gate_up_proj"] = convert_checkpoint_tensors(
            "mixtral", gate_up, f"{prefix}.experts.gate_up_proj"
        )
        replace[f"{prefix}.experts.down_proj"] = convert_checkpoint_tensors(
            "mixtral", down, f"{prefix}.experts.down_proj"
        )
    for file in sorted(folder.glob("*.safetensors")):
        tensors = load_file(file)
        hit = [name for name in tensors if name in replace]
        if hit:
            tensors.update({name: replace.pop(name).to(tensors[name].dtype).contiguous() for name in hit})
            save_file(tensors, file, metadata={"format": "pt"})
    if replace:
        raise ConfigError(
            f"mergekit-moe output lacks {sorted(replace)[0]}; cannot keep layers below {k} dense"
        )


def _write_info(folder: Path, info: dict) -> None:
    from hubtools.hub.artifacts import save_card
    from hubtools.hub.cards import render_card

    (folder / MIXTURE_INFO_FILENAME).write_text(json.dumps(info, indent=2, default=float) + "\n")
    level = info["level"]
    arch = "MixtralForCausalLM (mergekit-moe)" if level == "ffn" else "hubtools_glue_mixture"
    card = render_card(
        "merged_model",
        card_data={"base_model": [info["dense"], *info["experts"]], "tags": ["moe", "mixture"]},
        model_name=folder.name.split(".partial-")[0].lstrip("."),
        merge_method=f"Model-GLUE {level}-level mixture ({arch}), top-{info['top_k']}, "
        f"{len(info['experts'])} experts",
        summary=f"A {level}-level mixture of {len(info['experts'])} experts around a dense model, built without "
        "training by hubtools (Model-GLUE). Gates come from the prompts in `mixture.json`."
        + (" Load it after `import hubtools.merging`." if level != "ffn" else ""),
        merge_recipe=(folder / MOE_RECIPE_FILENAME).read_text() if level == "ffn" else None,
        training_procedure="Routing: per sequence, decided on the prompt and kept while generating; see "
        "`mixture.json` for the gate prompts, per-expert io and gate condition numbers.",
    )
    save_card(folder, card)


def route_prompts(model: Any, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Top expert per text [N] at the first gate of a ``hubtools_glue_mixture`` model."""
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return model.route(enc["input_ids"], enc["attention_mask"])[0].argmax(dim=-1)


def routing_accuracy(model: Any, tokenizer: Any, prompts: Sequence[Sequence[str]]) -> float:
    """Fraction of texts routed to their own expert (``prompts[e]`` should go to expert e)."""
    total = correct = 0
    for expert, texts in enumerate(prompts):
        routes = route_prompts(model, tokenizer, texts)
        correct += int((routes == expert).sum())
        total += len(texts)
    return correct / total if total else float("nan")
