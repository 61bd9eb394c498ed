"""Small shared builders for tests: tiny configs and synthetic batches."""
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from contrastive_jax import presets
from contrastive_jax.losses import info_nce

# XLA flags for every test process (subprocesses too): optimisation level 0 compiles the tiny
# test programs 2-5x faster on CPU; speed of the compiled code does not matter here.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def tiny_simclr_config(**overrides) -> ml_collections.ConfigDict:
  c = presets.base_config()
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


# A small CPC patch encoder and the CPC model and loss in one call: test-only pieces.


def _norm_layer(norm: str, features: int, axis_name: str | None, rngs: nnx.Rngs) -> nnx.Module:
  if norm == "layer":
    # Over channels at each position, as the ResNet's "layer" norm: never across patches.
    return nnx.LayerNorm(features, rngs=rngs)
  if norm == "batch":
    return nnx.BatchNorm(features, momentum=0.9, axis_name=axis_name, rngs=rngs)
  raise ValueError(f"cpc.norm must be 'layer' or 'batch', got {norm!r}.")


class SmallConvEncoder(nnx.Module):
  """A few stride-2 3x3 convs: [N, P, P, C] -> [N, P / 2^L, P / 2^L, features[-1]].

  For tests and tiny runs; the real encoder is the ResNet trunk in `models/resnet.py`.
  """

  def __init__(self, in_channels: int = 3, features: Sequence[int] = (16, 32), *,
               norm: str = "layer", axis_name: str | None = None, rngs: nnx.Rngs):
    widths = (in_channels, *features)
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs)
                           for a, b in zip(widths[:-1], widths[1:])])
    self.norms = nnx.List([_norm_layer(norm, b, axis_name, rngs) for b in features])
    self.out_features = widths[-1]

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return x



def cpc_loss(model, patches: jax.Array, *,
             axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Model and loss in one call, for when the whole forward runs on one shard of the batch.

  Under `jax.shard_map` an encoder with BatchNorm then needs `axis_name` too; the CPC method
  instead runs the model under `jit` on the global batch and only the loss under shard_map.
  """
  z, predictions = model(patches)
  return info_nce.cpc_info_nce(z, predictions, axis_name=axis_name)


def probe_rows(results: dict) -> dict:
  """{encoder: row} of the end-of-training linear probe on the whole (capped) labelled split."""
  return {r["encoder"]: r for r in results["evals"]["linear"] if r["subset"] == "fraction=1"}


def knn_top1(results: dict) -> float:
  (row,) = results["evals"]["knn"]
  return row["top1"]
