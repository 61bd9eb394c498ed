"""The contract between a method (SimCLR, CPC v2, ...) and the generic train loop.

A method owns its model, its loss and the kind of input it wants; the loop owns devices, the
optimiser, checkpoints and logging. Nothing in here imports TensorFlow.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import ml_collections
from flax import nnx

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossContext:
  """What a loss may need to know about the device layout.

  Attributes:
    mesh: the device mesh the batch is sharded over (leading batch axis along `data_axis`).
    data_axis: mesh axis name of the batch dimension; losses that gather negatives from every
      replica run under `jax.shard_map` with this axis name.
    train: whether this is a training call (BatchNorm uses batch statistics, augment on device).
  """
  mesh: jax.sharding.Mesh
  data_axis: str = "data"
  train: bool = True


class Method(abc.ABC):
  """Base class of a pre-training method.

  Subclasses set `name` and `input_kind` and implement the abstract methods. `input_kind` names
  the host-side transform the data pipeline applies to each training example:
    "two_views":  {"view1", "view2": float32 [B, H, W, 3] in [0, 1], "label": int32 [B]}
    "patch_grid": {"patches": float32 [B, Gh, Gw, P, P, 3] in [0, 1] (augmented per patch by
                  `data/patches.py`), "label": int32 [B]}.
    "single_view": {"image": float32 [B, H, W, 3] in [0, 1], "label": int32 [B]}
  Labels are -1 where unknown.
  """

  name: str = ""
  input_kind: str = "two_views"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def validate(self) -> None:
    """Raises ValueError naming the config key for every bad value. Runs before compilation."""

  @abc.abstractmethod
  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """Returns the full trainable model (encoder plus any heads)."""

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    """Returns the scalar training loss (float32) and a dict of scalar metrics."""

  @abc.abstractmethod
  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    """Frozen-encoder features [B, D] for linear probes and kNN; `model` is in eval mode."""

  def extra_state(self) -> dict[str, Any]:
    """Arrays a method keeps in the train state besides the model (queues, EMA weights)."""
    return {}
