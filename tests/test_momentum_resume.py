"""MoCo v2, MoCo v3 and BYOL through the loop: tiny runs that checkpoint the target network and
the queue, evaluate, and resume bit-identically."""
import os
import shutil

import jax
import numpy as np
import pytest

from contrastive_jax import step as step_lib
from contrastive_jax import train
from tests import helpers
from tests.test_momentum_methods import METHODS, _unlocked


def _run_config(method, num_steps=4):
  config = _unlocked(method)
  config.num_steps = num_steps
  config.checkpoint_every_steps = 2
  config.async_checkpointing = False
  # One run with every evaluator is enough: kNN and the probe at the end for BYOL.
  config.evals.linear.at_end = method == "byol"
  if method != "byol":
    config.evals.knn.every_steps = 0
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Each method trained 4 steps through the loop (checkpoints at 2 and 4), once per module."""
  out = {}
  for method in METHODS:
    workdir = str(tmp_path_factory.mktemp(method))
    out[method] = (workdir, train.train_and_evaluate(_run_config(method), workdir))
  return out


@pytest.mark.parametrize("method", METHODS)
def test_tiny_run_resumes_bit_identical(runs, method):
  """Through the loop: trains, checkpoints the extra state, and a run resumed at step 2 ends
  where the unbroken one did, target network and queue included."""
  workdir, whole = runs[method]
  assert whole["step"] == 4 and np.isfinite(whole["train"]["loss"])
  if method == "byol":
    assert 0.0 <= helpers.knn_top1(whole) <= 1.0
    assert set(helpers.probe_rows(whole)) == {"pretrained", "random_init"}
  unbroken = helpers.read_checkpoint(workdir, 4)
  assert "target" in unbroken["extra"]
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  resumed = train.train_and_evaluate(_run_config(method), workdir)
  assert resumed["step"] == 4
  again = helpers.read_checkpoint(workdir, 4)
  helpers.assert_trees_equal(unbroken, again)


def test_init_from_starts_the_target_at_the_copied_encoder(runs):
  """`init_from` another run: the online encoder and the target's encoder both start as the
  source's encoder (the target is rebuilt from the transplanted parameters)."""
  source_dir = runs["moco_v2"][0]
  source = helpers.read_checkpoint(source_dir, 2)
  config = _run_config("byol")
  config.init_from.update(workdir=source_dir, step=2)
  p = train.plan(config)
  state = step_lib.make_init_fn(p.method, p.tx, p.mesh)(config.seed)
  state = jax.device_get(train._init_from(config, p, state))  # pylint: disable=protected-access
  want = source["params"]["encoder"]
  for got in (state.params["encoder"], state.extra["target"]["params"]["encoder"]):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))
