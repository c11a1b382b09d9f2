"""``hubtools data infogrowth``: real Fashion-MNIST with flipped labels -> selection -> local Hub -> load_dataset."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hubtools.cli import main
from hubtools.data.offline import DataUnavailable
from hubtools.testing import data_missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def noisy_fmnist(tmp_path_factory):
    from hubtools.data.demo import build_noisy_fashion_mnist

    try:
        return build_noisy_fashion_mnist(tmp_path_factory.mktemp("fmnist"))
    except DataUnavailable as exc:
        data_missing(exc)


def test_cli_writes_parquet_card_png_pushes_and_round_trips(noisy_fmnist, tmp_path, repo_id):
    from datasets import load_dataset
    from huggingface_hub import hf_hub_download

    src, noisy = noisy_fmnist
    out, state = tmp_path / "sel", tmp_path / "state"
    args = [
        "data",
        "infogrowth",
        "--dataset",
        str(src),
        "--label-column",
        "label",
        "--budget",
        "0.3",
        "--encoder-id",
        "pca32-on-seed",
        "--state",
        str(state),
        "--checkpoint-every",
        "3",
        "--out",
        str(out),
        "--push-to-hub",
        repo_id,
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "selected=720" in r.output and f"pushed to datasets/{repo_id}" in r.output

    train = load_dataset(repo_id, split="train")
    rejected = load_dataset(repo_id, split="rejected")
    assert train.num_rows == 720  # 30% of 240 seed + 2160 stream rows
    assert {"image", "label", "img_emb", "ig_gain", "ig_gain_norm", "ig_status", "ig_arrival"} <= set(
        train.column_names
    )
    assert set(train["ig_status"]) <= {"seed", "kept"} and min(train["ig_gain_norm"]) > 0
    assert set(rejected["ig_status"]) <= {"dropped_noisy", "duplicate"}
    removed = np.asarray(rejected["injected_noise"]).sum() / noisy.sum()
    assert removed > 0.85 and np.mean(train["injected_noise"]) < 0.06  # vs 20% in the stream
    assert train.features["img_emb"].length == 32

    card = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert "InfoGrowth" in card and "δ (calibrated)" in card and "dropped_noisy" in card
    record = json.loads(Path(hf_hub_download(repo_id, "infogrowth.json", repo_type="dataset")).read_text())
    assert record["settings"]["k"] == 4 and record["selection"]["rows"] == 720
    assert record["statistics"]["counts"]["seed"] == 240 and record["versions"]["faiss"]
    assert (out / "gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (state / "state.json").exists()

    # resuming from the finished state curates nothing again and writes the same selection
    r2 = CliRunner().invoke(main, args[:-2])
    assert r2.exit_code == 0, r2.output
    assert "resumed from" in r2.output and "selected=720" in r2.output
    again = load_dataset("parquet", data_files=str(out / "data" / "train-*.parquet"), split="train")
    assert again["ig_arrival"] == train["ig_arrival"] and again["ig_gain"] == train["ig_gain"]

    # a Hub repo as the source: the stream split is read with streaming=True from the local Hub
    r4 = CliRunner().invoke(
        main,
        [
            "data",
            "infogrowth",
            "--dataset",
            repo_id,
            "--seed-split",
            "train",
            "--split",
            "rejected",
            "--budget",
            "0.5",
            "--no-rejected",
            "--out",
            str(tmp_path / "again"),
        ],
    )
    assert r4.exit_code == 0, r4.output
    assert "rows=1728" in r4.output  # 720 seed + 1008 streamed

    # another encoder: refused with a clear error
    r3 = CliRunner().invoke(main, args[:-2] + ["--encoder-id", "other-model"])
    assert r3.exit_code == 1 and "encoder 'pca32-on-seed'" in r3.output


def test_cli_bad_inputs_name_the_problem(noisy_fmnist, tmp_path):
    src, _ = noisy_fmnist
    r = CliRunner().invoke(
        main,
        ["data", "infogrowth", "--dataset", str(src), "--emb-column", "nope", "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1 and "lacks column(s) ['nope']" in r.output
    r = CliRunner().invoke(
        main,
        ["data", "infogrowth", "--dataset", str(src), "--seed-split", "gold", "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1 and "no split 'gold'" in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {src}\nbudgett: 0.3\n")
    r = CliRunner().invoke(main, ["data", "infogrowth", "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown key 'budgett'" in r.output
    assert not (tmp_path / "o").exists()


def test_benchmark_smoke_runs_and_reports(tmp_path):
    out = tmp_path / "results"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "infogrowth.py"),
            "--smoke",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0 and "DataUnavailable" in r.stderr:
        data_missing("dataset-fashion-mnist is not installed")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "infogrowth.json").read_text())
    assert res["smoke"] is True and res["seeds"] == [0] and res["name"] == "infogrowth"
    assert res["config"]["datasets"] == ["fashion_mnist"] and "Fashion-MNIST" in res["data"]
    runs = {r["arm"]: r for r in res["runs"]}
    assert all(r["seed"] == 0 for r in res["runs"])
    # every subset of the seed was trained and tested; shares and accuracies are percentages
    for subset in (
        "full noisy",
        "clean oracle",
        "InfoGrowth[margin]@30%",
        "random@30%",
        "InfoGrowth[cosine]@50%",
    ):
        m = runs[f"fashion_mnist: {subset}"]["metrics"]
        assert 10.0 < m["accuracy"] <= 100.0 and 0.0 <= m["noisy_share"] <= 100.0 and m["classes"] == 10
    assert runs["fashion_mnist: clean oracle"]["metrics"]["noisy_share"] == 0.0
    margin = runs["fashion_mnist: curator margin"]["metrics"]
    assert margin["noise_removed"] > 85.0 and margin["duplicates_removed"] > 90.0
    assert (
        runs["fashion_mnist: random@30%"]["metrics"]["noisy_share"]
        > 10.0
        > runs["fashion_mnist: InfoGrowth[margin]@30%"]["metrics"]["noisy_share"]
    )
    checks = res["details"]["claim_checks"]["fashion_mnist"]
    assert set(checks) == {"margin@30%", "cosine@30%", "margin@50%", "cosine@50%"}
    for c in checks.values():  # one seed: a paired difference without a CI
        assert c["vs_full"]["n"] == 1 and c["vs_full"]["ci_low"] is None
        assert c["vs_full"]["mean"] == pytest.approx(c["infogrowth"] - c["full_noisy"])
    assert "One seed only" in res["verdict"]
    md = (out / "infogrowth.md").read_text()
    assert "(smoke run)" in md and "| full noisy |" in md and "Δ test accuracy % vs full noisy" in md
    assert (out / "infogrowth.png").read_bytes()[:4] == b"\x89PNG"
    # --reuse picks up the finished run from --work instead of recomputing it
    again = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "infogrowth.py"),
            "--smoke",
            "--reuse",
            "--out",
            str(tmp_path / "again"),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "infogrowth.json").read_text())["runs"] == res["runs"]


def test_shipped_config_validates():
    from hubtools.config import load_config
    from hubtools.data.cli import InfoGrowthConfig

    cfg = load_config(ROOT / "configs" / "infogrowth" / "image_label.yaml", InfoGrowthConfig)
    assert cfg.label_column == "label" and cfg.budget == 0.3 and cfg.index == "hnsw"
