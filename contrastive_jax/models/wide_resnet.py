"""Wide residual networks (Zagoruyko & Komodakis, 2016) as FixMatch and MixMatch train them.

WRN-d-k: a 3x3 convolution to 16 channels, then three groups of n = (d - 4) / 6 pre-activation
blocks (norm, leaky ReLU, 3x3 conv, norm, leaky ReLU, 3x3 conv, plus the shortcut) with 16k,
32k and 64k channels, stride 2 at the first block of the second and third group, then norm,
leaky ReLU and global average pooling. WRN-28-2 (1.47M parameters with a 10-class linear head)
is the CIFAR-10/SVHN network of FixMatch (Sohn et al., 2020) and MixMatch.

Details follow FixMatch's reference code (github.com/google-research/fixmatch, libml/models.py,
class ResNet): leaky ReLU with slope 0.1; BatchNorm with decay 0.999 (PyTorch momentum 0.001,
set config.model.bn_momentum=0.999) and TensorFlow's default epsilon 1e-3; convolutions
initialised N(0, 2 / (k^2 out_channels)) (He, fan-out); the first block of the first group
takes its shortcut from the activated input ("activate_before_residual"), every other block
from the raw input, through a 1x1 convolution where the channel count or stride changes; no
dropout. The reference's convolutions carry biases, which BatchNorm after each makes
redundant; here they have none (the 1.47M count leaves them out too).

`dropout` > 0 adds the WRN paper's dropout between a block's two convolutions and `drop_path`
> 0 stochastic depth on each block's residual branch; both need a random key in training:
`model(x, rng=key)`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax.models import resnet

LEAK = 0.1  # FixMatch's leaky ReLU slope.
BN_EPSILON = 1e-3  # tf.layers.batch_normalization's default, which the reference uses.


def _act(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, LEAK)


class _WideBlock(nnx.Module):
  """Pre-activation block: norm, act, 3x3 conv (stride), norm, act, [dropout], 3x3 conv."""

  def __init__(self, in_features: int, features: int, stride: int, *,
               activate_before_residual: bool, norm: str, dtype: Any, bn_momentum: float,
               axis_name: str | None, dropout_rate: float, drop_path_rate: float,
               rngs: nnx.Rngs):
    conv = lambda i, o, k, s=1: nnx.Conv(  # noqa: E731
        i, o, (k, k), strides=(s, s), padding="SAME", use_bias=False, dtype=dtype,
        kernel_init=resnet.conv_init, rngs=rngs)
    nrm = lambda f: resnet.norm_layer(  # noqa: E731
        norm, f, zero_init=False, dtype=dtype, bn_momentum=bn_momentum, axis_name=axis_name,
        rngs=rngs, epsilon=BN_EPSILON)
    self.norm1, self.conv1 = nrm(in_features), conv(in_features, features, 3, stride)
    self.norm2, self.conv2 = nrm(features), conv(features, features, 3)
    projection = stride != 1 or in_features != features
    self.shortcut = nnx.data(conv(in_features, features, 1, stride) if projection else None)
    self.activate_before_residual = activate_before_residual
    self.dropout = dropout_rate
    self.drop_path = drop_path_rate
    self.deterministic = False  # model.eval() sets it: no dropout or drop-path at inference.

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    train = not self.deterministic
    keys = (None, None) if rng is None else jax.random.split(rng)
    y = _act(self.norm1(x))
    if self.activate_before_residual:
      x = y
    y = _act(self.norm2(self.conv1(y)))
    if self.dropout and train:
      y = resnet.dropout(y, self.dropout, keys[0])
    y = self.conv2(y)
    if self.drop_path and train:
      y = resnet.drop_path(y, self.drop_path, keys[1])
    if self.shortcut is not None:
      x = self.shortcut(x)
    return x + y


class WideResNet(nnx.Module):
  """WRN-`depth`-`width` trunk. `__call__` returns globally average-pooled features [B, 64k] in
  float32; inputs are images in [0, 1], standardised inside as the ResNet's are."""

  def __init__(self, depth: int = 28, *, width: float = 2.0, norm: str = "batch",
               in_channels: int = 3, dtype: Any = jnp.float32, bn_momentum: float = 0.999,
               axis_name: str | None = None, dropout: float = 0.0, drop_path: float = 0.0,
               rngs: nnx.Rngs):
    if not (isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0):
      raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), "
                       f"got config.model.depth={depth!r}.")
    if width <= 0:
      raise ValueError(f"Wide ResNet widen factor must be positive, got config.model.width="
                       f"{width!r} (FixMatch: 2 for CIFAR-10, 8 for CIFAR-100).")
    resnet.check_rate("dropout", dropout)
    resnet.check_rate("drop_path", drop_path)
    per_group = (depth - 4) // 6
    widths = [max(1, int(round(c * width))) for c in (16, 32, 64)]
    self.dtype = dtype
    self.stem = nnx.Conv(in_channels, 16, (3, 3), padding="SAME", use_bias=False, dtype=dtype,
                         kernel_init=resnet.conv_init, rngs=rngs)
    rates = iter(resnet.block_rates(drop_path, 3 * per_group))
    blocks, features = [], 16
    for group, out in enumerate(widths):
      for b in range(per_group):
        first = b == 0
        blocks.append(_WideBlock(
            features, out, 2 if (first and group > 0) else 1,
            activate_before_residual=first and group == 0, norm=norm, dtype=dtype,
            bn_momentum=bn_momentum, axis_name=axis_name, dropout_rate=dropout,
            drop_path_rate=next(rates), rngs=rngs))
        features = out
    self.blocks = nnx.List(blocks)
    self.final_norm = resnet.norm_layer(
        norm, features, zero_init=False, dtype=dtype, bn_momentum=bn_momentum,
        axis_name=axis_name, rngs=rngs, epsilon=BN_EPSILON)
    self.out_features = features

  def feature_map(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, C] in [0, 1] -> final activations [B, H/4, W/4, 64k] (compute dtype);
    `rng` draws dropout and drop-path in training."""
    x = (x.astype(jnp.float32) - 0.5) / 0.25
    x = self.stem(x.astype(self.dtype))
    for i, block in enumerate(self.blocks):
      x = block(x, None if rng is None else jax.random.fold_in(rng, i))
    return _act(self.final_norm(x))

  def __call__(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    return jnp.mean(self.feature_map(x, rng=rng).astype(jnp.float32), axis=(1, 2))
