"""The ``hubtools`` command: one sub-command group per capability.

Groups are imported lazily, so ``hubtools --help`` stays fast and a capability's heavy
imports (torch, transformers, diffusers) load only when its command runs. A capability
registers itself by adding one line to ``COMMANDS``.
"""

from __future__ import annotations

import importlib

import click

from hubtools import __version__

# command name -> ("module:attribute", one-line help shown by `hubtools --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("hubtools.quickstart:quickstart_command", "Run every capability's small demo against a local Hub."),
    "hub": ("hubtools.hub.server.cli:hub_group", "Run and administer a local Hub server."),
    "push": ("hubtools.hub.publish:push_command", "Publish an artifact folder (with its card) to a Hub."),
    "zoo": ("hubtools.hub.zoo_cli:zoo_group", "Model zoo: catalogue a Hub's artifacts from their cards; list, search, pull."),
    "longtail": ("hubtools.longtail.cli:longtail_group", "Long-tailed medical classification (MONICA): datasets, methods, metrics, tables."),
    "data": ("hubtools.data.cli:data_group", "Data curation: InfoGrowth online cleaning and selection."),
    "be-dinov2": (
        "hubtools.models.be_dinov2.cli:be_dinov2_group",
        "BE-DINORET: block-expanded DINOv2, continued pretraining, retinal evaluation.",
    ),
    "diffusion": (
        "hubtools.diffusion.cli:diffusion_group",
        "SpeeD: faster diffusion training (sampler, DDPM trainer, speed-up bench).",
    ),
    "paramgen": ("hubtools.paramgen.cli:paramgen_group", "p-diff / COND P-DIFF: generate parameters and LoRA adapters."),
    "semiseg": ("hubtools.semiseg.cli:semiseg_group", "Semi-supervised segmentation with (Bayesian) pseudo labels."),
    "merge": ("hubtools.merging.cli:merge", "Model-GLUE: cluster a model zoo, merge with mergekit recipes, mix."),
    "retizero": ("hubtools.models.retizero.cli:retizero_group", "RetiZero: retinal vision-language model, zero-shot and retrieval."),
    "bench": ("hubtools.bench.cli:bench_group", "Benchmark results: render, check freshness, write the docs page."),
    "spaces": ("hubtools.spaces:spaces_group", "Gradio Spaces for each capability: list, run one locally."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="hubtools")
def main() -> None:
    """hubtools: research systems for foundation models as Hugging Face Hub artifacts.

    Start with `hubtools quickstart`: it runs every capability on real data against an
    embedded local Hub and prints one results table.
    """


if __name__ == "__main__":
    main()
