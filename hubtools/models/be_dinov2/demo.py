"""Quickstart demo of BE-DINORET: expand a tiny DINOv2, continue pretraining it on the real fundus photo,
publish it with its remote code, and load it back with ``AutoModel`` (hubtools' registered class; the
remote-code load without hubtools is checked by tests/models/test_remote_code.py, since hubtools never
sets ``trust_remote_code`` itself).

No DINOv2 weights exist offline, so the base is a small randomly initialised DINOv2; the images are
real (tiles of ``skimage.data.retina()``, CC0). What the demo shows is the mechanics the real model
relies on: the expansion is an exact identity, only the inserted blocks move during SSL, and the Hub
repo loads with stock transformers.
"""

from __future__ import annotations

from hubtools.quickstart import DemoContext, DemoResult, register_demo


@register_demo(
    "be-dinov2", "BE-DINORET: expand a DINOv2, SSL on real fundus crops, remote-code Hub round trip"
)
def be_dinov2_demo(ctx: DemoContext) -> DemoResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is overhead-bound: extra threads only spin on a busy machine
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: DemoContext) -> DemoResult:
    import torch
    from transformers import AutoModel, Dinov2Config, Dinov2Model

    from hubtools.hub.publish import push_artifact
    from hubtools.models.be_dinov2 import expand_blocks
    from hubtools.models.be_dinov2.artifact import save_backbone
    from hubtools.pretrain import PretrainConfig, pretrain
    from hubtools.pretrain.augment import normalize
    from hubtools.pretrain.data import retina_tiles
    from hubtools.pretrain.ssl import summary_metrics

    torch.manual_seed(0)
    base = Dinov2Model(
        Dinov2Config(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            patch_size=8,
            image_size=32,
            layerscale_value=0.1,
        )
    ).eval()
    expanded = expand_blocks(base, positions=(1, 3), init="layerscale_zero")
    probe = normalize(
        torch.stack([retina_tiles(8, size=32, seed=1)[i]["pixel_values"] for i in range(8)]).float() / 255
    )
    with torch.no_grad():
        identity_diff = float((base(probe).last_hidden_state - expanded(probe).last_hidden_state).abs().max())
    original = {k: v.clone() for k, v in expanded.state_dict().items()}

    tiles = retina_tiles(48, size=48)
    config = PretrainConfig(
        output_dir=ctx.work_dir / "ssl-run",
        max_steps=12,
        batch_size=8,
        lr=1e-3,
        log_every=1,
        global_crop_size=32,
        local_crop_size=16,
        n_local_crops=2,
        head_out_dim=256,
        head_hidden_dim=128,
        head_bottleneck_dim=32,
        max_grad_norm=3.0,
        resume=None,
    )
    result = pretrain(expanded, tiles, config)
    teacher = result.backbone.eval()
    new_layers = tuple(f"encoder.layer.{k}." for k in teacher.config.expanded_layer_indices)
    moved = [k for k, v in teacher.state_dict().items() if not torch.equal(v, original[k])]

    repo_id = ctx.repo_id("be-dinoret-tiny")
    folder = ctx.work_dir / "be-dinoret-tiny"
    save_backbone(
        teacher,
        folder,
        repo_id=repo_id,
        datasets=None,
        training_data=f"{len(tiles)} tiles of the real fundus photo `skimage.data.retina()` (CC0).",
        training_procedure=f"Tiny random-init DINOv2 (no DINOv2 weights offline), expanded 4 -> 6 blocks, "
        f"{result.train.step} steps of BE continued SSL (DINO + iBOT + KoLeo).",
        zoo_fields={"reproduce": "hubtools quickstart --only be-dinov2"},
    )
    push_artifact(folder, repo_id)
    reloaded = AutoModel.from_pretrained(repo_id).eval()
    with torch.no_grad():
        roundtrip_diff = float(
            (teacher(probe).last_hidden_state - reloaded(probe).last_hidden_state).abs().max()
        )

    if (
        identity_diff != 0
        or roundtrip_diff != 0
        or not moved
        or not all(k.startswith(new_layers) for k in moved)
    ):
        raise AssertionError(
            f"identity_diff={identity_diff} roundtrip_diff={roundtrip_diff} moved={moved[:5]}"
        )
    metrics = summary_metrics(result)
    return DemoResult(
        data=f"{len(tiles)} real fundus tiles (skimage.data.retina, CC0); tiny random-init DINOv2 base",
        artifacts=[repo_id],
        metrics={
            "layers": f"{teacher.config.original_num_hidden_layers}->{teacher.config.num_hidden_layers} "
            f"(new {teacher.config.expanded_layer_indices})",
            "identity_max_diff_at_init": identity_diff,
            "ssl_steps": result.train.step,
            "ssl_loss_last": round(metrics["loss"], 4),
            "teacher_cls_std": round(metrics["teacher_cls_std"], 4),  # collapse would drive this to 0
            "only_new_blocks_moved": True,
            "hub_reload_max_abs_diff": roundtrip_diff,
        },
    )
