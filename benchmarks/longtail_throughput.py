"""Training throughput of the long-tail trainer against a bare PyTorch loop, and 2 processes against 1.

Throughput: the same model (the tiny ResNet of ``longtail_mri.py``, same seed), the same decoded
images (``hubtools.longtail.trainer.ImageTensors``), the same sampler order, batch size, loss and
AdamW step, timed three ways in one process, interleaved and repeated (the CPU is shared, so the
best of the repeats is compared):

- ``bare``: a plain ``for`` loop over index batches of the uint8 tensor;
- ``shared_loop``: :func:`hubtools.train.train` exactly as ``longtail train`` calls it (DataLoader over
  the dataset, accelerate, metric window, progress bar, final checkpoint), without validation;
  "loop" = its own ``elapsed_s`` (set-up and checkpoint excluded), "call" = the whole call;
  wall-clock images/s and images per process-CPU-second are both reported: on a shared machine
  the CPU-time figure is the one other processes barely disturb;
- ``train_longtail``: the whole command (decoding, per-epoch validation, test, model folder), for scale.

DDP (``--ddp``): ``hubtools longtail train`` in 1 process (batch B) and under ``accelerate launch
--multi_gpu --num_processes 2`` (gloo on CPU, B/2 per process, so the same B images per optimizer
step), several seeds; the test metrics are compared with the seed-to-seed spread.

    python benchmarks/longtail_throughput.py [--dataset mri] [--epochs 3] [--repeats 3] [--ddp]
    python benchmarks/longtail_throughput.py --smoke      # MRI smoke subset, 1 epoch, 1 repeat, no DDP

Writes ``benchmarks/results/longtail_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from longtail_mri import BACKBONE, build_set  # same model and sets as the accuracy benchmark

from hubtools.longtail.classifiers import get_classifier
from hubtools.longtail.datasets import load
from hubtools.longtail.methods import get_loss
from hubtools.longtail.samplers import get_sampler
from hubtools.longtail.trainer import (
    BackboneSpec,
    ImageTensors,
    LongTailModel,
    LongTailTrainConfig,
    build_backbone,
    feature_dim,
    normalize,
    train_longtail,
)
from hubtools.train import TrainConfig, train

LR = 1e-3


def fresh_model(num_classes: int, image_size: int, seed: int) -> LongTailModel:
    torch.manual_seed(seed)
    backbone = build_backbone(BackboneSpec(**BACKBONE))
    return LongTailModel(backbone, get_classifier("linear", feature_dim(backbone, image_size), num_classes))


def bare_loop(
    model: LongTailModel, data: ImageTensors, sampler, epochs: int, batch: int
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and images of a plain loop: index batches, normalise, forward, CE, backward, AdamW."""
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    images = 0
    start, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler))
        for i in range(0, len(order) - batch + 1, batch):  # drop_last, as the shared loop
            idx = order[i : i + batch]
            loss = loss_fn(model(normalize(data.images[idx])), data.labels[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            images += batch
    return time.perf_counter() - start, time.process_time() - cpu, images


def shared_loop(
    model: LongTailModel, data: ImageTensors, sampler, epochs: int, batch: int, out: Path, counts: list[int]
) -> tuple[float, float, float, int]:
    """(call seconds, loop seconds, call CPU seconds, images) of hubtools.train.train with the loss_fn longtail train uses."""
    shutil.rmtree(out, ignore_errors=True)
    loss = get_loss("erm", counts)
    steps_per_epoch = len(sampler) // batch
    cfg = TrainConfig(
        output_dir=out,
        seed=1,
        num_epochs=epochs,
        batch_size=batch,
        lr=LR,
        eval_every=steps_per_epoch,
        log_every=steps_per_epoch,
        keep_last=1,
    )

    def loss_fn(m, b):
        images, labels = b
        loss.set_epoch(sampler.epoch)
        return loss(m(normalize(images)), labels)

    loss.train()
    start, cpu = time.perf_counter(), time.process_time()
    result = train(model, data, loss_fn, cfg, sampler=sampler)
    call, call_cpu = time.perf_counter() - start, time.process_time() - cpu
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    loop = max(r["elapsed_s"] for r in records if "elapsed_s" in r)
    return call, loop, call_cpu, result.step * batch


def throughput(args: argparse.Namespace, dataset: Path) -> dict:
    ds, lt = load(dataset)
    counts = lt.cls_num_list
    data = ImageTensors(ds["train"], args.image_size)
    sampler = get_sampler("instance", data.labels.numpy(), counts, num_epochs=args.epochs, seed=1)
    rows: dict[str, list[float]] = {
        "bare": [],
        "shared_loop_loop": [],
        "shared_loop_call": [],
        "bare_cpu": [],
        "shared_loop_call_cpu": [],
    }
    for rep in range(args.repeats):
        seconds, cpu, n = bare_loop(
            fresh_model(len(counts), args.image_size, 1), data, sampler, args.epochs, args.batch
        )
        rows["bare"].append(n / seconds)
        rows["bare_cpu"].append(n / cpu)
        call, loop, call_cpu, n2 = shared_loop(
            fresh_model(len(counts), args.image_size, 1),
            data,
            sampler,
            args.epochs,
            args.batch,
            args.work / "tp-run",
            counts,
        )
        assert n2 == n, (n, n2)
        rows["shared_loop_loop"].append(n / loop)
        rows["shared_loop_call"].append(n / call)
        rows["shared_loop_call_cpu"].append(n / call_cpu)
        print(
            f"repeat {rep}: bare {rows['bare'][-1]:.0f} img/s, shared loop {rows['shared_loop_loop'][-1]:.0f} "
            f"(call {rows['shared_loop_call'][-1]:.0f}) img/s; per CPU second: bare {rows['bare_cpu'][-1]:.0f}, "
            f"call {rows['shared_loop_call_cpu'][-1]:.0f}",
            flush=True,
        )
    cfg = LongTailTrainConfig(
        dataset=str(dataset),
        method="erm",
        backbone=BACKBONE,
        output_dir=args.work / "tp-e2e",
        image_size=args.image_size,
        num_epochs=args.epochs,
        batch_size=args.batch,
        lr=LR,
        seed=1,
    )
    shutil.rmtree(cfg.output_dir, ignore_errors=True)
    start = time.perf_counter()
    train_longtail(cfg)
    e2e = time.perf_counter() - start
    best = {k: max(v) for k, v in rows.items()}
    return {
        "train_images": len(data),
        "images_per_run": n,
        "images_per_s": rows,
        "best_images_per_s": best,
        "ratio_loop_vs_bare": best["shared_loop_loop"] / best["bare"],
        "ratio_call_vs_bare": best["shared_loop_call"] / best["bare"],
        "ratio_call_vs_bare_cpu": best["shared_loop_call_cpu"] / best["bare_cpu"],
        "train_longtail_seconds": e2e,
        "train_longtail_train_images_per_s": len(data) * args.epochs / e2e,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_train(
    dataset: Path, out: Path, seed: int, batch: int, epochs: int, image_size: int, procs: int
) -> dict:
    """``hubtools longtail train`` in 1 process or under accelerate launch with ``procs``; its test metrics."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = out / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": str(dataset),
                "method": "erm",
                "backbone": BACKBONE,
                "output_dir": str(out),
                "image_size": image_size,
                "num_epochs": epochs,
                "batch_size": batch,
                "lr": LR,
                "seed": seed,
            }
        )
    )
    launcher = [sys.executable, "-m"]
    if procs > 1:
        launcher = [
            str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
            str(procs), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m",
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, "hubtools.cli", "longtail", "train", str(cfg)], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads((out / "model" / "metrics.json").read_text())


def ddp(args: argparse.Namespace, dataset: Path) -> dict:
    keys = ("top1", "balanced_acc", "many_acc", "medium_acc", "few_acc")
    runs: dict[str, list[dict]] = {"1_process": [], "2_processes": []}
    for seed in args.seeds:
        for name, procs, batch in (("1_process", 1, args.batch), ("2_processes", 2, args.batch // 2)):
            m = cli_train(
                dataset, args.work / f"ddp-{name}-s{seed}", seed, batch, args.epochs, args.image_size, procs
            )
            runs[name].append({k: m["test"][k] for k in keys} | {"selected_epoch": m["selected_epoch"]})
            print(f"seed {seed} {name}: " + " ".join(f"{k} {m['test'][k]:.1f}" for k in keys), flush=True)
    summary = {
        name: {k: [float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))] for k in keys}
        for name, rs in runs.items()
    }
    return {"per_seed": runs, "summary": summary}


def markdown(result: dict) -> str:
    tp = result["throughput"]
    best = tp["best_images_per_s"]
    lines = [
        f"Training throughput, {result['setup']['dataset']} ({tp['train_images']} train images, "
        f"{result['setup']['image_size']} px, batch {result['setup']['batch_size']}, "
        f"{result['setup']['epochs']} epochs, 1 torch thread; best of {result['setup']['repeats']}):",
        "",
        "| loop | images/s | vs bare |",
        "|---|---:|---:|",
        f"| bare PyTorch loop | {best['bare']:.0f} | 1.00 |",
        f"| hubtools.train loop (as longtail train; timed loop) | {best['shared_loop_loop']:.0f} | "
        f"{tp['ratio_loop_vs_bare']:.2f} |",
        f"| hubtools.train call (incl. accelerate set-up, checkpoint) | {best['shared_loop_call']:.0f} | "
        f"{tp['ratio_call_vs_bare']:.2f} |",
        f"| per CPU second (barely disturbed by other load): bare | {best['bare_cpu']:.0f} | 1.00 |",
        f"| per CPU second: hubtools.train call | {best['shared_loop_call_cpu']:.0f} | "
        f"{tp['ratio_call_vs_bare_cpu']:.2f} |",
        f"| train_longtail end to end (decode, per-epoch validation, test, save) | "
        f"{tp['train_longtail_train_images_per_s']:.0f} | "
        f"{tp['train_longtail_train_images_per_s'] / best['bare']:.2f} |",
    ]
    if "ddp" in result:
        s = result["ddp"]["summary"]
        keys = list(s["1_process"])
        lines += [
            "",
            f"1 process vs `accelerate launch --multi_gpu --num_processes 2` (gloo, CPU), test metrics, "
            f"mean ± std over seeds {result['setup']['seeds']}:",
            "",
            "| run | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
        ]
        for name, row in s.items():
            lines.append(
                f"| {name} | " + " | ".join(f"{row[k][0]:.1f} ± {row[k][1]:.1f}" for k in keys) + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mri", "fmnist"], default="mri")
    parser.add_argument(
        "--data", type=Path, default=None, help="any `longtail build` folder instead of --dataset (tests)"
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddp", action="store_true", help="also compare 2 processes with 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work", type=Path, default=Path("longtail-bench"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        args.epochs, args.repeats, args.ddp = 1, 1, False
    dataset = args.data or build_set(args.work, args.dataset, args.smoke)
    result: dict = {
        "setup": {
            "dataset": str(args.data)
            if args.data
            else args.dataset + (" smoke subset" if args.smoke else ""),
            "epochs": args.epochs,
            "batch_size": args.batch,
            "image_size": args.image_size,
            "repeats": args.repeats,
            "seeds": args.seeds,
            "backbone": BACKBONE,
            "torch_threads": torch.get_num_threads(),
        }
    }
    result["throughput"] = throughput(args, dataset)
    write(result, args)  # before the DDP part, so its figures survive a failure there
    if args.ddp:
        result["ddp"] = ddp(args, dataset)
        write(result, args)


def write(result: dict, args: argparse.Namespace) -> None:
    name = "longtail_throughput" + ("_smoke" if args.smoke else "")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.results / f"{name}.md").write_text(md + "\n")
    print(md, flush=True)


if __name__ == "__main__":
    main()
