"""The commands tpu_vm.sh runs on every TPU worker, run here on fake workers.

Each fake worker is a home directory with the code's folder and a venv whose `python` is a
script, and a `curl` that answers the metadata server's worker number. The commands are
taken from tpu_vm.sh's dry runs, so these tests run exactly what gcloud would send.
"""
import os
import pathlib
import shlex
import subprocess

import pytest

TPU = pathlib.Path(__file__).resolve().parents[1] / "launch" / "tpu_vm.sh"
_SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]

_FAKE_PYTHON = """#!/usr/bin/env bash
echo started >> "$HOME/starts"
echo "training in $PWD with CJ_DISTRIBUTED=$CJ_DISTRIBUTED: $*"
trap 'echo "got SIGTERM, saved"; exit 75' TERM
if [ -n "${FAKE_GO:-}" ]; then while [ ! -e "$FAKE_GO" ]; do sleep 0.05; done; fi
exit "${FAKE_RC:-0}"
"""


def _remote(*args):
  """The --command of the first gcloud ssh line that a dry run of tpu_vm.sh prints."""
  result = subprocess.run(["bash", str(TPU), *args[:1], "--dry-run", "--name", "cj",
                           "--workdir", "gs://b/r", *args[1:]],
                          capture_output=True, text=True, timeout=30, check=False)
  assert result.returncode == 0, result.stderr
  for line in result.stdout.splitlines():
    argv = shlex.split(line)
    if argv[:5] == _SSH:
      (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
      return command
  raise AssertionError(result.stdout)


@pytest.fixture
def worker(tmp_path):
  """Makes the home of fake TPU worker i: the code, a venv whose python is a fake."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  curl = bin_dir / "curl"  # The metadata server's answer: this worker's number.
  curl.write_text('#!/bin/sh\necho "$FAKE_WORKER"\n')
  curl.chmod(0o755)

  def make(i, installed=True, **env):
    home = tmp_path / f"worker{i}"
    (home / "contrastive_jax").mkdir(parents=True)
    if installed:
      python = home / "cj_venv" / "bin" / "python"
      python.parent.mkdir(parents=True)
      python.write_text(_FAKE_PYTHON)
      python.chmod(0o755)
    return home, dict(os.environ, HOME=str(home), FAKE_WORKER=str(i),
                      PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env)

  return make


def _bash(command, env, **kwargs):
  return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                        timeout=30, check=False, **kwargs)


def test_remote_attach_starts_the_run_and_reports_its_status(worker):
  attach = _remote("supervise", "--", "--config.seed=3")
  for i, rc in ((0, "75"), (1, "0")):
    home, env = worker(i, FAKE_RC=rc)
    out = _bash(attach, env).stdout.splitlines()
    assert out == [
        f"[worker {i}] training in {home}/contrastive_jax with CJ_DISTRIBUTED=cluster: -m "
        "contrastive_jax.main --config=configs/simclr.py --workdir=gs://b/r --config.seed=3",
        f"[worker {i}] CJ_EXIT_STATUS={rc}"]
    logs = home / "cj_logs"
    assert (logs / "run.rc").read_text() == f"{rc}\n"
    assert (logs / "latest.log").is_symlink()
    assert (logs / "latest.log").read_text() == out[0][len(f"[worker {i}] "):] + "\n"


def test_remote_attach_follows_a_run_already_going(worker, tmp_path):
  go = tmp_path / "go"
  home, env = worker(0, FAKE_GO=str(go), FAKE_RC="75")
  start = _bash(_remote("run"), env)
  assert start.returncode == 0 and "started pid" in start.stdout, start.stderr
  # `run` refuses a second run while one is going.
  again = _bash(_remote("run"), env)
  assert again.returncode == 1 and "a run is still going" in again.stderr
  with subprocess.Popen(["bash", "-c", _remote("supervise")], stdout=subprocess.PIPE,
                        text=True, env=env) as attach:
    assert "attached to the run already going" in attach.stdout.readline()
    go.touch()
    out, _ = attach.communicate(timeout=30)
  assert out.splitlines()[-1] == "[worker 0] CJ_EXIT_STATUS=75"
  assert "training in" in out  # The log from the start.
  assert (home / "starts").read_text() == "started\n"  # Attached; nothing started twice.


def test_remote_stop_sends_sigterm_to_the_run(worker, tmp_path):
  home, env = worker(0, FAKE_GO=str(tmp_path / "never"))
  assert _bash(_remote("run"), env).returncode == 0
  stop = _bash(_remote("stop"), env)
  assert "stopped pid" in stop.stdout, stop.stderr
  # The recorded pid is the training process itself: it saw SIGTERM and exited 75.
  assert (home / "cj_logs" / "run.rc").read_text() == "75\n"
  assert "got SIGTERM, saved" in (home / "cj_logs" / "latest.log").read_text()


def test_remote_attach_reports_a_worker_without_the_code(worker):
  _, env = worker(3, installed=False)
  out = _bash(_remote("supervise"), env).stdout
  assert out == "[worker 3] CJ_EXIT_STATUS=not-installed\n"
