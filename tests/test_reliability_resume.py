"""Kill-and-resume through the command line: the run ends bit-identical to an unbroken one.

One work directory is killed again and again, each time at a different kind of point, and
rerun with the same command (contrastive_jax/faults.py makes each death deterministic):

  1. SIGKILL after step 1, before any checkpoint: the rerun starts from scratch;
  2. SIGKILL after step 3, between checkpoints 2 and 4: the rerun resumes from 2;
  3. SIGKILL while checkpoint 4 is written, before its commit: checkpoint 2 must survive
     (keep_checkpoints=1, so keep-N must wait for the commit) and the tmp directory must not
     disturb the rerun, which again resumes from 2;
  4. SIGTERM (a preemption notice) after step 5: the run saves step 5, waits for the write
     and exits with main.EXIT_PREEMPTED;
  5. the last rerun resumes from 5 and finishes step 6.

An unbroken run of the same command runs alongside; the two step-6 checkpoints (parameters,
BatchNorm statistics, optimiser state, RNG, step) must be equal bit for bit.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing
from contrastive_jax.main import EXIT_PREEMPTED
from tests.helpers import TEST_XLA_FLAGS
from tests.test_end_to_end import ROOT, SIMCLR

pytestmark = pytest.mark.slow

ARGS = ("--config.num_steps=6", "--config.checkpoint_every_steps=2",
        "--config.keep_checkpoints=1", "--config.evals.linear.at_end=False",
        "--config.evals.knn.every_steps=0", "--config.log_every_steps=1")


def _start(workdir, fault=None, *extra):
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": "", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "PYTHONPATH": ROOT}
  env.pop("CJ_FAULT", None)
  if fault:
    env["CJ_FAULT"] = fault
  return subprocess.Popen(
      [sys.executable, "-m", "contrastive_jax.main", f"--config={SIMCLR}:tiny",
       f"--workdir={workdir}", *ARGS, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _finish(proc, want_rc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == want_rc, err[-3000:]
  return out, err


def _listing(workdir):
  return sorted(os.listdir(workdir / "checkpoints"))


def test_killed_and_preempted_run_resumes_bit_identical(tmp_path):
  workdir, reference_dir = tmp_path / "run", tmp_path / "reference"
  reference = _start(reference_dir)  # Runs while the broken one is killed and rerun.

  # Synchronous saves while killing after a step, so that what is on disk is known exactly;
  # the SIGTERM run below saves asynchronously, so its exit must wait for the write.
  sync = "--config.async_checkpointing=False"
  _finish(_start(workdir, "kill_after_step=1", sync), -9)
  assert _listing(workdir) == []

  _, err = _finish(_start(workdir, "kill_after_step=3", sync), -9)
  assert "Restoring checkpoint" not in err
  assert _listing(workdir) == ["2"]

  _, err = _finish(_start(workdir, "kill_in_save=4", sync), -9)
  assert "Restoring checkpoint step 2" in err
  assert _listing(workdir) == ["2", "4.orbax-checkpoint-tmp"]

  out, err = _finish(_start(workdir, "sigterm_after_step=5"), EXIT_PREEMPTED)
  assert "Restoring checkpoint step 2" in err
  assert "Preemption (signal SIGTERM received by this process): saving a checkpoint at step 5" \
      in err
  assert "Preempted at step 5" in out
  assert _listing(workdir) == ["5"]  # The tmp directory is gone, keep-N dropped 2 and 4.
  assert not (workdir / "results.json").exists()

  _, err = _finish(_start(workdir), 0)
  assert "Restoring checkpoint step 5" in err
  assert json.loads((workdir / "results.json").read_text())["step"] == 6
  # Nothing the runs wrote was lost: one event file per run that got to start training.
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert len(events) == 5, events

  _finish(reference, 0)
  got, want = (checkpointing.Checkpointer(str(d / "checkpoints")) for d in (workdir,
                                                                            reference_dir))
  got_state, want_state = got.read(6), want.read(6)
  got.close()
  want.close()
  assert int(got_state["step"]) == 6
  paths = jax.tree_util.tree_leaves_with_path(want_state)
  assert len(paths) == len(jax.tree.leaves(got_state))
  for (path, w), g in zip(paths, jax.tree.leaves(got_state)):
    np.testing.assert_array_equal(g, w, err_msg=jax.tree_util.keystr(path))
