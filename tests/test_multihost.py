"""Two processes x four devices (gloo on localhost) train exactly like one process x 8 devices.

The job runs through the real entry point and launcher: `launch/local_multiprocess.sh` starts
`python -m contrastive_jax.main` twice; each process reads its own shard of the data. It trains
four steps with checkpoints at 2 and 4; the last is deleted and the job started again, so
both processes restore step 2 and train two more. The reference runs
here, in one process over 8 devices, on the same global batches (the two shards side by side).
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing, data, optim, parallel
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from tests import helpers
from tests.helpers import TEST_XLA_FLAGS
from tests.test_end_to_end import ROOT, SIMCLR

pytestmark = pytest.mark.slow

OVERRIDES = ("--config.evals.linear.at_end=False", "--config.checkpoint_every_steps=2",
             "--config.async_checkpointing=False")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, num_steps, logdir, config=f"{SIMCLR}:tiny", extra=()):
  pytest.importorskip("tensorflow")  # The launched runs augment with tf.data.
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "CJ_INIT_TIMEOUT": "120",
         "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
         "PYTHONPATH": ROOT}
  env["XLA_FLAGS"] = TEST_XLA_FLAGS
  cmd = ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--processes", "2",
         "--devices-per-process", "4", "--port", str(_free_port()), "--timeout", "400",
         "--grace", "5", "--logdir", str(logdir), "--", sys.executable, "-m",
         "contrastive_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.num_steps={num_steps}", *OVERRIDES, *extra]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=450)
  logs = [(logdir / f"process_{i}.log").read_text() for i in range(2)]
  assert proc.returncode == 0, (proc.stderr[-2000:], [l[-3000:] for l in logs])
  return logs


def _reference(num_steps, config_path=SIMCLR, extra=()):
  """One process, 8 devices, fed the two processes' shards concatenated."""
  config = helpers.parse_config("config", config_path, "tiny", *OVERRIDES, *extra,
                                f"--config.num_steps={num_steps}")
  mesh = parallel.make_mesh(8)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, num_steps)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  train_step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                        total_steps=num_steps)
  shards = [data.build_train_iterator(config, method.inputs(), process_index=i,
                                      process_count=2) for i in range(2)]
  losses = []
  for _ in range(num_steps):
    parts = [next(s) for s in shards]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    state, metrics = train_step(state, parallel.shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  return state, losses


def test_two_processes_match_one_process_and_resume(tmp_path):
  workdir = tmp_path / "run"
  _launch(workdir, 4, tmp_path / "logs1")
  # Lose the last checkpoint: the relaunch restores step 2 in both processes and redoes 3 and 4.
  shutil.rmtree(workdir / "checkpoints" / "4")
  second = _launch(workdir, 4, tmp_path / "logs2")
  for log in second:
    assert "Restoring checkpoint step 2" in log, log[-2000:]
  # Only process 0 writes metrics: one event file per launch.
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert len(events) == 2, events

  ref_state, ref_losses = _reference(4)
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 4
  np.testing.assert_allclose(results["train"]["loss"], ref_losses[-1], rtol=1e-5)
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  restored = ckpt.restore(ref_state, step=4)
  ckpt.close()
  for tree in ("params", "batch_stats"):
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(getattr(ref_state, tree)),
                                 jax.tree.leaves(getattr(restored, tree))):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")

