"""Restart paths of the launch scripts, run for real against fake cluster tools.

Fake `srun`, `scancel`, `scontrol` and `gcloud` scripts on PATH record every call and
answer from scripted queues, so each test asserts the exact sequence of commands a path
issues: SLURM's exit 75, time-limit signal, SLURM's own SIGTERM, the restart limit; Cloud
TPU supervise's rerun after exit 75, recreation after a preemption, success, a failed run
and the restart limit. The remote commands themselves are run in test_launch_remote.py.
"""
import os
import pathlib
import shlex
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SLURM = REPO / "launch" / "slurm_gpu.sbatch"
TPU = REPO / "launch" / "tpu_vm.sh"

# Every fake appends one line per call: its name and arguments separated by \x1f.
_RECORD = r"""#!/usr/bin/env bash
{ printf '%s' "$(basename "$0")"; printf '\x1f%s' "$@"; printf '\n'; } >> "$FAKE_DIR/calls"
# Pops the first line of a queue file; the last line stays, answering every later call.
pop() {
  local f="$FAKE_DIR/$1"
  head -n 1 "$f"
  if [ "$(wc -l < "$f")" -gt 1 ]; then tail -n +2 "$f" > "$f.tmp" && mv "$f.tmp" "$f"; fi
}
"""

_FAKES = {
    # FAKE_SRUN: "exit:N", or "wait:N": run until SIGTERM, then exit N (75: like a job that
    # saved a checkpoint).
    "srun": """
case "$FAKE_SRUN" in
  exit:*) exit "${FAKE_SRUN#exit:}" ;;
  wait:*)
    trap 'exit "${FAKE_SRUN#wait:}"' TERM
    echo $$ > "$FAKE_DIR/srun.pid"
    while :; do sleep 0.05; done ;;
esac
""",
    # What SLURM does for scancel --signal=TERM JOB: signal the job step.
    "scancel": """
case " $* " in *" --signal=TERM "*) kill -TERM "$(cat "$FAKE_DIR/srun.pid")" ;; esac
""",
    "scontrol": "exit 0\n",
    # Queues: qr (queued resource state or NOT_FOUND), node ("STATE WORKERS" or NOT_FOUND),
    # runs (per attempt: one exit status per worker, or "lost").
    "gcloud": r"""
not_found() { echo "ERROR: (gcloud) NOT_FOUND: $1 was not found" >&2; exit 1; }
case " $* " in
  *" queued-resources describe "*)
    s="$(pop qr)"; [ "$s" != NOT_FOUND ] || not_found queuedResource; echo "$s" ;;
  *" tpu-vm describe "*)
    s="$(pop node)"; [ "$s" != NOT_FOUND ] || not_found node; printf '%s\t%s\n' $s ;;
  *" tpu-vm ssh "*CJ_EXIT_STATUS*)
    echo "Using ssh batch size of 2." >&2
    s="$(pop runs)"
    if [ "$s" = lost ]; then echo "ssh: connect to host: Connection timed out" >&2; exit 255; fi
    i=0
    for code in $s; do
      echo "[worker $i] step 10: loss 1.5"
      echo "[worker $i] CJ_EXIT_STATUS=$code"
      i=$((i + 1))
    done ;;
esac
exit 0
""",
}


@pytest.fixture
def fake(tmp_path):
  """A PATH with the fake tools first; returns (env, read_calls, queue writer)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool, body in _FAKES.items():
    path = bin_dir / tool
    path.write_text(_RECORD + body)
    path.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_DIR=str(tmp_path))

  def calls():
    log = tmp_path / "calls"
    if not log.exists():
      return []
    return [line.split("\x1f") for line in log.read_text().splitlines()]

  def queue(name, *answers):
    (tmp_path / name).write_text("".join(f"{a}\n" for a in answers))

  return env, calls, queue


# --- SLURM -------------------------------------------------------------------------

_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cj", "SLURM_NTASKS_PER_NODE": "8"}


def _slurm(env, tmp_path, srun, *args, extra_env=None):
  env = dict(env, **_JOB, FAKE_SRUN=srun, **(extra_env or {}))
  return subprocess.Popen(["bash", str(SLURM), f"--workdir={tmp_path}/run", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
  out, err = proc.communicate(timeout=30)
  return proc.returncode, err


def _names(calls):
  return [c[0] if c[0] == "srun" else " ".join(c) for c in calls]


@pytest.mark.parametrize("srun_exit, expected_rc, requeued", [
    (0, 0, False),    # finished
    (75, 75, True),   # preempted after a checkpoint: requeue
    (1, 1, False),    # a failure is not retried
])
def test_slurm_exit_paths(fake, tmp_path, srun_exit, expected_rc, requeued):
  env, calls, _ = fake
  rc, err = _finish(_slurm(env, tmp_path, f"exit:{srun_exit}"))
  assert rc == expected_rc, err
  assert _names(calls()) == ["srun"] + (["scontrol requeue 4242"] if requeued else [])
  assert (tmp_path / "run" / "logs").is_dir()
  srun = calls()[0]
  assert "--open-mode=append" in srun  # A requeued job appends to the process logs.
  assert srun[srun.index("-m") + 1:] == ["contrastive_jax.main", "--config=configs/simclr.py",
                                          f"--workdir={tmp_path}/run"]


def test_slurm_stops_requeueing_at_max_restarts(fake, tmp_path):
  env, calls, _ = fake
  rc, err = _finish(_slurm(env, tmp_path, "exit:75", "--max-restarts", "3",
                           extra_env={"SLURM_RESTART_COUNT": "3"}))
  assert rc == 75
  assert _names(calls()) == ["srun"]
  assert "already requeued 3 times (--max-restarts 3)" in err
  # One below the limit still requeues.
  (tmp_path / "calls").unlink()
  rc, err = _finish(_slurm(env, tmp_path, "exit:75", "--max-restarts", "3",
                           extra_env={"SLURM_RESTART_COUNT": "2"}))
  assert _names(calls()) == ["srun", "scontrol requeue 4242"], err


def _wait_for_srun(tmp_path):
  deadline = time.monotonic() + 10
  while not (tmp_path / "srun.pid").exists():
    assert time.monotonic() < deadline, "the fake srun never started"
    time.sleep(0.02)


@pytest.mark.parametrize("step_exit", [75, 137])
def test_slurm_time_limit_signal_checkpoints_and_requeues(fake, tmp_path, step_exit):
  """SIGUSR1 to the batch script -> scancel --signal=TERM -> the step exits -> requeue.

  137: srun's --kill-on-bad-exit killed a process still exiting after the first one's 75;
  after the time-limit signal the job requeues whatever the step's status.
  """
  env, calls, _ = fake
  proc = _slurm(env, tmp_path, f"wait:{step_exit}")
  _wait_for_srun(tmp_path)
  proc.send_signal(signal.SIGUSR1)
  rc, err = _finish(proc)
  assert rc == step_exit, err
  assert _names(calls()) == ["srun", "scancel --signal=TERM 4242", "scontrol requeue 4242"]


def test_slurm_leaves_its_own_sigterm_to_slurm(fake, tmp_path):
  """Preemption or scancel: SLURM signals the script and the step; no requeue from here."""
  env, calls, _ = fake
  proc = _slurm(env, tmp_path, "wait:75")
  _wait_for_srun(tmp_path)
  proc.send_signal(signal.SIGTERM)
  os.kill(int((tmp_path / "srun.pid").read_text()), signal.SIGTERM)
  rc, err = _finish(proc)
  assert rc == 75, err
  assert _names(calls()) == ["srun"]
  assert "SLURM decides" in err


def _dry_lines(*args, env=None):
  result = subprocess.run(["bash", str(SLURM), "--dry-run", "--workdir=/shared/r", *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env=dict(os.environ, **(env or {})))
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines()
          if not line.startswith(("mkdir", "export"))]


def test_slurm_dry_run_paths():
  env = {"SLURM_JOB_ID": "77"}
  first, *rest = _dry_lines(env=env)
  assert first.startswith("srun ") and rest == ["# the job step exits 0", "exit 0"]
  assert _dry_lines("--simulate-exit=75", env=env)[1:] == [
      "# the job step exits 75", "scontrol requeue 77", "exit 75"]
  assert _dry_lines("--simulate-time-limit", env=env)[1:] == [
      "# SIGUSR1 from SLURM (--signal=B:USR1@300)", "scancel --signal=TERM 77",
      "# the job step exits 75", "scontrol requeue 77", "exit 75"]
  assert _dry_lines("--simulate-exit=75", env=dict(env, SLURM_RESTART_COUNT="20"))[1:] == [
      "# the job step exits 75", "exit 75"]


def test_slurm_simulation_needs_dry_run(fake, tmp_path):
  env, calls, _ = fake
  rc, err = _finish(_slurm(env, tmp_path, "exit:0", "--simulate-exit=75"))
  assert rc == 2 and "need --dry-run" in err and calls() == []


# --- Cloud TPU supervise -----------------------------------------------------------

_QR = ["gcloud", "compute", "tpus", "queued-resources"]
_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
_WHERE = "--zone=us-central2-b"


def _supervise(env, tmp_path, *args):
  cmd = ["bash", str(TPU), "supervise", "--name", "cj", "--workdir", "gs://b/r",
         "--repo", "https://example.com/cj.git", "--poll", "0", "--backoff", "0",
         "--logdir", str(tmp_path / "logs"), *args, "--", "--config.seed=3"]
  result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
  return result.returncode, result.stderr


def _kind(call):
  """A short name for each gcloud call, to compare whole sequences."""
  if call[:4] == _QR:
    return f"qr {call[4]}"
  if call[:5] == ["gcloud", "alpha"] + _QR[1:]:
    return f"alpha qr {call[5]}"
  if call[:5] == _VM + ["describe"]:
    return "node describe"
  if call[:5] == _VM + ["ssh"]:
    (command,) = [a for a in call if a.startswith("--command=")]
    return "run" if "CJ_EXIT_STATUS" in command else "install"
  return " ".join(call)


def test_supervise_success(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "0 0")
  rc, err = _supervise(env, tmp_path)
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == ["qr describe", "node describe", "run"]
  describe, node, run = calls()
  assert describe == _QR + ["describe", "cj", _WHERE, "--format=value(state.state)"]
  assert node == _VM + ["describe", "cj", _WHERE, "--format=value(state,networkEndpoints.len())"]
  assert run[:8] == _VM + ["ssh", "cj", _WHERE, "--worker=all"]
  # Per-worker logs, without the prefix or the status line; gcloud's own lines apart.
  for i in range(2):
    assert (tmp_path / "logs" / f"worker_{i}.log").read_text() == (
        "=== attempt 1 ===\nstep 10: loss 1.5\n")
  assert "Using ssh batch size" in (tmp_path / "logs" / "gcloud.log").read_text()
  assert "the run is finished (1 attempts, 0 restarts)" in err


def test_supervise_reruns_after_exit_75(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "75 75", "0 0")
  rc, err = _supervise(env, tmp_path)
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == [
      "qr describe", "node describe", "run",
      "qr describe", "node describe",    # after the run: still ACTIVE, so not preempted
      "qr describe", "node describe", "run"]
  assert "the run exited 75" in err and "restart 1 of at most 20" in err
  assert (tmp_path / "logs" / "worker_1.log").read_text().count("=== attempt") == 2


def test_supervise_recreates_a_preempted_slice(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE", "SUSPENDED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "lost", "0 0")
  rc, err = _supervise(env, tmp_path, "--provisioning", "spot", "--accelerator-type", "v5p-16",
                       "--version", "v2-alpha-tpuv5")
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == [
      "qr describe", "node describe", "run",
      "qr describe",                     # SUSPENDED: the slice is gone
      "qr delete", "qr create",
      "qr describe", "qr describe",      # queued, then provisioning
      "qr describe", "node describe",    # ACTIVE
      "install", "run"]
  delete, create = [c for c in calls() if _kind(c) in ("qr delete", "qr create")]
  assert delete == _QR + ["delete", "cj", _WHERE, "--force", "--quiet"]
  assert create == _QR + ["create", "cj", "--node-id=cj", _WHERE, "--accelerator-type=v5p-16",
                          "--runtime-version=v2-alpha-tpuv5", "--spot"]
  run = calls()[-1]
  assert "--workdir=gs://b/r --config.seed=3" in run[-1]  # Same workdir: it resumes.
  assert "restart 1 of at most 20" in err and "restart 2" not in err


def test_supervise_recreates_when_the_node_is_gone(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 1", "PREEMPTED 1", "READY 1")
  queue("runs", "lost", "0")
  rc, err = _supervise(env, tmp_path)
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == [
      "qr describe", "node describe", "run", "qr describe", "node describe",
      "qr delete", "qr create", "qr describe", "node describe", "install", "run"]
  assert "the slice is NODE_PREEMPTED" in err


def test_supervise_creates_a_missing_slice_without_counting_a_restart(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "NOT_FOUND", "ACTIVE")
  queue("node", "READY 1")
  queue("runs", "0")
  rc, err = _supervise(env, tmp_path, "--max-restarts", "0")
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == [
      "qr describe", "qr create", "qr describe", "node describe", "install", "run"]


def test_supervise_gives_up_after_max_restarts(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "75 75")
  rc, err = _supervise(env, tmp_path, "--max-restarts", "2")
  assert rc == 1
  assert [_kind(c) for c in calls()].count("run") == 3  # The first run and 2 restarts.
  assert "2 restarts are used up (--max-restarts 2)" in err.splitlines()[-1]


def test_supervise_stops_on_a_failed_run(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "75 3")
  rc, err = _supervise(env, tmp_path)
  assert rc == 3
  assert [_kind(c) for c in calls()].count("run") == 1
  assert "worker 1: 3" in err and "not restarting" in err


def test_supervise_reruns_when_a_worker_sent_no_status(fake, tmp_path):
  # Two workers, one status: the other's connection dropped; the rerun attaches to it.
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "0", "0 0")
  rc, err = _supervise(env, tmp_path)
  assert rc == 0, err
  assert [_kind(c) for c in calls()].count("run") == 2
  assert "no exit status came back from every worker" in err


def test_supervise_dry_run_simulates_the_paths():
  # No gcloud on PATH: a dry run needs none.
  result = subprocess.run(
      ["bash", str(TPU), "supervise", "--dry-run", "--name", "cj", "--workdir", "gs://b/r",
       "--repo", "https://example.com/cj.git", "--provisioning", "best-effort",
       "--simulate-states", "ACTIVE,ACTIVE,ACTIVE,SUSPENDED,PROVISIONING,ACTIVE",
       "--simulate-exits", "75,lost,0"],
      capture_output=True, text=True, timeout=30, check=False,
      env=dict(os.environ, PATH="/usr/bin:/bin"))
  assert result.returncode == 0, result.stderr
  kinds = [line if line.startswith(("#", "sleep")) else _kind(shlex.split(line))
           for line in result.stdout.splitlines()]
  active = ["alpha qr describe", "node describe", "# -> ACTIVE"]
  assert kinds == [
      *active, "run", "# -> every worker: 75",
      *active, "sleep 30",                                   # exit 75: rerun
      *active, "run", "# -> every worker: lost",
      "alpha qr describe", "# -> SUSPENDED", "sleep 60",      # preempted: recreate
      "alpha qr delete", "alpha qr create", "sleep 60",
      "alpha qr describe", "# -> PROVISIONING", "sleep 60",
      *active, "install", "run", "# -> every worker: 0"]
  assert "--best-effort" in result.stdout  # Only gcloud alpha offers it.
  assert "every worker exited 0: the run is finished (3 attempts, 2 restarts)" in result.stderr


@pytest.mark.parametrize("args, message", [
    (("--simulate-exits", "75"), "need --dry-run"),
    (("--dry-run", "--simulate-states", "RUNNING"), "not a slice state"),
    (("--dry-run", "--simulate-exits", "boom"), "not an exit status"),
    (("--dry-run", "--provisioning", "cheap"), "--provisioning must be"),
    (("--dry-run", "--max-restarts", "-1"), "--max-restarts must be"),
])
def test_supervise_rejects_bad_options(fake, tmp_path, args, message):
  env, calls, _ = fake
  rc, err = _supervise(env, tmp_path, *args)
  assert rc == 2 and message in err and calls() == []


def test_supervise_installs_where_the_code_is_missing(fake, tmp_path):
  env, calls, queue = fake
  queue("qr", "ACTIVE")
  queue("node", "READY 2")
  queue("runs", "not-installed not-installed", "0 0")
  rc, err = _supervise(env, tmp_path, "--max-restarts", "0")
  assert rc == 0, err
  assert [_kind(c) for c in calls()] == [
      "qr describe", "node describe", "run", "install", "qr describe", "node describe", "run"]
