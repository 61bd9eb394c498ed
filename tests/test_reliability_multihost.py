"""Preemption of a two-process job: both processes save at one agreed step, then resume there.

Process 1 alone gets SIGTERM (CJ_FAULT=sigterm_after_step=2@1). JAX's preemption service
spreads the notice, `reached_preemption_sync_point` picks a step both can still reach, both
save it (one collective checkpoint), exit with EXIT_PREEMPTED, and a relaunch of both resumes
from it and finishes.
"""
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from contrastive_jax.main import EXIT_PREEMPTED
from tests.helpers import TEST_XLA_FLAGS
from tests.test_end_to_end import ROOT, SIMCLR

pytestmark = pytest.mark.slow

NUM_STEPS = 8
ARGS = (f"--config.num_steps={NUM_STEPS}", "--config.checkpoint_every_steps=100",
        "--config.evals.linear.at_end=False", "--config.evals.knn.every_steps=0")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, fault=None):
  """Both processes of the job; returns [(exit status, log)] by process index."""
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  port = _free_port()
  procs = []
  for i in range(2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "XLA_FLAGS": f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count=4",
           "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
           "CJ_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "CJ_NUM_PROCESSES": "2",
           "CJ_PROCESS_ID": str(i), "CJ_CPU_COLLECTIVES": "gloo", "CJ_INIT_TIMEOUT": "120",
           "PYTHONPATH": ROOT}
    env.pop("CJ_FAULT", None)
    if fault:
      env["CJ_FAULT"] = fault
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "contrastive_jax.main", f"--config={SIMCLR}:tiny",
         f"--workdir={workdir}", *ARGS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  try:
    return [(p.returncode, out) for p, out in ((p, p.communicate(timeout=400)[0]) for p in procs)]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def test_sigterm_to_one_process_saves_one_agreed_step_on_both(tmp_path):
  pytest.importorskip("tensorflow")  # The launched runs augment with tf.data.
  workdir = tmp_path / "run"
  first = _launch(workdir, fault="sigterm_after_step=2@1")
  steps = []
  for i, (rc, log) in enumerate(first):
    assert rc == EXIT_PREEMPTED, (i, log[-3000:])
    found = re.findall(r"Preemption \(.*sync point\): saving a checkpoint at step (\d+)", log)
    assert len(found) == 1, (i, log[-3000:])
    steps.append(int(found[0]))
  assert steps[0] == steps[1] and 2 <= steps[0] < NUM_STEPS, steps
  saved = steps[0]
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(saved)]

  second = _launch(workdir)
  for i, (rc, log) in enumerate(second):
    assert rc == 0, (i, log[-3000:])
    assert f"Restoring checkpoint step {saved}" in log, (i, log[-3000:])
  assert json.loads((workdir / "results.json").read_text())["step"] == NUM_STEPS
