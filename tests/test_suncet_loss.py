"""SuNCEt against a numpy transcription of the paper's formula, and across device counts."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax.losses.suncet import suncet


def numpy_suncet(z, y, temperature):
  """Eq. (1) of Assran et al. (2020), literally, over the anchors that have a positive."""
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  s = z @ z.T
  losses, correct = [], []
  for i in range(len(z)):
    pos = [j for j in range(len(z)) if j != i and y[j] == y[i]]
    if not pos:  # Alone in its class: excluded (see the loss's docstring).
      continue
    num = sum(np.exp(s[i, j] / temperature) for j in pos)
    den = sum(np.exp(s[i, k] / temperature) for k in range(len(z)) if k != i)
    losses.append(-np.log(num / den))
    others = [k for k in range(len(z)) if k != i]
    correct.append(y[max(others, key=lambda k: s[i, k])] == y[i])
  if not losses:
    return 0.0, 0.0, 0
  return float(np.mean(losses)), float(np.mean(correct)), len(losses)


# Several images per class; the last case has a class (7) with a single image.
LABELS = {
    "balanced": [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2],
    "unbalanced": [3, 3, 3, 3, 3, 1, 1, 0, 0, 0, 5, 5],
    "singleton": [0, 1, 0, 1, 7, 0, 1, 2, 2, 0, 1, 2],
}


@pytest.mark.parametrize("case", sorted(LABELS))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_paper_formula(case, temperature):
  y = np.asarray(LABELS[case], np.int32)
  z = np.random.default_rng(len(case)).normal(size=(len(y), 5))
  loss, metrics = suncet(jnp.asarray(z, jnp.float32), jnp.asarray(y), temperature=temperature)
  ref_loss, ref_acc, ref_anchors = numpy_suncet(z, y, temperature)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["suncet_nn_acc"], ref_acc, atol=1e-6)
  assert metrics["suncet_anchors"] == ref_anchors


def test_single_image_class_is_excluded_but_still_a_negative():
  """Its anchor term is dropped; moving it changes the others' denominators."""
  y = np.asarray(LABELS["singleton"], np.int32)
  z = np.random.default_rng(0).normal(size=(len(y), 4)).astype(np.float32)
  loss_fn = lambda z: suncet(z, jnp.asarray(y), temperature=0.2)[0]  # noqa: E731
  loss, grads = jax.value_and_grad(loss_fn)(jnp.asarray(z))
  assert np.isfinite(loss) and np.all(np.isfinite(grads))
  assert suncet(jnp.asarray(z), jnp.asarray(y), temperature=0.2)[1]["suncet_anchors"] == 11
  lone = int(np.flatnonzero(y == 7)[0])
  assert np.abs(grads[lone]).sum() > 0  # It is a negative of every other anchor.
  # Without the singleton the mean is over the same 11 anchors with one negative fewer.
  keep = np.arange(len(y)) != lone
  without = suncet(jnp.asarray(z[keep]), jnp.asarray(y[keep]), temperature=0.2)[0]
  assert not np.isclose(loss, without)


def test_no_valid_anchor_gives_zero_loss_and_zero_gradients():
  z = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
  y = jnp.arange(4)
  (loss, metrics), grads = jax.value_and_grad(
      lambda z: suncet(z, y, temperature=0.1), has_aux=True)(z)
  assert loss == 0.0 and metrics["suncet_anchors"] == 0
  np.testing.assert_array_equal(grads, 0.0)


def test_gradient_matches_finite_differences():
  y = np.asarray([0, 0, 1, 1, 1, 2], np.int32)
  z = np.random.default_rng(2).normal(size=(6, 3))
  g = jax.grad(lambda z: suncet(z, jnp.asarray(y), temperature=0.3)[0])(
      jnp.asarray(z, jnp.float32))
  eps, numeric = 1e-5, np.zeros_like(z)
  for idx in np.ndindex(z.shape):
    zp, zm = z.copy(), z.copy()
    zp[idx] += eps
    zm[idx] -= eps
    numeric[idx] = (numpy_suncet(zp, y, 0.3)[0] - numpy_suncet(zm, y, 0.3)[0]) / (2 * eps)
  np.testing.assert_allclose(g, numeric, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("num_devices", [2, 4, 8])
def test_replicas_agree_with_whole_support_set(num_devices):
  """Same global support on 1 and N devices: same loss, metrics and gradients, and every
  replica's rows get the gradient of the anchors on the other replicas too."""
  rng = np.random.default_rng(3)
  y = jnp.asarray(rng.permutation(np.repeat(np.arange(5), 3).tolist() + [9]), jnp.int32)
  z = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  ref_fn = lambda z: suncet(z, y, temperature=0.2)  # noqa: E731
  (ref_loss, ref_metrics), ref_grads = jax.value_and_grad(ref_fn, has_aux=True)(z)
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  kernel = functools.partial(suncet, temperature=0.2, axis_name="data")
  sharded = jax.shard_map(kernel, mesh=mesh, in_specs=(P("data"), P("data")),
                          out_specs=(P(), P()))
  (loss, metrics), grads = jax.jit(jax.value_and_grad(sharded, has_aux=True))(z, y)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(loss, numpy_suncet(np.asarray(z), np.asarray(y), 0.2)[0],
                             rtol=1e-5)
  for k in ref_metrics:
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-6)
  np.testing.assert_allclose(grads, ref_grads, rtol=1e-5, atol=1e-7)
  per_replica = np.abs(np.asarray(grads)).reshape(num_devices, -1).sum(axis=1)
  assert np.all(per_replica > 0)


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="temperature"):
    suncet(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), temperature=0.0)
  with pytest.raises(ValueError, match="labels"):
    suncet(jnp.ones((2, 3)), jnp.zeros(3, jnp.int32), temperature=0.5)
