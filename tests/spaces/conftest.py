"""Fixtures of the Spaces' tests: the artifacts each Space loads, published once per session to the test Hub
with the quickstart demos' own functions (or their building blocks, where a demo is slower than it needs to be
here), and a guard that fails a test if anything tries to reach a non-loopback address."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
import torch

from hubtools.quickstart import DemoContext


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread, from before the session fixtures train: the 2 shared cores are oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_ctx(hub, tmp_path_factory) -> DemoContext:
    return DemoContext(
        hub_url=hub.url,
        token=hub.write_token,
        user=hub.user,
        work_dir=tmp_path_factory.mktemp("spaces-demos"),
    )


@pytest.fixture(scope="session")
def retizero_repo(demo_ctx) -> str:
    """A tiny RetiZero (random ViT + real MiniLM, LoRA merged), saved and pushed as the quickstart does."""
    from hubtools.hub.publish import push_artifact
    from hubtools.models.retizero.seen_unseen import tiny_retizero
    from hubtools.models.retizero.train import save_retizero

    model, processor = tiny_retizero(seed=0)
    repo = demo_ctx.repo_id("retizero-space")
    push_artifact(save_retizero(model.eval(), processor, demo_ctx.work_dir / "retizero", repo_id=repo), repo)
    return repo


@pytest.fixture(scope="session")
def longtail_repo(demo_ctx) -> str:
    """The long-tail quickstart demo itself: MRI patch set + a tiny classifier trained on it (1 epoch here)."""
    from hubtools.longtail.datasets import make_builder, prepare, publish, save_build
    from hubtools.longtail.demo import train_tiny_classifier

    builder = make_builder("mri_patches", None, cache_dir=demo_ctx.work_dir / "lt-cache")
    ds = prepare(builder)
    dataset_repo = demo_ctx.repo_id("mri-patches-lt")
    cfg = builder.config.name
    folder = save_build(
        demo_ctx.work_dir / cfg, "mri_patches", builder, ds, builder.plan().profile, repo_id=dataset_repo
    )
    publish(folder, dataset_repo, private=False)
    repo, _ = train_tiny_classifier(demo_ctx, dataset_repo, cfg, epochs=1)
    return repo


@pytest.fixture(scope="session")
def lora_generator_repo(demo_ctx) -> str:
    """The paramgen demo's COND P-DIFF LoRA generator, with fewer steps."""
    from hubtools.paramgen.demo import publish_lora_generator

    repo, _ = publish_lora_generator(demo_ctx, steps=4, gen_steps=10, sample_steps=5)
    return repo


@pytest.fixture(scope="session")
def speed_repo(demo_ctx) -> str:
    """A SpeeD DDPM pipeline trained for a few steps on real digits (the quickstart demo trains 300)."""
    from hubtools.diffusion.data import load_images
    from hubtools.diffusion.trainer import DDPMTrainConfig, one_torch_thread, train_ddpm

    repo = demo_ctx.repo_id("ddpm-digits-speed")
    config = DDPMTrainConfig(
        output_dir=demo_ctx.work_dir / "speed",
        resume=None,
        dataset="digits",
        image_size=8,
        block_out_channels=(16, 32),
        attention_blocks=(),
        norm_num_groups=8,
        max_steps=3,
        batch_size=16,
        warmup_steps=1,
        log_every=1,
        sampler="speed",
        k=3.0,
        tau=650,
        num_samples=4,
        sample_steps=5,
        eval_examples=8,
        push_to_hub=repo,
    )
    with one_torch_thread():
        train_ddpm(config, load_images("digits", image_size=8))
    return repo


class Outbound:
    """Non-loopback addresses something tried to connect to (the connection is refused)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []


@pytest.fixture
def no_outbound(monkeypatch) -> Iterator[Outbound]:
    """Refuse and record every connection to a non-loopback address from this process while the test runs."""
    seen = Outbound()
    connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                seen.attempts.append(str(address))
                raise OSError(f"test guard: outbound connection to {address} refused")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield seen
    assert seen.attempts == [], f"the Space tried to reach the network: {seen.attempts}"


@pytest.fixture(scope="session")
def semiseg_repo(demo_ctx) -> str:
    """A BPL U-Net trained for a few steps on the real nuclei tiles (the quickstart trains 150), pushed."""
    from hubtools.hub.publish import push_artifact
    from hubtools.semiseg.data import nuclei_dataset
    from hubtools.semiseg.trainer import MODEL_DIR, SemiSegTrainConfig, save_model_artifact, train_semiseg

    data = nuclei_dataset(tile=64, labelled_fraction=0.1)
    cfg = SemiSegTrainConfig(output_dir=demo_ctx.work_dir / "semiseg", method="bpl", steps=6, width=4, depth=2,
                             resume=None, overlays=False, warmup_latest=0.3)
    result = train_semiseg(data, cfg, save_artifact=False)
    repo = demo_ctx.repo_id("semiseg-space")
    push_artifact(save_model_artifact(result.model, cfg.output_dir / MODEL_DIR, cfg, data, result.scores,
                                      repo_id=repo), repo)
    return repo


@pytest.fixture(scope="session")
def merge_repo(demo_ctx) -> str:
    """The merge quickstart demo itself: Model-GLUE on the tiny synthetic zoo (clusters, merges, mixture), pushed."""
    from hubtools.merging.demo import merge_demo

    return merge_demo(demo_ctx).artifacts[0]
