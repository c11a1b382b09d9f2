"""Quickstart demo of p-diff: generate last-BN parameters of a digits CNN, publish the pipeline, load it back.

Real data (scikit-learn's digits). The generated models are scored on the held-out test split
inside the same frozen host as the collected checkpoints. Sizes are cut to fit the quickstart's
one-minute budget (50 checkpoints, 300 + 400 training steps, 20 models); the benchmark runs the full recipe.

Then a small COND P-DIFF LoRA generator (real all-MiniLM-L6-v2, real fortunes category tasks) is
trained for a few seconds and published with its text encoder: the LoRA-generator Space's model.
It is far too briefly trained to make useful adapters; it shows the artifact, not the method's quality.
"""

from __future__ import annotations

import statistics

from hubtools.quickstart import DemoContext, DemoResult, register_demo


@register_demo("paramgen", "p-diff: generate a digits CNN's last-BN parameters, via the local Hub")
def paramgen_demo(ctx: DemoContext) -> DemoResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is fastest on a busy 2-core machine
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: DemoContext) -> DemoResult:
    import torch

    from hubtools.hub.publish import push_artifact
    from hubtools.paramgen import PDiffPipeline
    from hubtools.paramgen.digits import accuracy, run_digits_pdiff
    from hubtools.paramgen.evaluate import novelty
    from hubtools.paramgen.publish import save_pipeline

    run = run_digits_pdiff(
        ctx.work_dir / "run",
        host_epochs=10,
        num_checkpoints=50,
        save_every=2,
        ae_steps=300,
        ddpm_steps=400,
        normalization="global",  # z-scored checkpoints: far better generated models at this short training
    )
    repo = ctx.repo_id("pdiff-digits-cnn")
    folder = save_pipeline(
        run.pipeline,
        ctx.work_dir / "pipeline",
        repo_id=repo,
        host_model="hubtools DigitsCNN",
        num_checkpoints=len(run.checkpoints),
        reproduce="hubtools quickstart --only paramgen",
    )
    push_artifact(folder, repo)
    pipe = PDiffPipeline.from_pretrained(repo)
    pipe.set_progress_bar_config(disable=True)
    params = pipe(num_models=20, generator=torch.Generator().manual_seed(0), num_inference_steps=1000).params
    spec, x, y = run.checkpoints.spec, run.splits.x_test, run.splits.y_test
    gen = [accuracy(spec.model_with(run.host, p), x, y) for p in params]
    orig = [accuracy(spec.model_with(run.host, p), x, y) for p in run.checkpoints.params[::5]]
    nov = novelty(params, run.checkpoints.params)
    lora_repo, lora_metrics = publish_lora_generator(ctx)
    return DemoResult(
        data=f"scikit-learn digits ({len(run.splits.y_train)} train / {len(y)} test), "
        f"{len(run.checkpoints)} checkpoints x {spec.dim} floats",
        artifacts=[repo, lora_repo],
        metrics={
            "orig_median_acc": round(statistics.median(orig), 2),
            "gen_best_acc": round(max(gen), 2),
            "gen_median_acc": round(statistics.median(gen), 2),
            "novelty_ratio": round(nov["novelty_ratio"], 2),
            "train_s": round(run.stats["ae_train_s"] + run.stats["ddpm_train_s"], 1),
            **lora_metrics,
        },
    )


LORA_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The LoRA layout a generated vector is written with: PEFT's adapter_config.json, kept in the pipeline repo
# under another name (an adapter_config.json would make tools take the pipeline repo for an adapter).
LORA_CONFIG_FILE = "lora_config.json"


def publish_lora_generator(
    ctx: DemoContext, steps: int = 8, gen_steps: int = 60, sample_steps: int = 50
) -> tuple[str, dict]:
    """Collect LoRA snapshots of MiniLM on the fortunes tasks, train COND P-DIFF on them briefly (``steps`` LoRA
    steps per task, ``gen_steps`` autoencoder and DDPM steps), publish the pipeline (text encoder included, so a
    task description is a condition) with its LoRA template, and score one adapter generated for the held-out
    task (``sample_steps`` DDPM steps)."""
    import copy
    import shutil
    import tempfile
    from pathlib import Path

    import torch
    from peft import get_peft_model

    from hubtools.hub.publish import push_artifact
    from hubtools.paramgen import PDiffTrainConfig, embed_texts, train_cond_pdiff
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
    from hubtools.paramgen.publish import save_pipeline

    base, tok = load_minilm()
    sizes = {"n_train": 16, "n_test": 16, "max_length": 24}
    data = {t.name: load_task(t, tok, **sizes) for t in (*TRAIN_TASKS, HELD_OUT_TASK)}
    head = fit_head(base, load_task(PRETEXT_TASK, tok, **sizes), epochs=50)
    lcfg = lora_config(r=1, layers=[4, 5])
    sets = collect_lora_checkpoints(
        base,
        lcfg,
        {t.name: t.name for t in TRAIN_TASKS},
        make_lora_trainer(head, data, steps=steps),
        last_n_steps=steps // 2,
    )
    conditions = embed_texts(base, tok, [t.description for t in TRAIN_TASKS])
    cfg = PDiffTrainConfig(
        output_dir=ctx.work_dir / "cond-pdiff",
        fold_rate=4,
        kernel_size=3,
        dec_channels=(4, 32, 32, 8),
        denoiser_channels=(16, 32, 64, 64),
        ema_decay=0.99,
        ae_steps=gen_steps,
        ddpm_steps=gen_steps,
        log_every=1000,
    )
    pipe, _ = train_cond_pdiff(sets, conditions, cfg, text_encoder=base, tokenizer=tok)
    repo = ctx.repo_id("cond-pdiff-minilm-lora")
    folder = save_pipeline(
        pipe,
        ctx.work_dir / "cond-pdiff-pipeline",
        repo_id=repo,
        host_model=LORA_BASE_MODEL,
        num_checkpoints=sum(len(s) for s in sets.values()),
        reproduce="hubtools quickstart --only paramgen",
    )
    template = copy.deepcopy(lcfg)
    template.base_model_name_or_path = LORA_BASE_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        template.save_pretrained(tmp)
        shutil.move(Path(tmp) / "adapter_config.json", folder / LORA_CONFIG_FILE)
    push_artifact(folder, repo)

    spec = next(iter(sets.values())).spec
    pipe.set_progress_bar_config(disable=True)
    held_out = pipe(
        condition=HELD_OUT_TASK.description,
        num_models=1,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=sample_steps,
    ).params[0]
    probe = get_peft_model(copy.deepcopy(base), copy.deepcopy(lcfg))
    test = data[HELD_OUT_TASK.name].test
    return repo, {
        "lora_floats": spec.dim,
        "heldout_task_acc_generated": round(lora_accuracy(probe, head, test, spec.unflatten(held_out)), 1),
        "heldout_task_acc_base": round(
            lora_accuracy(probe, head, test, spec.unflatten(torch.zeros(spec.dim))), 1
        ),
    }
