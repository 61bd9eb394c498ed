"""The contract between a method (SimCLR, CPC v2, ...) and the generic train loop.

A method owns its model, its loss and the inputs it declares; the loop owns devices, the
optimiser, checkpoints and logging. Nothing in here imports TensorFlow.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import ml_collections
from flax import nnx

from contrastive_jax import input_spec

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
    total_steps: the length of the run, for methods whose state follows a schedule over it
      (the target network's momentum); 0 where the caller does not know it.
    step: the 0-based step being trained (a traced int32 scalar) inside the train step, for
      losses whose weights follow a schedule (an unlabelled term's ramp); None elsewhere.
  """
  mesh: jax.sharding.Mesh
  data_axis: str = "data"
  train: bool = True
  total_steps: int = 0
  step: Any = None


@dataclasses.dataclass(frozen=True)
class FineTuneSpec:
  """How the `supervised` method fine-tunes this method's encoder.

  config: `config.supervised` keys that rebuild this method's encoder and feature path
    (patch grid, hidden layers from the projection head) inside a classifier.
  model: `config.model` keys to change (CPC's encoder normalisation, for example).
  mapping: (source subtree, target subtree) pairs, '/'-separated, from this method's parameters
    and BatchNorm statistics to the classifier's (`step.transplant`).
  """
  config: dict[str, Any]
  model: dict[str, Any]
  mapping: tuple[tuple[str, str], ...]


class Method(abc.ABC):
  """Base class of a training method.

  Subclasses set `name` and `encoder_path` and implement the abstract methods. `inputs()`
  declares the streams the data layer builds (`contrastive_jax.input_spec`); the batches the
  loss receives hold each stream's keys with its prefix. `dataset` carries the class count and
  split sizes of the configured data, for methods whose inputs or heads depend on them.
  """

  name: str = ""
  # Where the encoder sits in the parameter tree: what `init_from` and fine-tuning copy.
  encoder_path: str = "encoder"

  def __init__(self, config: ml_collections.ConfigDict,
               dataset: input_spec.DatasetInfo | None = None):
    self.config = config
    self.dataset = dataset

  @property
  def augments_on_device(self) -> bool:
    """config.augment.on_device: the accelerator augments and the host sends raw images."""
    augment = self.config.get("augment")
    return bool(augment is not None and augment.get("on_device", False))

  def validate(self) -> None:
    """Raises ValueError naming the config key for every bad value. Runs before compilation."""

  def block_checker(self, block: str):
    """`need(ok, key, allowed)` for config.<block>: raises ValueError naming the key and what
    is allowed when `ok` is false. Raises at once if the config lacks the block."""
    if block not in self.config:
      raise ValueError(f"config.{block} is missing; start from configs/{block}.py.")
    c = self.config[block]

    def need(ok: bool, key: str, allowed: str) -> None:
      if not ok:
        raise ValueError(f"config.{block}.{key}={c[key]!r} is invalid: {allowed}.")

    return need

  def inputs(self) -> input_spec.InputSpec:
    """The input streams of one step (default: two views, raw when the device augments)."""
    return input_spec.single("raw" if self.augments_on_device else "two_views")

  @abc.abstractmethod
  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """Returns the full trainable model (encoder plus any heads)."""

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    """Returns the scalar training loss (float32) and a dict of scalar metrics.

    Methods without state of their own implement this; methods with state (a target network,
    a queue) implement `loss_with_extra` instead.
    """
    raise NotImplementedError(f"Method {self.name!r} implements neither loss nor "
                              "loss_with_extra.")

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    """The loss, its metrics and what the forward pass produced for `update_extra` (keys to
    enqueue, the target network's new BatchNorm statistics). `extra` is the train state's
    `extra` before this step; nothing in it receives a gradient."""
    loss, metrics = self.loss(model, batch, rng, ctx)
    return loss, metrics, None

  @abc.abstractmethod
  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    """Frozen-encoder features [B, D] for linear probes and kNN; `model` is in eval mode."""

  def finetune_spec(self, from_head_layer: int = 0) -> FineTuneSpec:
    """How to fine-tune this encoder (`evaluators/finetune.py`); the ResNet at encoder_path."""
    if from_head_layer:
      raise ValueError(f"from_head_layer={from_head_layer}: method {self.name!r} has no "
                       "projection head to fine-tune from; use from_head_layer=0.")
    return FineTuneSpec(config={}, model={}, mapping=((self.encoder_path, "encoder"),))

  def init_extra(self, params: Any, batch_stats: Any, rng: jax.Array) -> Any:
    """Arrays a method keeps in the train state besides the model (queues, EMA weights),
    built from the freshly initialised parameters. Checkpointed and resumed with the rest."""
    del params, batch_stats, rng
    return {}

  def frozen_runs(self) -> dict[str, tuple[str, int]]:
    """Other runs whose parameters this method keeps frozen in `extra[name]` (a teacher):
    name -> (work directory, checkpoint step or -1 for the latest), configured at
    config.<method>.<name>.workdir and .step. The loop checks each with
    `check_frozen_run` before compiling, and loads its parameters and BatchNorm statistics
    over `init_extra`'s placeholders before step 0."""
    return {}

  def check_frozen_run(self, name: str, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError if the run `frozen_runs()[name]`, whose config is `config`, cannot
    serve (another architecture, input size, ...)."""
    del name, config

  def update_extra(self, extra: Any, produced: Any, params: Any, batch_stats: Any,
                   step: jax.Array, ctx: LossContext) -> Any:
    """The train state's `extra` after step `step` (0-based): `produced` is what
    `loss_with_extra` returned, `params` and `batch_stats` the model after the update."""
    del produced, params, batch_stats, step, ctx
    return extra

  def eval_variables(self, params: Any, batch_stats: Any, extra: Any) -> tuple[Any, Any]:
    """(parameters, BatchNorm statistics) the evaluators read: the trained ones, or weights
    the method keeps in `extra` (FixMatch's exponential moving average)."""
    del extra
    return params, batch_stats
