"""The generic train step with SimCLR: learning on a fixed batch, and 1 device == 8 devices."""
import jax
import numpy as np
import pytest

from tests.helpers import run_steps, tiny_simclr_config, two_view_batch


def _run(config, num_devices, batches):
  state, history = run_steps(config, num_devices, batches, config.num_steps)
  return state, [float(m["loss"]) for m in history]


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


@pytest.mark.parametrize("num_devices", [2, 4, 8])
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


def _conv_dtypes(config):
  """Element types of the convolutions in the compiled forward pass of the encoder."""
  import re  # pylint: disable=g-import-not-at-top

  from flax import nnx  # pylint: disable=g-import-not-at-top

  from contrastive_jax.methods import get_method  # pylint: disable=g-import-not-at-top
  model = get_method(config).build_model(nnx.Rngs(0))
  model.eval()  # Running statistics: nothing to update under the trace.
  hlo = jax.jit(lambda x: model.encoder(x)).lower(np.zeros((2, 8, 8, 3), np.float32)).as_text()
  return set(re.findall(r"stablehlo.convolution.*-> tensor<[0-9x]+x(\w+)>", hlo))


def test_bfloat16_compute_keeps_float32_params_and_loss():
  config = tiny_simclr_config(dtype="bfloat16")
  state, losses = _run(config, 1, [two_view_batch(16)])
  assert np.isfinite(losses[0])
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
  # The convolutions themselves run in bfloat16 (and in float32 without the switch).
  assert _conv_dtypes(config) == {"bf16"}
  assert _conv_dtypes(tiny_simclr_config()) == {"f32"}
