"""Quickstart demo of p-diff: generate last-BN parameters of a digits CNN, publish the pipeline, load it back.

Real data (scikit-learn's digits). The generated models are scored on the held-out test split
inside the same frozen host as the collected checkpoints. Sizes are cut to fit the quickstart's
one-minute budget (50 checkpoints, 300 + 400 training steps, 20 models); the benchmark runs the full recipe.
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
    )
    push_artifact(folder, repo)
    pipe = PDiffPipeline.from_pretrained(repo)
    pipe.set_progress_bar_config(disable=True)
    params = pipe(num_models=20, generator=torch.Generator().manual_seed(0), num_inference_steps=1000).params
    spec, x, y = run.checkpoints.spec, run.splits.x_test, run.splits.y_test
    gen = [accuracy(spec.model_with(run.host, p), x, y) for p in params]
    orig = [accuracy(spec.model_with(run.host, p), x, y) for p in run.checkpoints.params[::5]]
    nov = novelty(params, run.checkpoints.params)
    return DemoResult(
        data=f"scikit-learn digits ({len(run.splits.y_train)} train / {len(y)} test), "
        f"{len(run.checkpoints)} checkpoints x {spec.dim} floats",
        artifacts=[repo],
        metrics={
            "orig_median_acc": round(statistics.median(orig), 2),
            "gen_best_acc": round(max(gen), 2),
            "gen_median_acc": round(statistics.median(gen), 2),
            "novelty_ratio": round(nov["novelty_ratio"], 2),
            "train_s": round(run.stats["ae_train_s"] + run.stats["ddpm_train_s"], 1),
        },
    )
