"""``hubtools paramgen collect | train | generate | evaluate``: the p-diff workflow from the shell.

The built-in host is the digits CNN (:mod:`hubtools.paramgen.digits`, real scikit-learn
digits); other networks use the Python API (:func:`collect_checkpoints`, :func:`train_pdiff`).
Every command also takes ``--config FILE.yaml`` with the same keys as its flags; training
resumes when re-run with the same ``--out`` (the shared trainer's checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import click

from hubtools.config import StrictModel, config_option
from hubtools.errors import HubtoolsError

PRESETS = {
    # The anchor's "medium" autoencoder and full-size denoiser.
    "medium": {},
    # Sized for a 128-float subset on 2 CPU cores (latent 4 x 8).
    "digits": {
        "fold_rate": 2,
        "kernel_size": 3,
        "dec_channels": (4, 32, 32, 8),
        "denoiser_channels": (16, 32, 64, 64),
        "ema_decay": 0.999,
    },
}


class CollectOptions(StrictModel):
    out: Path | None = None
    pattern: str = r"^bn3\.(weight|bias)$"
    host_epochs: int = 15
    num_checkpoints: int = 200
    save_every: int = 5
    lr: float = 0.1
    seed: int = 0


class TrainOptions(StrictModel):
    out: Path | None = None
    preset: str = "digits"
    ae_steps: int = 1500
    ddpm_steps: int = 2000
    normalization: str = "global"
    seed: int = 0


class GenerateOptions(StrictModel):
    out: Path | None = None
    num_models: int = 100
    scheduler: str = "ddpm"
    steps: int | None = None
    seed: int = 0


class EvaluateOptions(GenerateOptions):
    pass


@click.group("paramgen")
def paramgen_group() -> None:
    """p-diff / COND P-DIFF: generate network parameters and LoRA adapters."""


def _need_out(out: Path | None) -> Path:
    # Not required=True at the click level: it may come from --config (`out:`).
    if out is None:
        raise click.UsageError("--out is required (as a flag or as `out:` in --config)")
    return Path(out)


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from None


@paramgen_group.command("collect")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="checkpoint-set folder (a Hub dataset repo)"
)
@click.option(
    "--pattern", default=CollectOptions().pattern, show_default=True, help="regex over parameter names"
)
@click.option(
    "--host-epochs", default=15, show_default=True, help="epochs of normal training of the host first"
)
@click.option("--num-checkpoints", default=200, show_default=True)
@click.option("--save-every", default=5, show_default=True, help="optimizer steps between snapshots")
@click.option(
    "--lr", default=0.1, show_default=True, help="SGD learning rate of the subset during collection"
)
@click.option("--seed", default=0, show_default=True)
@config_option(CollectOptions)
def collect_command(
    out: Path, pattern: str, host_epochs: int, num_checkpoints: int, save_every: int, lr: float, seed: int
) -> None:
    """Train the digits CNN, then snapshot a parameter subset while only it trains (host frozen)."""
    out = _need_out(out)
    from torch.utils.data import TensorDataset

    from hubtools.paramgen import ParamSpec, collect_checkpoints
    from hubtools.paramgen.digits import accuracy, classification_loss, load_digits_splits, train_host
    from hubtools.paramgen.publish import checkpoint_card
    from hubtools.train import TrainConfig

    try:
        splits = load_digits_splits(seed)
        work = out.parent / f".{out.name}.work"
        host = train_host(splits, work / "host", epochs=host_epochs, seed=seed)
        spec = ParamSpec.from_model(host, pattern)
        cfg = TrainConfig(
            output_dir=work / "collect",
            seed=seed,
            max_steps=1,
            batch_size=64,
            optimizer="sgd",
            lr=lr,
            momentum=0.9,
            weight_decay=5e-4,
            log_every=100,
            keep_last=1,
        )
        ckpts = collect_checkpoints(
            host,
            spec,
            TensorDataset(splits.x_train, splits.y_train),
            classification_loss,
            cfg,
            num_checkpoints=num_checkpoints,
            save_every=save_every,
            eval_fn=lambda m: {"val_accuracy": accuracy(m, splits.x_val, splits.y_val)},
        )
        ckpts.info.update({"host": "digits-cnn", "pattern": pattern, "seed": seed})
        ckpts.save_to_disk(
            out, card=checkpoint_card(None, len(ckpts), spec.dim, "hubtools DigitsCNN", "scikit-learn digits")
        )
    except HubtoolsError as err:
        _fail(err)
    click.echo(f"collected {len(ckpts)} x {spec.dim} parameters ({', '.join(spec.names)}) -> {out}")


@paramgen_group.command("train")
@click.argument("checkpoints", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="pipeline folder")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="digits", show_default=True)
@click.option("--ae-steps", default=1500, show_default=True)
@click.option("--ddpm-steps", default=2000, show_default=True)
@click.option(
    "--normalization",
    type=click.Choice(["global", "none"]),
    default="global",
    show_default=True,
    help="per-coordinate z-score of the checkpoints before the autoencoder (the anchor: none)",
)
@click.option("--seed", default=0, show_default=True)
@config_option(TrainOptions)
def train_command(
    checkpoints: Path, out: Path, preset: str, ae_steps: int, ddpm_steps: int, normalization: str, seed: int
) -> None:
    """Train the autoencoder, then the latent DDPM; save a PDiffPipeline folder with its card (resumable)."""
    out = _need_out(out)
    from hubtools.paramgen import CheckpointSet, PDiffTrainConfig, train_pdiff
    from hubtools.paramgen.publish import save_pipeline

    try:
        ckpts = CheckpointSet.load_from_disk(checkpoints)
        cfg = PDiffTrainConfig(
            output_dir=out.parent / f".{out.name}.work",
            seed=seed,
            ae_steps=ae_steps,
            ddpm_steps=ddpm_steps,
            pdiff_normalization=normalization,
            **PRESETS[preset],
        )
        pipe, stats = train_pdiff(ckpts, cfg)
        save_pipeline(
            pipe,
            out,
            host_model=ckpts.info.get("host"),
            num_checkpoints=len(ckpts),
            hyperparameters={
                "preset": preset,
                "ae_steps": ae_steps,
                "ddpm_steps": ddpm_steps,
                "normalization": normalization,
                "seed": seed,
            },
        )
    except HubtoolsError as err:
        _fail(err)
    click.echo(
        f"trained in {stats['ae_train_s'] + stats['ddpm_train_s']:.0f} s "
        f"(autoencoder reconstruction MSE {stats['ae_recon_mse']:.3g}) -> {out}"
    )


def _generate(pipeline: Path, num_models: int, scheduler: str, steps: int | None, seed: int):
    import torch

    from hubtools.paramgen import PDiffPipeline, ddim_copy

    pipe = PDiffPipeline.from_pretrained(pipeline)
    if scheduler == "ddim":
        pipe = ddim_copy(pipe)
    steps = steps or (1000 if scheduler == "ddpm" else 50)
    out = pipe(
        num_models=num_models,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        eta=0.05 if scheduler == "ddim" else 0.0,
    )
    return pipe, out.params


@paramgen_group.command("generate")
@click.argument("pipeline", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help=".safetensors file"
)
@click.option("--num-models", default=100, show_default=True)
@click.option("--scheduler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--steps", type=int, default=None, help="default: 1000 (ddpm), 50 (ddim)")
@click.option("--seed", default=0, show_default=True)
@config_option(GenerateOptions)
def generate_command(
    pipeline: Path, out: Path, num_models: int, scheduler: str, steps: int | None, seed: int
) -> None:
    """Sample parameter vectors; write them as one [N, d] tensor ``params`` in a safetensors file."""
    out = _need_out(out)
    from safetensors.torch import save_file

    try:
        _, params = _generate(pipeline, num_models, scheduler, steps, seed)
    except HubtoolsError as err:
        _fail(err)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"params": params.contiguous()}, str(out))
    click.echo(f"generated {params.shape[0]} x {params.shape[1]} parameters -> {out}")


@paramgen_group.command("evaluate")
@click.argument("pipeline", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("checkpoints", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder for evaluation.json and histogram.png",
)
@click.option("--num-models", default=100, show_default=True)
@click.option("--scheduler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--steps", type=int, default=None)
@click.option("--seed", default=0, show_default=True)
@config_option(EvaluateOptions)
def evaluate_command(
    pipeline: Path,
    checkpoints: Path,
    out: Path,
    num_models: int,
    scheduler: str,
    steps: int | None,
    seed: int,
) -> None:
    """Test accuracy of N generated vs all collected models in the same frozen host, novelty, histogram.

    Behaviour too: each model's most similar original by the IoU of their sets of misclassified test
    images (originals against the other originals) -- generated models as similar to an original as
    originals are to each other make the same mistakes, however far their parameters are.
    """
    out = _need_out(out)

    import torch

    from hubtools.paramgen import CheckpointSet
    from hubtools.paramgen.digits import DigitsCNN, accuracy, load_digits_splits
    from hubtools.paramgen.evaluate import evaluate_vectors, plot_histogram, write_report
    from hubtools.paramgen.similarity import nearest_similarity

    try:
        ckpts = CheckpointSet.load_from_disk(checkpoints)
        if ckpts.info.get("host") != "digits-cnn":
            raise HubtoolsError(
                f"{checkpoints}: the CLI evaluates the digits-cnn host only; use "
                "hubtools.paramgen.evaluate.evaluate_vectors for other hosts"
            )
        pipe, params = _generate(pipeline, num_models, scheduler, steps, seed)
        if pipe.param_spec != ckpts.spec:
            raise HubtoolsError(
                f"the pipeline generates {pipe.param_spec}, the checkpoints hold {ckpts.spec}"
            )
        splits = load_digits_splits(ckpts.info.get("seed", 0))
        host = ckpts.host(DigitsCNN())
        recon = pipe.reconstruct(ckpts.params)
        report = evaluate_vectors(
            lambda v: accuracy(ckpts.spec.model_with(host, v), splits.x_test, splits.y_test),
            params,
            ckpts.params,
            recon,
        )

        @torch.no_grad()
        def predict(vecs: torch.Tensor):
            return torch.stack(
                [ckpts.spec.model_with(host, v).eval()(splits.x_test).argmax(1) for v in vecs]
            ).numpy()

        y = splits.y_test.numpy()
        orig_pred = predict(ckpts.params)
        report["similarity"] = {
            "generated": nearest_similarity(predict(params), orig_pred, y).summary(),
            "original": nearest_similarity(orig_pred, orig_pred, y, same_models=True).summary(),
        }
    except HubtoolsError as err:
        _fail(err)
    write_report(report, out / "evaluation.json")
    plot_histogram(
        {k: report["scores"][k] for k in ("original", "generated")},
        out / "histogram.png",
        f"digits CNN, last-BN affine ({ckpts.spec.dim} floats)",
    )
    for name in ("original", "reconstruction", "generated"):
        s = report[name]
        click.echo(
            f"{name:>14}: best {s['best']:.2f}  mean {s['mean']:.2f}  median {s['median']:.2f}  "
            f"min {s['min']:.2f}  (n={s['n']})"
        )
    nov = report["novelty"]
    click.echo(
        f"nearest-checkpoint L2: generated {nov['nn_dist_gen_to_orig_median']:.4f} vs original-original "
        f"{nov['nn_dist_orig_to_orig_median']:.4f} (ratio {nov['novelty_ratio']:.2f})"
    )
    sim = report["similarity"]
    click.echo(
        f"max IoU of test errors with the nearest original (median): generated "
        f"{sim['generated']['max_iou_median']:.3f} vs originals among themselves "
        f"{sim['original']['max_iou_median']:.3f} -> {out}"
    )


from hubtools.paramgen import cond_cli  # noqa: E402, F401  (registers `hubtools paramgen cond`)
