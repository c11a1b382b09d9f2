"""Quickstart demo of Model-GLUE: glue a tiny synthetic zoo, publish the result, load it back.

Seven tiny Llamas fine-tuned from two unrelated bases (spec 4.1, at 6% of the training steps) are clustered
by weight similarity, merged per family with mergekit recipes and mixed at model level. The glued model goes
to the embedded Hub with its card, recipes and glue_report.json, and must score the same after reloading.
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo

DEMO_SCALE = 0.06
DEMO_LIMIT = 10


@register_demo("merge", "Model-GLUE: cluster a tiny zoo, merge per family with mergekit, mix, Hub round trip")
def merge_demo(ctx: DemoContext) -> DemoResult:
    import json

    import torch
    from huggingface_hub import hf_hub_download
    from transformers import AutoModelForCausalLM

    from hubtools.merging.glue import glue, push
    from hubtools.merging.zoos.synthetic import ZOO_TASKS, SyntheticTaskEvaluator, build_synthetic_zoo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread beats two on a busy machine
    try:
        zoo = build_synthetic_zoo(ctx.work_dir / "zoo", scale=DEMO_SCALE)
        members = _publish_zoo(ctx, zoo.models)  # glue works on the Hub ids, pinned to their commits
        # per-token accuracy: at 6% of the training steps whole answers are rarely right yet
        search = SyntheticTaskEvaluator(ZOO_TASKS, "search", limit=DEMO_LIMIT, metric="token")
        report = SyntheticTaskEvaluator(ZOO_TASKS, "report", limit=DEMO_LIMIT, metric="token")
        result = glue(
            members,
            search,
            ctx.work_dir / "glued",
            report_evaluator=report,
            strategy="average",
            work_dir=ctx.work_dir / "glue-work",
            truth_families=zoo.truth_families,
            zoo_name=zoo.name,
        )
        repo = ctx.repo_id("model-glue-synthetic")
        push(result, repo, token=ctx.token)
        reloaded = AutoModelForCausalLM.from_pretrained(repo, token=ctx.token)
        again = report(reloaded)
        if any(abs(again[t] - result.final_report[t]) > 1e-9 for t in again):
            raise RuntimeError(f"reloaded model scores {again}, glue reported {result.final_report}")
        pushed = json.loads(open(hf_hub_download(repo, "glue_report.json", token=ctx.token)).read())
    finally:
        torch.set_num_threads(threads)
    return DemoResult(
        data=f"synthetic string-task zoo (spec 4.1), {len(zoo.models)} tiny Llamas at scale {DEMO_SCALE}",
        artifacts=[repo, *members.values()],  # the glued model first: what the merge Space shows
        metrics={
            "clusters": len(pushed["clustering"]["families"]),
            "purity": pushed["purity"],
            "best_single_report": round(pushed["best_single"]["report"], 3),
            "glued_report": round(result.fitness, 3),
        },
    )


def _publish_zoo(ctx: DemoContext, models: dict) -> dict[str, str]:
    """Push each zoo member with a small card; returns name -> repo id."""
    import tempfile

    from hubtools.hub.artifacts import save_card
    from hubtools.hub.cards import render_card
    from hubtools.hub.publish import push_artifact

    members = {}
    for name, folder in models.items():
        repo = ctx.repo_id(f"glue-zoo-{name.replace('_', '-')}")
        card = render_card(
            "model",
            card_data={
                "license": "apache-2.0",
                "pipeline_tag": "text-generation",
                "tags": ["model-glue-zoo"],
            },
            model_name=repo.split("/")[-1],
            modality="text",
            task="text-generation",
            reproduce="hubtools merge zoo synthetic ZOO_DIR",
            summary=f"Member `{name}` of Model-GLUE's synthetic string-task zoo (spec 4.1): a tiny Llama, "
            "trained for the quickstart at a small fraction of the spec's steps.",
        )
        with tempfile.TemporaryDirectory() as tmp:
            import shutil

            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            save_card(tmp, card)
            push_artifact(tmp, repo, token=ctx.token)
        members[name] = repo
    return members
