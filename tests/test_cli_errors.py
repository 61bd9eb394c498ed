"""Expected errors end a command with one `Error: <message>` line and exit status 1; the debug
switch (CONTRASTIVE_JAX_DEBUG=1) shows their traceback; other exceptions keep theirs."""
import os
import subprocess
import sys

import pytest

from contrastive_jax import cli, train
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMCLR = os.path.join(ROOT, "configs", "simclr.py")


def _run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=helpers.command_env(**env), capture_output=True, text=True,
                        timeout=300)


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def test_a_bad_config_value_is_one_error_line(tmp_path):
  proc = _run("contrastive_jax.main", f"--config={SIMCLR}:tiny", f"--workdir={tmp_path / 'run'}",
              "--config.optim.weight_decay=-1")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert _error_lines(proc.stderr) == [
      "Error: config.optim.weight_decay=-1.0 is invalid: must be >= 0."], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()  # Stopped in validation: nothing written.


def test_the_debug_switch_shows_the_traceback(tmp_path):
  proc = _run("contrastive_jax.main", f"--config={SIMCLR}:tiny", f"--workdir={tmp_path / 'run'}",
              "--config.optim.weight_decay=-1", **{cli.DEBUG_ENV: "1"})
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" in proc.stderr
  assert "ValueError: config.optim.weight_decay=-1.0 is invalid" in proc.stderr
  assert not _error_lines(proc.stderr)


def test_evaluate_of_an_empty_directory_is_one_error_line(tmp_path):
  proc = _run("contrastive_jax.evaluate", f"--workdir={tmp_path}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  (line,) = _error_lines(proc.stderr)
  assert "config.json not found" in line and str(tmp_path) in line
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("error", [
    ValueError("config.batch_size=0 is invalid"),
    train.ConfigMismatchError("differing keys: seed: 0 -> 1"),
    train.NonFiniteLossError("Non-finite loss at step 3"),
    FileNotFoundError("runs/x/config.json not found"),
])
def test_expected_errors_exit_with_their_message(error, capsys, monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  with pytest.raises(SystemExit) as exit_info, cli.errors_reported():
    raise error
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == f"Error: {error}\n"
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  with pytest.raises(type(error)), cli.errors_reported():
    raise error


@pytest.mark.parametrize("error", [TypeError("a bug"), RuntimeError("a bug"), KeyError("a")])
def test_unexpected_errors_keep_their_traceback(error, monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  with pytest.raises(type(error)), cli.errors_reported():
    raise error
