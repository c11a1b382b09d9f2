"""The shared harness: smoke output location, the envelope, keyed caches, arm tables, rendering."""

import json
import statistics

import pytest

from hubtools.bench import Benchmark, Run, arms_table
from hubtools.bench.envelope import RESULTS_DIR, Result, code_info, stale_files
from hubtools.bench.render import markdown, render_file


def _bench(tmp_path, argv, **kw):
    bench = Benchmark("longtail_mri", title="t", capability="longtail", code=["hubtools/bench/stats.py"], **kw)
    return bench, bench.parse(bench.parser("doc line"), argv)


def test_smoke_never_writes_to_committed_results(tmp_path):
    bench, args = _bench(tmp_path, ["--smoke"])
    assert args.out != RESULTS_DIR and RESULTS_DIR not in args.out.parents
    assert args.seeds == [0] and args.smoke
    _, full = _bench(tmp_path, ["--seeds", "4", "5"])
    assert full.out == RESULTS_DIR and full.seeds == [4, 5]
    _, given = _bench(tmp_path, ["--smoke", "--out", str(tmp_path / "x")])
    assert given.out == tmp_path / "x"


def _runs():
    return [
        Run(arm="base", seed=1, metrics={"acc": 70.0}),
        Run(arm="base", seed=2, metrics={"acc": 80.0}),
        Run(arm="base", seed=3, metrics={"acc": 75.0}),
        Run(arm="new", seed=1, metrics={"acc": 71.0}),
        Run(arm="new", seed=2, metrics={"acc": 81.5}),
        Run(arm="new", seed=3, metrics={"acc": 75.5}),
        Run(arm="noop", seed=1, metrics={"acc": 70.0}),
        Run(arm="noop", seed=2, metrics={"acc": 80.0}),
        Run(arm="noop", seed=3, metrics={"acc": 75.0}),
    ]


def test_arms_table_values_and_noop_flag():
    t = arms_table(_runs(), ["acc"], baseline="base")
    rows = {r[0]: r for r in t.rows}
    assert rows["base"][1] == 3
    assert rows["base"][2] == f"{statistics.fmean([70, 80, 75]):.2f} ± {statistics.stdev([70, 80, 75]):.2f}"
    assert rows["base"][3] == "(baseline)"
    assert rows["new"][3].startswith(f"{statistics.fmean([1.0, 1.5, 0.5]):+.2f} [")
    assert rows["noop"][3].startswith("no-op")


def test_write_validates_renders_and_round_trips(tmp_path):
    bench, args = _bench(tmp_path, ["--out", str(tmp_path), "--seeds", "1", "2", "3"])
    path = bench.write(
        "demo_result",
        data="hand-built numbers",
        config={"lr": 0.1},
        runs=_runs(),
        tables=[arms_table(_runs(), ["acc"], baseline="base")],
        figures=[{"file": "demo_result.png", "panels": [
            {"kind": "line", "series": [{"label": "base", "x": [1, 2, 3], "y": [70, 80, 75]}]}]}],
        headline="new +1.0",
        verdict="v",
    )
    raw = json.loads(path.read_text())
    result = Result.model_validate(raw)
    assert result.schema_version == 1 and len(result.git.commit) == 40
    assert result.command.startswith("python benchmarks/longtail_mri.py --out")
    assert result.versions["python"] and result.device.cpus >= 1
    assert [r.metrics["acc"] for r in result.runs if r.arm == "new"] == [71.0, 81.5, 75.5]
    md = (tmp_path / "demo_result.md").read_text()
    png = (tmp_path / "demo_result.png").read_bytes()
    assert md == markdown(result) and png[:4] == b"\x89PNG"
    render_file(path)  # one renderer, from the JSON alone: byte-identical output
    assert (tmp_path / "demo_result.md").read_text() == md
    assert (tmp_path / "demo_result.png").read_bytes() == png
    raw["extra_key"] = 1
    with pytest.raises(ValueError):
        Result.model_validate(raw)


def test_cache_key_changes_with_config_and_code(tmp_path, monkeypatch):
    bench, args = _bench(tmp_path, ["--work", str(tmp_path), "--reuse"])
    folder, saved = bench.cached("run", {"lr": 0.1})
    assert saved is None
    Benchmark.save_record(folder, {"lr": 0.1}, {"acc": 1.0}, bench)
    assert bench.cached("run", {"lr": 0.1}) == (folder, {"acc": 1.0})
    other, saved = bench.cached("run", {"lr": 0.2})
    assert other != folder and saved is None
    monkeypatch.setattr(bench.code, "digest", "0" * 64)  # the capability's code changed
    assert bench.cached("run", {"lr": 0.1})[1] is None


def test_code_digest_and_stale_files(tmp_path):
    pkg = tmp_path / "cap"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 2\n")
    info = code_info(["cap"], tmp_path)
    assert sorted(info.files) == ["cap/a.py", "cap/b.py"]
    assert stale_files(info, tmp_path) == []
    (pkg / "b.py").write_text("y = 3\n")
    (pkg / "c.py").write_text("")
    assert stale_files(info, tmp_path) == ["cap/b.py", "cap/c.py"]
    assert code_info(["cap"], tmp_path).digest != info.digest
    with pytest.raises(FileNotFoundError):
        code_info(["nope"], tmp_path)


def test_docs_blocks_are_filled_from_results(tmp_path):
    from hubtools.bench.catalog import fill_blocks

    bench, _ = _bench(tmp_path, ["--out", str(tmp_path), "--seeds", "1", "2", "3"])
    path = bench.write("demo_result", data="d", config={}, runs=_runs(),
                       tables=[arms_table(_runs(), ["acc"], baseline="base")], headline="H1", verdict="V1")
    result = Result.model_validate(json.loads(path.read_text()))
    page = "intro\n<!-- bench:demo_result -->\nold numbers typed by hand\n<!-- /bench:demo_result -->\nafter\n"
    filled = fill_blocks(page, {"demo_result": result})
    assert "old numbers" not in filled and filled.startswith("intro\n<!-- bench:demo_result -->\n")
    assert "H1" in filled and "V1" in filled and "| new | 3 |" in filled and filled.endswith("after\n")
    assert fill_blocks(filled, {"demo_result": result}) == filled  # idempotent
    assert "no current result `demo_result`" in fill_blocks(page, {})


def test_compare_runs_cell_by_cell(tmp_path):
    from click.testing import CliRunner

    from hubtools.bench.compare import compare_runs
    from hubtools.cli import main

    bench, _ = _bench(tmp_path, ["--out", str(tmp_path / "a"), "--seeds", "1", "2", "3"])
    a = bench.write("demo_result", data="d", config={}, runs=_runs(), tables=[], headline="h", verdict="v")
    changed = _runs()
    changed[4] = Run(arm="new", seed=2, metrics={"acc": 81.5000001})
    bench.args.out = tmp_path / "b"
    b = bench.write("demo_result", data="d", config={}, runs=changed, tables=[], headline="h", verdict="v")
    ra, rb = (Result.model_validate(json.loads(p.read_text())) for p in (a, b))
    n, diffs = compare_runs(ra, ra)
    assert n == 9 and diffs == []
    n, diffs = compare_runs(ra, rb)
    assert [(d.arm, d.seed, d.old) for d in diffs] == [("new", 2, 81.5)]
    assert compare_runs(ra, rb, tol=1e-3)[1] == []
    one_seed = ra.model_copy(update={"runs": [r for r in ra.runs if r.seed == 1]})
    assert len(compare_runs(ra, one_seed)[1]) == 6  # seeds 2 and 3 missing on one side
    assert compare_runs(ra, one_seed, common=True) == (3, [])
    out = CliRunner().invoke(main, ["bench", "compare", str(a), str(b)])
    assert out.exit_code == 1 and "8 of 9 cells identical" in out.output
    assert CliRunner().invoke(main, ["bench", "compare", str(a), str(a)]).exit_code == 0
