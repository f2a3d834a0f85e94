"""The command line as a user runs it: subprocesses, exit codes, JSON output."""

import json
import shutil
import subprocess
import sys

import pytest

from agent import runtime
from agent.cli import main


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_help_lists_the_model_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "model" in result.stdout
    result = run_cli("model", "--help")
    assert result.returncode == 0
    for action in ("status", "prepare", "serve"):
        assert action in result.stdout


def test_model_status_json_for_the_small_model():
    result = run_cli("model", "status", "--model", "small", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sha256_ok"] is True
    assert report["size"] == runtime.SMALL_MODEL.size
    assert report["name"] == runtime.SMALL_MODEL.name
    assert report["path"].endswith(".gguf")


def test_model_status_exit_code_reflects_a_bad_hash(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF tampered")
    monkeypatch.setattr(runtime, "model_path", lambda spec: bad)
    assert main(["model", "status", "--model", "small", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["sha256_ok"] is False


def test_unknown_command_is_an_argparse_error():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_errors_are_one_line_not_a_traceback():
    result = run_cli("model", "serve", "--model", "/nonexistent/model.gguf")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_tokens_work_with_the_network_cut():
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    code = "from agent import tokens; print(tokens.count('hi'))"
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
