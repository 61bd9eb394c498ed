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
  elastic         probability of an elastic deformation of a patch (De Fauw et al., 2018, as
                  the paper borrows it): per-pixel uniform noise in [-1, 1] for each of the two
                  displacement components, smoothed by a Gaussian of standard deviation
                  sigma = 0.15 P (input_spec.PATCH_ELASTIC_SIGMA, P the patch side), scaled so
                  the largest displacement is alpha = 0.1 P (PATCH_ELASTIC_ALPHA), resampled
                  bilinearly with the border reflected [0.2, the paper's rate].
  color_histogram probability of remapping each channel of a patch through its own random
                  monotone piecewise-linear curve from 0 to 1 through 5 evenly spaced control
                  points (PATCH_HISTOGRAM_POINTS; segment rises drawn in [0.25, 1], then
                  scaled to sum to 1) [0.2, the paper's rate].
They run in the order flip, shear, elastic, colour jitter, colour histogram, grey-scale, colour
drop; docs/cpc_v2.md tables them against the paper. The paper's two AutoAugment operations per
patch run on the accelerator in the method (`contrastive_jax.methods.cpc_v2`), after these.
Every random draw comes from `tf.random.stateless_*` with sub-seeds of `seed`, so an example's
patches depend only on its seed; the shear, the elastic deformation and the colour histogram
draw from seeds of their own (`op_seeds`), so switching one on leaves every other draw as it
was.
"""
from __future__ import annotations

import numpy as np
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
  size = x.shape[1]
  centre = (size - 1) / 2.0
  zero, one = tf.zeros_like(amount), tf.ones_like(amount)
  # Output (col, row) -> input: [a0, a1, a2, b0, b1, b2, 0, 0] maps to
  # (a0 col + a1 row + a2, b0 col + b1 row + b2).
  sx = tf.where(along_x, amount, zero)
  sy = tf.where(along_x, zero, amount)
  transforms = tf.stack([one, sx, -sx * centre, sy, one, -sy * centre, zero, zero], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=tf.constant([size, size]),
      fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT")


# Salts of the ops whose seeds are folded in apart from the nine sub-seeds of the others.
_OP_SALTS = {"shear": 9, "elastic": 10, "color_histogram": 11}


def op_seeds(seed: tf.Tensor, name: str, num: int) -> tf.Tensor:
  """`num` seeds of op `name` ("shear", "elastic", "color_histogram") from the augment seed."""
  return tf.random.experimental.stateless_split(
      tf.random.experimental.stateless_fold_in(seed, _OP_SALTS[name]), num=num)


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
  """[size, size]: row i is a Gaussian of standard deviation sigma centred on i, truncated at
  the border and scaled to sum to 1, so smoothing needs no padding."""
  i = np.arange(size, dtype=np.float64)
  g = np.exp(-0.5 * ((i[:, None] - i[None]) / sigma) ** 2)
  return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def elastic_field(seed: tf.Tensor, n: int, size: int, sigma: float, alpha: float) -> tf.Tensor:
  """Displacements float32 [n, size, size, 2] (rows, columns) in pixels: uniform noise in
  [-1, 1] per pixel and component, smoothed along both axes by `_gaussian_matrix(size, sigma)`,
  scaled so that each patch's largest displacement component is `alpha`."""
  return smooth_field(tf.random.stateless_uniform([n, 2, size, size], seed, minval=-1.0,
                                                  maxval=1.0), sigma, alpha)


def smooth_field(noise: tf.Tensor, sigma: float, alpha: float) -> tf.Tensor:
  """`elastic_field` from its noise [n, 2, size, size]."""
  size = noise.shape[-1]
  g = tf.constant(_gaussian_matrix(size, sigma))
  smooth = tf.matmul(tf.matmul(g, noise), g, transpose_b=True)  # G U G^T per component.
  peak = tf.reduce_max(tf.abs(smooth), axis=[1, 2, 3], keepdims=True)
  return tf.transpose(alpha * smooth / tf.maximum(peak, 1e-12), [0, 2, 3, 1])


def _reflect(coord: tf.Tensor, size: int) -> tf.Tensor:
  """Coordinates mirrored at the image edges (-0.5 and size - 0.5), the edge pixel repeated
  as in the shear's REFLECT fill, into [-0.5, size - 0.5]."""
  t = tf.math.floormod(coord + 0.5, 2.0 * size)
  return tf.where(t >= size, 2.0 * size - t, t) - 0.5


def warp(x: tf.Tensor, field: tf.Tensor) -> tf.Tensor:
  """Output pixel (y, c) of each patch of [N, P, P, C] is the bilinear sample of its input at
  (y + field[..., 0], c + field[..., 1]), the border reflected."""
  _, size, _, channels = x.shape
  n = tf.shape(x)[0]
  grid = tf.range(size, dtype=tf.float32)
  rows = _reflect(grid[None, :, None] + field[..., 0], size)
  cols = _reflect(grid[None, None, :] + field[..., 1], size)
  r0, c0 = tf.floor(rows), tf.floor(cols)
  wr, wc = (rows - r0)[..., None], (cols - c0)[..., None]
  r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
  flat = tf.reshape(x, [n, size * size, channels])

  def at(r, c):
    index = tf.clip_by_value(r, 0, size - 1) * size + tf.clip_by_value(c, 0, size - 1)
    return tf.reshape(tf.gather(flat, tf.reshape(index, [n, -1]), batch_dims=1), tf.shape(x))

  top = at(r0, c0) * (1 - wc) + at(r0, c0 + 1) * wc
  bottom = at(r0 + 1, c0) * (1 - wc) + at(r0 + 1, c0 + 1) * wc
  return top * (1 - wr) + bottom * wr


def histogram_curves(seed: tf.Tensor, n: int, channels: int) -> tf.Tensor:
  """Control-point values float32 [n, channels, K] of monotone curves from 0 to 1 at the K
  evenly spaced points of [0, 1] (K = PATCH_HISTOGRAM_POINTS)."""
  rises = tf.random.stateless_uniform([n, channels, input_spec.PATCH_HISTOGRAM_POINTS - 1], seed,
                                      minval=input_spec.PATCH_HISTOGRAM_MIN_RISE, maxval=1.0)
  top = tf.cumsum(rises, axis=-1) / tf.reduce_sum(rises, axis=-1, keepdims=True)
  return tf.concat([tf.zeros([n, channels, 1]), top], axis=-1)


def remap(x: tf.Tensor, curves: tf.Tensor) -> tf.Tensor:
  """Each channel of each patch of [N, P, P, C] in [0, 1] through its piecewise-linear curve
  (`curves` [N, C, K], values at the K evenly spaced points of [0, 1]), as np.interp."""
  segments = curves.shape[-1] - 1
  rises = (curves[..., 1:] - curves[..., :-1])[:, None, None]  # [N, 1, 1, C, K - 1]
  # Sum of every segment's rise times how far along it the value lies: no gather needed.
  along = tf.clip_by_value(x[..., None] * segments - tf.range(segments, dtype=x.dtype), 0.0, 1.0)
  return curves[:, None, None, :, 0] + tf.reduce_sum(rises * along, axis=-1)


def _on_chosen(x: tf.Tensor, chosen: tf.Tensor, fn) -> tf.Tensor:
  """x with fn(x[i for chosen i], those i) in place of the chosen patches: an op drawn with a
  small probability runs on its few patches, not on all of them to be mostly thrown away."""
  index = tf.where(chosen[:, 0, 0, 0])  # [M, 1]
  return tf.tensor_scatter_nd_update(x, index, fn(tf.gather_nd(x, index), index[:, 0]))


def augment_patches(patches: tf.Tensor, grid: input_spec.PatchGrid, seed: tf.Tensor) -> tf.Tensor:
  """Per-patch flip, shear, elastic deformation, colour jitter, colour histogram, grey-scale and
  colour drop of [N, P, P, 3] in [0, 1]."""
  n, size = patches.shape[0], patches.shape[1]
  seeds = tf.random.experimental.stateless_split(seed, num=9)
  x = patches

  def chance(seed: tf.Tensor, p: float) -> tf.Tensor:
    return _uniform(seed, n) < p

  if grid.flip:
    x = tf.where(chance(seeds[0], grid.flip), tf.reverse(x, axis=[2]), x)
  if grid.shear:
    # Seeds of their own, so adding the shear leaves the other draws as they were.
    shear_seeds = op_seeds(seed, "shear", 3)
    amount = tf.random.stateless_uniform([n], shear_seeds[0], minval=-input_spec.PATCH_MAX_SHEAR,
                                         maxval=input_spec.PATCH_MAX_SHEAR)
    along_x = tf.random.stateless_uniform([n], shear_seeds[1]) < 0.5
    x = _on_chosen(x, chance(shear_seeds[2], grid.shear),
                   lambda v, i: shear(v, tf.gather(amount, i), tf.gather(along_x, i)))
  if grid.elastic:
    elastic_seeds = op_seeds(seed, "elastic", 2)
    noise = tf.random.stateless_uniform([n, 2, size, size], elastic_seeds[0], minval=-1.0,
                                        maxval=1.0)
    x = _on_chosen(x, chance(elastic_seeds[1], grid.elastic), lambda v, i: warp(
        v, smooth_field(tf.gather(noise, i), input_spec.PATCH_ELASTIC_SIGMA * size,
                        input_spec.PATCH_ELASTIC_ALPHA * size)))
  if grid.color_jitter:
    jittered = _color_jitter(x, grid.color_jitter, seeds[1:5])
    x = tf.where(chance(seeds[5], _JITTER_PROB), jittered, x)
  if grid.color_histogram:
    histogram_seeds = op_seeds(seed, "color_histogram", 2)
    curves = histogram_curves(histogram_seeds[0], n, x.shape[-1])
    x = _on_chosen(x, chance(histogram_seeds[1], grid.color_histogram),
                   lambda v, i: remap(v, tf.gather(curves, i)))
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
