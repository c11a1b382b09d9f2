"""``hubtools data infogrowth``: real Fashion-MNIST with flipped labels -> selection -> local Hub -> load_dataset."""

import json
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
    # --state holds the committed checkpoint: the curator slot it names and the staged shards
    manifest = json.loads((state / "checkpoint.json").read_text())
    assert manifest["rows_seen"] == 2160 and (state / manifest["curator"] / "state.json").exists()
    assert (
        sum(e["rows"] for e in manifest["kept"])
        == record["statistics"]["counts"]["seed"] + (record["statistics"]["counts"]["kept"])
    )
    # the default 500MB shard size makes one shard per split, named as datasets' push_to_hub names them
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "rejected-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]

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
    assert (
        f"rows={720 + rejected.num_rows}" in r4.output
    )  # the 720 selected rows seed it, the rejected ones stream

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


def test_shipped_config_validates():
    from hubtools.config import load_config
    from hubtools.data.cli import InfoGrowthConfig

    cfg = load_config(ROOT / "configs" / "infogrowth" / "image_label.yaml", InfoGrowthConfig)
    assert cfg.label_column == "label" and cfg.budget == 0.3 and cfg.index == "hnsw"
