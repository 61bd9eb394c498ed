"""Host-side patch grid with per-patch augmentation (TensorFlow; transform "patch_grid").

`patch_grid` cuts one image into the CPC grid and augments every patch on its own, as
CPC v2 does, so neighbouring patches cannot be matched by shared low-level cues (colour casts,
chromatic aberration, exact pixel alignment). The ImageNet crop (resize to 300, random 260 crop)
is the pipeline's job; this transform takes the crop. The deterministic, unaugmented
extraction for eval lives on device: `contrastive_jax.ops.patches.extract_patches`.

The settings (`input_spec.PatchGrid`, resolved from a method's config by the method), each 0
to switch it off (True in a config picks the value in brackets):
  spatial_jitter  int px: every patch origin moves by up to +-this many pixels (reflect-padded
                  at the border) [patch_size // 8].
  flip            probability of a horizontal flip of each patch [0.5].
  color_jitter    strength s of SimCLR-style jitter (brightness 0.8s, contrast 0.8s,
                  saturation 0.8s, hue 0.2s), applied to a patch with probability 0.8 as the
                  paper's Szegedy et al. colour augmentation [0.5].
  grayscale       probability of turning a patch grey [0.25, the paper's].
  color_drop      probability of keeping one random colour channel of a patch and zeroing the
                  other two (the paper's "randomly drop 2 of 3 colour channels", after Doersch
                  et al. 2015, without their noise fill) [1.0].
  shear           probability of shearing a patch along x or y (even odds) by a factor drawn
                  from [-0.3, 0.3] about its centre, bilinear, border reflected [0.2, the
                  paper's rate for elastic deformation and shearing].
They run in that order, shear after the flip; docs/cpc_v2.md tables them against the paper.
Every random draw comes from `tf.random.stateless_*` with sub-seeds of
`seed`, so an example's patches depend only on its seed.
"""
from __future__ import annotations

import tensorflow as tf

from contrastive_jax import input_spec
from contrastive_jax.ops.patches import grid_size

_JITTER_PROB = 0.8


def _extract(image: tf.Tensor, grid: tuple[int, int], patch: int, stride: int, jitter: int,
             seed: tf.Tensor) -> tf.Tensor:
  """[H, W, 3] -> [Gh * Gw, P, P, 3]; each origin shifted by up to +-jitter pixels."""
  gh, gw = grid
  n = gh * gw
  if jitter:
    image = tf.pad(image, [[jitter, jitter], [jitter, jitter], [0, 0]], mode="REFLECT")
    shift = tf.random.stateless_uniform([2, n], seed, minval=0, maxval=2 * jitter + 1,
                                        dtype=tf.int32)
  else:
    shift = tf.zeros([2, n], tf.int32)
  top = tf.reshape(tf.repeat(tf.range(gh) * stride, gw), [n]) + shift[0]
  left = tf.reshape(tf.tile(tf.range(gw) * stride, [gh]), [n]) + shift[1]
  offsets = tf.range(patch)
  rows = tf.gather(image, top[:, None] + offsets[None])  # [N, P, W', 3]
  return tf.gather(rows, left[:, None] + offsets[None], axis=2, batch_dims=1)  # [N, P, P, 3]


def _uniform(seed: tf.Tensor, n: int, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
  """One draw per patch, shaped to broadcast over [N, P, P, C]."""
  return tf.random.stateless_uniform([n, 1, 1, 1], seed, minval=low, maxval=high)


def _color_jitter(x: tf.Tensor, strength: float, seeds: tf.Tensor) -> tf.Tensor:
  n = x.shape[0]
  s = 0.8 * strength
  x = tf.clip_by_value(x + _uniform(seeds[0], n, -s, s), 0.0, 1.0)
  mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
  x = tf.clip_by_value((x - mean) * _uniform(seeds[1], n, 1 - s, 1 + s) + mean, 0.0, 1.0)
  grey = tf.image.rgb_to_grayscale(x)
  x = tf.clip_by_value(grey + (x - grey) * _uniform(seeds[2], n, 1 - s, 1 + s), 0.0, 1.0)
  hsv = tf.image.rgb_to_hsv(x)
  hue = tf.math.floormod(hsv[..., :1] + _uniform(seeds[3], n, -0.2 * strength, 0.2 * strength),
                         1.0)
  return tf.clip_by_value(tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], -1)), 0.0, 1.0)


def shear(x: tf.Tensor, amount: tf.Tensor, along_x: tf.Tensor,
          interpolation: str = "BILINEAR") -> tf.Tensor:
  """Shears each patch of [N, P, P, C] about its centre: along x, output (row y, column c) reads
  input column c + amount * (y - centre) of row y; along y, the transpose. Reflected border."""
  n, size = x.shape[0], x.shape[1]
  centre = (size - 1) / 2.0
  zero, one = tf.zeros([n]), tf.ones([n])
  # Output (col, row) -> input: [a0, a1, a2, b0, b1, b2, 0, 0] maps to
  # (a0 col + a1 row + a2, b0 col + b1 row + b2).
  sx = tf.where(along_x, amount, zero)
  sy = tf.where(along_x, zero, amount)
  transforms = tf.stack([one, sx, -sx * centre, sy, one, -sy * centre, zero, zero], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=tf.constant([size, size]),
      fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT")


def augment_patches(patches: tf.Tensor, grid: input_spec.PatchGrid, seed: tf.Tensor) -> tf.Tensor:
  """Per-patch flip, shear, colour jitter, grayscale and colour drop of [N, P, P, 3] in
  [0, 1]."""
  n = patches.shape[0]
  seeds = tf.random.experimental.stateless_split(seed, num=9)
  x = patches

  def chance(seed: tf.Tensor, p: float) -> tf.Tensor:
    return _uniform(seed, n) < p

  if grid.flip:
    x = tf.where(chance(seeds[0], grid.flip), tf.reverse(x, axis=[2]), x)
  if grid.shear:
    # Seeds of their own, so adding the shear leaves the other draws as they were.
    shear_seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 9), num=3)
    amount = tf.random.stateless_uniform([n], shear_seeds[0], minval=-input_spec.PATCH_MAX_SHEAR,
                                         maxval=input_spec.PATCH_MAX_SHEAR)
    along_x = tf.random.stateless_uniform([n], shear_seeds[1]) < 0.5
    sheared = shear(x, amount, along_x)
    x = tf.where(chance(shear_seeds[2], grid.shear), sheared, x)
  if grid.color_jitter:
    jittered = _color_jitter(x, grid.color_jitter, seeds[1:5])
    x = tf.where(chance(seeds[5], _JITTER_PROB), jittered, x)
  if grid.grayscale:
    grey = tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3])
    x = tf.where(chance(seeds[6], grid.grayscale), grey, x)
  if grid.color_drop:
    keep = tf.random.stateless_uniform([n], seeds[7], minval=0, maxval=3, dtype=tf.int32)
    mask = tf.reshape(tf.one_hot(keep, 3, dtype=x.dtype), [n, 1, 1, 3])
    x = tf.where(chance(seeds[8], grid.color_drop), x * mask, x)
  return x


def patch_grid(image: tf.Tensor, seed: tf.Tensor, grid: input_spec.PatchGrid) -> tf.Tensor:
  """One image -> float32 [Gh, Gw, P, P, 3] in [0, 1], every patch augmented on its own.

  Args:
    image: float32 [H, W, 3] in [0, 1] with a static shape (the training crop).
    seed: int32/int64 [2], the example's seed for `tf.random.stateless_*`.
    grid: patch size, stride and per-patch augmentation.
  """
  patch, stride = grid.patch_size, grid.stride
  if image.shape.rank != 3 or None in image.shape.as_list():
    raise ValueError(f"patch_grid needs an image of static shape [H, W, 3], got "
                     f"{image.shape}; resize or crop to a fixed size first.")
  height, width = image.shape[0], image.shape[1]
  shape = grid_size((height, width), patch, stride)
  jitter = grid.spatial_jitter
  if jitter >= min(height, width):
    raise ValueError(f"{grid.key}.augment.spatial_jitter={jitter} must be smaller than the "
                     f"{height}x{width} image (reflect padding).")
  extract_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  image = tf.convert_to_tensor(image, tf.float32)
  patches = _extract(image, shape, patch, stride, jitter, extract_seed)
  patches = augment_patches(patches, grid, augment_seed)
  return tf.reshape(patches, [*shape, patch, patch, image.shape[-1]])
