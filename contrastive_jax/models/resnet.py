"""ResNet encoders (v1.5, as in the SimCLR and CPC v2 papers) in Flax NNX.

Depths 10/18/34 use basic blocks (10 is for tests and tiny demos), 50/101/152 bottlenecks.
`stem="cifar"` is the 3x3 stride-1 stem without max-pooling used for 32px images;
`stem="imagenet"` the 7x7 stride-2 stem plus max-pool.
`norm` picks BatchNorm (SimCLR), LayerNorm over channels (CPC v2's choice) or GroupNorm.
`drop_path` > 0 adds stochastic depth (Huang et al., 2016), which needs a random key in training:
`model(x, rng=key)`; calls without one are unchanged while the rate is 0 (the default).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

STAGES = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
NORMS = ("batch", "layer", "group")
conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def norm_layer(kind: str, features: int, *, zero_init: bool, dtype: Any, bn_momentum: float,
               axis_name: str | None, rngs: nnx.Rngs, epsilon: float = 1e-5) -> nnx.Module:
  # Zero-initialised scale on a block's last norm makes each residual block start as identity,
  # which the SimCLR reference implementation relies on for large-batch LARS training.
  scale_init = nnx.initializers.zeros if zero_init else nnx.initializers.ones
  if kind == "batch":
    return nnx.BatchNorm(features, momentum=bn_momentum, epsilon=epsilon, dtype=dtype,
                         axis_name=axis_name, scale_init=scale_init, rngs=rngs)
  if kind == "layer":
    return nnx.LayerNorm(features, epsilon=epsilon, dtype=dtype, scale_init=scale_init,
                         rngs=rngs)
  if kind == "group":
    return nnx.GroupNorm(features, num_groups=min(32, features), epsilon=epsilon, dtype=dtype,
                         scale_init=scale_init, rngs=rngs)
  raise ValueError(f"Unknown norm {kind!r}; valid: {NORMS}.")


def check_rate(name: str, rate: float) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"config.model.{name}={rate!r} is invalid: a rate in [0, 1) (0: off).")


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Stochastic depth on a residual branch [B, ...]: per example, zeroed with probability `rate`,
  else scaled by 1 / (1 - rate) so its expectation is unchanged."""
  keep = jax.random.bernoulli(_need_key(rng, "drop_path"), 1.0 - rate,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Element-wise dropout, scaled by 1 / (1 - rate)."""
  keep = jax.random.bernoulli(_need_key(rng, "dropout"), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _need_key(rng: jax.Array | None, name: str) -> jax.Array:
  # The train step keeps no RNG in the model (step.py): the method passes its key, or says why
  # it cannot.
  if rng is None:
    raise ValueError(f"config.model.{name} > 0 needs a random key in training: the method "
                     f"must call the encoder with rng=...; set config.model.{name}=0 for "
                     "methods that pass none.")
  return rng


def block_rates(rate: float, num_blocks: int) -> list[float]:
  """Per-block drop-path rates growing linearly with depth to `rate` at the last block (the
  linear decay rule of Huang et al., 2016, as EfficientNet and Noisy Student use it)."""
  return [rate * (i + 1) / num_blocks for i in range(num_blocks)]


class _Block(nnx.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block, stride on the 3x3."""

  def __init__(self, kind: str, in_features: int, features: int, stride: int, *, norm: str,
               dtype: Any, bn_momentum: float, axis_name: str | None, rngs: nnx.Rngs,
               drop_path: float = 0.0):
    conv = lambda i, o, k, s=1: nnx.Conv(  # noqa: E731
        i, o, (k, k), strides=(s, s), padding="SAME", use_bias=False, dtype=dtype,
        kernel_init=conv_init, rngs=rngs)
    nrm = lambda f, z=False: norm_layer(norm, f, zero_init=z, dtype=dtype,  # noqa: E731
                                        bn_momentum=bn_momentum, axis_name=axis_name, rngs=rngs)
    if kind == "basic":
      out = features
      self.convs = nnx.List([conv(in_features, features, 3, stride), conv(features, features, 3)])
      self.norms = nnx.List([nrm(features), nrm(features, True)])
    else:
      out = 4 * features
      self.convs = nnx.List([conv(in_features, features, 1), conv(features, features, 3, stride),
                             conv(features, out, 1)])
      self.norms = nnx.List([nrm(features), nrm(features), nrm(out, True)])
    needs_projection = stride != 1 or in_features != out
    self.shortcut = nnx.data(conv(in_features, out, 1, stride) if needs_projection else None)
    self.shortcut_norm = nnx.data(nrm(out) if needs_projection else None)
    self.out_features = out
    self.drop_path = drop_path
    self.deterministic = False  # model.eval() sets it: no drop-path at inference.

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    residual = x
    n = len(self.convs)
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = norm(conv(x))
      if i < n - 1:
        x = nnx.relu(x)
    if self.shortcut is not None:
      residual = self.shortcut_norm(self.shortcut(residual))
    if self.drop_path and not self.deterministic:
      x = drop_path(x, self.drop_path, rng)
    return nnx.relu(x + residual)


class ResNet(nnx.Module):
  """ResNet trunk. `__call__` returns globally average-pooled features [B, D] in float32.

  Inputs are images in [0, 1] (channels last); they are standardised inside the model so that
  every data source and the on-device augmentation feed the same range.
  """

  def __init__(self, depth: int = 50, *, width: float = 1.0, stem: str = "imagenet",
               norm: str = "batch", in_channels: int = 3, dtype: Any = jnp.float32,
               bn_momentum: float = 0.9, axis_name: str | None = None, drop_path: float = 0.0,
               rngs: nnx.Rngs):
    if depth not in STAGES:
      raise ValueError(f"Unknown ResNet depth {depth}; valid: {sorted(STAGES)}.")
    if stem not in ("cifar", "imagenet"):
      raise ValueError(f"Unknown stem {stem!r}; valid: ('cifar', 'imagenet').")
    if width <= 0:
      raise ValueError(f"ResNet width multiplier must be positive, got {width}.")
    check_rate("drop_path", drop_path)
    kind, counts = STAGES[depth]
    base = max(1, int(round(64 * width)))
    self.stem_kind = stem
    self.dtype = dtype
    k, s = (3, 1) if stem == "cifar" else (7, 2)
    self.stem = nnx.Conv(in_channels, base, (k, k), strides=(s, s), padding="SAME",
                         use_bias=False, dtype=dtype, kernel_init=conv_init, rngs=rngs)
    self.stem_norm = norm_layer(norm, base, zero_init=False, dtype=dtype,
                                bn_momentum=bn_momentum, axis_name=axis_name, rngs=rngs)
    blocks = []
    features = base
    rates = iter(block_rates(drop_path, sum(counts)))
    for stage, count in enumerate(counts):
      for b in range(count):
        stride = 2 if (stage > 0 and b == 0) else 1
        block = _Block(kind, features, base * 2**stage, stride, norm=norm, dtype=dtype,
                       bn_momentum=bn_momentum, axis_name=axis_name, rngs=rngs,
                       drop_path=next(rates))
        features = block.out_features
        blocks.append(block)
    self.blocks = nnx.List(blocks)
    self.out_features = features

  def feature_map(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, C] in [0, 1] -> final feature map [B, h, w, D] (compute dtype); `rng`
    draws drop-path in training."""
    x = (x.astype(jnp.float32) - 0.5) / 0.25
    x = nnx.relu(self.stem_norm(self.stem(x.astype(self.dtype))))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for i, block in enumerate(self.blocks):
      x = block(x, None if rng is None else jax.random.fold_in(rng, i))
    return x

  def __call__(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    return jnp.mean(self.feature_map(x, rng=rng).astype(jnp.float32), axis=(1, 2))


class MLPHead(nnx.Module):
  """Projection head: Linear(+BN)+ReLU layers, then a final Linear (SimCLR's g(.)).

  `dims` are the output widths of every layer, e.g. (2048, 128) for SimCLR's two-layer head.
  `last_batch_norm` adds a BatchNorm without scale and offset after the last layer (MoCo v3's
  projector), whose bias it makes redundant.
  """

  def __init__(self, in_features: int, dims: tuple[int, ...], *, batch_norm: bool = True,
               last_batch_norm: bool = False, dtype: Any = jnp.float32,
               bn_momentum: float = 0.9, rngs: nnx.Rngs):
    if not dims:
      raise ValueError("MLPHead needs at least one layer width in `dims`.")
    layers, norms = [], []
    features = in_features
    for i, d in enumerate(dims):
      last = i == len(dims) - 1
      use_bias = not (last_batch_norm if last else batch_norm)
      layers.append(nnx.Linear(features, d, use_bias=use_bias, dtype=dtype, rngs=rngs))
      if last and last_batch_norm:
        norms.append(nnx.BatchNorm(d, momentum=bn_momentum, dtype=dtype, use_scale=False,
                                   use_bias=False, rngs=rngs))
      else:
        norms.append(nnx.BatchNorm(d, momentum=bn_momentum, dtype=dtype, rngs=rngs)
                     if batch_norm and not last else None)
      features = d
    self.layers = nnx.List(layers)
    self.norms = nnx.List(norms)
    self.out_features = features

  def __call__(self, x: jax.Array) -> jax.Array:
    n = len(self.layers)
    for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
      x = layer(x)
      if norm is not None:
        x = norm(x)
      if i < n - 1:
        x = nnx.relu(x)
    return x.astype(jnp.float32)
