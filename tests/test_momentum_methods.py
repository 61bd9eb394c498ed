"""MoCo v2, MoCo v3 and BYOL on the train step: target network and queue state, 1 device against
8, shuffled BatchNorm and bad values (tests/test_momentum_resume.py runs them through the loop)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import optim, parallel
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from contrastive_jax.methods.base import LossContext
from contrastive_jax.methods.momentum import ema, momentum_at
from tests import helpers
from tests.helpers import two_view_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("moco_v2", "moco_v3", "byol")


def _config(method, *args):
  return helpers.parse_config("config", os.path.join(ROOT, "configs", f"{method}.py"), "tiny",
                              *args)


def _unlocked(method, **overrides):
  config = _config(method)
  config.unlock()
  config.model.depth = 10  # The tiny preset's ResNet-18 at a tenth of the compile time.
  return helpers.set_keys(config, overrides)


def _run(config, num_devices, batches):
  """Trains `batches` over `num_devices`: (host state, metrics per step, the target before
  and after the first step, and the state after it)."""
  mesh = parallel.make_mesh(num_devices)
  method = get_method(config)
  total = len(batches)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, total)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                  total_steps=total)
  before = jax.device_get(state.extra["target"]["params"])
  history, first = [], None
  for b in batches:
    state, metrics = step(state, parallel.shard_batch(b, mesh))
    history.append(jax.device_get(metrics))
    if first is None:
      first = jax.device_get(state)
  return jax.device_get(state), history, (before, first)


@pytest.fixture(scope="module")
def three_steps():
  """Each method, 3 steps on the same batches over 1 and over 8 devices."""
  out = {}
  batches = [two_view_batch(16, seed=s) for s in range(3)]
  for method in METHODS:
    config = _unlocked(method)
    out[method] = (config, [_run(config, n, batches) for n in (1, 8)])
  return out


@pytest.mark.parametrize("method", METHODS)
def test_eight_devices_equal_one(three_steps, method):
  """Loss, parameters, BatchNorm statistics and every array of the extra state (target network,
  queue and its pointer)."""
  _, ((s1, h1, _), (s8, h8, _)) = three_steps[method]
  np.testing.assert_allclose([float(h["loss"]) for h in h8], [float(h["loss"]) for h in h1],
                             rtol=1e-5)
  for tree in ("params", "batch_stats", "extra"):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(s1, tree)),
                            jax.tree.leaves(getattr(s8, tree))):
      # Float sums in another order: an element whose gradient nearly cancels may move by a
      # few 1e-5 after 3 LARS steps, so the absolute tolerance scales with the leaf.
      scale = float(np.max(np.abs(a))) if np.size(a) else 0.0
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 + 2e-2 * scale,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")


def test_queue_contents_and_pointer(three_steps):
  config, ((state, _, _), _) = three_steps["moco_v2"]
  c, batch = config.moco_v2, config.batch_size
  assert int(state.extra["queue_ptr"]) == (3 * batch) % c.queue_size
  queue = np.asarray(state.extra["queue"])
  assert queue.shape == (c.queue_size, c.proj_dims[-1])
  np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, rtol=1e-5)
  # The first 3 x batch rows are this run's keys, the rest still the initial random ones.
  method = get_method(config)
  init = method.init_extra({}, {}, jax.random.fold_in(
      jax.random.split(jax.random.key(config.seed))[0], 1))
  np.testing.assert_allclose(queue[3 * batch:], np.asarray(init["queue"])[3 * batch:],
                             rtol=1e-6, atol=1e-7)
  assert not np.allclose(queue[:3 * batch], np.asarray(init["queue"])[:3 * batch])


@pytest.mark.parametrize("method", METHODS)
def test_target_follows_the_online_network_by_ema_only(three_steps, method):
  """After one step the target is exactly m * old target + (1 - m) * new online parameters: no
  gradient and no optimiser update reach it; its momentum follows the configured schedule."""
  config, ((_, _, (before, first)), _) = three_steps[method]
  state0 = step_lib.create_train_state(get_method(config), optim.build_optimizer(
      config.optim, config.batch_size, 3)[0], config.seed, parallel.make_mesh(1))
  # The target starts as a copy of the online network.
  for a, b in zip(jax.tree.leaves(before),
                  jax.tree.leaves({k: jax.device_get(state0.params[k]) for k in before})):
    np.testing.assert_array_equal(a, b)
  mom = momentum_at(0, 3, float(config[method].momentum), config[method].momentum_schedule)
  want = ema(before, {k: first.params[k] for k in before}, mom)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want),
                          jax.tree.leaves(first.extra["target"]["params"])):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  # The optimiser state covers the online parameters alone.
  assert "predictor" not in first.extra["target"]["params"]
  n_online = len(jax.tree.leaves(first.params))
  assert len(jax.tree.leaves(first.opt_state)) < 3 * n_online + 8


def test_the_loss_has_no_gradient_with_respect_to_the_target():
  config = _unlocked("moco_v2")
  m = get_method(config)
  mesh = parallel.make_mesh(1)
  state = step_lib.create_train_state(m, optim.build_optimizer(
      config.optim, config.batch_size, 3)[0], config.seed, mesh)
  defs = step_lib.model_defs(m)
  ctx = LossContext(mesh=mesh, total_steps=3)
  batch = parallel.shard_batch(two_view_batch(16), mesh)

  @jax.jit
  def grads(target_params):
    def loss_of(t):
      extra = {**state.extra, "target": {**state.extra["target"], "params": t}}
      model = nnx.merge(defs.train, state.params, state.batch_stats)
      return m.loss_with_extra(model, extra, batch, jax.random.key(0), ctx)[0]
    return jax.grad(loss_of)(target_params)

  g = grads(state.extra["target"]["params"])
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(g))


def test_shuffled_batchnorm_keys_use_another_group_than_their_query():
  """MoCo's shuffling BN: key i is computed with the statistics of the group it is shuffled
  into, which is its query's group only by chance (1 in G); without the shuffle it would always
  be (the leak), which `validate` refuses."""
  n, g = 32, 4
  config = _unlocked("moco_v2", **{"batch_size": n, "moco_v2.bn_group_size": g})
  method = get_method(config)
  x = jnp.asarray(two_view_batch(n, seed=1)["view1"])
  rng = jax.random.key(3)
  keys = jax.jit(lambda v: method._keys(  # pylint: disable=protected-access
      method.build_target(nnx.Rngs(0)), v, rng))(x)
  order = np.asarray(jax.random.permutation(rng, n))
  # Reference: each group of the shuffled batch alone through the network in training mode.
  groups = x[order].reshape(n // g, g, *x.shape[1:])
  ref = jax.jit(jax.vmap(lambda v: method.build_target(nnx.Rngs(0)).project(v)))(groups)
  want = np.zeros(keys.shape, np.float32)
  want[order] = np.asarray(ref).reshape(n, -1)
  np.testing.assert_allclose(np.asarray(keys), want, rtol=1e-4, atol=1e-5)
  key_group = np.empty(n, int)
  key_group[order] = np.arange(n) // g
  same = np.mean(key_group == np.arange(n) // g)
  assert same < 0.5, same


def test_global_batchnorm_keys_do_not_depend_on_the_device_layout():
  """With bn_group_size=0 (global BatchNorm, MoCo v3 and BYOL) every key is normalised with the
  statistics of the whole batch: permuting the batch over 8 devices permutes the keys, so where
  a row sits tells nothing."""
  config = _unlocked("moco_v2", **{"moco_v2.bn_group_size": 0})
  method = get_method(config)
  mesh = parallel.make_mesh(8)
  x = two_view_batch(16, seed=2)["view1"]
  perm = np.random.default_rng(0).permutation(16)

  def keys(images):
    target = method.build_target(nnx.Rngs(0))
    return method._keys(target, images, jax.random.key(0))  # pylint: disable=protected-access

  run = jax.jit(keys)
  a = np.asarray(run(parallel.shard_batch({"x": x}, mesh)["x"]))
  b = np.asarray(run(parallel.shard_batch({"x": x[perm]}, mesh)["x"]))
  np.testing.assert_allclose(b, a[perm], rtol=1e-4, atol=1e-5)
  # Per-group statistics (no shuffle) break that: the check above can fail.
  grouped = _unlocked("moco_v2", **{"moco_v2.shuffle_bn": False})
  gm = get_method(grouped)

  def group_keys(images):
    return gm._keys(gm.build_target(nnx.Rngs(0)), images, jax.random.key(0))  # pylint: disable=protected-access

  ga, gb = np.asarray(group_keys(jnp.asarray(x))), np.asarray(group_keys(jnp.asarray(x[perm])))
  assert not np.allclose(gb, ga[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method,key,value,match", [
    ("moco_v2", "moco_v2.queue_size", 70, "queue_size"),
    ("moco_v2", "moco_v2.temperature", 0.0, "temperature"),
    ("moco_v2", "moco_v2.momentum", 1.0, "momentum"),
    ("moco_v2", "moco_v2.momentum", -0.1, "momentum"),
    ("moco_v2", "moco_v2.bn_group_size", 5, "bn_group_size"),
    ("moco_v2", "moco_v2.shuffle_bn", False, "leak the positive"),
    ("moco_v2", "moco_v2.momentum_schedule", "linear", "momentum_schedule"),
    ("moco_v2", "model.bn_cross_replica", False, "bn_cross_replica"),
    ("moco_v3", "moco_v3.temperature", -1.0, "temperature"),
    ("moco_v3", "moco_v3.momentum", 1.5, "momentum"),
    ("moco_v3", "moco_v3.pred_dims", (32, 8), "pred_dims"),
    ("byol", "byol.momentum", 1.0, "momentum"),
    ("byol", "byol.proj_dims", (), "proj_dims"),
    ("byol", "model.bn_cross_replica", False, "bn_cross_replica"),
])
def test_bad_values_are_named(method, key, value, match):
  with pytest.raises(ValueError, match=match):
    get_method(_unlocked(method, **{key: value})).validate()


def test_symmetric_queue_must_hold_both_views():
  config = _unlocked("moco_v2", **{"moco_v2.symmetric": True, "moco_v2.queue_size": 48})
  with pytest.raises(ValueError, match="x 2 views"):
    get_method(config).validate()


def test_presets_validate():
  for method in METHODS:
    for preset in ("digits", "tiny", "cifar10", "cifar100", "stl10", "imagenet2012"):
      config = helpers.parse_config("config", os.path.join(ROOT, "configs", f"{method}.py"),
                                    preset)
      get_method(config).validate()

