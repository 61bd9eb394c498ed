"""SimCLR augmentation on the accelerator: batched, jittable, an independent draw per example.

The same recipe as the host pipeline (`contrastive_jax/data/augment.py`, the SimCLR paper's
appendix A as google-research/simclr's `tf2/data_util.py` draws it) written in JAX, so the input
pipeline only ships raw images and the accelerator, idle while the host decodes, does the
per-pixel work inside the jitted train step:

  random resized crop (`crop`: the reference's or torchvision's sampler, `ops/crops.py`;
     bicubic, to a static `size`) -> clip -> horizontal flip
  -> colour jitter with probability `color_prob` (`brightness` multiplicative or additive,
     contrast, saturation, hue; random order; clip after each) -> grayscale with
     `grayscale_prob` -> Gaussian blur with `blur_prob` (separable, zero padding, sigma drawn
     per image) -> clip to [0, 1].

Raw images may be a padded canvas: `hw` [B, 2] gives the height and width of each image in
its top-left corner (`data/transforms.py` `raw_view`), and crops are drawn inside it, so the
whole image, at the resolution it was sent, is cropped whatever its aspect ratio.

Every op mirrors TensorFlow's: per-channel-mean contrast, saturation and hue in HSV space
(TF's `adjust_saturation`/`adjust_hue`), ITU-R 601 grayscale weights. The random numbers differ
(JAX threefry, not TF's Philox), so the two paths agree in distribution, not pixel for pixel.

Resizing and blurring are small matrix products (`[out, in]` weights per axis), which
accelerators do well, instead of gathers. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

# The colour ops are part of this module's public face: the whole device recipe in one import.
from contrastive_jax.ops.color import (GRAY_WEIGHTS, adjust_brightness, adjust_contrast,  # noqa: F401
                                       adjust_hue, adjust_saturation, color_jitter, hsv_to_rgb,
                                       rgb_to_hsv, to_grayscale)
from contrastive_jax.ops.crops import crop_box  # noqa: F401

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """The `config.augment` values the device augmentation reads (see `contrastive_jax.presets`)."""
  crop: str = "inception"
  crop_scale: tuple[float, float] = (0.08, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  color_strength: float = 0.5
  color_prob: float = 0.8
  brightness: str = "multiplicative"
  grayscale_prob: float = 0.2
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel_frac: float = 0.1

  @classmethod
  def from_config(cls, augment: Any) -> AugmentSpec:
    """From a `config.augment` ConfigDict (or any mapping); absent keys keep the defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
      if f.name in augment:
        value = augment[f.name]
        # Tuples, so the spec stays hashable and comparable whatever the config held.
        kwargs[f.name] = tuple(value) if isinstance(value, (list, tuple)) else value
    return cls(**kwargs)


def to_float01(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float images are taken to be in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) * (1.0 / 255.0)
  return images.astype(jnp.float32)


def _hw(image: jax.Array, hw: jax.Array | None) -> tuple[Any, Any]:
  """The valid height and width of `image` [H, W, C]: `hw` if given, else its shape."""
  if hw is None:
    return image.shape[0], image.shape[1]
  return hw[0], hw[1]


# ----------------------------------------------------------------------------------------------
# Geometry.


def _keys_cubic(t: jax.Array, a: float = -0.5) -> jax.Array:
  """Keys' cubic convolution kernel (a = -0.5), TF's and PIL's bicubic."""
  t = jnp.abs(t)
  near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
  far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
  return jnp.where(t <= 1.0, near, jnp.where(t < 2.0, far, 0.0))


def resize_weights(start: jax.Array, length: jax.Array, in_size: int,
                   out_size: int) -> jax.Array:
  """[out_size, in_size] bicubic weights mapping pixels [start, start + length) to out_size.

  TF's resize_bicubic with half-pixel centres, restricted to the crop: taps outside it get
  weight 0 and each row is renormalised, exactly as cropping first and then resizing does.
  """
  src = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * (length / out_size) - 0.5
  taps = jnp.floor(src)[:, None] + jnp.arange(-1.0, 3.0)[None, :]  # [out, 4]
  w = jnp.where((taps >= start) & (taps <= start + length - 1), _keys_cubic(src[:, None] - taps),
                0.0)
  w = w / jnp.sum(w, axis=1, keepdims=True)
  pixels = jnp.arange(in_size, dtype=jnp.float32)
  return jnp.sum(w[:, :, None] * (taps[:, :, None] == pixels), axis=1)


def crop_and_resize(image: jax.Array, box: jax.Array, size: int) -> jax.Array:
  """The `box` (y0, x0, h, w) of `image` [H, W, C], resized bicubically to [size, size, C].

  Two small matrix products (rows, then columns) instead of a gather: accelerators do these at
  full speed, and the shapes are static whatever the box.
  """
  wy = resize_weights(box[0], box[2], image.shape[0], size)
  wx = resize_weights(box[1], box[3], image.shape[1], size)
  x = jnp.einsum("oh,hwc->owc", wy, image, precision=_HIGHEST)
  return jnp.einsum("pw,owc->opc", wx, x, precision=_HIGHEST)


def random_resized_crop(key: jax.Array, image: jax.Array, *, size: int,
                        scale: tuple[float, float], ratio: tuple[float, float],
                        crop: str = "inception", hw: jax.Array | None = None) -> jax.Array:
  """A random `scale` area fraction of `image` with aspect ratio in `ratio`, as [size, size, C].

  `hw`: the valid (height, width) of `image` in its top-left corner (default: all of it).
  """
  h, w = _hw(image, hw)
  box = crop_box(key, h, w, scale=scale, ratio=ratio, crop=crop)
  return crop_and_resize(image, box, size)


# ----------------------------------------------------------------------------------------------
# Blur.


def blur_matrix(n: int, sigma: jax.Array, kernel_size: int) -> jax.Array:
  """[n, n] banded matrix: a 1-D Gaussian of width 2 * (kernel_size // 2) + 1 with zero padding."""
  radius = kernel_size // 2
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-jnp.square(taps) / (2.0 * jnp.square(sigma)))
  k = k / jnp.sum(k)
  offset = jnp.arange(n)[None, :] - jnp.arange(n)[:, None]  # input - output index
  # Taps falling off the image are dropped (not renormalised): zero 'SAME' padding, as TF.
  return jnp.where(jnp.abs(offset) <= radius, k[jnp.clip(offset + radius, 0, 2 * radius)], 0.0)


def gaussian_blur(x: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur of [H, W, C] with standard deviation `sigma` (pixels)."""
  if kernel_size // 2 < 1:
    return x
  bh = blur_matrix(x.shape[0], sigma, kernel_size)
  bw = blur_matrix(x.shape[1], sigma, kernel_size)
  x = jnp.einsum("ij,jwc->iwc", bh, x, precision=_HIGHEST)
  return jnp.einsum("ij,hjc->hic", bw, x, precision=_HIGHEST)


# ----------------------------------------------------------------------------------------------
# The recipe.


def _random_apply(fn, x: jax.Array, key: jax.Array, p: float) -> jax.Array:
  # Decided in Python where possible, so p = 0 or 1 adds no select to the program.
  if p <= 0:
    return x
  if p >= 1:
    return fn(x)
  return jnp.where(jax.random.uniform(key) < p, fn(x), x)


def simclr_view(key: jax.Array, image: jax.Array, spec: AugmentSpec, *,
                size: int | None = None, hw: jax.Array | None = None) -> jax.Array:
  """One SimCLR view of `image` [H, W, 3] (uint8, or float in [0, 1]) as float32 [size, size, 3].

  `size` defaults to H; `hw` is the valid region (`random_resized_crop`). One example;
  `simclr_views` vmaps it over a batch.

  The blur sigma is drawn per image, as the paper's appendix A describes it; the reference
  code, which blurs whole batches (`batch_random_blur`), draws one per batch and view. Each
  image's sigma has the same distribution either way; per image also keeps the views of one
  step independent of each other and of how the batch is split (docs/augmentation.md).
  """
  size = int(size or image.shape[0])
  k_crop, k_flip, k_cp, k_color, k_gp, k_bp, k_blur = jax.random.split(key, 7)
  x = to_float01(image)
  x = random_resized_crop(k_crop, x, size=size, scale=spec.crop_scale, ratio=spec.crop_ratio,
                          crop=spec.crop, hw=hw)
  x = jnp.clip(x, 0.0, 1.0)  # bicubic overshoots; the colour ops expect [0, 1]
  if spec.flip:
    x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
  if spec.color_strength > 0:
    x = _random_apply(lambda t: color_jitter(k_color, t, spec.color_strength, spec.brightness),
                      x, k_cp, spec.color_prob)
  x = _random_apply(to_grayscale, x, k_gp, spec.grayscale_prob)
  kernel = int(size * spec.blur_kernel_frac)
  if kernel // 2 >= 1:
    sigma = jax.random.uniform(k_blur, minval=spec.blur_sigma[0], maxval=spec.blur_sigma[1])
    x = _random_apply(lambda t: gaussian_blur(t, sigma, kernel), x, k_bp, spec.blur_prob)
  return jnp.clip(x, 0.0, 1.0)


def simclr_views(key: jax.Array, images: jax.Array, spec: AugmentSpec, *,
                 size: int | None = None, hw: jax.Array | None = None) -> jax.Array:
  """A view of each image of `images` [B, H, W, 3] -> float32 [B, size, size, 3].

  `hw` int [B, 2]: each image's valid region (default: the whole of each). Example i uses
  `jax.random.split(key, B)[i]`: independent draws per example. With the (default)
  partitionable threefry PRNG, the result does not depend on how the batch is sharded, so 1
  device and N devices augment a global batch identically.
  """
  keys = jax.random.split(key, images.shape[0])
  if hw is None:
    return jax.vmap(lambda k, x: simclr_view(k, x, spec, size=size))(keys, images)
  return jax.vmap(lambda k, x, v: simclr_view(k, x, spec, size=size, hw=v))(keys, images, hw)


def two_views(key: jax.Array, images: jax.Array, spec: AugmentSpec, *,
              size: int | None = None, hw: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array]:
  """Two independent SimCLR views of every image of `images` [B, H, W, 3] (valid region `hw`)."""
  k1, k2 = jax.random.split(key)
  return (simclr_views(k1, images, spec, size=size, hw=hw),
          simclr_views(k2, images, spec, size=size, hw=hw))


def resize_whole(images: jax.Array, size: int, hw: jax.Array | None = None) -> jax.Array:
  """Each raw image's whole valid region (`hw`, default all) resized to [size, size] in [0, 1]:
  the unaugmented view (what a distillation teacher labels, what FixMatch's views start from)."""
  x = to_float01(images)
  if hw is None:
    hw = jnp.broadcast_to(jnp.asarray(images.shape[1:3], jnp.int32), (images.shape[0], 2))

  def one(image, v):
    box = jnp.stack([0, 0, v[0], v[1]]).astype(jnp.float32)
    return jnp.clip(crop_and_resize(image, box, size), 0.0, 1.0)

  return jax.vmap(one)(x, hw)


def center_crops(images: jax.Array, *, size: int, hw: jax.Array | None = None) -> jax.Array:
  """The largest centred square of each image's valid region (`hw` [B, 2], default all of it),
  resized bicubically to [B, size, size, C]: the evaluation view of raw images on the device."""
  def one(image, v):
    h, w = _hw(image, v)
    side = jnp.minimum(h, w)
    box = jnp.stack([jnp.floor((h - side) / 2), jnp.floor((w - side) / 2), side, side])
    return jnp.clip(crop_and_resize(image, box.astype(jnp.float32), size), 0.0, 1.0)
  x = to_float01(images)
  if hw is None:
    return jax.vmap(lambda im: one(im, None))(x)
  return jax.vmap(one)(x, hw)


def _crop_flip(key: jax.Array, image: jax.Array, hw: jax.Array | None, size: int,
               scale: tuple[float, float], ratio: tuple[float, float], crop: str,
               flip: bool) -> jax.Array:
  k_box, k_flip = jax.random.split(key)
  h, w = _hw(image, hw)
  # Bicubic over the crop's own pixels (taps outside it dropped), as SimCLR views are resized:
  # nothing from the padding of a canvas bleeds in.
  out = jnp.clip(crop_and_resize(image, crop_box(k_box, h, w, scale=scale, ratio=ratio,
                                                 crop=crop), size), 0.0, 1.0)
  if flip:
    out = jnp.where(jax.random.bernoulli(k_flip), out[:, ::-1], out)
  return out


def random_resized_crop_flip(key: jax.Array, images: jax.Array, *,
                             scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3),
                             flip: bool = True, crop: str = "inception",
                             size: int | None = None, hw: jax.Array | None = None) -> jax.Array:
  """The supervised recipe (fine-tuning, SGD linear probe): images [B, H, W, C] (valid region
  `hw` [B, 2], default all) -> [B, size, size, C] (size defaults to H), each a random crop of
  `scale` of its area and aspect ratio in `ratio` drawn by `crop` (`ops/crops.py`), resized
  bicubically and mirrored left-right with p=0.5 if `flip`: the SimCLR code's fine-tuning and
  linear-probe crop (its `preprocess_for_train` without colour). Shape-static, so one program
  serves every step."""
  if not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f"crop scale {scale} must satisfy 0 < min <= max <= 1.")
  size = int(size or images.shape[1])
  keys = jax.random.split(key, images.shape[0])
  args = (tuple(scale), tuple(ratio), crop, flip)
  x = to_float01(images)
  if hw is None:
    return jax.vmap(lambda k, im: _crop_flip(k, im, None, size, *args))(keys, x)
  return jax.vmap(lambda k, im, v: _crop_flip(k, im, v, size, *args))(keys, x, hw)
