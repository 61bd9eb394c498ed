"""MoCo v2 (Chen, Fan, Girshick & He, 2020) and MoCo v3 (Chen, Xie & He, 2021) for ResNets.

MoCo v2: a query encoder (ResNet + MLP head) and a momentum key encoder; each query is scored
against its own key and a queue of K earlier keys (`losses.momentum.moco_queue_loss`). The keys
of the global batch are enqueued after every step, oldest first out; the queue and its pointer
are in `TrainState.extra`.

BatchNorm. MoCo trains on 8 GPUs with BatchNorm over each GPU's 32 images, and found that the
query and its positive key then share batch statistics that leak which key is the positive
("cheating", MoCo section 3.3); it shuffles the key encoder's batch across GPUs so that the two
come from different subsets. Here the groups are defined on the global batch
(`moco_v2.bn_group_size` rows each, `methods.momentum.grouped_apply`), and with
`moco_v2.shuffle_bn` the key encoder sees the batch in a random order drawn from the step's RNG
and its outputs are put back in order. Being defined on the global batch, the groups and the
shuffle are the same whatever the number of devices: 1 device and 8 give the same step. Groups
without the shuffle are refused (the leak); `bn_group_size=0` is BatchNorm over the global batch
(SyncBN), which MoCo v3 and SimCLR use instead and where every query and every key share the same
statistics, so that they say nothing about which key is the positive.

MoCo v3: no queue; an online network with a predictor, a momentum network without, both views
through both, and `moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1)` with the keys of every replica
as candidates; global BatchNorm; the momentum on a cosine schedule to 1.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from contrastive_jax.losses.common import l2_normalize
from contrastive_jax.losses.momentum import moco_queue_loss, moco_v3_loss
from contrastive_jax.methods.base import Batch, LossContext, Metrics
from contrastive_jax.methods.momentum import EncoderProjector, MomentumMethod, grouped_apply
from contrastive_jax.models.factory import build_encoder
from contrastive_jax.models.resnet import MLPHead


class MoCoV2(MomentumMethod):
  name = "moco_v2"

  def validate(self) -> None:
    self.validate_momentum()
    need = self.block_checker(self.name)
    c, batch = self.block, self.config.batch_size
    need(c.temperature > 0, "temperature", "a temperature > 0")
    need(bool(c.proj_dims) and all(d > 0 for d in c.proj_dims), "proj_dims",
         "positive layer widths")
    per_step = batch * (2 if c.symmetric else 1)
    need(c.queue_size > 0 and c.queue_size % per_step == 0, "queue_size",
         f"a positive multiple of the keys enqueued per step ({per_step}: config.batch_size"
         f"{' x 2 views, symmetric=True' if c.symmetric else ''}), so that every step enqueues "
         "them whole")
    need(c.bn_group_size >= 0 and (c.bn_group_size == 0 or batch % c.bn_group_size == 0),
         "bn_group_size", f"0 (global BatchNorm) or a divisor of config.batch_size={batch}")
    if 0 < c.bn_group_size < batch and not c.shuffle_bn:
      raise ValueError(
          f"config.moco_v2.shuffle_bn=False with bn_group_size={c.bn_group_size} < batch "
          f"{batch}: a query and its positive key would be normalised with the same group's "
          "statistics, which leak the positive (MoCo section 3.3). Set shuffle_bn=True, or "
          "bn_group_size=0 for global BatchNorm.")

  def _model(self, rngs: nnx.Rngs) -> EncoderProjector:
    encoder = build_encoder(self.config, rngs)
    head = self.mlp(encoder.out_features, self.block.proj_dims,
                    batch_norm=self.block.proj_batch_norm, rngs=rngs)
    return EncoderProjector(encoder, head)

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    return self._model(rngs)

  def build_target(self, rngs: nnx.Rngs) -> nnx.Module:
    return self._model(rngs)

  def init_extra(self, params: Any, batch_stats: Any, rng: jax.Array) -> Any:
    extra = super().init_extra(params, batch_stats, rng)
    # Random unit vectors, as MoCo initialises its queue: the first K / B steps score against
    # noise until real keys have filled it.
    queue = l2_normalize(jax.random.normal(rng, (self.block.queue_size,
                                                 self.block.proj_dims[-1])))
    return {**extra, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}

  def _keys(self, target: nnx.Module, x: jax.Array, rng: jax.Array) -> jax.Array:
    """Key embeddings of `x`, in the order of `x`; updates the target's BatchNorm statistics."""
    c = self.block
    shuffle = bool(c.shuffle_bn) and 0 < c.bn_group_size < x.shape[0]
    if shuffle:
      order = jax.random.permutation(rng, x.shape[0])
      x = x[order]
    k = grouped_apply(target, lambda m, v: m.project(v), x, c.bn_group_size)
    if shuffle:
      k = jnp.zeros_like(k).at[order].set(k)  # Back in the order of the queries.
    return jax.lax.stop_gradient(k)

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    view_rng, shuffle_rng = jax.random.split(rng)
    x1, x2 = self.views(batch, view_rng)
    c = self.block
    project = lambda m, v: m.project(v)  # noqa: E731
    kernel = functools.partial(moco_queue_loss, temperature=c.temperature,
                               axis_name=ctx.data_axis)
    spec = P(ctx.data_axis)
    scored = jax.shard_map(kernel, mesh=ctx.mesh, in_specs=(spec, spec, P()),
                           out_specs=(P(), P()))
    target = self.target(extra)
    q1 = grouped_apply(model, project, x1, c.bn_group_size)
    k2 = self._keys(target, x2, shuffle_rng)
    loss, metrics = scored(q1, k2, extra["queue"])
    keys = k2
    if c.symmetric:
      # Both crops as queries (the MoCo CIFAR-10 demo's option): twice the encoder work, and
      # both crops' keys are enqueued.
      q2 = grouped_apply(model, project, x2, c.bn_group_size)
      k1 = self._keys(target, x1, jax.random.fold_in(shuffle_rng, 1))
      loss_b, metrics_b = scored(q2, k1, extra["queue"])
      loss = loss + loss_b
      metrics = jax.tree.map(lambda a, b: (a + b) / 2, metrics, metrics_b)
      keys = jnp.concatenate([k2, k1])
    return loss, metrics, {"keys": keys, "target_batch_stats": self.target_stats(target)}

  def update_extra(self, extra: Any, produced: Any, params: Any, batch_stats: Any,
                   step: jax.Array, ctx: LossContext) -> Any:
    out = super().update_extra(extra, produced, params, batch_stats, step, ctx)
    keys = l2_normalize(produced["keys"])
    k = keys.shape[0]
    queue_size = extra["queue"].shape[0]
    ptr = extra["queue_ptr"]
    queue = jax.lax.dynamic_update_slice(extra["queue"], keys.astype(extra["queue"].dtype),
                                         (ptr, jnp.zeros((), jnp.int32)))
    return {**out, "queue": queue, "queue_ptr": (ptr + k) % queue_size}


class MoCoV3(MomentumMethod):
  name = "moco_v3"
  target_paths = ("encoder", "head")

  def validate(self) -> None:
    self.validate_momentum()
    self.validate_predictor_heads()
    need = self.block_checker(self.name)
    need(self.block.temperature > 0, "temperature", "a temperature > 0")

  def _projector(self, encoder: nnx.Module, rngs: nnx.Rngs) -> MLPHead:
    return self.mlp(encoder.out_features, self.block.proj_dims, last_batch_norm=True,
                    rngs=rngs)

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    encoder = build_encoder(self.config, rngs)
    head = self._projector(encoder, rngs)
    predictor = self.mlp(head.out_features, self.block.pred_dims, rngs=rngs)
    return EncoderProjector(encoder, head, predictor)

  def build_target(self, rngs: nnx.Rngs) -> nnx.Module:
    encoder = build_encoder(self.config, rngs)
    return EncoderProjector(encoder, self._projector(encoder, rngs))

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    x1, x2 = self.views(batch, rng)
    # Each view is its own forward pass, as in the paper's pseudo-code: BatchNorm statistics
    # of one view's global batch.
    q1, q2 = model.predict(x1), model.predict(x2)
    target = self.target(extra)
    k1 = jax.lax.stop_gradient(target.project(x1))
    k2 = jax.lax.stop_gradient(target.project(x2))
    kernel = functools.partial(moco_v3_loss, temperature=self.block.temperature,
                               axis_name=ctx.data_axis)
    spec = P(ctx.data_axis)
    scored = jax.shard_map(kernel, mesh=ctx.mesh, in_specs=(spec, spec), out_specs=(P(), P()))
    loss_a, metrics_a = scored(q1, k2)
    loss_b, metrics_b = scored(q2, k1)
    metrics = jax.tree.map(lambda a, b: (a + b) / 2, metrics_a, metrics_b)
    return loss_a + loss_b, metrics, {"target_batch_stats": self.target_stats(target)}
