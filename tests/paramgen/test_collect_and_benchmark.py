"""Collection on real digits (host and buffers frozen) and the benchmark's --smoke mode."""

import importlib.util
import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from hubtools.paramgen import ParamSpec, collect_checkpoints
from hubtools.paramgen.digits import SUBSET_PATTERN, DigitsCNN, classification_loss, load_digits_splits
from hubtools.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_collect_trains_only_the_subset_and_freezes_buffers(tmp_path):
    splits = load_digits_splits(0)
    torch.manual_seed(0)
    host = DigitsCNN()
    before = {k: v.clone() for k, v in host.state_dict().items()}
    spec = ParamSpec.from_model(host, SUBSET_PATTERN)
    assert spec.names == ["bn3.weight", "bn3.bias"] and spec.dim == 128
    cfg = TrainConfig(output_dir=tmp_path, max_steps=1, batch_size=64, optimizer="sgd", lr=0.1, log_every=100)
    ck = collect_checkpoints(
        host,
        spec,
        TensorDataset(splits.x_train, splits.y_train),
        classification_loss,
        cfg,
        num_checkpoints=4,
        save_every=2,
        eval_fn=lambda m: {"ok": 1.0},
    )
    assert ck.params.shape == (4, 128) and [m["step"] for m in ck.metrics] == [2, 4, 6, 8]
    assert not torch.equal(ck.params[0], ck.params[-1])
    after = host.state_dict()
    for key, value in before.items():
        if key.startswith("bn3.") and not key.startswith("bn3.running") and "num_batches" not in key:
            continue
        assert torch.equal(after[key], value), key  # conv weights, fc and every BN buffer are untouched
    assert torch.equal(ck.host_state["bn1.running_mean"], before["bn1.running_mean"])


def test_benchmark_smoke(tmp_path):
    """In-process (a subprocess would pay the torch/diffusers/transformers imports a second time)."""
    from hubtools.bench import Result

    spec = importlib.util.spec_from_file_location("paramgen_benchmark", ROOT / "benchmarks" / "paramgen.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, work = tmp_path / "results", tmp_path / "work"
    records = bench.main(["--smoke", "--out", str(out), "--work", str(work)])
    assert set(records) == {("digits", 0), ("effnet", 0), ("cond", 0)}
    result = Result.model_validate(json.loads((out / "paramgen.json").read_text()))
    assert result.smoke and result.seeds == [0] and result.capability == "paramgen"
    assert "hubtools/paramgen/training.py" in result.code.files
    runs = {r.arm: r for r in result.runs}
    for case, dim, n in (("digits", 128, 10), ("effnet", 2560, 5)):
        for group in bench.PDIFF_ARMS:
            r = runs[f"{case}/{group}"]
            m = r.metrics
            assert r.seed == 0 and 0.0 <= m["min"] <= m["median"] <= m["best_test_max"] <= 100.0
            assert len(r.extra["test"]) == len(r.extra["val"]) == m["n"]  # the raw per-model accuracies
            # "best" is the test accuracy of the model that is best on validation, recomputed here
            best_val = max(range(m["n"]), key=lambda i: (r.extra["val"][i], -i))
            assert m["best"] == r.extra["test"][best_val]
            if group != "checkpoint_mean":
                assert len(r.extra["max_iou"]) == m["n"] and all(0.0 <= v <= 1.0 for v in r.extra["max_iou"])
        assert runs[f"{case}/generated_ddpm"].metrics["n"] == n
        assert runs[f"{case}/checkpoint_mean"].metrics["n"] == 1
        assert runs[f"{case}/interpolation"].metrics["n"] == n
        # the matched-noise control sits at the generated vectors' distance from the originals (by construction)
        ratio = (
            runs[f"{case}/matched_noise"].metrics["novelty_ratio"]
            / runs[f"{case}/generated_ddpm"].metrics["novelty_ratio"]
        )
        assert 0.75 < ratio < 1.25
        assert (
            runs[f"{case}/interpolation"].metrics["novelty_ratio"]
            < runs[f"{case}/matched_noise"].metrics["novelty_ratio"]
        )
        pipe = runs[f"{case}/pipeline"].metrics
        assert pipe["dim"] == dim and pipe["novelty_ratio"] > 0 and pipe["generate_ddim_s"] > 0
        assert len(runs[f"{case}/pipeline"].extra["curves"]["denoiser"]) >= 3  # enough points for the plateau
    assert set(result.details["checks"]) == {"digits", "effnet"}
    held = "cond/computers-vs-food"
    assert f"{held}/original" not in runs and 0.0 <= runs[f"{held}/base"].metrics["median"] <= 100.0
    assert runs[f"{held}/generated"].metrics["n"] == 3
    assert runs[f"{held}/info"].extra["transfer_from"] in {"computers-vs-love", "science-vs-food"}
    assert len(runs[f"{held}/info"].extra["nearest_trained_task"]) == 3
    assert 0.0 <= runs["cond/computers-vs-love/original"].metrics["median"] <= 100.0
    assert runs["cond/computers-vs-love/target_head"].metrics["n"] == 1
    tables = {t.title: t for t in result.tables}
    cond_title = bench.TITLES["cond"] + ": median test accuracy (%) per task"
    assert any("(held out)" in row[0] for row in tables[cond_title].rows)
    digits = tables[bench.TITLES["digits"] + ": test accuracy (%)"]
    assert [row[1] for row in digits.rows] == [f"digits/{g}" for g in bench.PDIFF_ARMS]
    assert bench.TITLES["digits"] + ": similarity to the nearest original" in tables
    assert result.verdict.startswith("digits: ") and "cond: " in result.verdict
    for case in ("digits", "effnet"):
        assert (out / f"paramgen_{case}_seed0.png").stat().st_size > 1000
    assert (out / "paramgen.md").read_text().startswith("# p-diff")

    # --reuse takes the finished digits run from --work; the anchor (no normalisation) is paired with it
    again = bench.main(
        [
            "--smoke",
            "--out",
            str(tmp_path / "again"),
            "--work",
            str(work),
            "--reuse",
            "--cases",
            "digits,digits_anchor",
        ]
    )
    assert again[("digits", 0)] == records[("digits", 0)]
    result = Result.model_validate(json.loads((tmp_path / "again" / "paramgen.json").read_text()))
    titles = [t.title for t in result.tables]
    assert any(t.startswith("Normalisation on digits") for t in titles)
    assert (tmp_path / "again" / "paramgen_digits_anchor_seed0.png").stat().st_size > 1000


def test_committed_result_has_a_non_saturated_case_and_every_control():
    """The committed table answers the questions it claims to: controls per seed, a case noise cannot pass."""
    from hubtools.bench import Result

    spec = importlib.util.spec_from_file_location("paramgen_benchmark", ROOT / "benchmarks" / "paramgen.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = Result.model_validate(json.loads((ROOT / "benchmarks/results/paramgen.json").read_text()))
    assert not result.smoke and len(result.seeds) >= 3
    arms = {(r.arm, r.seed) for r in result.runs}
    cases = result.config["cases"]
    pdiff = [c for c in cases if c in bench.PDIFF_CASES]
    assert "effnet" in pdiff and {"cond", "cond_many"} <= set(cases)
    for case in pdiff:
        for group in bench.PDIFF_ARMS:
            assert all((f"{case}/{group}", s) in arms for s in result.seeds), (case, group)
    checks = result.details["checks"]
    # noise >= 10 pt below the originals on every seed, recomputed from the runs
    runs = {(r.arm, r.seed): r for r in result.runs}
    gaps = {
        c: min(
            runs[(f"{c}/original", s)].metrics["median"] - runs[(f"{c}/gaussian", s)].metrics["median"]
            for s in result.seeds
        )
        for c in pdiff
    }
    assert any(g >= bench.NOISE_GAP_PT for g in gaps.values())
    assert {c: checks[c]["noise_gap_ok"] for c in pdiff} == {
        c: g >= bench.NOISE_GAP_PT for c, g in gaps.items()
    }
    for case in ("cond", "cond_many"):
        held = {
            r.arm.split("/")[1]
            for r in result.runs
            if r.arm.startswith(f"{case}/") and r.arm.endswith("/info") and r.metrics["held_out"]
        }
        assert held, case
        for task in held:
            for group in ("generated", "transfer", "target_head", "base", "pooled_mean"):
                assert all((f"{case}/{task}/{group}", s) in arms for s in result.seeds), (case, task, group)
