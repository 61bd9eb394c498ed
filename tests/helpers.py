"""Small shared builders for tests: tiny configs and synthetic batches."""
import ml_collections
import numpy as np

from contrastive_jax import config_lib

# XLA flags for every test process (subprocesses too): optimisation level 0 compiles the tiny
# test programs 2-5x faster on CPU; speed of the compiled code does not matter here.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def tiny_simclr_config(**overrides) -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.method = "simclr"
  c.model = ml_collections.ConfigDict(dict(depth=10, width=0.125, stem="cifar", norm="batch",
                                           bn_momentum=0.9, bn_cross_replica=True))
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.5, proj_dims=(32, 16),
                                            proj_batch_norm=True))
  c.optim.update(name="lars", base_lr=0.5, lr_scaling="none", warmup_steps=0,
                 weight_decay=1e-4)
  c.batch_size = 16
  c.num_steps = 4
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def two_view_batch(batch_size: int, image_size: int = 8, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  shape = (batch_size, image_size, image_size, 3)
  return {"view1": rng.uniform(size=shape).astype(np.float32),
          "view2": rng.uniform(size=shape).astype(np.float32),
          "label": rng.integers(0, 10, size=batch_size).astype(np.int32)}
