"""TOML config files for ``serve`` and ``keyholder`` (``hub.infra.configfile``),
``--print-config``, ``--version``, and a key holder run from its file alone with
metrics and JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_demo import ROOT
from test_metrics import scrape_until, value

from client_sdk.wire.channels import ChannelSecurity, holder_server_name, open_channel
from hub.cli import main
from hub.keyholder.ceremony import deal_to_directory
from hub.keyholder.cli import init_holder

HUB_TOML = """\
data_dir = "data"
public = "keys/public.json"
database_url = "postgresql://fraudhub:hunter2@db.internal/fraudhub"
listen = "127.0.0.1:9443"
policy = ["policies/base.yaml", "policies/override.yaml"]
workers = 5
checkpoint_seconds = 30
metrics_port = 9100
accept_epoch = [3]
"""


def _print_config(
    capsys: pytest.CaptureFixture[str], command: str, *args: str
) -> dict[str, object]:
    capsys.readouterr()
    assert main([command, *args, "--print-config"]) == 0
    return tomllib.loads(capsys.readouterr().out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "fraudhub 0.1.0"


def test_serve_reads_its_file_flags_override_and_secrets_stay_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "etc" / "hub.toml"
    conf.parent.mkdir()
    conf.write_text(HUB_TOML)
    printed = _print_config(capsys, "serve", "--config", str(conf), "--workers", "3")
    etc = conf.parent
    assert printed["data_dir"] == str(etc / "data")  # relative to the file
    assert printed["public"] == str(etc / "keys/public.json")
    assert printed["policy"] == [
        str(etc / "policies/base.yaml"),
        str(etc / "policies/override.yaml"),
    ]
    assert printed["workers"] == 3  # the flag wins
    assert printed["checkpoint_seconds"] == 30.0
    assert printed["checkpoint_every"] == 1000  # the default
    assert printed["metrics_port"] == 9100 and printed["metrics_host"] == "127.0.0.1"
    assert printed["accept_epoch"] == [3]
    assert printed["database_url"] == "postgresql://fraudhub:***@db.internal/fraudhub"
    # What it prints is a config file `serve` reads back (the password aside).
    again = tmp_path / "printed.toml"
    again.write_text(json.dumps(printed["listen"]).join(("listen = ", "\n")))
    assert (
        _print_config(capsys, "serve", "--config", str(again), "--data-dir", "d", "--public", "p")[
            "listen"
        ]
        == "127.0.0.1:9443"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wrokers = 3\n", "hub.toml: unknown key 'wrokers' for `fraudhub serve`"),
        ('workers = "eight"\n', "hub.toml: workers: expected a whole number, got 'eight'"),
        ("workers = 0\n", "hub.toml: workers: must be at least 1, got 0"),
        ("workers = true\n", "hub.toml: workers: expected a whole number, got True"),
        ("metrics_port = 70000\n", "hub.toml: metrics_port: must be a port between 0 and 65535"),
        ("checkpoint_seconds = nan\n", "hub.toml: checkpoint_seconds: expected a finite number"),
        ('policy = "one.yaml"\n', "hub.toml: policy: expected a list of paths"),
        ("accept_epoch = [0]\n", "hub.toml: accept_epoch: must be at least 1, got 0"),
        ('witness = ["nope"]\n', "hub.toml: witness: --witness 'nope': expected HOST:PORT"),
        ("workers = [\n", "hub.toml: not valid TOML: "),
        ('data_dir = "d"\n', "serve needs --public or `public` in "),
    ],
)
def test_bad_config_files_name_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    conf = tmp_path / "hub.toml"
    conf.write_text(text if "data_dir" in text else f'data_dir = "d"\npublic = "p"\n{text}')
    assert main(["serve", "--config", str(conf), "--print-config"]) == 2
    assert message in capsys.readouterr().err


def test_missing_required_settings_name_both_ways(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keyholder", "serve", "--print-config"]) == 2
    assert "keyholder serve needs --share (or --config FILE)" in capsys.readouterr().err
    assert main(["serve", "--config", "/nonexistent/hub.toml"]) == 2
    assert "cannot read config file /nonexistent/hub.toml" in capsys.readouterr().err


def _holder_files(root: Path) -> Path:
    init_holder(root / "state-1", holder_server_name(1))
    deal_to_directory(2, 3, root / "keys")
    conf = root / "holder-1.toml"
    conf.write_text(
        'share = "keys/share-1.json"\npublic = "keys/public.json"\nstate_dir = "state-1"\n'
        'listen = "127.0.0.1:0"\nworkers = 2\nmetrics_port = 0\n'
        'witness_name = "w.example/witness"\n'
    )
    return conf


def test_keyholder_file_holds_every_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _holder_files(tmp_path)
    printed = _print_config(capsys, "keyholder", "serve", "--config", str(conf), "--workers", "7")
    assert printed["share"] == str(tmp_path / "keys/share-1.json")
    assert printed["state_dir"] == str(tmp_path / "state-1")
    assert printed["workers"] == 7 and printed["witness_name"] == "w.example/witness"
    assert printed["insecure"] is False and printed["listen"] == "127.0.0.1:0"


@pytest.mark.e2e
def test_keyholder_runs_from_its_file_with_metrics_and_json_logs(tmp_path: Path) -> None:
    conf = _holder_files(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'protos'}:{ROOT}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--log-format", "json",
         "keyholder", "serve", "--config", str(conf)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("key holder 1 (epoch 1) listening on port "), line
        port = int(line.rsplit(" ", 1)[1])
        metrics_line = process.stdout.readline().strip()
        assert metrics_line.startswith("metrics on http://127.0.0.1:"), metrics_line
        metrics_port = int(metrics_line.rsplit(":", 1)[1].split("/")[0])
        ca = str(tmp_path / "state-1" / "tls" / "ca.pem")
        pin = ChannelSecurity.from_ca_file(ca, holder_server_name(1))
        with open_channel(f"127.0.0.1:{port}", pin) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        _, samples = scrape_until(
            metrics_port,
            lambda now: value(now, "fraudhub_rpcs_total", method="Health/Check", code="OK") >= 1,
        )
        assert value(samples, "fraudhub_rpcs_total", method="Health/Check", code="OK") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    lines = [json.loads(text) for text in process.stderr.read().splitlines()]
    rpc = next(line for line in lines if "method" in line)
    assert {"method": "Health/Check", "code": "OK", "institution": "-", "items": 0}.items() <= (
        rpc.items()
    )
