"""Device check of Model-GLUE mixtures (`hubtools_glue_mixture`): do routing, splicing and generation with
per-expert KV caches behave on a GPU exactly as on the CPU?

``prepare`` (here, on the CPU) builds tiny Llamas from configs with a word-level tokenizer — a dense model, two
copies of it, a small perturbation of it ("fine-tune") and one model from another initialisation — and three
model-level mixtures with ``build_mixture``. ``run`` (on the GPU machine, which lacks mergekit) loads them on
the device and checks, writing ``device_mixture.json`` (and its page) through the shared harness:

- identical experts reproduce the dense model's logits (max |Δ|);
- the routed mixture sends each held-out sentence to the expert of its vocabulary, and its rows equal that
  expert run alone (io=expert) or spliced into the dense model (io=dense), on the device;
- device logits equal CPU logits within float32 noise;
- greedy ``generate`` on a batch routed to different experts equals each expert generating alone.

Exit status 1 if a check fails. The models are built from fixed seeds (0, 1, 7): ``--seeds`` is not used.

    python scripts/device/device_check_mixture.py prepare .devdata/mixture   # here
    python scripts/device/device_check_mixture.py run .devdata/mixture       # there
    python scripts/device/device_check_mixture.py --smoke --device cpu       # both, into --work, on the CPU
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import torch

from hubtools.bench import Benchmark, Run, Table

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


THRESHOLDS = {  # check: (what, largest allowed value)
    "identical_experts_vs_dense_max_abs_diff": ("two identical experts against the dense model: max |Δ logit|", 1e-4),
    "routed_vs_experts_alone_max_abs_diff": ("routed mixture against each expert alone / spliced: max |Δ logit|", 1e-4),
    "device_vs_cpu_max_abs_diff": ("routed mixture on the device against the CPU: max |Δ logit|", 1e-3),
}


def run(root: Path, device: torch.device) -> dict:
    from transformers import AutoModelForCausalLM

    import hubtools.merging  # noqa: F401  (registers hubtools_glue_mixture)

    tok = tokenizer()
    texts = HELD_OUT[0][:4] + HELD_OUT[1][:4]

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

    report: dict = {}
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
    return report


def write(bench: Benchmark, root: Path, device: torch.device) -> int:
    start = time.perf_counter()
    report = run(root, device)
    seconds = round(time.perf_counter() - start, 1)
    runs = [Run(arm=k, metrics={"value": report[k], "max_allowed": limit, "pass": report[k] < limit})
            for k, (_, limit) in THRESHOLDS.items()]
    runs.append(Run(arm="generate_equals_experts_alone",
                    metrics={"value": report["generate_equals_experts_alone"], "max_allowed": None,
                             "pass": report["generate_equals_experts_alone"]}))
    failed = [r.arm for r in runs if not r.metrics["pass"]]
    ok = not failed
    what = {k: w for k, (w, _) in THRESHOLDS.items()}
    what["generate_equals_experts_alone"] = ("greedy generate on a batch routed to two experts equals each "
                                             "expert generating alone (8 new tokens)")
    table = Table(
        title="Checks",
        columns=["check", "what", "value", "limit", "pass"],
        rows=[[r.arm, what[r.arm], r.metrics["value"], r.metrics["max_allowed"], r.metrics["pass"]] for r in runs],
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    bench.write(
        "device_mixture",
        data="tiny Llamas (hidden 64, 3 layers, word-level vocabulary of 28 tokens) built from fixed seeds, "
        "and mixtures of them built by hubtools.merging.mixture.build_mixture; held-out sentences of each "
        "expert's vocabulary (synthetic: these checks test mechanics, not quality)",
        config={"llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                          "num_attention_heads": 4}, "mixtures": ["mix_identical (io=dense)",
                                                                   "mix_routed (io=auto)"],
                "generate": {"max_new_tokens": 8, "do_sample": False}, "folder": str(root)},
        runs=runs,
        tables=[table],
        headline=(f"all 4 mixture checks pass on {name}" if ok else f"failed on {name}: {', '.join(failed)}"),
        verdict=("pass: routing, splicing and generation with per-expert KV caches match on the device"
                 if ok else f"FAIL: {', '.join(failed)}"),
        details={"ok": ok, "failed": failed, "check_seconds": seconds, "torch": torch.__version__,
                 "seeds": "not used: the models are built from fixed seeds 0, 1 and 7"},
        seeds=[],
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark(
        "device_check_mixture",
        title="Device check: Model-GLUE mixtures (routing, splicing, generation)",
        capability="merging",
        code=["hubtools/merging/mixture.py", "hubtools/merging/mixture_model.py"],
        default_seeds=[0],
        script="scripts/device/device_check_mixture.py",
    )
    parser = bench.parser(__doc__)
    parser.add_argument("action", nargs="?", choices=["prepare", "run"],
                        help="prepare (here) or run (on the GPU machine); --smoke without it does both")
    parser.add_argument("folder", type=Path, nargs="?", default=None,
                        help="where the models are (default: under --work)")
    args = bench.parse(parser, argv)
    if args.action is None and not args.smoke:
        parser.error("say prepare or run (or --smoke for both)")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(1)
    folder = args.folder or args.work / "mixture"
    if args.action in (None, "prepare"):
        prepare(folder)
    if args.action in (None, "run"):
        return write(bench, folder, torch.device(args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
