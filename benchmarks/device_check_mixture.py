"""Device check of Model-GLUE mixtures (`hubtools_glue_mixture`): do routing, splicing and generation with
per-expert KV caches behave on a GPU exactly as on the CPU?

``prepare`` (here, on the CPU) builds tiny Llamas from configs with a word-level tokenizer — a dense model, two
copies of it, a small perturbation of it ("fine-tune") and one model from another initialisation — and three
model-level mixtures with ``build_mixture``. ``run`` (on the GPU machine, which lacks mergekit) loads them on
the device and checks, printing one JSON line:

- identical experts reproduce the dense model's logits (max |Δ|);
- the routed mixture sends each held-out sentence to the expert of its vocabulary, and its rows equal that
  expert run alone (io=expert) or spliced into the dense model (io=dense), on the device;
- device logits equal CPU logits within float32 noise;
- greedy ``generate`` on a batch routed to different experts equals each expert generating alone.

    python benchmarks/device_check_mixture.py prepare .devdata/mixture
    python benchmarks/device_check_mixture.py run .devdata/mixture
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
WORDS = {"a": [f"a{i}" for i in range(12)], "b": [f"b{i}" for i in range(12)]}
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS["a"] + WORDS["b"])}


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    return [
        " ".join(words[i] for i in torch.randint(len(words), (6,), generator=gen).tolist()) for _ in range(n)
    ]


PROMPTS = [sentences(WORDS["a"], 8, 0), sentences(WORDS["b"], 8, 1)]
HELD_OUT = [sentences(WORDS["a"], 10, 2), sentences(WORDS["b"], 10, 3)]


def _llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger than the 0.02 init, so that experts really differ
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return model.eval()


def prepare(root: Path) -> None:
    from hubtools.merging.mixture import build_mixture

    shutil.rmtree(root, ignore_errors=True)
    dense = _llama(0)
    folders = {"dense": root / "dense", "other": root / "other", "ft": root / "ft"}
    dense.save_pretrained(folders["dense"])
    ft = _llama(0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1 * p.std())
    ft.save_pretrained(folders["ft"])
    _llama(7).save_pretrained(folders["other"])
    for f in folders.values():
        tokenizer().save_pretrained(f)
    copy = Path(shutil.copytree(folders["dense"], root / "copy"))
    build_mixture(
        folders["dense"], [folders["dense"], copy], root / "mix_identical", prompts=PROMPTS, io="dense"
    )
    build_mixture(
        folders["dense"], [folders["ft"], folders["other"]], root / "mix_routed", prompts=PROMPTS, io="auto"
    )
    print(f"wrote {root}")


def run(root: Path) -> dict:
    from transformers import AutoModelForCausalLM

    import hubtools.merging  # noqa: F401  (registers hubtools_glue_mixture)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = tokenizer()
    texts = HELD_OUT[0][:4] + HELD_OUT[1][:4]
    start = time.perf_counter()

    def load(name: str, on: torch.device = device):
        return AutoModelForCausalLM.from_pretrained(root / name).to(on).eval()

    def logits(model, rows: list[str]) -> torch.Tensor:
        enc = tok(rows, return_tensors="pt").to(model.device)
        with torch.no_grad():
            return model(**enc).logits.float().cpu()

    def spliced(expert: str):
        model, donor = load("dense"), load(expert)
        for i in range(model.config.num_hidden_layers):
            model.model.layers[i].load_state_dict(donor.model.layers[i].state_dict())
        return model

    report: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__}  # fmt: skip
    report["identical_experts_vs_dense_max_abs_diff"] = float(
        (logits(load("mix_identical"), texts) - logits(load("dense"), texts)).abs().max()
    )
    routed = load("mix_routed")
    got = logits(routed, texts)
    ref = torch.cat([logits(spliced("ft"), texts[:4]), logits(load("other"), texts[4:])])
    report["routed_vs_experts_alone_max_abs_diff"] = float((got - ref).abs().max())
    report["device_vs_cpu_max_abs_diff"] = float(
        (got - logits(load("mix_routed", torch.device("cpu")), texts)).abs().max()
    )
    kw = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    pair = [HELD_OUT[0][0], HELD_OUT[1][0]]
    generated = routed.generate(**tok(pair, return_tensors="pt").to(device), **kw).cpu()
    alone_a = spliced("ft").generate(**tok(pair[:1], return_tensors="pt").to(device), **kw).cpu()
    alone_b = load("other").generate(**tok(pair[1:], return_tensors="pt").to(device), **kw).cpu()
    report["generate_equals_experts_alone"] = bool(
        torch.equal(generated[0], alone_a[0]) and torch.equal(generated[1], alone_b[0])
    )
    report["ok"] = (
        report["identical_experts_vs_dense_max_abs_diff"] < 1e-4
        and report["routed_vs_experts_alone_max_abs_diff"] < 1e-4
        and report["device_vs_cpu_max_abs_diff"] < 1e-3
        and report["generate_equals_experts_alone"]
    )
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        sys.exit(0 if run(Path(sys.argv[2]))["ok"] else 1)
    else:
        sys.exit(__doc__)
