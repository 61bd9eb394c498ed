"""NT-Xent against a numpy transcription of the SimCLR paper, and across device counts."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax.losses.nt_xent import nt_xent


def numpy_nt_xent(z1, z2, temperature):
  """Algorithm 1 of the paper, literally: 2N samples, pairs (2k-1, 2k), loops over anchors."""
  z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
  z[0::2], z[1::2] = z1, z2  # Sample 2k-1 and 2k are the two views of image k.
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  s = z @ z.T

  def ell(i, j):
    denom = sum(np.exp(s[i, k] / temperature) for k in range(len(z)) if k != i)
    return -np.log(np.exp(s[i, j] / temperature) / denom)

  n = len(z1)
  return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n,d", [(1, 3), (4, 8), (16, 5)])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_paper_formula(n, d, temperature):
  rng = np.random.default_rng(n * 100 + d)
  z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  loss, metrics = nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32),
                          temperature=temperature)
  np.testing.assert_allclose(loss, numpy_nt_xent(z1, z2, temperature), rtol=2e-5, atol=1e-6)
  assert 0.0 <= metrics["contrastive_acc"] <= 1.0


def test_gradient_matches_finite_differences():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  temperature = 0.3
  g1, g2 = jax.grad(lambda a, b: nt_xent(a, b, temperature=temperature)[0], argnums=(0, 1))(
      jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  eps = 1e-5
  for z, g, which in ((z1, g1, 0), (z2, g2, 1)):
    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
      zp, zm = z.copy(), z.copy()
      zp[idx] += eps
      zm[idx] -= eps
      args_p = (zp, z2) if which == 0 else (z1, zp)
      args_m = (zm, z2) if which == 0 else (z1, zm)
      numeric[idx] = (numpy_nt_xent(*args_p, temperature) -
                      numpy_nt_xent(*args_m, temperature)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-3, atol=1e-5)


def test_perfect_embeddings_reach_full_accuracy_and_low_loss():
  z = jnp.eye(8) * 10
  loss, metrics = nt_xent(z, z, temperature=0.05)
  assert metrics["contrastive_acc"] == 1.0
  assert loss < 1e-3


def _sharded_loss_and_grads(z1, z2, temperature, num_devices):
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  kernel = functools.partial(nt_xent, temperature=temperature, axis_name="data")
  sharded = jax.shard_map(kernel, mesh=mesh, in_specs=(P("data"), P("data")),
                          out_specs=(P(), P()))

  def loss_fn(a, b):
    loss, metrics = sharded(a, b)
    return loss, metrics

  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
      z1, z2)
  return loss, metrics, grads


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
def test_replicas_agree_with_whole_batch(num_devices):
  """Same global batch on 1, 2, 4, 8 devices: same loss, metrics and gradients."""
  rng = np.random.default_rng(1)
  z1 = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  z2 = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  ref_loss, ref_metrics = nt_xent(z1, z2, temperature=0.2)
  ref_grads = jax.grad(lambda a, b: nt_xent(a, b, temperature=0.2)[0], argnums=(0, 1))(z1, z2)
  loss, metrics, grads = _sharded_loss_and_grads(z1, z2, 0.2, num_devices)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(loss, numpy_nt_xent(np.asarray(z1), np.asarray(z2), 0.2), rtol=1e-5)
  for k in ref_metrics:
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, atol=1e-7)
  for g, rg in zip(grads, ref_grads):
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-7)


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="temperature"):
    nt_xent(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=0.0)
  with pytest.raises(ValueError, match="equal shape"):
    nt_xent(jnp.ones((2, 3)), jnp.ones((3, 3)), temperature=0.5)
