"""Training throughput of the long-tail trainer against a bare PyTorch loop, and 2 processes against 1.

Throughput: the same model (the tiny ResNet of ``longtail_mri.py``, same seed), the same decoded
images (``hubtools.longtail.trainer.ImageTensors``), the same sampler order, batch size, loss and
AdamW step, timed three ways in one process, interleaved and repeated ``--repeats`` times (every
round is one run, seed = the round's index; the tables give the median and spread over rounds, and
each ratio to the bare loop is taken within a round):

- ``bare``: a plain ``for`` loop over index batches of the uint8 tensor;
- ``shared_loop``: :func:`hubtools.train.train` exactly as ``longtail train`` calls it (DataLoader over
  the dataset, accelerate, metric window, progress bar, final checkpoint), without validation;
  "loop" = its own ``elapsed_s`` (set-up and checkpoint excluded), "call" = the whole call;
  wall-clock images/s and images per process-CPU-second are both reported: on a shared machine
  the CPU-time figure is the one other processes barely disturb;
- ``train_longtail``: the whole command (decoding, per-epoch validation, test, model folder), for scale.

All three train without augmentation. The DDP runs below keep the trainer's default (MONICA's
augmentation), each process drawing its own, as a user's run would.

DDP (``--ddp``): ``hubtools longtail train`` in 1 process (batch B) and under ``accelerate launch
--multi_gpu --num_processes 2`` (gloo on CPU, B/2 per process, so the same B images per optimizer
step), at each of ``--seeds`` (default 1 2 3); the test metrics are compared per seed (paired
difference with a bootstrap 95 % CI).

    python benchmarks/longtail_throughput.py [--dataset mri] [--epochs 3] [--repeats 3] [--ddp] [--seeds 1 2 3]
    python benchmarks/longtail_throughput.py --smoke      # MRI smoke subset, 1 epoch, 1 round, no DDP

Writes ``longtail_throughput.{json,md}`` through the shared harness; the set is built once under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from longtail_mri import (  # same model and sets as the accuracy benchmark
    BACKBONE,
    DATA,
    TRAINING_CODE,
    build_set,
)

from hubtools.bench import Benchmark, Run, Table, arms_table, values_by_seed
from hubtools.bench.stats import mean_sd, paired_by_seed
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


def throughput(args: argparse.Namespace, dataset: Path) -> tuple[list[Run], dict]:
    """One run per (loop, round): bare, shared_loop and train_longtail, interleaved in every round."""
    ds, lt = load(dataset)
    counts = lt.cls_num_list
    data = ImageTensors(ds["train"], args.image_size)
    sampler = get_sampler("instance", data.labels.numpy(), counts, num_epochs=args.epochs, seed=1)
    runs: list[Run] = []
    for rep in range(args.repeats):
        seconds, cpu, n = bare_loop(
            fresh_model(len(counts), args.image_size, 1), data, sampler, args.epochs, args.batch
        )
        bare = Run(arm="bare", seed=rep, metrics={
            "images": n, "seconds": seconds, "cpu_seconds": cpu, "images_per_s": n / seconds,
            "images_per_cpu_s": n / cpu,
        })
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
        shared = Run(arm="shared_loop", seed=rep, metrics={
            "images": n, "loop_seconds": loop, "call_seconds": call, "call_cpu_seconds": call_cpu,
            "images_per_s": n / loop, "call_images_per_s": n / call, "call_images_per_cpu_s": n / call_cpu,
        })
        cfg = LongTailTrainConfig(
            dataset=str(dataset),
            method="erm",
            augmentation="none",  # as in the bare loop it is compared with
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
        whole = Run(arm="train_longtail", seed=rep, metrics={
            "seconds": e2e, "train_images_per_s": len(data) * args.epochs / e2e,
        })
        runs += [bare, shared, whole]
        print(
            f"round {rep}: bare {bare.metrics['images_per_s']:.0f} img/s, shared loop "
            f"{shared.metrics['images_per_s']:.0f} (call {shared.metrics['call_images_per_s']:.0f}) img/s; per CPU "
            f"second: bare {bare.metrics['images_per_cpu_s']:.0f}, call {shared.metrics['call_images_per_cpu_s']:.0f}; "
            f"train_longtail {whole.metrics['train_images_per_s']:.0f} train img/s",
            flush=True,
        )
    return runs, {"train_images": len(data), "images_per_run": n}


# (label, arm, metric, bare metric it is compared with) of each row of the throughput table
ROWS = [
    ("bare PyTorch loop", "bare", "images_per_s", "images_per_s"),
    ("hubtools.train loop (as longtail train; timed loop)", "shared_loop", "images_per_s", "images_per_s"),
    ("hubtools.train call (incl. accelerate set-up, checkpoint)", "shared_loop", "call_images_per_s",
     "images_per_s"),
    ("per CPU second (barely disturbed by other load): bare", "bare", "images_per_cpu_s", "images_per_cpu_s"),
    ("per CPU second: hubtools.train call", "shared_loop", "call_images_per_cpu_s", "images_per_cpu_s"),
    ("train_longtail end to end (decode, per-epoch validation, test, save)", "train_longtail",
     "train_images_per_s", "images_per_s"),
]


def throughput_table(runs: list[Run], args: argparse.Namespace, info: dict) -> tuple[Table, dict]:
    rows, medians = [], {}
    for label, arm, metric, base in ROWS:
        vals = values_by_seed(runs, arm, metric)
        bare = values_by_seed(runs, "bare", base)
        ratio = [vals[r] / bare[r] for r in vals]
        m, sd = mean_sd(list(vals.values()))
        med = statistics.median(vals.values())
        medians[label] = {"median": med, "median_vs_bare": statistics.median(ratio)}
        rows.append([label, len(vals), round(med), f"{min(vals.values()):.0f}–{max(vals.values()):.0f}"
                     if len(vals) > 1 else f"{med:.0f}", f"{m:.0f}" + ("" if sd is None else f" ± {sd:.0f}"),
                     round(statistics.median(ratio), 2)])
    table = Table(
        title=f"Training throughput ({info['train_images']} train images, {args.image_size} px, batch "
        f"{args.batch}, {args.epochs} epoch(s), 1 torch thread)",
        columns=["loop", "rounds", "median images/s", "min–max", "mean ± sd", "median vs bare (same round)"],
        rows=rows,
        note="Every round runs the three loops one after the other; 'vs bare' is the ratio to the bare loop's "
        "figure of the same round (per CPU second: to the bare loop per CPU second), median over rounds; sd is "
        "the sample sd (ddof = 1). train_longtail counts train images per second of the whole command.",
    )
    return table, medians


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


DDP_KEYS = ("top1", "balanced_acc", "many_acc", "medium_acc", "few_acc")


def ddp(args: argparse.Namespace, dataset: Path) -> list[Run]:
    runs = []
    for seed in args.seeds:
        for name, procs, batch in (("1_process", 1, args.batch), ("2_processes", 2, args.batch // 2)):
            m = cli_train(
                dataset, args.work / f"ddp-{name}-s{seed}", seed, batch, args.epochs, args.image_size, procs
            )
            runs.append(Run(arm=name, seed=seed, metrics={k: m["test"][k] for k in DDP_KEYS}
                            | {"selected_epoch": m["selected_epoch"]}))
            print(f"seed {seed} {name}: " + " ".join(f"{k} {m['test'][k]:.1f}" for k in DDP_KEYS), flush=True)
    return runs


def write(bench: Benchmark, args: argparse.Namespace, dataset: Path, tp_runs: list[Run], info: dict,
          ddp_runs: list[Run] | None) -> None:
    table, medians = throughput_table(tp_runs, args, info)
    loop = medians[ROWS[1][0]]["median_vs_bare"]
    cpu = medians[ROWS[4][0]]["median_vs_bare"]
    e2e = medians[ROWS[5][0]]["median_vs_bare"]
    headline = (f"the shared loop trains at {loop:.2f}x the bare loop's images/s ({cpu:.2f}x per CPU second), "
                f"train_longtail end to end at {e2e:.2f}x; median of {args.repeats} round(s)")
    verdict = headline + "."
    tables, details = [table], {**info, "throughput_medians": medians,
                                "rounds": "throughput runs: seed = the round's index (0, 1, ...); DDP runs: seed "
                                "= the training seed"}
    if ddp_runs:
        tables.append(arms_table(ddp_runs, list(DDP_KEYS), baseline="1_process", arms=["1_process", "2_processes"],
                                 digits=1, diff_metrics=["top1", "balanced_acc"],
                                 title="1 process vs accelerate launch --multi_gpu --num_processes 2 (gloo, CPU), "
                                 "test %"))
        diffs = {k: paired_by_seed(values_by_seed(ddp_runs, "2_processes", k),
                                   values_by_seed(ddp_runs, "1_process", k)) for k in ("top1", "balanced_acc")}
        details["ddp_paired_diff"] = {k: d.as_dict() for k, d in diffs.items()}
        ba = diffs["balanced_acc"]
        if ba.clear is None:
            verdict += f" DDP: balanced accuracy {ba.mean:+.1f} points with 2 processes (one seed: not judged)."
        elif ba.clear:
            verdict += (f" DDP: 2 processes differ from 1 in balanced accuracy beyond seed noise ({ba.mean:+.1f} "
                        f"points, 95 % CI [{ba.ci_low:+.1f}, {ba.ci_high:+.1f}], {ba.n} seeds).")
        else:
            verdict += (f" DDP: 2 processes match 1 within seed noise (balanced accuracy {ba.mean:+.1f} points, "
                        f"95 % CI [{ba.ci_low:+.1f}, {ba.ci_high:+.1f}], {ba.n} paired seeds).")
    if args.data:
        data = f"the long-tail build folder {args.data}"
    else:
        data = DATA[args.dataset] + (" (smoke: 20 of the 116 classes)" if args.smoke and args.dataset == "mri" else "")
    bench.write(
        "longtail_throughput",
        data=data,
        config={"dataset": str(args.data) if args.data else args.dataset, "smoke_subset": args.smoke,
                "epochs": args.epochs, "batch_size": args.batch, "image_size": args.image_size,
                "repeats": args.repeats, "ddp": bool(ddp_runs), "ddp_seeds": args.seeds if ddp_runs else [],
                "backbone": BACKBONE, "lr": LR, "torch_threads": torch.get_num_threads()},
        runs=tp_runs + (ddp_runs or []),
        tables=tables,
        headline=headline,
        verdict=verdict,
        details=details,
        seeds=args.seeds if ddp_runs else list(range(args.repeats)),
    )
    for row in table.rows:
        print(" | ".join(map(str, row)), flush=True)


def main(argv: list[str] | None = None) -> None:
    bench = Benchmark(
        "longtail_throughput",
        title="Long-tail training throughput and DDP",
        capability="longtail",
        code=[*TRAINING_CODE, "benchmarks/longtail_mri.py"],
        default_seeds=[1, 2, 3],
        smoke_seeds=[1],
    )
    parser = bench.parser(__doc__)
    parser.add_argument("--dataset", choices=["mri", "fmnist"], default="mri")
    parser.add_argument(
        "--data", type=Path, default=None, help="any `longtail build` folder instead of --dataset (tests)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds (smoke 1)")
    parser.add_argument("--ddp", action="store_true", help="also compare 2 processes with 1, at each of --seeds")
    args = bench.parse(parser, argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.epochs, args.repeats, args.ddp = 1, 1, False
    dataset = args.data or build_set(args.work, args.dataset, args.smoke)
    tp_runs, info = throughput(args, dataset)
    write(bench, args, dataset, tp_runs, info, None)  # before the DDP part, so its figures survive a failure there
    if args.ddp:
        write(bench, args, dataset, tp_runs, info, ddp(args, dataset))


if __name__ == "__main__":
    main()
