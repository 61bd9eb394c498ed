"""Global BatchNorm (the default) against the per-device ablation."""
import jax
import numpy as np
from flax import nnx

from contrastive_jax import parallel
from contrastive_jax.methods.base import LossContext
from contrastive_jax.methods.simclr import SimCLR
from tests.helpers import tiny_simclr_config, two_view_batch


def _embed(cross_replica, num_devices, batch):
  config = tiny_simclr_config(**{"model.bn_cross_replica": cross_replica})
  method = SimCLR(config)
  graphdef, params, stats = nnx.split(method.build_model(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
  mesh = parallel.make_mesh(num_devices)

  @jax.jit
  def f(params, stats, batch):
    model = nnx.merge(graphdef, params, stats)
    z1, z2 = method.embed(model, batch, LossContext(mesh=mesh))
    return z1, z2, nnx.state(model, nnx.BatchStat)

  return jax.device_get(f(params, stats, parallel.shard_batch(batch, mesh)))


def _halves(batch):
  return [{k: v[:8] for k, v in batch.items()}, {k: v[8:] for k, v in batch.items()}]


def test_per_device_statistics_equal_separate_runs_on_each_shard():
  batch = two_view_batch(16)
  z1, z2, stats = _embed(False, 2, batch)
  parts = [_embed(True, 1, half) for half in _halves(batch)]
  np.testing.assert_allclose(z1, np.concatenate([p[0] for p in parts]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(z2, np.concatenate([p[1] for p in parts]), rtol=1e-4, atol=1e-5)
  expected = jax.tree.map(lambda a, b: (a + b) / 2, parts[0][2], parts[1][2])
  for got, want in zip(jax.tree.leaves(stats), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_global_statistics_differ_from_per_device_ones():
  batch = two_view_batch(16)
  global_z1, _, _ = _embed(True, 2, batch)
  local_z1, _, _ = _embed(False, 2, batch)
  single_z1, _, _ = _embed(True, 1, batch)
  np.testing.assert_allclose(global_z1, single_z1, rtol=1e-4, atol=1e-5)
  assert np.max(np.abs(global_z1 - local_z1)) > 1e-3
