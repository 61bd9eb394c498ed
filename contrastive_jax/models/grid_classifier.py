"""CPC v2's low-data classifier g_phi: a ResNet on the grid of patch features, and the model
that feeds it (an encoder applied to every patch of the deterministic grid).

The CPC v2 paper (Hénaff et al., 2020, "efficient classification") classifies the spatial grid
[Gh, Gw, D] of CPC features with a ResNet instead of a linear head on pooled features: 11
residual blocks with 4096-channel feature maps and 1024-channel bottlenecks. `GridResNet` is
that network with `depth` blocks, `width` channels and `bottleneck` channels: a 1x1
convolution from D to `width`, pre-activation bottleneck blocks (1x1 down, 3x3 at the grid's
resolution, 1x1 up) with identity shortcuts, a final norm and ReLU, the mean over grid
positions and a linear classifier.

`GridClassifier` holds the encoder at `encoder` (where `Method.finetune_spec` mappings copy a
pretrained encoder to) and g_phi at `g`. With `frozen=True` the encoder runs in inference mode
(BatchNorm reads its running statistics, no drop-path) and no gradient flows into it; the
optimiser must still leave its parameters alone (weight decay), which the evaluator does by
masking them (`evaluators/grid_classifier.py`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax.ops.patches import extract_patches

NORMS = ("layer", "batch")


def _norm(kind: str, features: int, *, dtype: Any, bn_momentum: float,
          rngs: nnx.Rngs) -> nnx.Module:
  if kind == "layer":  # Over channels at each grid position.
    return nnx.LayerNorm(features, dtype=dtype, rngs=rngs)
  if kind == "batch":
    return nnx.BatchNorm(features, momentum=bn_momentum, dtype=dtype, rngs=rngs)
  raise ValueError(f"Unknown g_phi norm {kind!r}; valid: {NORMS}.")


class BottleneckBlock(nnx.Module):
  """Pre-activation bottleneck: x + conv1x1(act(conv3x3(act(conv1x1(act(x))))))."""

  def __init__(self, width: int, bottleneck: int, *, norm: str, dtype: Any,
               bn_momentum: float, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, bn_momentum=bn_momentum, rngs=rngs)
    self.norm1 = _norm(norm, width, **kw)
    self.conv1 = nnx.Conv(width, bottleneck, (1, 1), dtype=dtype, rngs=rngs)
    self.norm2 = _norm(norm, bottleneck, **kw)
    self.conv2 = nnx.Conv(bottleneck, bottleneck, (3, 3), padding="SAME", dtype=dtype,
                          rngs=rngs)
    self.norm3 = _norm(norm, bottleneck, **kw)
    self.conv3 = nnx.Conv(bottleneck, width, (1, 1), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.relu(self.norm1(x)))
    h = self.conv2(nnx.relu(self.norm2(h)))
    h = self.conv3(nnx.relu(self.norm3(h)))
    return x + h


class GridResNet(nnx.Module):
  """g_phi: grid [B, Gh, Gw, D] -> logits [B, num_classes] (float32)."""

  def __init__(self, in_features: int, num_classes: int, *, depth: int, width: int,
               bottleneck: int, norm: str = "layer", dtype: Any = jnp.float32,
               bn_momentum: float = 0.9, rngs: nnx.Rngs):
    if norm not in NORMS:
      raise ValueError(f"Unknown g_phi norm {norm!r}; valid: {NORMS}.")
    self.proj = nnx.Conv(in_features, width, (1, 1), dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        BottleneckBlock(width, bottleneck, norm=norm, dtype=dtype, bn_momentum=bn_momentum,
                        rngs=rngs) for _ in range(depth)])
    self.norm = _norm(norm, width, dtype=dtype, bn_momentum=bn_momentum, rngs=rngs)
    # Zero init: the first steps start from uniform predictions, as the linear heads do.
    self.classifier = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros,
                                 rngs=rngs)

  def __call__(self, grid: jax.Array) -> jax.Array:
    x = self.proj(grid)
    for block in self.blocks:
      x = block(x)
    x = nnx.relu(self.norm(x)).astype(jnp.float32).mean(axis=(1, 2))
    return self.classifier(x).astype(jnp.float32)


class GridClassifier(nnx.Module):
  """Encoder on every patch of the deterministic grid, then g_phi on the feature grid."""

  def __init__(self, encoder: nnx.Module, num_classes: int, *, patch_size: int,
               patch_stride: int, frozen: bool, depth: int, width: int, bottleneck: int,
               norm: str = "layer", dtype: Any = jnp.float32, bn_momentum: float = 0.9,
               rngs: nnx.Rngs):
    if patch_size < 1 or patch_stride < 1:
      raise ValueError(f"GridClassifier needs a patch grid, got patch_size={patch_size}, "
                       f"patch_stride={patch_stride}.")
    self.encoder = encoder
    self.patch = (int(patch_size), int(patch_stride))
    self.frozen = bool(frozen)
    if self.frozen:
      # A static mode of the graph: training steps read the encoder's running statistics.
      self.encoder.eval()
    self.g = GridResNet(encoder.out_features, num_classes, depth=depth, width=width,
                        bottleneck=bottleneck, norm=norm, dtype=dtype, bn_momentum=bn_momentum,
                        rngs=rngs)

  def grid(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, C] -> patch features [B, Gh, Gw, D] (float32)."""
    patches = extract_patches(images, *self.patch)  # [B, Gh, Gw, P, P, C]
    b, gh, gw = patches.shape[:3]
    kw = {} if rng is None else {"rng": rng}
    f = self.encoder(patches.reshape(b * gh * gw, *patches.shape[3:]), **kw)
    if f.ndim == 4:  # An encoder that returns its feature map: pool each patch, as CPC does.
      f = f.mean(axis=(1, 2))
    return f.astype(jnp.float32).reshape(b, gh, gw, f.shape[-1])

  def features(self, images: jax.Array) -> jax.Array:
    """Pooled encoder features [B, D]: the mean of the grid (CPC's linear-probe features)."""
    return self.grid(images).mean(axis=(1, 2))

  def __call__(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    if self.frozen:
      z = jax.lax.stop_gradient(self.grid(images))
    else:
      z = self.grid(images, rng)
    return self.g(z)
