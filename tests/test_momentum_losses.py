"""MoCo v2, MoCo v3 and BYOL kernels against numpy transcriptions of the papers' formulas, and
the target network's update rule and momentum schedule."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.losses import momentum as losses
from contrastive_jax.methods import momentum


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logsumexp(x):
  m = x.max(axis=1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def _moco_queue_numpy(q, k, queue, t):
  """MoCo's eq. 1 row by row: -log exp(q.k+/t) / (exp(q.k+/t) + sum_i exp(q.k_i/t))."""
  q, k = _unit(q.astype(np.float64)), _unit(k.astype(np.float64))
  out = []
  for i in range(len(q)):
    pos = np.exp(q[i] @ k[i] / t)
    neg = np.exp(queue.astype(np.float64) @ q[i] / t).sum()
    out.append(-np.log(pos / (pos + neg)))
  return float(np.mean(out))


def _moco_v3_numpy(q, k, t):
  """ctr(q, k) of the paper's Algorithm 1: CE(q k^T / t, arange(N)) * 2t."""
  q, k = _unit(q.astype(np.float64)), _unit(k.astype(np.float64))
  logits = q @ k.T / t
  ce = _logsumexp(logits) - np.diag(logits)
  return float(np.mean(ce) * 2 * t)


def _data(n=16, d=8, queue=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32),
          _unit(rng.normal(size=(queue, d))).astype(np.float32))


@pytest.mark.parametrize("t", [0.07, 0.2])
def test_moco_queue_loss_matches_the_formula(t):
  q, k, queue = _data()
  loss, metrics = losses.moco_queue_loss(q, k, queue, temperature=t)
  np.testing.assert_allclose(float(loss), _moco_queue_numpy(q, k, queue, t), rtol=1e-5)
  assert 0.0 <= float(metrics["contrastive_acc"]) <= 1.0


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_moco_v3_loss_matches_the_formula(t):
  q, k, _ = _data()
  loss, _ = losses.moco_v3_loss(q, k, temperature=t)
  np.testing.assert_allclose(float(loss), _moco_v3_numpy(q, k, t), rtol=1e-5)


def test_byol_loss_matches_the_formula():
  p, z, _ = _data()
  loss, _ = losses.byol_loss(p, z)
  want = np.mean(np.sum((_unit(p.astype(np.float64)) - _unit(z.astype(np.float64))) ** 2, -1))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def _sharded(kernel, *args, replicated=()):
  mesh = parallel.make_mesh(8)
  specs = tuple(P() if i in replicated else P(parallel.DATA_AXIS) for i in range(len(args)))
  f = jax.shard_map(functools.partial(kernel, axis_name=parallel.DATA_AXIS), mesh=mesh,
                    in_specs=specs, out_specs=(P(), P()))
  return jax.jit(f)(*args)


def test_kernels_on_eight_devices_equal_one():
  q, k, queue = _data()
  for kernel, args, rep in (
      (functools.partial(losses.moco_queue_loss, temperature=0.2), (q, k, queue), (2,)),
      (functools.partial(losses.moco_v3_loss, temperature=0.2), (q, k), ())):
    whole = kernel(*args)
    split = _sharded(kernel, *args, replicated=rep)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
      np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
  # Gradients of the queries too: MoCo v3 gathers keys; the queries' gradients stay local.
  grad = lambda f: jax.grad(lambda x: f(x)[0])(q)  # noqa: E731
  g1 = grad(lambda x: losses.moco_v3_loss(x, k, temperature=0.2))
  g8 = grad(lambda x: _sharded(functools.partial(losses.moco_v3_loss, temperature=0.2), x, k))
  np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-7)


def test_keys_get_no_gradient():
  q, k, queue = _data()
  for f in (lambda kk: losses.moco_queue_loss(q, kk, queue, temperature=0.2)[0],
            lambda kk: losses.moco_v3_loss(q, kk, temperature=0.2)[0],
            lambda kk: losses.byol_loss(q, kk)[0]):
    assert not np.any(np.asarray(jax.grad(f)(k)))


def test_bad_temperature_is_named():
  q, k, queue = _data()
  with pytest.raises(ValueError, match="temperature"):
    losses.moco_queue_loss(q, k, queue, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    losses.moco_v3_loss(q, k, temperature=-1.0)


def test_cosine_momentum_schedule_is_byols():
  base, total = 0.996, 100
  for k in (0, 1, 37, 50, 99, 100):
    want = 1 - (1 - base) * (np.cos(np.pi * k / total) + 1) / 2
    np.testing.assert_allclose(float(momentum.momentum_at(k, total, base, "cosine")), want,
                               rtol=1e-6)
  assert float(momentum.momentum_at(0, total, base, "cosine")) == pytest.approx(base)
  assert float(momentum.momentum_at(total, total, base, "cosine")) == pytest.approx(1.0)
  assert float(momentum.momentum_at(55, total, 0.99, "constant")) == pytest.approx(0.99)
  with pytest.raises(ValueError, match="total_steps"):
    momentum.momentum_at(3, 0, base, "cosine")


def test_ema_update_rule():
  rng = np.random.default_rng(0)
  target = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": {"c": np.ones(2, np.float32)}}
  online = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(np.float32), target)
  out = momentum.ema(target, online, jnp.float32(0.9))
  for t, o, got in zip(jax.tree.leaves(target), jax.tree.leaves(online), jax.tree.leaves(out)):
    np.testing.assert_allclose(got, 0.9 * t + 0.1 * o, rtol=1e-6)
