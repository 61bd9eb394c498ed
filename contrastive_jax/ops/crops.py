"""Random crop boxes on the accelerator: the two samplers of `config.augment.crop`.

  "inception"    the SimCLR reference code's (google-research/simclr, `tf2/data_util.py`
                 `crop_and_resize`, the Inception-style crop): TF's
                 `sample_distorted_bounding_box` with area range `scale`, aspect range
                 `ratio`, the whole image as the object box with min_object_covered=0.1 and
                 100 attempts, else the whole image. `inception_box` is that kernel
                 (TensorFlow's `GenerateRandomCrop` and its attempt loop) in JAX.
  "torchvision"  RandomResizedCrop's: area uniform in `scale`, aspect log-uniform in `ratio`,
                 10 attempts, else the largest centre crop with an aspect inside `ratio`.

TF's kernel draws its attempts one after another and stops at the first that fits; here all
attempts are drawn at once and the first that fits is kept, which is the same distribution
(attempts are independent) with static shapes. The image's height and width may be traced
values (the valid region of a padded canvas), so one program serves every image size.

A box is float32 [4] (y0, x0, h, w) in whole pixels. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

CROPS = ("inception", "torchvision")
INCEPTION_ATTEMPTS = 100
MIN_OBJECT_COVERED = 0.1
TORCHVISION_ATTEMPTS = 10


def _offsets(key: jax.Array, room: jax.Array) -> jax.Array:
  """Uniform integers in [0, room) (TF's `Uniform(room)`), 0 where room <= 0."""
  return jnp.where(room > 0, jnp.minimum(jnp.floor(jax.random.uniform(key, room.shape) * room),
                                         room - 1), 0.0)


def inception_box(key: jax.Array, height, width, *, scale: tuple[float, float],
                  ratio: tuple[float, float], min_covered: float = MIN_OBJECT_COVERED,
                  attempts: int = INCEPTION_ATTEMPTS) -> jax.Array:
  """A box as `tf.image.sample_distorted_bounding_box` draws it (module docstring).

  Per attempt: aspect a ~ U(ratio); crop height uniform over the integers from
  round(sqrt(min_area / a)) to the largest that fits; width round(height * a); rejected if the
  area leaves `scale` or covers less than `min_covered` of the image. Offsets are uniform in
  [0, H - h) and [0, W - w), as TF's: a crop touches the bottom (right) edge only when it
  spans the whole height (width).
  """
  h = jnp.asarray(height, jnp.float32)
  w = jnp.asarray(width, jnp.float32)
  k_ratio, k_height, k_y, k_x = jax.random.split(key, 4)
  n = (attempts,)
  aspect = jax.random.uniform(k_ratio, n, minval=ratio[0], maxval=ratio[1])
  min_area = scale[0] * w * h
  max_area = scale[1] * w * h
  ch = jnp.round(jnp.sqrt(min_area / aspect))
  max_h = jnp.round(jnp.sqrt(max_area / aspect))
  # The tallest crop whose rounded width still fits (TF's kEps and its safety decrement).
  capped = jnp.floor((w + 0.5 - 1e-7) / aspect)
  capped = jnp.where(jnp.round(capped * aspect) > w, capped - 1, capped)
  max_h = jnp.where(jnp.round(max_h * aspect) > w, capped, max_h)
  max_h = jnp.minimum(max_h, h)
  ch = jnp.minimum(ch, max_h)
  ch = ch + jnp.floor(jax.random.uniform(k_height, n) * (max_h - ch + 1))
  cw = jnp.round(ch * aspect)
  for _ in range(2):  # TF grows a crop that rounding left below min_area, at most twice.
    small = cw * ch < min_area
    ch = jnp.where(small, ch + 1, ch)
    cw = jnp.where(small, jnp.round(ch * aspect), cw)
  area = cw * ch
  ok = ((area >= min_area) & (area <= max_area) & (cw <= w) & (ch <= h) & (cw > 0) & (ch > 0)
        & (area >= 1) & (area >= min_covered * w * h))
  y = _offsets(k_y, h - ch)
  x = _offsets(k_x, w - cw)
  first = jnp.argmax(ok)
  found = jnp.any(ok)
  box = jnp.stack([y[first], x[first], ch[first], cw[first]])
  return jnp.where(found, box, jnp.stack([0.0, 0.0, h, w]))


def torchvision_box(key: jax.Array, height, width, *, scale: tuple[float, float],
                    ratio: tuple[float, float], attempts: int = TORCHVISION_ATTEMPTS
                    ) -> jax.Array:
  """A box as torchvision's RandomResizedCrop draws it (module docstring)."""
  h = jnp.asarray(height, jnp.float32)
  w = jnp.asarray(width, jnp.float32)
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = h * w * jax.random.uniform(k_area, (attempts,), minval=scale[0], maxval=scale[1])
  r = jnp.exp(jax.random.uniform(k_ratio, (attempts,), minval=math.log(ratio[0]),
                                 maxval=math.log(ratio[1])))
  cw = jnp.round(jnp.sqrt(area * r))
  ch = jnp.round(jnp.sqrt(area / r))
  fits = (cw <= w) & (ch <= h) & (cw >= 1) & (ch >= 1)
  first = jnp.argmax(fits)
  in_ratio = w / h
  fb_w = jnp.where(in_ratio > ratio[1], jnp.round(h * ratio[1]), w)
  fb_h = jnp.where(in_ratio < ratio[0], jnp.round(w / ratio[0]), h)
  found = jnp.any(fits)
  crop_w = jnp.where(found, cw[first], fb_w)
  crop_h = jnp.where(found, ch[first], fb_h)
  max_y, max_x = h - crop_h, w - crop_w
  # Uniform integer offsets in [0, max]: floor(u * (max + 1)); the fallback is centred.
  y = jnp.where(found, jnp.floor(jax.random.uniform(k_y) * (max_y + 1)), jnp.floor(max_y / 2))
  x = jnp.where(found, jnp.floor(jax.random.uniform(k_x) * (max_x + 1)), jnp.floor(max_x / 2))
  return jnp.stack([jnp.minimum(y, max_y), jnp.minimum(x, max_x), crop_h, crop_w])


def crop_box(key: jax.Array, height, width, *, scale: tuple[float, float],
             ratio: tuple[float, float], crop: str = "inception") -> jax.Array:
  """(y0, x0, h, w) float32 [4] of a random crop of a `height` x `width` image by `crop`."""
  if crop == "inception":
    return inception_box(key, height, width, scale=scale, ratio=ratio)
  if crop == "torchvision":
    return torchvision_box(key, height, width, scale=scale, ratio=ratio)
  raise ValueError(f"Unknown crop sampler {crop!r}; valid: {CROPS}.")
