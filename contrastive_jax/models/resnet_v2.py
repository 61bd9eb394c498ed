"""Pre-activation (v2) ResNet trunks of CPC: ResNet-161 (CPC v2) and ResNet-101's three stacks.

CPC v1 (van den Oord et al., 2018, section 3.3) encodes every patch with the first three residual
stacks of ResNet-v2-101 and mean-pools the third stack's output (1024-d). CPC v2 (Hénaff et al.,
2020, section 4.1, "Model capacity") turns that third stack (23 blocks, 256-d bottlenecks,
1024-d output) into 46 blocks with 512-d bottlenecks and a 4096-d output and calls the result
ResNet-161: 3 + 4 + 46 = 53 bottleneck blocks of three convolutions plus the stem and a linear
layer on top count 161 layers. The same section replaces BatchNorm by LayerNorm.

A v2 block (He et al., 2016, "Identity Mappings in Deep Residual Networks") normalises and
activates its input before each convolution and adds the raw input back; a projection shortcut
(on the activated input) appears where the shape changes. Since nothing normalises the residual
stream, a final norm and ReLU close the trunk. The stem convolution has neither norm nor
activation: the first block's pre-activation provides both.

Ours, where the papers leave it open: the stride sits on the 3x3 of a stack's first block (as
`models/resnet.py`), stacks 2 and 3 halve the resolution (an 80 px patch gives a 5x5 map with
the ImageNet stem), and inputs are standardised inside the model as in `models/resnet.py`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax.models import resnet

# depth -> per stack (blocks, bottleneck width, output width).
STACKS = {
    101: ((3, 64, 256), (4, 128, 512), (23, 256, 1024)),  # CPC v1: ResNet-v2-101, 3 stacks.
    161: ((3, 64, 256), (4, 128, 512), (46, 512, 4096)),  # CPC v2, section 4.1.
}


class PreActBottleneck(nnx.Module):
  """norm-ReLU-1x1, norm-ReLU-3x3 (stride), norm-ReLU-1x1, plus the shortcut."""

  def __init__(self, in_features: int, width: int, out_features: int, stride: int, *,
               norm: str, dtype: Any, bn_momentum: float, axis_name: str | None,
               rngs: nnx.Rngs, drop_path: float = 0.0):
    conv = lambda i, o, k, s=1: nnx.Conv(  # noqa: E731
        i, o, (k, k), strides=(s, s), padding="SAME", use_bias=False, dtype=dtype,
        kernel_init=resnet.conv_init, rngs=rngs)
    nrm = lambda f: resnet.norm_layer(  # noqa: E731
        norm, f, zero_init=False, dtype=dtype, bn_momentum=bn_momentum, axis_name=axis_name,
        rngs=rngs)
    self.norms = nnx.List([nrm(in_features), nrm(width), nrm(width)])
    self.convs = nnx.List([conv(in_features, width, 1), conv(width, width, 3, stride),
                           conv(width, out_features, 1)])
    needs_projection = stride != 1 or in_features != out_features
    self.shortcut = nnx.data(conv(in_features, out_features, 1, stride)
                             if needs_projection else None)
    self.out_features = out_features
    self.drop_path = drop_path
    self.deterministic = False  # model.eval() sets it: no drop-path at inference.

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    activated = nnx.relu(self.norms[0](x))
    residual = x if self.shortcut is None else self.shortcut(activated)
    h = self.convs[0](activated)
    h = self.convs[1](nnx.relu(self.norms[1](h)))
    h = self.convs[2](nnx.relu(self.norms[2](h)))
    if self.drop_path and not self.deterministic:
      h = resnet.drop_path(h, self.drop_path, rng)
    return residual + h


class PreActResNet(nnx.Module):
  """Pre-activation ResNet trunk of `STACKS[depth]`; `__call__` returns globally average-pooled
  features [B, D] in float32, `feature_map` the final map. Inputs are images in [0, 1].

  `width` multiplies every stack's widths (tests use a small one; the paper's networks are 1).
  """

  def __init__(self, depth: int = 161, *, width: float = 1.0, stem: str = "imagenet",
               norm: str = "layer", in_channels: int = 3, dtype: Any = jnp.float32,
               bn_momentum: float = 0.9, axis_name: str | None = None, drop_path: float = 0.0,
               rngs: nnx.Rngs):
    if depth not in STACKS:
      raise ValueError(f"Unknown pre-activation ResNet depth {depth} (config.model.depth with "
                       f"config.model.arch='resnet_v2'); valid: {sorted(STACKS)}.")
    if stem not in ("cifar", "imagenet"):
      raise ValueError(f"Unknown stem {stem!r}; valid: ('cifar', 'imagenet').")
    if width <= 0:
      raise ValueError(f"ResNet width multiplier must be positive, got {width}.")
    resnet.check_rate("drop_path", drop_path)
    scaled = lambda f: max(1, int(round(f * width)))  # noqa: E731
    stacks = [(n, scaled(w), scaled(o)) for n, w, o in STACKS[depth]]
    base = scaled(64)
    self.stem_kind = stem
    self.dtype = dtype
    k, s = (3, 1) if stem == "cifar" else (7, 2)
    self.stem = nnx.Conv(in_channels, base, (k, k), strides=(s, s), padding="SAME",
                         use_bias=False, dtype=dtype, kernel_init=resnet.conv_init, rngs=rngs)
    blocks = []
    features = base
    rates = iter(resnet.block_rates(drop_path, sum(n for n, _, _ in stacks)))
    for stack, (count, bottleneck, out) in enumerate(stacks):
      for b in range(count):
        stride = 2 if (stack > 0 and b == 0) else 1
        blocks.append(PreActBottleneck(features, bottleneck, out, stride, norm=norm,
                                       dtype=dtype, bn_momentum=bn_momentum,
                                       axis_name=axis_name, rngs=rngs, drop_path=next(rates)))
        features = out
    self.blocks = nnx.List(blocks)
    self.final_norm = resnet.norm_layer(norm, features, zero_init=False, dtype=dtype,
                                        bn_momentum=bn_momentum, axis_name=axis_name,
                                        rngs=rngs)
    self.out_features = features

  def feature_map(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, C] in [0, 1] -> final feature map [B, h, w, D] (compute dtype)."""
    x = (x.astype(jnp.float32) - 0.5) / 0.25
    x = self.stem(x.astype(self.dtype))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for i, block in enumerate(self.blocks):
      x = block(x, None if rng is None else jax.random.fold_in(rng, i))
    return nnx.relu(self.final_norm(x))

  def __call__(self, x: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
    return jnp.mean(self.feature_map(x, rng=rng).astype(jnp.float32), axis=(1, 2))
