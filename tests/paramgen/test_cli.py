"""The four commands end to end on real digits, tiny sizes; and their bad-input errors."""

import json

import pytest
from click.testing import CliRunner

from hubtools.cli import main


def test_collect_train_generate_evaluate(tmp_path):
    runner = CliRunner()
    ck, pipe = tmp_path / "ck", tmp_path / "pipe"
    (tmp_path / "collect.yaml").write_text(f"out: {ck}\nhost_epochs: 2\nnum_checkpoints: 6\nsave_every: 2\n")
    r = runner.invoke(main, ["paramgen", "collect", "--config", str(tmp_path / "collect.yaml")])
    assert r.exit_code == 0, r.output
    assert "collected 6 x 128" in r.output and (ck / "README.md").is_file()
    (tmp_path / "train.yaml").write_text("ae_steps: 3\nddpm_steps: 3\n")
    r = runner.invoke(
        main, ["paramgen", "train", str(ck), "--out", str(pipe), "--config", str(tmp_path / "train.yaml")]
    )
    assert r.exit_code == 0, r.output
    assert (pipe / "model_index.json").is_file()
    r = runner.invoke(
        main,
        [
            "paramgen",
            "generate",
            str(pipe),
            "--out",
            str(tmp_path / "g.safetensors"),
            "--num-models",
            "3",
            "--scheduler",
            "ddim",
            "--steps",
            "4",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        main,
        [
            "paramgen",
            "evaluate",
            str(pipe),
            str(ck),
            "--out",
            str(tmp_path / "ev"),
            "--num-models",
            "4",
            "--steps",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["generated"]["n"] == 4 and report["original"]["n"] == 6
    assert (tmp_path / "ev" / "histogram.png").stat().st_size > 1000
    assert "nearest-checkpoint" in r.output and "max IoU of test errors" in r.output
    # the originals' behavioural similarity, recomputed here from their sets of misclassified test images
    import statistics

    import torch

    from hubtools.paramgen import CheckpointSet
    from hubtools.paramgen.digits import DigitsCNN, load_digits_splits

    ckpts = CheckpointSet.load_from_disk(ck)
    splits = load_digits_splits(ckpts.info.get("seed", 0))
    host = ckpts.host(DigitsCNN())
    with torch.no_grad():
        wrong = [
            set(
                torch.nonzero(ckpts.spec.model_with(host, v).eval()(splits.x_test).argmax(1) != splits.y_test)
                .flatten()
                .tolist()
            )
            for v in ckpts.params
        ]
    best = [
        max((len(a & b) / len(a | b)) if a | b else 1.0 for j, b in enumerate(wrong) if j != i)
        for i, a in enumerate(wrong)
    ]
    assert report["similarity"]["original"]["max_iou_median"] == pytest.approx(statistics.median(best))
    assert 0.0 <= report["similarity"]["generated"]["max_iou_median"] <= 1.0


def test_cli_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "paramgen",
            "collect",
            "--out",
            str(tmp_path / "ck"),
            "--pattern",
            "^layer4\\.",
            "--host-epochs",
            "1",
            "--num-checkpoints",
            "2",
        ],
    )
    assert r.exit_code != 0 and "matches none" in r.output
    (tmp_path / "bad.yaml").write_text("ae_step: 3\n")
    (tmp_path / "empty").mkdir()
    r = runner.invoke(
        main,
        [
            "paramgen",
            "train",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "p"),
            "--config",
            str(tmp_path / "bad.yaml"),
        ],
    )
    assert r.exit_code != 0 and "ae_step" in r.output
    r = runner.invoke(main, ["paramgen", "train", str(tmp_path / "empty"), "--out", str(tmp_path / "p")])
    assert r.exit_code != 0 and "params.safetensors" in r.output
