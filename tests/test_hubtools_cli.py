"""The `hubtools` entry point, `--config` handling shared by every command, and the quickstart."""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hubtools import __version__
from hubtools.cli import COMMANDS, main
from hubtools.config import StrictModel, config_option, load_config
from hubtools.errors import ConfigError
from hubtools.testing import data_missing

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_version_and_help_list_every_command():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.strip() == f"hubtools, version {__version__}"
    out = runner.invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert name in out
    for name in COMMANDS:  # every registered command imports and has its own help
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, result.output


class _Demo(StrictModel):
    count: int = 1
    name: str = "x"


@click.command()
@click.option("--count", type=int, default=1)
@click.option("--name", default="x")
@config_option(_Demo)
def _demo_command(count: int, name: str) -> None:
    click.echo(f"{count} {name}")


def test_config_file_fills_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("count: 7\nname: from-file\n")
    runner = CliRunner()
    assert runner.invoke(_demo_command, ["--config", str(cfg)]).output.strip() == "7 from-file"
    assert runner.invoke(_demo_command, ["--config", str(cfg), "--count", "3"]).output.strip() == "3 from-file"
    assert runner.invoke(_demo_command, []).output.strip() == "1 x"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("count: 7\ncuont: 2\n", "unknown key 'cuont' (value 2)"),
        ("count: seven\n", "key 'count' has invalid value 'seven'"),
        ("count: [1,\n", "malformed YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_config_errors_name_key_value_and_file(tmp_path, text, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    result = CliRunner().invoke(_demo_command, ["--config", str(cfg)])
    assert result.exit_code == 2
    assert expected in result.output and str(cfg) in result.output
    with pytest.raises(ConfigError, match=str(cfg)):
        load_config(cfg, _Demo)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml", _Demo)


def test_hub_token_and_fsck_commands(tmp_path):
    runner = CliRunner()
    data = tmp_path / "hub"
    create = ["hub", "token", "create", "--data", str(data), "--user", "ann", "--role", "read"]
    refused = runner.invoke(main, create)  # a mistyped --data must not silently start a new hub
    assert refused.exit_code == 1 and "no hub data dir" in refused.output and not data.exists()
    created = runner.invoke(main, [*create, "--init"])
    assert created.exit_code == 0, created.output
    token = created.output.strip()
    assert token.startswith("hf_") and len(token) == 37
    listed = runner.invoke(main, ["hub", "token", "list", "--data", str(data)]).output
    assert "ann" in listed and "read" in listed and token not in listed  # only hashes are stored
    assert runner.invoke(main, ["hub", "token", "revoke", "--data", str(data), token]).exit_code == 0
    assert "ann" not in runner.invoke(main, ["hub", "token", "list", "--data", str(data)]).output
    assert runner.invoke(main, ["hub", "token", "revoke", "--data", str(data), token]).exit_code == 1
    fsck = runner.invoke(main, ["hub", "fsck", "--data", str(data), "--json"])
    assert fsck.exit_code == 0 and json.loads(fsck.output)["missing"] == []


def test_hub_serve_reads_config_file(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"data: {tmp_path / 'hub'}\nport: 0\nuser: cfguser\ntoken: hf_ConfigFileTokenForServeTest00001\n")
    proc = subprocess.Popen([sys.executable, "-m", "hubtools.cli", "hub", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("hubtools-hub listening on http://127.0.0.1:")
        assert f"data={tmp_path / 'hub'}" in first
        url = first.split()[3]
        import httpx

        who = httpx.get(f"{url}/api/whoami-v2",
                        headers={"Authorization": "Bearer hf_ConfigFileTokenForServeTest00001"}, timeout=10)
        assert who.json()["name"] == "cfguser"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


@pytest.mark.timeout(360)  # the child process gets 300 s
def test_quickstart_hub_demo_round_trips_real_model_and_table(tmp_path):
    from hubtools.data.offline import DataUnavailable, fortunes, minilm_path

    try:
        minilm_path()
        fortunes("medicine", limit=1)
    except DataUnavailable as exc:
        data_missing(f"real data for the quickstart: {exc}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # the quickstart sets its own
    result = subprocess.run(
        [sys.executable, "-m", "hubtools.cli", "quickstart", "--only", "hub", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (row,) = report["demos"]
    assert row["name"] == "hub" and row["status"] == "ok"
    assert row["metrics"]["files_identical"] == "5/5"
    assert row["metrics"]["max_abs_diff"] == 0.0
    assert row["metrics"]["rows_identical"] == "569/569"
    assert row["metrics"]["params_M"] == pytest.approx(22.71, abs=0.01)
    assert "| hub | ok |" in (tmp_path / "results.md").read_text()


def test_quickstart_rejects_unknown_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run(
        [sys.executable, "-m", "hubtools.cli", "quickstart", "--only", "nope", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2 and "unknown demo(s) ['nope']" in result.stderr


def test_settings_from_file_then_given_flags(tmp_path):
    from hubtools.config import StrictModel, settings_from
    from hubtools.errors import ConfigError

    class Settings(StrictModel):
        lr: float = 0.1
        epochs: int = 1

    path = tmp_path / "s.yaml"
    path.write_text("lr: 0.5\nepochs: 3\n")
    assert settings_from(path, Settings, {"lr": None, "epochs": 7}).model_dump() == {"lr": 0.5, "epochs": 7}
    assert settings_from(None, Settings, {"lr": 0.2, "epochs": None}).model_dump() == {"lr": 0.2, "epochs": 1}
    with pytest.raises(ConfigError, match="epochs"):
        settings_from(None, Settings, {"epochs": "many"})
