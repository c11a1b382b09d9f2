"""Configuration and modeling of ``model_type: hubtools_glue_mixture`` (Model-GLUE model- and block-level mixtures).

A mixture holds a *dense* causal LM (a Llama-style decoder: ``model.embed_tokens``, ``model.layers``,
``model.norm``, ``model.rotary_emb``, ``lm_head``) and E experts. Each expert is either

- *spliced* (``io="dense"``): only its decoder layers ``k..L-1`` are stored; they run on the dense model's
  residual stream, with the dense embeddings, final norm and head (the Model-GLUE reference), or
- *whole* (``io="expert"``): a complete causal LM that runs on the input ids with its own embeddings, norm
  and head, because splicing layers of a model from another initialisation onto the dense stream is
  meaningless (spec 2.8).

Routing is per sequence: ``p = softmax(W · pool(h) + b)``, top-k, renormalised. ``pool`` is a masked mean
over non-padding positions (or the last non-padding token) and is the same function the gates were built
with (``hubtools.merging.mixture``). Model level routes once on ``h_k`` (the input of layer
``k = num_dense_layers``) with top-1; block level routes at every layer ``l >= k`` and sums the chosen
blocks. During ``generate()`` the routing is decided on the prompt at prefill and kept for every decoding
step; each expert path keeps its own KV cache (:class:`GlueMixtureCache`).

This file imports only torch and transformers so it can be copied next to a checkpoint for users without
hubtools; importing :mod:`hubtools.merging` registers the classes with ``AutoConfig`` and
``AutoModelForCausalLM``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

MODEL_TYPE = "hubtools_glue_mixture"
LEVELS = ("model", "block")
POOLINGS = ("mean", "last")

__all__ = [
    "MODEL_TYPE",
    "GlueMixtureCache",
    "GlueMixtureConfig",
    "GlueMixtureForCausalLM",
    "pool_hidden",
    "sub_config",
]


def sub_config(data: dict[str, Any]) -> PreTrainedConfig:
    """Rebuild a nested model config stored as a plain dict (dicts keep config.json readable and portable)."""
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"nested config has unknown model_type {model_type!r}")
    return CONFIG_MAPPING[model_type].from_dict(dict(data))


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Pool [B, T, H] states to [B, H] ignoring padding: masked mean, or the last non-padding token.

    Gates and routing both call this, so a gate vector and the state it is compared with are pooled the same
    way (the reference pairs last-token gates with mean-pooled routing, spec 2.8). Works for left and right
    padding.
    """
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    mask = attention_mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    if mode == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(mask)
        last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values.clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"gate_pooling must be one of {POOLINGS}, got {mode!r}")


class GlueMixtureConfig(PreTrainedConfig):
    """Config of a Model-GLUE mixture; nested model configs are stored as plain dicts.

    ``expert_configs[e]`` is ``None`` for a spliced expert (layers ``k..L-1`` on the dense stream) and the
    expert's full config dict for a whole expert. ``vocab_size`` is the largest vocabulary of the dense model
    and the whole experts; smaller heads are padded with ``-inf``. The router's k is ``router_top_k``, not
    ``top_k``: generate() would read a ``top_k`` attribute as its sampling parameter.
    """

    model_type = MODEL_TYPE
    dense_config: dict | None = None
    expert_configs: list | None = None
    level: str = "model"
    num_dense_layers: int = 0
    router_top_k: int = 1
    gate_pooling: str = "mean"
    vocab_size: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.dense_config is None:  # the empty config transformers builds for defaults/diffs
            return
        experts = self.expert_configs or []
        if self.level not in LEVELS:
            raise ValueError(
                f"level must be one of {LEVELS} (FFN level is a plain Mixtral), got {self.level!r}"
            )
        if self.gate_pooling not in POOLINGS:
            raise ValueError(f"gate_pooling must be one of {POOLINGS}, got {self.gate_pooling!r}")
        if not experts:
            raise ValueError("a mixture needs at least one expert")
        if not 1 <= self.router_top_k <= len(experts):
            raise ValueError(f"router_top_k must be in [1, {len(experts)}], got {self.router_top_k}")
        if self.level == "model" and self.router_top_k != 1:
            raise ValueError(
                "model-level routing is top-1 (spec 2.8); use level='block' for router_top_k > 1"
            )
        if self.level == "block" and any(c is not None for c in experts):
            raise ValueError(
                "block-level experts must be spliced (io='dense'); whole experts need level='model'"
            )
        n_layers = int(self.dense_config["num_hidden_layers"])
        if not 0 <= self.num_dense_layers < n_layers:
            raise ValueError(f"num_dense_layers must be in [0, {n_layers}), got {self.num_dense_layers}")

    @property
    def num_experts(self) -> int:
        return len(self.expert_configs or [])

    @property
    def num_gates(self) -> int:
        """One gate for model level (at layer k), one per layer k..L-1 for block level."""
        if self.level == "model":
            return 1
        return int(self.dense_config["num_hidden_layers"]) - self.num_dense_layers


class GlueMixtureCache:
    """KV caches of a mixture during generation, with the routing decided at prefill.

    ``weights`` is [num_gates, B, E] (top-k renormalised; one-hot at model level). At model level
    ``caches[e]`` holds only the rows routed to expert e (all layers of that path); at block level every
    expert block runs on every row, ``caches[e]`` holds expert e's layers ``k..L-1`` and ``prefix`` the dense
    layers below k. It is not a ``transformers.Cache``: generate() only needs ``get_seq_length``.
    """

    is_compileable = False
    is_croppable = False
    is_linear = (False,)

    def __init__(
        self, weights: torch.Tensor, caches: list[DynamicCache], prefix: DynamicCache | None
    ) -> None:
        self.weights = weights
        self.caches = caches
        self.prefix = prefix
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    @property
    def routes(self) -> torch.Tensor:
        """[B] index of the top expert of each row at the first gate (the model-level choice)."""
        return self.weights[0].argmax(dim=-1)


class SplicedLayers(nn.Module):
    """Decoder layers ``first..L-1`` of one expert, built with the dense model's layer class and config.

    Keys are the absolute layer indices, so each layer writes its KV cache slot under its own index.
    """

    def __init__(self, layer_cls: type[nn.Module], config: PreTrainedConfig, first: int, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({str(i): layer_cls(config, i) for i in range(first, count)})


class GlueMixturePreTrainedModel(PreTrainedModel):
    config_class = GlueMixtureConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = False
    _supports_sdpa = True


class GlueMixtureForCausalLM(GlueMixturePreTrainedModel, GenerationMixin):
    """A Model-GLUE mixture: dense model, experts and per-sequence gates (see the module docstring)."""

    def __init__(self, config: GlueMixtureConfig) -> None:
        super().__init__(config)
        self.dense = AutoModelForCausalLM.from_config(sub_config(config.dense_config))
        dense_layers = self.dense.model.layers
        n_layers, k = len(dense_layers), config.num_dense_layers
        layer_cls = type(dense_layers[0])
        self.experts = nn.ModuleList(
            SplicedLayers(layer_cls, self.dense.config, k, n_layers)
            if cfg is None
            else AutoModelForCausalLM.from_config(sub_config(cfg))
            for cfg in config.expert_configs
        )
        hidden = self.dense.config.hidden_size
        self.gate_weight = nn.Parameter(torch.zeros(config.num_gates, config.num_experts, hidden))
        self.gate_bias = nn.Parameter(torch.zeros(config.num_gates, config.num_experts))
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not hand us one DynamicCache: each expert path needs its own (GlueMixtureCache).
        return False

    def _init_weights(self, module: nn.Module) -> None:
        # Nested models initialise themselves; gates start at zero and are always set by build_mixture.
        if module is self:
            with torch.no_grad():
                self.gate_weight.zero_()
                self.gate_bias.zero_()

    def gate(self, index: int, pooled: torch.Tensor) -> torch.Tensor:
        """Top-k renormalised routing weights [B, E] of gate ``index`` for pooled states [B, H]."""
        logits = pooled @ self.gate_weight[index].T.to(pooled.dtype) + self.gate_bias[index].to(pooled.dtype)
        probs = torch.softmax(logits.float(), dim=-1)
        top = probs.topk(self.config.router_top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
        return (weights / weights.sum(dim=-1, keepdim=True)).to(pooled.dtype)

    def _dense_context(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: DynamicCache | None,
        past: int,
        mask_layer: int | None = None,
    ) -> tuple[Any, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Causal mask, rotary embeddings and position ids, computed exactly as the dense LlamaModel does."""
        if position_ids is None:
            position_ids = (torch.arange(hidden.shape[1], device=hidden.device) + past).unsqueeze(0)
        mask = create_causal_mask(
            config=self.dense.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            layer_idx=mask_layer,
        )
        return mask, self.dense.model.rotary_emb(hidden, position_ids=position_ids), position_ids

    def dense_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, upto: int
    ) -> list[torch.Tensor]:
        """``[h_0, ..., h_upto]`` of the dense model (``h_l`` is the input of layer l), without a cache.

        Routing and the gate builder (``hubtools.merging.mixture``) both call this, so gates are computed on
        exactly the states the router later sees.
        """
        hidden = self.dense.model.embed_tokens(input_ids)
        mask, rope, pos = self._dense_context(hidden, attention_mask, None, None, 0)
        states = [hidden]
        for i in range(upto):
            hidden = self.dense.model.layers[i](
                hidden, attention_mask=mask, position_embeddings=rope, position_ids=pos
            )
            states.append(hidden)
        return states

    def _model_path(
        self,
        expert: int,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: DynamicCache | None,
        past: int,
    ) -> torch.Tensor:
        """Logits of one model-level path: dense layers below k, then expert ``expert`` (spliced or whole)."""
        module = self.experts[expert]
        use_cache = cache is not None
        if not isinstance(module, SplicedLayers):
            out = module(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
            )
            return out.logits
        dense = self.dense.model
        hidden = dense.embed_tokens(input_ids)
        mask, rope, pos = self._dense_context(hidden, attention_mask, position_ids, cache, past)
        for i in range(len(dense.layers)):
            layer = dense.layers[i] if i < self.config.num_dense_layers else module.layers[str(i)]
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=rope,
                position_ids=pos,
                cache=cache,
                use_cache=use_cache,
            )
        return self.dense.lm_head(dense.norm(hidden))

    def _forward_model_level(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: GlueMixtureCache | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, GlueMixtureCache | None]:
        past = cache.seen_tokens if cache is not None else 0
        if cache is None:
            hidden = self.dense_hidden_states(input_ids, attention_mask, self.config.num_dense_layers)[-1]
            weights = self.gate(0, pool_hidden(hidden, attention_mask, self.config.gate_pooling)).unsqueeze(0)
            if use_cache:
                caches = [DynamicCache(config=self._path_config(e)) for e in range(self.config.num_experts)]
                cache = GlueMixtureCache(weights, caches, None)
        else:
            weights = cache.weights
        routes = weights[0].argmax(dim=-1)
        batch, length = input_ids.shape
        logits = torch.full(
            (batch, length, self.config.vocab_size),
            float("-inf"),
            dtype=self.dense.lm_head.weight.dtype,
            device=input_ids.device,
        )
        # Rows are gathered per expert in batch order, so each expert cache always sees the same rows.
        for expert in routes.unique().tolist():
            rows = (routes == expert).nonzero(as_tuple=True)[0]
            sub_cache = cache.caches[expert] if cache is not None else None
            sub_pos = (
                position_ids[rows]
                if position_ids is not None and position_ids.shape[0] == batch
                else position_ids
            )
            out = self._model_path(expert, input_ids[rows], attention_mask[rows], sub_pos, sub_cache, past)
            logits[rows, :, : out.shape[-1]] = out.to(logits.dtype)
        return logits, cache

    def _forward_block_level(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: GlueMixtureCache | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, GlueMixtureCache | None]:
        k = self.config.num_dense_layers
        dense = self.dense.model
        past = cache.seen_tokens if cache is not None else 0
        if cache is None and use_cache:
            cache = GlueMixtureCache(
                torch.empty(0),
                [DynamicCache(config=self.dense.config) for _ in self.experts],
                DynamicCache(config=self.dense.config),
            )
        hidden = dense.embed_tokens(input_ids)
        # Every path holds the same tokens; size the mask against expert 0's first layer (layers < k are
        # empty in expert caches).
        mask, rope, pos = self._dense_context(
            hidden, attention_mask, position_ids, cache.caches[0] if cache is not None else None, past, k
        )
        for i in range(k):
            hidden = dense.layers[i](
                hidden,
                attention_mask=mask,
                position_embeddings=rope,
                position_ids=pos,
                cache=cache.prefix if cache is not None else None,
                use_cache=use_cache,
            )
        decided = cache is not None and cache.weights.numel() > 0
        new_weights = []
        for gate_index, i in enumerate(range(k, len(dense.layers))):
            if decided:
                weights = cache.weights[gate_index]
            else:
                weights = self.gate(
                    gate_index,
                    pool_hidden(hidden, attention_mask[:, -hidden.shape[1] :], self.config.gate_pooling),
                )
                new_weights.append(weights)
            mixed = torch.zeros_like(hidden)
            for expert, module in enumerate(self.experts):
                # Every expert block runs on every row so its KV cache stays complete for later steps.
                out = module.layers[str(i)](
                    hidden,
                    attention_mask=mask,
                    position_embeddings=rope,
                    position_ids=pos,
                    cache=cache.caches[expert] if cache is not None else None,
                    use_cache=use_cache,
                )
                mixed = mixed + weights[:, expert, None, None] * out
            hidden = mixed
        if cache is not None and not decided:
            cache.weights = torch.stack(new_weights)
        logits = self.dense.lm_head(dense.norm(hidden))
        if logits.shape[-1] < self.config.vocab_size:
            logits = nn.functional.pad(
                logits, (0, self.config.vocab_size - logits.shape[-1]), value=float("-inf")
            )
        return logits, cache

    def _path_config(self, expert: int) -> PreTrainedConfig:
        module = self.experts[expert]
        return self.dense.config if isinstance(module, SplicedLayers) else module.config

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Routing weights [num_gates, B, E] for a batch of prompts (diagnostics: routing accuracy).

        For block level, the gate of layer l sees the mixed state produced by the gates before it, as in
        forward(), so this runs the whole block-level stack once.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            if self.config.level == "model":
                hidden = self.dense_hidden_states(input_ids, attention_mask, self.config.num_dense_layers)[-1]
                return self.gate(0, pool_hidden(hidden, attention_mask, self.config.gate_pooling)).unsqueeze(
                    0
                )
            cache = GlueMixtureCache(
                torch.empty(0),
                [DynamicCache(config=self.dense.config) for _ in self.experts],
                DynamicCache(config=self.dense.config),
            )
            self._forward_block_level(input_ids, attention_mask, None, cache, True)
            return cache.weights

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: GlueMixtureCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Next-token logits [B, T, vocab_size]; with ``labels``, the mean shifted cross-entropy (-100 ignored).

        Rows of a batch may go to different experts; a row keeps its expert (or block weights) for all
        decoding steps of ``generate()``.
        """
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("GlueMixtureForCausalLM takes input_ids (experts may not share embeddings)")
        if cache is not None and not isinstance(cache, GlueMixtureCache):
            raise TypeError(
                f"cache must be a GlueMixtureCache from a previous call, got {type(cache).__name__}"
            )
        past = cache.seen_tokens if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(
                input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long, device=input_ids.device
            )
        use_cache = bool(use_cache) or cache is not None
        run = self._forward_model_level if self.config.level == "model" else self._forward_block_level
        logits, cache = run(input_ids, attention_mask, position_ids, cache, use_cache)
        if cache is not None:
            cache.seen_tokens += input_ids.shape[1]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


AutoConfig.register(MODEL_TYPE, GlueMixtureConfig, exist_ok=True)
AutoModelForCausalLM.register(GlueMixtureConfig, GlueMixtureForCausalLM, exist_ok=True)
