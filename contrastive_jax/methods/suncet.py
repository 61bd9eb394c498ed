"""SimCLR + SuNCEt (Assran et al., 2020): NT-Xent on unlabelled views plus a supervised
contrastive term on a small labelled support batch, switched off after a few epochs.

    loss = NT-Xent(unlabelled views) + config.suncet.weight * SuNCEt(support)   while on,
    loss = NT-Xent(unlabelled views)                                             after.

As in the reference code, the support images go through the encoder in the same call as the
unlabelled views (so BatchNorm statistics cover both) and the projection head's output feeds
both losses.

The switch is the batch's structure: the method declares the support as a second input stream
(class-stratified, one SimCLR view each, prefix "support_") that lasts `supervised_steps` steps,
so the pipeline sends "support_image" / "support_label" for those steps and plain two-view
batches after, and `jax.jit` traces one program for each. So after the switch neither host nor
device spends anything on the support, BatchNorm sees only real images, and the price is one
extra compilation. (A `lax.cond` on the step inside one program ran 13-25x slower per step on
XLA:CPU with jax 0.10.2, measured, even in its SimCLR-only branch; multiplying the term by 0
would keep paying for the support and feed it to BatchNorm.) The unlabelled batch's "label" is
never read.
"""
from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from contrastive_jax import input_spec, parallel
from contrastive_jax.losses.nt_xent import nt_xent
from contrastive_jax.losses.suncet import suncet
from contrastive_jax.methods.base import Batch, LossContext, Metrics
from contrastive_jax.methods.simclr import SimCLR, two_views_as_one_batch

_SUNCET_METRICS = ("suncet_loss", "suncet_nn_acc", "suncet_anchors")


def _concat_per_shard(a: jax.Array, b: jax.Array, shards: int) -> jax.Array:
  """[A, ...] ++ [B, ...] -> [A + B, ...] such that shard d holds a's and b's shard d: the
  rows each device already has, so the concatenation moves no data between devices."""
  a = a.reshape((shards, -1) + a.shape[1:])
  b = b.reshape((shards, -1) + b.shape[1:])
  return jnp.concatenate([a, b], axis=1).reshape((-1,) + a.shape[2:])


def _split_per_shard(x: jax.Array, a_rows: int, shards: int) -> tuple[jax.Array, jax.Array]:
  """Inverse of `_concat_per_shard` for an `a` of `a_rows` rows."""
  x = x.reshape((shards, -1) + x.shape[1:])
  a, b = x[:, :a_rows // shards], x[:, a_rows // shards:]
  return a.reshape((-1,) + x.shape[2:]), b.reshape((-1,) + x.shape[2:])


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


class SuNCEt(SimCLR):
  """SimCLR's model and NT-Xent, plus SuNCEt on the labelled support batch."""

  name = "suncet"

  def validate(self) -> None:
    super().validate()
    need = self.block_checker("suncet")
    c = self.config.suncet

    need(isinstance(c.weight, numbers.Real) and c.weight >= 0, "weight",
         "the SuNCEt term's weight must be >= 0")
    need(isinstance(c.temperature, numbers.Real) and c.temperature > 0, "temperature",
         "must be > 0")
    need(isinstance(c.label_fraction, numbers.Real) and 0 < c.label_fraction <= 1,
         "label_fraction", "the share of labelled training examples must lie in (0, 1]")
    need(_is_int(c.per_class) and c.per_class >= 0, "per_class",
         "labelled images per class, an integer >= 1 (0: use label_fraction)")
    need(_is_int(c.images_per_class) and c.images_per_class >= 2, "images_per_class",
         "must be an integer >= 2 (an anchor needs another image of its class)")
    need(_is_int(c.classes_per_batch) and c.classes_per_batch >= 1, "classes_per_batch",
         "must be an integer >= 1")
    need(isinstance(c.supervised_epochs, numbers.Real) and c.supervised_epochs >= 0,
         "supervised_epochs", "must be >= 0 (epochs of the unlabelled split)")
    need(_is_int(c.supervised_steps) and c.supervised_steps >= -1, "supervised_steps",
         "must be >= 0, or -1 to use supervised_epochs")
    if self.config.get("augment") and self.config.augment.get("on_device", False):
      raise ValueError("config.augment.on_device=True is not supported by method suncet: its "
                       "labelled support is augmented on the host; set it to False.")
    support, devices = c.classes_per_batch * c.images_per_class, jax.device_count()
    need(support % devices == 0, "images_per_class",
         f"the support batch classes_per_batch x images_per_class = {support} must be "
         f"divisible by the device count ({devices})")
    if self.dataset is not None:
      need(c.classes_per_batch <= self.dataset.num_classes, "classes_per_batch",
           f"must be <= the number of classes ({self.dataset.num_classes})")

  def supervised_steps(self) -> int:
    """Steps with the SuNCEt term: config.suncet.supervised_steps if >= 0, else
    config.suncet.supervised_epochs epochs of the training split at config.batch_size."""
    c = self.config.suncet
    if c.supervised_steps >= 0:
      return int(c.supervised_steps)
    if self.dataset is None:
      raise ValueError("SuNCEt needs the dataset's size to turn supervised_epochs into steps.")
    return int(math.ceil(c.supervised_epochs * self.dataset.num_train_examples /
                         self.config.batch_size))

  def inputs(self) -> input_spec.InputSpec:
    """Two views of the whole split, plus the class-stratified labelled support while on."""
    c = self.config.suncet
    subset = input_spec.Subset(fraction=c.label_fraction, per_class=c.per_class,
                               index_file=c.index_file, seed=c.subset_seed)
    sampling = input_spec.ClassStratified(subset, c.classes_per_batch, c.images_per_class,
                                          seed=self.config.seed, key="config.suncet")
    support = input_spec.Stream("single_view", prefix="support_", sampling=sampling,
                                until_step=self.supervised_steps())
    return input_spec.InputSpec((input_spec.Stream("two_views"), support))

  def _project(self, model: nnx.Module, images: jax.Array, ctx: LossContext) -> jax.Array:
    if self.config.model.get("bn_cross_replica", True):
      return model(images)[1]
    return parallel.per_replica_apply(model, lambda m, x: m(x)[1], images, ctx.mesh,
                                      ctx.data_axis)

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    del rng  # Augmentation happens on the host.
    with_support = "support_image" in batch  # Static: one program per phase.
    shards = ctx.mesh.shape[ctx.data_axis]
    views = two_views_as_one_batch(batch)
    images = (_concat_per_shard(views, batch["support_image"], shards) if with_support
              else views)
    z = self._project(model, images, ctx)
    if with_support:
      z, z_support = _split_per_shard(z, views.shape[0], shards)
    z = z.reshape((-1, 2) + z.shape[1:])
    spec = P(ctx.data_axis)
    instance = functools.partial(nt_xent, temperature=self.config.simclr.temperature,
                                 axis_name=ctx.data_axis)
    loss, metrics = jax.shard_map(instance, mesh=ctx.mesh, in_specs=(spec, spec),
                                  out_specs=(P(), P()))(z[:, 0], z[:, 1])
    metrics = {**metrics, "ntxent_loss": loss}
    zero = jnp.zeros((), jnp.float32)
    if not with_support:  # Same metric keys in both phases, for the loop's running means.
      return loss, {**metrics, **{k: zero for k in _SUNCET_METRICS}, "suncet_on": zero}
    supervised = functools.partial(suncet, temperature=self.config.suncet.temperature,
                                   axis_name=ctx.data_axis)
    s_loss, s_metrics = jax.shard_map(supervised, mesh=ctx.mesh, in_specs=(spec, spec),
                                      out_specs=(P(), P()))(z_support, batch["support_label"])
    total = loss + self.config.suncet.weight * s_loss
    return total, {**metrics, **s_metrics, "suncet_loss": s_loss,
                   "suncet_on": jnp.ones((), jnp.float32)}
