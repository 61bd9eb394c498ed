"""SimCLR (Chen et al., 2020): a ResNet encoder, an MLP projection head and NT-Xent.

Both views go through the encoder as one batch, so BatchNorm sees 2N images; under `jax.jit`
on a batch sharded over every device, its statistics are global (the paper's global BN).
`config.model.bn_cross_replica=False` keeps per-device statistics instead, for the ablation.

With `config.augment.on_device=True` the pipeline sends raw images ({"image", "label"}) and the
loss draws both views on the accelerator (`contrastive_jax.ops.augment`) from the step's RNG.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.losses.nt_xent import nt_xent
from contrastive_jax.methods.base import Batch, FineTuneSpec, LossContext, Method, Metrics
from contrastive_jax.models.factory import build_encoder, compute_dtype
from contrastive_jax.models.resnet import MLPHead
from contrastive_jax.ops import augment as device_augment


class SimCLRModel(nnx.Module):

  def __init__(self, encoder: nnx.Module, head: nnx.Module):
    self.encoder = encoder
    self.head = head

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.encoder(images)
    return h, self.head(h)


def augment_two_views(config, batch: Batch, rng: jax.Array) -> Batch:
  """{"image": raw [B, H, W, 3], "label"} -> {"view1", "view2", "label"}, drawn on the device
  with `config.augment` (methods whose pipeline sends raw images)."""
  if "image" not in batch:
    raise ValueError(f"config.augment.on_device=True: method {config.method!r} expects raw "
                     f"batches with 'image' and 'label' from the pipeline, got keys "
                     f"{sorted(batch)}.")
  size = config.data.image_size if "data" in config else None
  # "hw": each image's valid region in the canvas the host sent (absent for array sources).
  v1, v2 = device_augment.two_views(rng, batch["image"],
                                    device_augment.AugmentSpec.from_config(config.augment),
                                    size=size, hw=batch.get("hw"))
  return {"view1": v1, "view2": v2, "label": batch["label"]}


def two_views_as_one_batch(batch: Batch) -> jax.Array:
  """[B,H,W,C] x 2 -> [2B,H,W,C] with each image's views adjacent.

  Interleaving (rather than concatenating) keeps every device's rows local: the leading axis is
  sharded, and row b's two views stay on the device that holds row b.
  """
  views = jnp.stack([batch["view1"], batch["view2"]], axis=1)
  return views.reshape((-1,) + views.shape[2:])


class SimCLR(Method):
  name = "simclr"

  def validate(self) -> None:
    c = self.config.simclr
    if not c.temperature > 0:
      raise ValueError(f"config.simclr.temperature must be > 0, got {c.temperature}.")
    if not c.proj_dims or any(d <= 0 for d in c.proj_dims):
      raise ValueError(f"config.simclr.proj_dims must be positive widths, got {c.proj_dims}.")
    compute_dtype(self.config)

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    encoder = build_encoder(self.config, rngs)
    head = MLPHead(encoder.out_features, tuple(self.config.simclr.proj_dims),
                   batch_norm=self.config.simclr.proj_batch_norm,
                   dtype=compute_dtype(self.config),
                   bn_momentum=self.config.model.bn_momentum, rngs=rngs)
    return SimCLRModel(encoder, head)

  def device_views(self, batch: Batch, rng: jax.Array) -> Batch:
    """{"image": raw [B, H, W, 3], "label"} -> {"view1", "view2", "label"}, on the device."""
    return augment_two_views(self.config, batch, rng)

  def embed(self, model: nnx.Module, batch: Batch, ctx: LossContext
            ) -> tuple[jax.Array, jax.Array]:
    images = two_views_as_one_batch(batch)
    if self.config.model.get("bn_cross_replica", True):
      _, z = model(images)
    else:
      z = parallel.per_replica_apply(model, lambda m, x: m(x)[1], images, ctx.mesh,
                                     ctx.data_axis)
    z = z.reshape((-1, 2) + z.shape[1:])
    return z[:, 0], z[:, 1]

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    if self.augments_on_device:
      batch = self.device_views(batch, rng)
    z1, z2 = self.embed(model, batch, ctx)
    kernel = functools.partial(nt_xent, temperature=self.config.simclr.temperature,
                               axis_name=ctx.data_axis)
    spec = P(ctx.data_axis)
    return jax.shard_map(kernel, mesh=ctx.mesh, in_specs=(spec, spec), out_specs=(P(), P()))(
        z1, z2)

  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    return model.encoder(images)

  def finetune_spec(self, from_head_layer: int = 0) -> FineTuneSpec:
    """The encoder, and the projection head's first `from_head_layer` layers (SimCLRv2)."""
    c = self.config.simclr
    dims = tuple(c.proj_dims)
    if not 0 <= from_head_layer < len(dims):
      raise ValueError(f"from_head_layer={from_head_layer} must be in [0, {len(dims) - 1}]: the "
                       "projection head's last layer is the contrastive output.")
    mapping = [("encoder", "encoder")]
    for i in range(from_head_layer):
      mapping.append((f"head/layers/{i}", f"head/layers/{i}"))
      if c.proj_batch_norm:
        mapping.append((f"head/norms/{i}", f"head/norms/{i}"))
    return FineTuneSpec(config={"hidden_dims": dims[:from_head_layer],
                                "hidden_batch_norm": bool(c.proj_batch_norm)},
                        model={}, mapping=tuple(mapping))
