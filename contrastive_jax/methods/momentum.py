"""What the momentum-encoder methods (MoCo v2, MoCo v3, BYOL) share: a target network that is an
exponential moving average of the online one, its momentum schedule, and BatchNorm over groups.

The target network's parameters and BatchNorm statistics live in `TrainState.extra["target"]`:
checkpointed and resumed with the rest, outside the optimiser state, never differentiated (the
train step differentiates `params` alone, and the losses stop the gradient at the keys). After
each optimiser update the train step calls `update_extra`, which moves the target towards the
new online parameters,

    xi <- m xi + (1 - m) theta,

with m constant (MoCo v2) or on BYOL's cosine schedule from m_0 to 1 (Grill et al., 2020,
section 3.2: m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2, k the step, K the run's length), which
MoCo v3 adopts too. The target's BatchNorm statistics are those of its own forward passes (it
runs in training mode, as in both papers' code). Evaluators read the online encoder, the one
both papers evaluate.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax.methods.base import Batch, LossContext, Method
from contrastive_jax.methods.simclr import augment_two_views
from contrastive_jax.models.factory import compute_dtype
from contrastive_jax.models.resnet import MLPHead

SCHEDULES = ("constant", "cosine")


def momentum_at(step: jax.Array, total_steps: int, base: float, schedule: str) -> jax.Array:
  """The target's momentum after step `step` (0-based) of `total_steps`."""
  if schedule == "constant":
    return jnp.asarray(base, jnp.float32)
  if schedule == "cosine":
    if total_steps <= 0:
      raise ValueError("A cosine momentum schedule needs the run's length "
                       "(make_train_step(..., total_steps=N)).")
    frac = jnp.asarray(step, jnp.float32) / float(total_steps)
    return 1.0 - (1.0 - base) * (jnp.cos(math.pi * frac) + 1.0) / 2.0
  raise ValueError(f"Unknown momentum schedule {schedule!r}; valid: {SCHEDULES}.")


def ema(target: Any, online: Any, momentum: jax.Array) -> Any:
  """m * target + (1 - m) * online, leaf by leaf (float32 arithmetic, the leaves' dtype)."""
  return jax.tree.map(lambda t, o: (momentum * t + (1.0 - momentum) * o).astype(t.dtype),
                      target, online)


def grouped_apply(model: nnx.Module, fn: Any, x: jax.Array, group_size: int) -> Any:
  """`fn(model, x)` with BatchNorm statistics over groups of `group_size` consecutive rows.

  The statistics of one GPU's share of the batch in MoCo's multi-GPU training, defined on the
  global batch, so the result does not depend on how many devices hold it (the MoCo CIFAR-10
  demo's "split BatchNorm" does the same on one GPU). `group_size` 0, or the whole batch, is
  BatchNorm over the global batch. The running statistics become the mean of the groups'.
  """
  n = x.shape[0]
  if not group_size or group_size >= n:
    return fn(model, x)
  groups = n // group_size
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def one_group(params, stats, xg):
    local = nnx.merge(graphdef, params, stats)
    out = fn(local, xg)
    return out, nnx.state(local, nnx.BatchStat)

  out, new_stats = jax.vmap(one_group, in_axes=(None, None, 0))(
      params, stats, x.reshape((groups, group_size) + x.shape[1:]))
  nnx.update(model, jax.tree.map(lambda s: jnp.mean(s, axis=0), new_stats))
  return jax.tree.map(lambda o: o.reshape((n,) + o.shape[2:]), out)


class EncoderProjector(nnx.Module):
  """Encoder and projection head; with a predictor too for MoCo v3 and BYOL's online network."""

  def __init__(self, encoder: nnx.Module, head: nnx.Module,
               predictor: nnx.Module | None = None):
    self.encoder = encoder
    self.head = head
    self.predictor = nnx.data(predictor)

  def project(self, images: jax.Array) -> jax.Array:
    return self.head(self.encoder(images))

  def predict(self, images: jax.Array) -> jax.Array:
    return self.predictor(self.project(images))


class MomentumMethod(Method):
  """A method with a target network in `TrainState.extra["target"]`.

  Subclasses set `name` (also the name of their config block, which has `momentum`,
  `momentum_schedule` and `temperature` where used) and implement `build_model`,
  `build_target` (the online model's modules at `target_paths`, nothing else) and
  `loss_with_extra`, which returns `{"target_batch_stats": ...}` among what it produced.
  """

  # Subtrees of the online parameters that the target network mirrors.
  target_paths: tuple[str, ...] = ("encoder", "head")

  @property
  def block(self):
    return self.config[self.name]

  def validate_momentum(self) -> None:
    need = self.block_checker(self.name)
    c = self.block
    need(0.0 <= c.momentum < 1.0, "momentum", "a float in [0, 1)")
    need(c.momentum_schedule in SCHEDULES, "momentum_schedule", f"one of {SCHEDULES}")
    if not self.config.model.get("bn_cross_replica", True):
      raise ValueError(
          f"config.model.bn_cross_replica=False is not supported by {self.name}: its BatchNorm "
          "is global (SyncBN, as the paper's multi-device runs)"
          + (", or over groups of config.moco_v2.bn_group_size rows with shuffled keys"
             if self.name == "moco_v2" else "") + "; set it to True.")
    compute_dtype(self.config)

  def validate_predictor_heads(self) -> None:
    """proj_dims and pred_dims of a method with a predictor (MoCo v3, BYOL)."""
    need = self.block_checker(self.name)
    c = self.block
    for key in ("proj_dims", "pred_dims"):
      need(bool(c[key]) and all(d > 0 for d in c[key]), key, "positive layer widths")
    need(c.pred_dims[-1] == c.proj_dims[-1], "pred_dims",
         f"ending in the projection width {c.proj_dims[-1]} (the predictor's output is "
         "compared with a projection)")

  def mlp(self, in_features: int, dims, *, batch_norm: bool = True,
          last_batch_norm: bool = False, rngs: nnx.Rngs) -> MLPHead:
    """A projector or predictor with config.dtype and config.model.bn_momentum."""
    return MLPHead(in_features, tuple(dims), batch_norm=batch_norm,
                   last_batch_norm=last_batch_norm, dtype=compute_dtype(self.config),
                   bn_momentum=self.config.model.bn_momentum, rngs=rngs)

  def _target_def(self) -> nnx.GraphDef:
    if not hasattr(self, "_target_graphdef"):
      target = nnx.eval_shape(lambda: self.build_target(nnx.Rngs(0)))
      self._target_graphdef = nnx.split(target, nnx.Param, nnx.BatchStat)[0]
    return self._target_graphdef

  def build_target(self, rngs: nnx.Rngs) -> nnx.Module:
    """The target network: the online model's modules at `target_paths`."""
    raise NotImplementedError

  def target(self, extra: Any) -> nnx.Module:
    """The target network of `extra`, in training mode (batch statistics)."""
    t = extra["target"]
    return nnx.merge(self._target_def(), t["params"], t["batch_stats"])

  @staticmethod
  def target_stats(target: nnx.Module) -> Any:
    return nnx.to_pure_dict(nnx.state(target, nnx.BatchStat))

  def _mirror(self, tree: Any) -> Any:
    return {p: tree[p] for p in self.target_paths if p in tree}

  def init_extra(self, params: Any, batch_stats: Any, rng: jax.Array) -> Any:
    del rng
    # Fresh buffers: the state is donated to the train step, and a buffer shared between the
    # online and the target trees could not be donated twice.
    copy = lambda tree: jax.tree.map(lambda x: x + jnp.zeros_like(x), tree)  # noqa: E731
    return {"target": {"params": copy(self._mirror(params)),
                       "batch_stats": copy(self._mirror(batch_stats))}}

  def momentum(self, step: jax.Array, ctx: LossContext) -> jax.Array:
    return momentum_at(step, ctx.total_steps, float(self.block.momentum),
                       self.block.momentum_schedule)

  def update_extra(self, extra: Any, produced: Any, params: Any, batch_stats: Any,
                   step: jax.Array, ctx: LossContext) -> Any:
    del batch_stats
    m = self.momentum(step, ctx)
    target = {"params": ema(extra["target"]["params"], self._mirror(params), m),
              "batch_stats": produced["target_batch_stats"]}
    return {**extra, "target": target}

  def views(self, batch: Batch, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two augmented views of the batch (drawn here when the device augments)."""
    if self.augments_on_device:
      batch = augment_two_views(self.config, batch, rng)
    return batch["view1"], batch["view2"]

  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    return model.encoder(images)
