"""The generic train step with SimCLR: learning on a fixed batch, and 1 device == 8 devices."""
import jax
import numpy as np
import pytest

from contrastive_jax import optim, parallel
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from tests.helpers import tiny_simclr_config, two_view_batch


def _run(config, num_devices, batches):
  mesh = parallel.make_mesh(num_devices)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, config.num_steps)
  defs = step_lib.model_defs(method)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  train_step = step_lib.make_train_step(method, defs, tx, schedule, mesh)
  losses = []
  for b in batches:
    state, metrics = train_step(state, parallel.shard_batch(b, mesh))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


def test_loss_decreases_on_a_fixed_batch():
  config = tiny_simclr_config(**{"optim.name": "adamw", "optim.base_lr": 3e-3})
  batch = two_view_batch(16)
  _, losses = _run(config, 1, [batch] * 12)
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.3, losses


@pytest.fixture(scope="module")
def one_device_reference():
  config = tiny_simclr_config()
  batches = [two_view_batch(16, seed=s) for s in range(2)]
  return config, batches, _run(config, 1, batches)


@pytest.mark.parametrize("num_devices", [2, 8])
def test_devices_agree_with_one_device(one_device_reference, num_devices):
  """Same global batch: same loss, updated parameters and BatchNorm statistics."""
  config, batches, (ref_state, ref_losses) = one_device_reference
  state, losses = _run(config, num_devices, batches)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert int(state.step) == 2
  for tree in ("params", "batch_stats"):
    ref_leaves = jax.tree_util.tree_leaves_with_path(getattr(ref_state, tree))
    leaves = jax.tree.leaves(getattr(state, tree))
    for (path, ref), got in zip(ref_leaves, leaves):
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")


def test_bfloat16_compute_keeps_float32_params_and_loss():
  config = tiny_simclr_config(dtype="bfloat16")
  state, losses = _run(config, 1, [two_view_batch(16)])
  assert np.isfinite(losses[0])
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
