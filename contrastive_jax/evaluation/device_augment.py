"""Light augmentation on the accelerator for fine-tuning: random resized crop and flip.

Fine-tuning sets are small in-memory arrays (`data.load_arrays`), so augmenting inside the
jitted step avoids a tf.data pipeline per subset, and the crop is shape-static
(`jax.image.scale_and_translate`), so one program serves every step.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _crop_one(key: jax.Array, image: jax.Array, scale: tuple[float, float],
              ratio: tuple[float, float], flip: bool) -> jax.Array:
  h, w = image.shape[0], image.shape[1]
  k_area, k_ratio, k_y, k_x, k_flip = jax.random.split(key, 5)
  area = jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  r = jnp.exp(log_r)
  # Crop side lengths as fractions of the image, clipped to fit (Inception-style crop).
  ch = jnp.clip(jnp.sqrt(area / r), 1.0 / h, 1.0) * h
  cw = jnp.clip(jnp.sqrt(area * r), 1.0 / w, 1.0) * w
  y0 = jax.random.uniform(k_y, ()) * (h - ch)
  x0 = jax.random.uniform(k_x, ()) * (w - cw)
  s = jnp.stack([h / ch, w / cw])
  out = jax.image.scale_and_translate(image, image.shape, (0, 1), s, -jnp.stack([y0, x0]) * s,
                                      method="linear", antialias=True)
  if flip:
    out = jnp.where(jax.random.bernoulli(k_flip), out[:, ::-1], out)
  return out


def random_resized_crop_flip(key: jax.Array, images: jax.Array, *,
                             scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3),
                             flip: bool = True) -> jax.Array:
  """Images [B, H, W, C] -> same shape: each a random crop of `scale` of its area and aspect
  ratio in `ratio`, resized back to H x W, mirrored left-right with p=0.5 if `flip`."""
  if not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f"crop scale {scale} must satisfy 0 < min <= max <= 1.")
  keys = jax.random.split(key, images.shape[0])
  fn = lambda k, x: _crop_one(k, x, tuple(scale), tuple(ratio), flip)  # noqa: E731
  return jax.vmap(fn)(keys, images).astype(images.dtype)
