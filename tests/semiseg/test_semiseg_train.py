"""Training end to end on real data: every method and mode, exact resume, the CLI, the benchmark smoke, the demo."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hubtools.data.offline import DataUnavailable
from hubtools.semiseg.data import SegmentationArrays, SegmentationDataError, mni_dataset, nuclei_dataset
from hubtools.semiseg.trainer import SemiSegTrainConfig, train_semiseg
from hubtools.testing import data_missing

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mni():
    try:
        return mni_dataset(dims=2, resolution=4, labelled_fraction=0.1)
    except DataUnavailable as err:
        data_missing(err)


def quick(tmp_path: Path, name: str, **kwargs) -> SemiSegTrainConfig:
    settings = dict(
        output_dir=tmp_path / name,
        width=4,
        depth=2,
        steps=20,
        resume=None,
        log_every=1,
        warmup_start=0.1,
        overlays=False,
    )
    return SemiSegTrainConfig(**{**settings, **kwargs})


def test_every_method_and_mode_trains(tmp_path, mni):
    final_mu = {}
    for method, mode in [
        ("supervised", "soft"),
        ("pl", "soft"),
        ("bpl", "soft"),
        ("bpl", "straight_through"),
        ("bpl", "hard"),
    ]:
        result = train_semiseg(
            mni, quick(tmp_path, f"{method}-{mode}", method=method, pl_mode=mode), save_artifact=False
        )
        assert math.isfinite(result.scores["dice"]) and 0 <= result.scores["dice"] <= 1
        log = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
        train_rows = [r for r in log if "loss" in r]
        assert len(train_rows) == 20 and all(math.isfinite(r["loss"]) for r in train_rows)
        if method != "supervised":
            assert train_rows[-1]["alpha"] == 1 and any(r["pl_gate"] == 1 for r in train_rows)
        if method == "bpl":
            final_mu[mode] = result.threshold_history[-1]["T_mu"]
        else:
            assert result.threshold_history == []
    # hard (anchor) mode: only the KL trains phi and q stays on the prior; soft mode moves the threshold
    assert abs(final_mu["hard"] - 0.5) < 1e-6
    assert abs(final_mu["soft"] - 0.5) > 1e-5
    assert abs(final_mu["straight_through"] - 0.5) > 1e-5


def test_pseudo_label_methods_need_unlabelled_images(tmp_path, mni):
    empty = type(mni)(dict(mni.splits), mni.class_names, mni.spatial_dims, mni.description)
    empty.splits["unlabelled"] = SegmentationArrays(mni.splits["unlabelled"].images[:0], None)
    with pytest.raises(SegmentationDataError, match="needs unlabelled images"):
        train_semiseg(empty, quick(tmp_path, "x", method="pl"))


def test_interrupted_run_resumes_exactly(tmp_path, mni):
    straight = train_semiseg(mni, quick(tmp_path, "straight", steps=6, save_every=3), save_artifact=False)
    cfg = quick(tmp_path, "resumed", steps=6, save_every=3)
    train_semiseg(mni, cfg, save_artifact=False)
    shutil.rmtree(cfg.output_dir / "checkpoints" / "step_6")  # as if killed after the step-3 checkpoint
    resumed = train_semiseg(mni, cfg.model_copy(update={"resume": "auto"}), save_artifact=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.threshold_history == straight.threshold_history


def test_cli_train_writes_model_card_overlays_and_threshold_curve(tmp_path):
    from hubtools.cli import main

    try:
        nuclei_dataset()
    except DataUnavailable as err:
        data_missing(err)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "semiseg",
            "train",
            "--data",
            "nuclei",
            "--labelled-fraction",
            "0.1",
            "--method",
            "bpl",
            "--steps",
            "6",
            "--width",
            "4",
            "--depth",
            "2",
            "--log-every",
            "1",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "threshold q(T): mean" in result.output and "(learned)" in result.output
    assert "dice/nucleus=" in result.output and "pseudo labels from step 3" in result.output  # by warmup_latest
    for name in (
        "overlays.png",
        "threshold.png",
        "results.json",
        "metrics.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "model/modeling_semiseg_unet.py",
        "model/README.md",
    ):
        assert (out / name).is_file(), name
    card = (out / "model" / "README.md").read_text()
    assert "Bayesian pseudo labels" in card and "mu0" in card and "Not for clinical use" in card
    assert "EMA teacher" in card and "not learned" not in card
    summary = json.loads((out / "results.json").read_text())
    assert summary["labelled"] == 5 and summary["threshold_learned"] and summary["teacher"] == "ema"
    assert json.loads((out / "model" / "config.json").read_text())["threshold_learned"] is True

    # the hard mode's threshold is not learned, and its card and config say so
    hard = tmp_path / "hard"
    result = CliRunner().invoke(main, ["semiseg", "train", "--data", "nuclei", "--pl-mode", "hard", "--steps", "2",
                                       "--width", "2", "--depth", "1", "--out", str(hard), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "not learned: the prior" in result.output
    assert "The threshold is **not learned**" in (hard / "model" / "README.md").read_text()
    assert json.loads((hard / "model" / "config.json").read_text())["threshold_learned"] is False

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data: nuclei\noutput_dir: {tmp_path / 'x'}\nlearning_rate: 0.1\n")
    result = CliRunner().invoke(main, ["semiseg", "train", "--config", str(bad)])
    assert result.exit_code != 0 and "unknown key 'learning_rate'" in result.output
    result = CliRunner().invoke(
        main, ["semiseg", "train", "--data", "nuclei", "--dims", "3", "--out", str(tmp_path / "y")]
    )
    assert result.exit_code != 0 and "nuclei data is 2D" in result.output


def test_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("semiseg_bench", REPO_ROOT / "benchmarks" / "semiseg.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--smoke", "--workers", "1", "--steps", "4", "--seeds", "0", "1", "--out", str(out), "--work", str(work)]
    try:
        path = bench.main(argv)
    except DataUnavailable as err:
        data_missing(err)
    result = json.loads(path.read_text())
    assert path == out / "semiseg.json" and result["smoke"] is True and result["seeds"] == [0, 1]
    runs = result["runs"]
    assert {r["metrics"]["dataset"] for r in runs} == {"nuclei-2d", "mni-gm-3d"}
    assert sorted((r["metrics"]["dataset"], r["metrics"]["method"], r["seed"]) for r in runs) == sorted(
        (d, m, s) for d in ("nuclei-2d", "mni-gm-3d") for m in bench.ARMS for s in (0, 1)
    )
    for r in runs:
        assert 0 <= r["metrics"]["dice"] <= 1 and r["arm"].endswith("/" + r["metrics"]["method"])
        assert len(r["extra"]["dice_curve"]) >= 3
        assert r["extra"]["dice_curve"][-1][1] == pytest.approx(r["metrics"]["dice"])
    comparisons = result["details"]["comparisons"]
    assert len(comparisons) == 2
    assert all(c["vs_supervised"][a]["n"] == 2 for c in comparisons for a in ("pl", "teacher-pl", "bpl"))
    assert all("reached" in c["supervised_plateau"] for c in comparisons)
    for c in comparisons:  # the paired differences are the per-seed differences of the raw runs
        dice = {(r["metrics"]["method"], r["seed"]): r["metrics"]["dice"] for r in runs
                if r["metrics"]["dataset"] == c["dataset"]}
        for seed, d in c["vs_supervised"]["bpl"]["per_seed"].items():
            assert d == pytest.approx(dice[("bpl", int(seed))] - dice[("supervised", int(seed))])
    assert "teacher-pl" in result["verdict"]
    md = (out / "semiseg.md").read_text()
    assert "| nuclei-2d |" in md and "Δ Dice vs supervised" in md
    assert (out / "semiseg.png").stat().st_size > 1000
    # a rerun with --reuse trains nothing and reports the same values
    again = json.loads(bench.main([*argv, "--reuse"]).read_text())
    assert again["details"]["trained_runs"] == 0 and again["details"]["reused_runs"] == len(runs)
    assert [r["metrics"]["dice"] for r in again["runs"]] == [r["metrics"]["dice"] for r in runs]


def test_two_processes_train_with_the_teacher(tmp_path):
    """``accelerate launch`` with 2 CPU processes: teacher, ramp and DDP agree, one process writes the model."""
    import os
    import socket
    import subprocess
    import sys

    try:
        nuclei_dataset()
    except DataUnavailable as err:
        data_missing(err)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
        str(port), "-m", "hubtools.cli", "semiseg", "train", "--data", "nuclei", "--method", "bpl", "--steps", "4",
        "--batch-size", "2", "--width", "2", "--depth", "1", "--log-every", "1", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the ramp starts after step 2 (warmup_latest 0.5 x 4), at alpha 0, and reaches 1 one step later
    assert [r["alpha"] for r in records if "alpha" in r] == [0.0, 0.0, 0.0, 1.0]
    assert done.stdout.count("run folder:") == 1 and (out / "model" / "model.safetensors").is_file()


def _load_bench():
    spec = importlib.util.spec_from_file_location("semiseg_bench", REPO_ROOT / "benchmarks" / "semiseg.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_plans_distinct_fractions_an_upper_bound_and_the_prior_sweep():
    import argparse

    bench = _load_bench()
    args = argparse.Namespace(datasets=["mni-gm-3d"], fractions=[0.05, 0.1, 0.25], smoke=False,
                              sweep=["mni-gm-3d", "0.25"])
    try:
        planned = bench.plan(args, None)
    except DataUnavailable as err:
        data_missing(err)
    counts = {f: len(bench.load("mni-gm-3d", f).splits["labelled"].images) for f in (0.05, 0.1, 0.25)}
    assert counts[0.05] == counts[0.1] != counts[0.25]  # 5 % and 10 % label the same slab
    fractions = sorted({f for _, f, a in planned if a in bench.ARMS and f < 1})
    assert fractions == [0.05, 0.25]
    assert ("mni-gm-3d", 1.0, "supervised") in planned
    assert {a for _, f, a in planned if f == 0.25} >= {"bpl-mu0.3", "bpl-mu0.7", "bpl-hard"}
    assert bench.DEFAULT_DATASETS == ["mni-gm-2d", "mni-gm-3d"]
    assert bench.arm_settings("bpl-mu0.3") == {"method": "bpl", "pl_mode": "soft", "prior_mu": 0.3}


def test_benchmark_acceptance_rule():
    bench = _load_bench()

    def comparison(fraction, diffs):
        return {"dataset": "mni-gm-2d", "fraction": fraction, "vs_supervised": {
            arm: {"mean": float(np.mean(v)), "n": len(v), "per_seed": dict(enumerate(v))} for arm, v in diffs.items()}}

    good = [comparison(f, {"teacher-pl": [0.03, 0.02, 0.04], "bpl": [0.05, 0.01, 0.03]}) for f in (0.05, 0.1)]
    assert bench.acceptance(good)["met"] and len(bench.acceptance(good)["checks"]) == 4
    one_negative = [good[0], comparison(0.1, {"teacher-pl": [0.09, -0.001, 0.05], "bpl": [0.05, 0.01, 0.03]})]
    assert not bench.acceptance(one_negative)["met"]
    small = [good[0], comparison(0.1, {"teacher-pl": [0.019, 0.019, 0.019], "bpl": [0.05, 0.01, 0.03]})]
    assert not bench.acceptance(small)["met"]


def test_quickstart_demo(hub, tmp_path, monkeypatch):
    from hubtools.quickstart import DemoContext
    from hubtools.semiseg import demo

    monkeypatch.setattr(demo, "DEMO_STEPS", 4)
    ctx = DemoContext(hub_url=hub.url, token=hub.write_token, user=hub.user, work_dir=tmp_path)
    result = demo.semiseg_demo(ctx)
    assert result.metrics["reload_max_abs_diff"] == 0 and 0 <= result.metrics["test_dice"] <= 1
    assert result.artifacts == [f"{hub.user}/semiseg-nuclei-bpl"]


def test_config_files_validate():
    from hubtools.config import load_config
    from hubtools.semiseg.cli import TrainCommandConfig

    files = sorted((REPO_ROOT / "configs" / "semiseg").glob("*.yaml"))
    assert files
    for path in files:
        cfg = load_config(path, TrainCommandConfig)
        assert cfg.data and cfg.output_dir


def test_build_data_push_and_load_back_from_the_hub(hub, repo_id, tmp_path):
    import datasets

    from hubtools.cli import main
    from hubtools.semiseg.data import from_datasets

    try:
        local = nuclei_dataset(labelled_fraction=0.25)
    except DataUnavailable as err:
        data_missing(err)
    result = CliRunner().invoke(
        main, ["semiseg", "build-data", "nuclei", "--labelled-fraction", "0.25", "--push", repo_id]
    )
    assert result.exit_code == 0, result.output
    back = from_datasets(datasets.load_dataset(repo_id), class_names=local.class_names)
    for name in ("labelled", "test"):
        assert (back.splits[name].images == local.splits[name].images).all()
        assert (back.splits[name].masks == local.splits[name].masks).all()
    assert len(back.splits["unlabelled"].images) == 36


def test_predict_writes_masks_for_nifti_volumes_and_tiff_images(tmp_path):
    import nibabel
    import numpy as np
    import tifffile

    from hubtools.semiseg.configuration_semiseg_unet import UNetSegConfig
    from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg
    from hubtools.semiseg.predict import predict_file

    volume = (np.random.default_rng(0).random((20, 24, 8)) * 255).astype(np.uint8)
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp_path / "v.nii.gz"))
    tifffile.imwrite(tmp_path / "i.tif", volume[:, :, 0].astype(np.uint16))
    for dims in (2, 3):
        UNetForSemiSeg(UNetSegConfig(spatial_dims=dims, width=2, depth=1)).save_pretrained(
            tmp_path / f"m{dims}"
        )
        counts = predict_file(str(tmp_path / f"m{dims}"), tmp_path / "v.nii.gz", tmp_path / f"o{dims}.nii.gz")
        mask = nibabel.load(str(tmp_path / f"o{dims}.nii.gz"))
        assert mask.shape == volume.shape and np.allclose(mask.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
        assert sum(counts.values()) == volume.size
    predict_file(str(tmp_path / "m2"), tmp_path / "i.tif", tmp_path / "o.tif")
    assert tifffile.imread(tmp_path / "o.tif").shape == (20, 24)
    # the CLI also writes image | mask | confidence beside the mask
    from hubtools.cli import main
    from hubtools.semiseg.predict import confidence_png_path, segment_with_confidence

    done = CliRunner().invoke(main, ["semiseg", "predict", "--model", str(tmp_path / "m3"), "--image",
                                     str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "cli.nii.gz")])
    assert done.exit_code == 0, done.output
    assert confidence_png_path(tmp_path / "cli.nii.gz") == tmp_path / "cli.confidence.png"
    assert (tmp_path / "cli.confidence.png").stat().st_size > 5000
    model = UNetForSemiSeg.from_pretrained(tmp_path / "m3")
    labels, confidence = segment_with_confidence(model, volume.astype(np.float32) / 255)
    assert confidence.shape == volume.shape and ((confidence >= 0.5) & (confidence <= 1)).all()
    assert np.array_equal(labels, nibabel.load(str(tmp_path / "cli.nii.gz")).get_fdata().astype(labels.dtype))
    with pytest.raises(SegmentationDataError, match="cannot segment"):
        predict_file(str(tmp_path / "m3"), tmp_path / "i.tif", tmp_path / "o3.tif")


def test_multiclass_tissue_reports_each_class_and_learns_one_threshold_per_class(tmp_path):
    try:
        tissue = mni_dataset(dims=2, resolution=4, tissue="3class", labelled_fraction=0.1)
    except DataUnavailable as err:
        data_missing(err)
    result = train_semiseg(tissue, quick(tmp_path, "tissue", steps=6), save_artifact=False)
    assert {"dice/background", "dice/grey_matter", "dice/white_matter", "dice", "iou"} <= set(result.scores)
    assert result.model.config.out_channels == 3
    out = result.model(torch.from_numpy(tissue.splits["test"].images[:2]))
    assert out.threshold_mu.shape == (2, 3)
