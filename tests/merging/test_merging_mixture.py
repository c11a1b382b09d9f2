"""Model-GLUE mixtures: exactness guards, routing, io=expert, generation, round trips, bad inputs.

Tiny Llama models from configs with a word-level tokenizer whose bos/eos/pad are special tokens.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import hubtools.merging  # noqa: E402, F401  (registers hubtools_glue_mixture)
from hubtools.errors import ConfigError  # noqa: E402
from hubtools.merging.mixture import build_mixture, route_prompts, routing_accuracy  # noqa: E402
from hubtools.merging.mixture_model import GlueMixtureCache  # noqa: E402

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
WORDS_A = [f"a{i}" for i in range(12)]
WORDS_B = [f"b{i}" for i in range(12)]
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS_A + WORDS_B)}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_model(seed: int, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the 0.02 init, so experts really differ in their outputs
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return model.eval()


def save(model: LlamaForCausalLM, folder: Path) -> Path:
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def perturbed(base: LlamaForCausalLM, seed: int, scale: float = 0.1) -> LlamaForCausalLM:
    """A 'fine-tune' of base: same init plus a small delta (weight similarity to base stays high)."""
    model = LlamaForCausalLM(base.config).eval()
    model.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixture_zoo")
    dense = tiny_model(0)
    out = {"dense": save(dense, root / "dense")}
    for name in ("copy1", "copy2"):
        out[name] = Path(shutil.copytree(out["dense"], root / name))
    out["ft_a"] = save(perturbed(dense, 1), root / "ft_a")
    out["ft_b"] = save(perturbed(dense, 2), root / "ft_b")
    out["other"] = save(tiny_model(7), root / "other")  # a different initialisation
    return out


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    return [
        " ".join(words[i] for i in torch.randint(len(words), (6,), generator=gen).tolist()) for _ in range(n)
    ]


PROMPTS = [sentences(WORDS_A, 8, 0), sentences(WORDS_B, 8, 1)]
HELD_OUT = [sentences(WORDS_A, 10, 2), sentences(WORDS_B, 10, 3)]


def batch(texts: list[str]) -> dict[str, torch.Tensor]:
    return tiny_tokenizer()(texts, return_tensors="pt")  # equal lengths: no padding


def logits(model, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch(texts)).logits


def load(folder: Path):
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def spliced(dense: Path, expert: Path, k: int) -> LlamaForCausalLM:
    """Reference for io='dense': the dense model with layers >= k taken from the expert."""
    model, donor = load(dense), load(expert)
    for i in range(k, model.config.num_hidden_layers):
        model.model.layers[i].load_state_dict(donor.model.layers[i].state_dict())
    return model


@pytest.mark.parametrize(
    ("level", "k", "top_k"), [("model", 0, 1), ("model", 1, 1), ("block", 0, 2), ("block", 1, 1)]
)
def test_identical_experts_reproduce_dense(zoo, tmp_path, level, k, top_k):
    out = build_mixture(
        zoo["dense"],
        [zoo["copy1"], zoo["copy2"]],
        tmp_path / "mix",
        level=level,
        num_dense_layers=k,
        prompts=PROMPTS,
        top_k=top_k,
        io="dense",
    )
    mix = load(out)
    assert type(mix).__name__ == "GlueMixtureForCausalLM"
    texts = HELD_OUT[0][:3] + HELD_OUT[1][:3]
    diff = (logits(mix, texts) - logits(load(zoo["dense"]), texts)).abs().max()
    assert diff < 1e-5, diff


def test_ffn_identical_experts_reproduce_dense_via_mergekit_moe(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"], [zoo["copy1"], zoo["copy2"]], tmp_path / "ffn", level="ffn", prompts=PROMPTS, top_k=1
    )
    mix = load(out)
    assert type(mix).__name__ == "MixtralForCausalLM"
    assert mix.config.num_local_experts == 2 and mix.config.num_experts_per_tok == 1
    texts = HELD_OUT[0][:3] + HELD_OUT[1][:3]
    diff = (logits(mix, texts) - logits(load(zoo["dense"]), texts)).abs().max()
    assert diff < 1e-4, diff  # the guard against silent expert mis-merges in mergekit-moe
    assert (out / "mergekit_moe_config.yml").is_file() and (out / "tokenizer.json").is_file()


def test_ffn_hybrid_keeps_lower_layers_dense_and_mixes_upper(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"],
        [zoo["ft_a"], zoo["ft_b"]],
        tmp_path / "ffn",
        level="ffn",
        num_dense_layers=1,
        prompts=PROMPTS,
        top_k=1,
    )
    mix, dense, ft_a = load(out), load(zoo["dense"]), load(zoo["ft_a"])
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.allclose(mix.model.layers[0].mlp(x), dense.model.layers[0].mlp(x), atol=1e-5)
        # Upper layer: the token routed to expert 0 gets ft_a's MLP exactly.
        router = mix.model.layers[1].mlp.gate
        flat = x.reshape(-1, 32)
        chosen = (flat @ router.weight.T).argmax(-1)
        moe_out = mix.model.layers[1].mlp(x).reshape(-1, 32)
        rows = chosen == 0
        assert rows.any()
        assert torch.allclose(moe_out[rows], ft_a.model.layers[1].mlp(flat[rows]), atol=1e-5)


@pytest.mark.parametrize("k", [0, 1])
def test_model_level_routes_distinct_prompts_and_splices_expert_layers(zoo, tmp_path, k):
    out = build_mixture(
        zoo["dense"], [zoo["ft_a"], zoo["ft_b"]], tmp_path / "mix", prompts=PROMPTS, num_dense_layers=k
    )
    info = json.loads((out / "mixture.json").read_text())
    assert info["io"] == ["dense", "dense"]  # fine-tunes of the dense model: auto keeps the dense io
    assert all(s > 0.5 for s in info["similarity_to_dense"])
    mix, tok = load(out), AutoTokenizer.from_pretrained(out)
    if k == 0:  # on this random tiny model, mean-pooled embeddings separate the two vocabularies exactly
        assert routing_accuracy(mix, tok, HELD_OUT) == 1.0
    texts = HELD_OUT[0][:3] + HELD_OUT[1][:3]
    routes = route_prompts(mix, tok, texts).tolist()
    assert set(routes) == {0, 1}
    got = logits(mix, texts)
    for i, (text, route) in enumerate(zip(texts, routes, strict=True)):
        ref = spliced(zoo["dense"], zoo["ft_a" if route == 0 else "ft_b"], k)
        assert torch.allclose(got[i], logits(ref, [text])[0], atol=1e-5)


@pytest.mark.parametrize(("pooling", "bias"), [("mean", "center"), ("last", "none")])
def test_gates_follow_the_spec_formula(zoo, tmp_path, pooling, bias):
    """v_e = normalize(mean_P pool(h_k) - mean_N pool(h_k)), b_e = -v_e . mu, checked prompt by prompt."""
    k = 1
    out = build_mixture(
        zoo["dense"],
        [zoo["ft_a"], zoo["ft_b"]],
        tmp_path / "mix",
        prompts=PROMPTS,
        gate_pooling=pooling,
        router_bias=bias,
        num_dense_layers=k,
    )
    mix, dense = load(out), load(zoo["dense"])

    def pooled(text: str) -> torch.Tensor:
        with torch.no_grad():
            h = dense(**batch([text]), output_hidden_states=True).hidden_states[k][0]
        return h.mean(0) if pooling == "mean" else h[-1]

    means = [torch.stack([pooled(t) for t in group]).mean(0) for group in PROMPTS]
    mu = torch.stack([pooled(t) for group in PROMPTS for t in group]).mean(0)
    for e, other in ((0, 1), (1, 0)):
        v = means[e] - means[other]
        v = v / v.norm()
        assert torch.allclose(mix.gate_weight[0, e], v, atol=1e-5)
        expected_bias = -(v @ mu) if bias == "center" else torch.tensor(0.0)
        assert torch.allclose(mix.gate_bias[0, e], expected_bias, atol=1e-5)


def test_io_expert_runs_a_different_init_model_whole(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"], [zoo["copy1"], zoo["other"]], tmp_path / "mix", prompts=PROMPTS, io="auto"
    )
    info = json.loads((out / "mixture.json").read_text())
    assert info["io"] == ["dense", "expert"]
    assert info["similarity_to_dense"][1] < 0.5
    mix = load(out)
    texts = HELD_OUT[0][:2] + HELD_OUT[1][:2]
    got = logits(mix, texts)
    assert torch.allclose(got[:2], logits(load(zoo["dense"]), texts[:2]), atol=1e-5)
    assert torch.allclose(got[2:], logits(load(zoo["other"]), texts[2:]), atol=1e-5)


def test_generate_keeps_prefill_routing_with_per_expert_caches(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"], [zoo["ft_a"], zoo["other"]], tmp_path / "mix", prompts=PROMPTS, io="auto"
    )
    mix = load(out)
    texts = [HELD_OUT[0][0], HELD_OUT[1][0]]
    kw = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    gen = mix.generate(**batch(texts), **kw)
    assert gen.shape == (2, 6 + 6)
    # Row 0 continues with the spliced ft_a path, row 1 with the whole 'other' model, each as if run alone.
    ref_a = spliced(zoo["dense"], zoo["ft_a"], 0).generate(**batch(texts[:1]), **kw)
    ref_b = load(zoo["other"]).generate(**batch(texts[1:]), **kw)
    assert torch.equal(gen[0], ref_a[0]) and torch.equal(gen[1], ref_b[0])


def test_block_level_generate_with_cache_equals_full_recompute(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"],
        [zoo["ft_a"], zoo["ft_b"]],
        tmp_path / "blk",
        level="block",
        num_dense_layers=1,
        prompts=PROMPTS,
        top_k=2,
    )
    mix = load(out)
    texts = [HELD_OUT[0][1], HELD_OUT[1][1]]
    gen = mix.generate(**batch(texts), max_new_tokens=5, do_sample=False, pad_token_id=0)
    # Reference: recompute the whole sequence at every step with fresh caches and the prompt's routing fixed.
    enc = batch(texts)
    weights = mix.route(enc["input_ids"], enc["attention_mask"])
    assert weights.shape == (1, 2, 2)  # one gate (layer 1 of 2), two rows, two experts
    assert torch.allclose(weights.sum(-1), torch.ones(1, 2))
    seq = enc["input_ids"]
    for _ in range(5):
        fresh = GlueMixtureCache(
            weights,
            [DynamicCache(config=mix.dense.config) for _ in range(2)],
            DynamicCache(config=mix.dense.config),
        )
        with torch.no_grad():
            step = mix(input_ids=seq, cache=fresh).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, step], dim=1)
    assert torch.equal(gen, seq)


def test_round_trip_save_load_and_local_hub(zoo, tmp_path, hub, repo_id):
    from safetensors.torch import load_file

    out = build_mixture(
        zoo["dense"], [zoo["ft_a"], zoo["other"]], tmp_path / "mix", prompts=PROMPTS, io="auto"
    )
    mix = load(out)
    again = tmp_path / "again"
    mix.save_pretrained(again)
    a, b = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    mix.push_to_hub(repo_id, token=hub.write_token)
    AutoTokenizer.from_pretrained(out).push_to_hub(repo_id, token=hub.write_token)
    remote = AutoModelForCausalLM.from_pretrained(repo_id, token=hub.write_token).eval()
    texts = HELD_OUT[0][:2] + HELD_OUT[1][:2]
    assert torch.equal(logits(remote, texts), logits(mix, texts))
    assert AutoTokenizer.from_pretrained(repo_id, token=hub.write_token).bos_token == "<bos>"


def test_bad_inputs_fail_before_writing(zoo, tmp_path):
    out = tmp_path / "never"
    experts = [zoo["ft_a"], zoo["ft_b"]]
    with pytest.raises(ConfigError, match="gate prompts per expert"):
        build_mixture(zoo["dense"], experts, out)
    with pytest.raises(ConfigError, match="expected 2 lists"):
        build_mixture(zoo["dense"], experts, out, prompts=PROMPTS[:1])
    with pytest.raises(ConfigError, match="no prompts"):
        build_mixture(zoo["dense"], experts, out, prompts=[PROMPTS[0], []])
    with pytest.raises(NotImplementedError, match="mlp"):
        build_mixture(zoo["dense"], experts, out, prompts=PROMPTS, gate_mode="mlp")
    with pytest.raises(ConfigError, match="top-1"):
        build_mixture(zoo["dense"], experts, out, prompts=PROMPTS, top_k=2)
    with pytest.raises(ConfigError, match="level='model'"):
        build_mixture(zoo["dense"], experts, out, prompts=PROMPTS, level="block", io="expert")
    with pytest.raises(ConfigError, match="another initialisation"):  # auto io finds 'other' at block level
        build_mixture(zoo["dense"], [zoo["ft_a"], zoo["other"]], out, prompts=PROMPTS, level="block")
    with pytest.raises(ConfigError, match="mergekit-moe rejects.*same"):  # is_bad_config, not sys.exit
        build_mixture(zoo["dense"], [zoo["ft_a"], zoo["ft_a"]], out, prompts=PROMPTS, level="ffn")
    with pytest.raises(ConfigError, match="no such folder"):
        build_mixture(zoo["dense"], [tmp_path / "missing", zoo["ft_b"]], out, prompts=PROMPTS)
    # A whole expert whose tokenizer numbers the words differently cannot read the dense model's ids.
    shuffled = Path(shutil.copytree(zoo["other"], tmp_path / "other_tok"))
    words = list(VOCAB)
    swapped = {w: VOCAB[words[len(words) - 1 - i]] if i >= 4 else i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=swapped, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(shuffled)
    with pytest.raises(ConfigError, match="different ids"):
        build_mixture(zoo["dense"], [zoo["ft_a"], shuffled], out, prompts=PROMPTS, io="expert")
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_degenerate_gates_warn(zoo, tmp_path):
    same = PROMPTS[0]
    with pytest.warns(RuntimeWarning, match="condition number"):
        build_mixture(
            zoo["dense"],
            [zoo["ft_a"], zoo["ft_b"], zoo["copy1"]],
            tmp_path / "w",
            prompts=[same, same, PROMPTS[1]],
            io="dense",
        )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", RuntimeWarning
        )  # two experts, default negatives: rows v and -v, no warning
        build_mixture(zoo["dense"], [zoo["ft_a"], zoo["ft_b"]], tmp_path / "ok", prompts=PROMPTS, io="dense")


def test_left_padded_batch_routes_per_row(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"], [zoo["copy1"], zoo["other"]], tmp_path / "mix", prompts=PROMPTS, io="auto"
    )
    mix, tok = load(out), AutoTokenizer.from_pretrained(out)
    tok.padding_side = "left"
    texts = [HELD_OUT[1][0], " ".join(HELD_OUT[0][0].split()[:3])]  # B (6 words), A (3 words, padded)
    enc = tok(texts, return_tensors="pt", padding=True)
    assert enc["attention_mask"][1].tolist() == [0, 0, 0, 1, 1, 1]
    assert mix.route(enc["input_ids"], enc["attention_mask"])[0].argmax(-1).tolist() == [1, 0]
    with torch.no_grad():
        got = mix(**enc).logits
        ref = load(zoo["dense"])(**{k: v[1:] for k, v in enc.items()}).logits
    assert torch.allclose(got[1, 3:], ref[0, 3:], atol=1e-5)
    assert torch.allclose(got[0], logits(load(zoo["other"]), texts[:1])[0], atol=1e-5)


def test_router_k_does_not_leak_into_sampling_settings(zoo, tmp_path):
    out = build_mixture(
        zoo["dense"], [zoo["ft_a"], zoo["ft_b"]], tmp_path / "blk", level="block", prompts=PROMPTS, top_k=2
    )
    mix = load(out)
    assert mix.config.router_top_k == 2
    assert mix.generation_config.top_k in (None, 50)  # transformers' own default, not the router's k
