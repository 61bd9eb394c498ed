"""An encoder plus a linear classifier: the model of the `supervised` method.

The encoder is `config.model`'s ResNet. Its features are the pooled image features, or, for an
encoder that CPC pretrained on patches, the mean of its features over the deterministic patch
grid (`patch_size` > 0: the same features `CPCModel.features` gives). Optional hidden layers
between the two are the first layers of a SimCLR projection head (SimCLRv2 fine-tunes from
the head's first layer); they carry the head's parameter names ("layers/i", "norms/i"), so a
pretrained head's layers map onto them one to one.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax.ops.patches import extract_patches


class HiddenLayers(nnx.Module):
  """Linear (+ BatchNorm) + ReLU layers of widths `dims`; no layer for an empty `dims`."""

  def __init__(self, in_features: int, dims: tuple[int, ...], *, batch_norm: bool = True,
               dtype: Any = jnp.float32, bn_momentum: float = 0.9, rngs: nnx.Rngs):
    layers, norms, features = [], [], in_features
    for d in dims:
      layers.append(nnx.Linear(features, d, use_bias=not batch_norm, dtype=dtype, rngs=rngs))
      norms.append(nnx.BatchNorm(d, momentum=bn_momentum, dtype=dtype, rngs=rngs)
                   if batch_norm else None)
      features = d
    self.layers = nnx.List(layers)
    self.norms = nnx.List(norms)
    self.out_features = features

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer, norm in zip(self.layers, self.norms):
      x = layer(x)
      if norm is not None:
        x = norm(x)
      x = nnx.relu(x)
    return x


class Classifier(nnx.Module):
  """`encoder` -> [hidden layers] -> linear classifier; logits are float32."""

  def __init__(self, encoder: nnx.Module, num_classes: int, *, hidden_dims: tuple[int, ...] = (),
               hidden_batch_norm: bool = True, patch_size: int = 0, patch_stride: int = 0,
               zero_init: bool = True, dtype: Any = jnp.float32, bn_momentum: float = 0.9,
               rngs: nnx.Rngs):
    self.encoder = encoder
    self.patch = (int(patch_size), int(patch_stride))
    self.head = HiddenLayers(encoder.out_features, tuple(hidden_dims),
                             batch_norm=hidden_batch_norm, dtype=dtype, bn_momentum=bn_momentum,
                             rngs=rngs)
    # Zero init: the first steps fit the classifier without pushing noise into the encoder.
    init = nnx.initializers.zeros if zero_init else nnx.initializers.lecun_normal()
    self.classifier = nnx.Linear(self.head.out_features, num_classes, kernel_init=init,
                                 rngs=rngs)

  def features(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Encoder features [B, D] (before the hidden layers). `rng` feeds the encoder's
    stochastic depth and dropout (config.model.drop_path / dropout) in training."""
    kw = {} if rng is None else {"rng": rng}
    if not self.patch[0]:
      return self.encoder(images, **kw)
    patches = extract_patches(images, *self.patch)  # [B, Gh, Gw, P, P, C]
    b, gh, gw = patches.shape[:3]
    f = self.encoder(patches.reshape(b * gh * gw, *patches.shape[3:]), **kw)
    return f.reshape(b, gh * gw, f.shape[-1]).mean(axis=1)

  def __call__(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    h = self.head(self.features(images, rng))
    return self.classifier(h.astype(jnp.float32)).astype(jnp.float32)
