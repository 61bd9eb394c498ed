"""CPC InfoNCE: against a NumPy transcription of the formula, and 1 device against N devices."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax.losses.info_nce import DIRECTIONS, cpc_info_nce, orient, unorient


def _image_coords(direction, r, c, gh, gw):
  """Where oriented grid position (r, c) sits in the image; written out, not via `orient`."""
  return {"down": (r, c), "up": (gh - 1 - r, c), "right": (c, r),
          "left": (c, gw - 1 - r)}[direction]


def _numpy_info_nce(z, predictions):
  """Per (direction, k): mean over (image, position) of -log softmax over every patch."""
  z = np.asarray(z, np.float64)
  b, gh, gw, d = z.shape
  keys = z.reshape(-1, d)
  segment_losses, segment_accs = [], []
  for direction, z_hats in predictions.items():
    for k, z_hat in enumerate(z_hats, start=1):
      z_hat = np.asarray(z_hat, np.float64)
      losses, hits = [], []
      for image in range(b):
        for r in range(z_hat.shape[1]):
          for c in range(z_hat.shape[2]):
            i, j = _image_coords(direction, r + k, c, gh, gw)
            logits = keys @ z_hat[image, r, c]
            top = logits.max()
            log_norm = top + np.log(np.exp(logits - top).sum())
            target = (image * gh + i) * gw + j
            losses.append(log_norm - logits[target])
            hits.append(float(np.argmax(logits) == target))
      segment_losses.append(np.mean(losses))
      segment_accs.append(np.mean(hits))
  return np.mean(segment_losses), np.mean(segment_accs)


def _random_inputs(seed, b, gh, gw, d, k, directions, scale=1.0):
  # NumPy draws: a jax.random call per new shape would compile, and compiles dominate here.
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, gh, gw, d)).astype(np.float32)
  predictions = {}
  for direction in directions:
    rows, cols = orient(np.zeros((1, gh, gw)), direction).shape[1:]
    predictions[direction] = [
        (scale * rng.normal(size=(b, rows - offset, cols, d))).astype(np.float32)
        for offset in range(1, k + 1)]
  return z, predictions


@pytest.mark.parametrize("b,gh,gw,d,k,directions", [
    (2, 3, 3, 4, 1, ("down",)),
    (3, 4, 4, 5, 2, ("down",)),
    (2, 5, 5, 3, 4, ("down", "up")),
    (2, 4, 3, 6, 2, DIRECTIONS),
    (1, 3, 5, 4, 2, ("right", "left")),
])
def test_matches_numpy_transcription(b, gh, gw, d, k, directions):
  z, predictions = _random_inputs(0, b, gh, gw, d, k, directions)
  loss, metrics = jax.jit(cpc_info_nce)(z, predictions)
  want_loss, want_acc = _numpy_info_nce(z, predictions)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], want_acc, atol=1e-6)
  assert loss.dtype == jnp.float32


def test_perfect_predictions_give_full_accuracy():
  z, predictions = _random_inputs(1, 2, 4, 4, 8, 2, DIRECTIONS)
  # Predict a scaled copy of the true target: among unit vectors its dot product is largest.
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  predictions = {
      d: [50.0 * orient(z, d)[:, k:] for k in range(1, 3)] for d in predictions}
  loss, metrics = jax.jit(cpc_info_nce)(z, predictions)
  for name in ("accuracy", "accuracy_k1", "accuracy_k2"):
    np.testing.assert_allclose(metrics[name], 1.0, rtol=1e-6)
  assert loss < 1e-3


def test_orient_round_trip():
  x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  for direction in DIRECTIONS:
    np.testing.assert_array_equal(unorient(orient(x, direction), direction), x)
    np.testing.assert_array_equal(unorient(orient(jnp.asarray(x), direction), direction), x)


def test_bad_inputs_raise():
  z, predictions = _random_inputs(0, 2, 4, 4, 3, 2, ("down",))
  with pytest.raises(ValueError, match="shape"):
    cpc_info_nce(z, {"down": predictions["down"][::-1]})
  with pytest.raises(ValueError, match="same K"):
    cpc_info_nce(z, {"down": predictions["down"], "up": predictions["down"][:1]})
  with pytest.raises(ValueError, match="valid ones"):
    cpc_info_nce(z, {"diagonal": predictions["down"]})


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
def test_one_device_matches_many(num_devices):
  # A rectangular grid, so the turned directions have their own shapes.
  z, predictions = _random_inputs(2, 8, 4, 3, 6, 2, DIRECTIONS, scale=0.5)
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  sharded = jax.shard_map(functools.partial(cpc_info_nce, axis_name="data"), mesh=mesh,
                          in_specs=P("data"), out_specs=P())

  def value_and_grad(fn):
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(z, predictions)

  (loss, metrics), grads = value_and_grad(cpc_info_nce)
  (loss_n, metrics_n), grads_n = value_and_grad(sharded)
  np.testing.assert_allclose(loss_n, loss, rtol=1e-6)
  for name in metrics:
    np.testing.assert_allclose(metrics_n[name], metrics[name], rtol=1e-6, atol=1e-7)
  for got, want in zip(jax.tree.leaves(grads_n), jax.tree.leaves(grads)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(grads[0]).max()) > 0
