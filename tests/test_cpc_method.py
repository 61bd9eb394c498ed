"""The CPC v2 method in the generic train step: a few steps learn, and config errors are named."""
import jax
import ml_collections
import numpy as np
import pytest

from contrastive_jax import optim, parallel
from contrastive_jax import presets
from contrastive_jax import step as step_lib
from contrastive_jax.methods.cpc_v2 import CPCv2
from contrastive_jax.models.cpc import extract_patches


def _config(**cpc_overrides):
  c = presets.base_config()
  c.method = "cpc_v2"
  c.data = ml_collections.ConfigDict(dict(image_size=16))
  c.model = ml_collections.ConfigDict(dict(depth=10, width=0.125, stem="cifar", norm="batch",
                                           bn_momentum=0.9))
  c.cpc = ml_collections.ConfigDict(dict(
      patch_size=8, patch_stride=4, num_offsets=1, directions=("down", "up"), context_dim=16,
      context_layers=1, norm="layer", augment=dict(spatial_jitter=0, flip=0.0, color_jitter=0.0,
                                                  grayscale=0.0, color_drop=0.0)))
  c.cpc.update(cpc_overrides)
  c.optim.update(name="adamw", base_lr=3e-3, lr_scaling="none", warmup_steps=0,
                 weight_decay=1e-4)
  c.batch_size = 8
  c.num_steps = 6
  return c


@pytest.mark.slow
def test_train_steps_learn_on_two_devices():
  config = _config()
  method = CPCv2(config)
  method.validate()
  mesh = parallel.make_mesh(2)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, config.num_steps)
  defs = step_lib.model_defs(method)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  train_step = step_lib.make_train_step(method, defs, tx, schedule, mesh)
  images = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype(np.float32)
  # The same patch grid every step: the loss must fall as the model learns to tell patches apart.
  patches = np.asarray(jax.jit(lambda x: extract_patches(x, 8, 4))(images))
  batch = parallel.shard_batch({"patches": patches, "label": np.zeros(8, np.int32)}, mesh)
  losses = []
  for _ in range(config.num_steps):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
  features = step_lib.make_features_fn(method, defs)(state, images)
  assert features.shape == (8, 64) and np.all(np.isfinite(features))


@pytest.mark.parametrize("key,value,match", [
    ("patch_size", 20, r"cpc\.patch_size"),
    ("num_offsets", 3, r"cpc\.num_offsets"),
    ("directions", ("down", "sideways"), r"cpc\.directions"),
    ("norm", "group", r"cpc\.norm"),
])
def test_validate_names_the_key(key, value, match):
  with pytest.raises(ValueError, match=match):
    CPCv2(_config(**{key: value})).validate()
