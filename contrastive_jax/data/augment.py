"""SimCLR augmentations and evaluation preprocessing: per-example TensorFlow ops.

Every random op is stateless and takes a `[2]` integer seed, so an example's augmentation is a
function of (its seed, its pixels) alone: reproducible whatever tf.data's parallelism, and
independent between the two views of one image.

The recipe is the SimCLR paper's (Chen et al., 2020, appendix A) as its reference code draws it
(google-research/simclr, `tf2/data_util.py`): random resized crop, horizontal flip, colour jitter
(random order) with probability p, random grayscale, Gaussian blur, clip. Two conventions differ
between releases and libraries and are switches of `config.augment` (docs/augmentation.md):

  crop="inception"       the reference's crop: `tf.image.sample_distorted_bounding_box` (area
                         range `crop_scale`, aspect range `crop_ratio`, at least 10% of the
                         image covered, 100 attempts, else the whole image); "torchvision":
                         area uniform and aspect log-uniform, 10 attempts, else a centre crop
                         (torchvision's RandomResizedCrop).
  brightness="multiplicative"  x * U[max(0, 1 - 0.8s), 1 + 0.8s], the reference's default since
                         SimCLRv2; "additive": x + U[-0.8s, 0.8s], SimCLR v1 (`impl='simclrv1'`).
"""
from __future__ import annotations

import math

import ml_collections
import tensorflow as tf

# SimCLR resizes crops bicubically; results are clipped to [0, 1] at the end.
RESIZE_METHOD = "bicubic"
# torchvision's RandomResizedCrop: attempts before falling back to a centre crop.
_CROP_ATTEMPTS = 10
# The reference's `crop_and_resize`: sample_distorted_bounding_box's arguments.
INCEPTION_CROP_ATTEMPTS = 100
MIN_OBJECT_COVERED = 0.1
CROPS = ("inception", "torchvision")
BRIGHTNESS = ("multiplicative", "additive")


def to_float01(image: tf.Tensor) -> tf.Tensor:
  """uint8 [0, 255] -> float32 [0, 1]; float images are taken to be in [0, 1] already."""
  if image.dtype == tf.uint8:
    return tf.image.convert_image_dtype(image, tf.float32)
  return tf.cast(image, tf.float32)


def _split(seed: tf.Tensor, n: int) -> tf.Tensor:
  return tf.random.experimental.stateless_split(seed, num=n)


def _resize(image: tf.Tensor, size: int | tuple[int, int]) -> tf.Tensor:
  hw = (size, size) if isinstance(size, int) else size
  return tf.image.resize(image, hw, method=RESIZE_METHOD)


def inception_crop_box(shape: tf.Tensor, seed: tf.Tensor, *, scale: tuple[float, float],
                       ratio: tuple[float, float]) -> tuple[tf.Tensor, tf.Tensor]:
  """(begin [y, x, 0], size [h, w, -1]) of the reference's crop of an image of `shape` [H, W, C].

  The reference passes the whole image as the object box with min_object_covered=0.1, so crops
  cover at least 10% of the image whatever `scale[0]` says; the aspect range is relative to the
  output's (square) aspect.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
      min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=tuple(ratio),
      area_range=tuple(scale), max_attempts=INCEPTION_CROP_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, *, size: int,
                        scale: tuple[float, float], ratio: tuple[float, float],
                        crop: str = "inception") -> tf.Tensor:
  """Crops a random area fraction in `scale` with aspect ratio in `ratio`, resized to `size`.

  `crop` picks the sampler (module docstring): "inception" or "torchvision".
  """
  if crop == "inception":
    begin, box = inception_crop_box(tf.shape(image), seed, scale=scale, ratio=ratio)
    return _resize(tf.slice(image, begin, box), size)
  if crop != "torchvision":
    raise ValueError(f"Unknown crop sampler {crop!r}; valid: {CROPS}.")
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  s_area, s_ratio, s_y, s_x = tf.unstack(_split(seed, 4))
  # Draw every attempt at once (vectorised) and keep the first that fits inside the image.
  area = h * w * tf.random.stateless_uniform([_CROP_ATTEMPTS], s_area, scale[0], scale[1])
  log_r = tf.random.stateless_uniform([_CROP_ATTEMPTS], s_ratio, math.log(ratio[0]),
                                      math.log(ratio[1]))
  r = tf.exp(log_r)
  cw = tf.round(tf.sqrt(area * r))
  ch = tf.round(tf.sqrt(area / r))
  fits = (cw <= w) & (ch <= h) & (cw >= 1) & (ch >= 1)
  first = tf.argmax(tf.cast(fits, tf.int32))
  # Fallback (no attempt fits): the largest centre crop whose aspect ratio is within `ratio`.
  in_ratio = w / h
  fb_w = tf.where(in_ratio < ratio[0], w, tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w))
  fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
  any_fits = tf.reduce_any(fits)
  crop_w = tf.cast(tf.where(any_fits, cw[first], fb_w), tf.int32)
  crop_h = tf.cast(tf.where(any_fits, ch[first], fb_h), tf.int32)
  max_y, max_x = shape[0] - crop_h, shape[1] - crop_w
  y = tf.where(any_fits,
               tf.random.stateless_uniform([], s_y, 0, max_y + 1, dtype=tf.int32), max_y // 2)
  x = tf.where(any_fits,
               tf.random.stateless_uniform([], s_x, 0, max_x + 1, dtype=tf.int32), max_x // 2)
  crop = tf.slice(image, tf.stack([y, x, 0]), tf.stack([crop_h, crop_w, -1]))
  return _resize(crop, size)


def random_brightness(image: tf.Tensor, seed: tf.Tensor, max_delta: float,
                      brightness: str = "multiplicative") -> tf.Tensor:
  """The reference's `random_brightness`: x * U[max(0, 1 - d), 1 + d] or x + U[-d, d]."""
  if brightness == "multiplicative":
    factor = tf.random.stateless_uniform([], seed, max(0.0, 1.0 - max_delta), 1.0 + max_delta)
    return image * factor
  if brightness != "additive":
    raise ValueError(f"Unknown brightness {brightness!r}; valid: {BRIGHTNESS}.")
  return tf.image.stateless_random_brightness(image, max_delta, seed)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float,
                 brightness: str = "multiplicative") -> tf.Tensor:
  """SimCLR colour jitter: brightness, contrast, saturation, hue in a random order.

  Brightness multiplies or adds (`brightness`, module docstring) with range 0.8s; each op is
  followed by a clip to [0, 1] as in the SimCLR code.
  """
  if strength <= 0:  # TF's contrast/saturation ops reject an empty [1, 1] range.
    return image
  b, c, s, hue = 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength
  s_perm, s_b, s_c, s_s, s_h = tf.unstack(_split(seed, 5))
  ops = [
      lambda x: random_brightness(x, s_b, b, brightness),
      lambda x: tf.image.stateless_random_contrast(x, 1 - c, 1 + c, s_c),
      lambda x: tf.image.stateless_random_saturation(x, 1 - s, 1 + s, s_s),
      lambda x: tf.image.stateless_random_hue(x, hue, s_h),
  ]
  order = tf.argsort(tf.random.stateless_uniform([4], s_perm))
  for k in range(4):
    image = tf.switch_case(order[k], [lambda op=op, x=image: op(x) for op in ops])
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
  """Luma replicated to three channels, so the shape stays [H, W, 3]."""
  return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def gaussian_blur(image: tf.Tensor, seed: tf.Tensor, *, kernel_size: int,
                  sigma: tuple[float, float]) -> tf.Tensor:
  """Separable Gaussian blur with sigma ~ U(sigma); zero ('SAME') padding as in SimCLR."""
  radius = kernel_size // 2
  if radius < 1:
    return image
  std = tf.random.stateless_uniform([], seed, sigma[0], sigma[1])
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-tf.square(x) / (2.0 * tf.square(std)))
  k = k / tf.reduce_sum(k)
  kh = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
  kw = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
  out = tf.nn.depthwise_conv2d(image[None], kh, strides=[1, 1, 1, 1], padding="SAME")
  out = tf.nn.depthwise_conv2d(out, kw, strides=[1, 1, 1, 1], padding="SAME")
  return out[0]


def _random_apply(fn, image: tf.Tensor, seed: tf.Tensor, p: float) -> tf.Tensor:
  # Decided in Python where possible, so p = 0 or 1 adds no cond to the graph.
  if p <= 0:
    return image
  if p >= 1:
    return fn(image)
  u = tf.random.stateless_uniform([], seed)
  return tf.cond(u < p, lambda: fn(image), lambda: image)


def simclr_view(image: tf.Tensor, seed: tf.Tensor, aug: ml_collections.ConfigDict, *,
                size: int) -> tf.Tensor:
  """One SimCLR view of `image` (float32 [H, W, 3] in [0, 1]) as float32 [size, size, 3]."""
  s_crop, s_flip, s_cp, s_color, s_gp, s_bp, s_blur = tf.unstack(_split(seed, 7))
  x = random_resized_crop(image, s_crop, size=size, scale=tuple(aug.crop_scale),
                          ratio=tuple(aug.crop_ratio), crop=aug.get("crop", "inception"))
  x = tf.clip_by_value(x, 0.0, 1.0)  # bicubic overshoots; colour ops expect [0, 1]
  if aug.flip:
    x = tf.image.stateless_random_flip_left_right(x, s_flip)
  if aug.color_strength > 0:
    brightness = aug.get("brightness", "multiplicative")
    x = _random_apply(lambda t: color_jitter(t, s_color, aug.color_strength, brightness), x,
                      s_cp, aug.color_prob)
  x = _random_apply(to_grayscale, x, s_gp, aug.grayscale_prob)
  kernel = int(size * aug.blur_kernel_frac)
  x = _random_apply(
      lambda t: gaussian_blur(t, s_blur, kernel_size=kernel, sigma=tuple(aug.blur_sigma)),
      x, s_bp, aug.blur_prob)
  x = tf.clip_by_value(x, 0.0, 1.0)
  x.set_shape([size, size, 3])
  return x


def fit_in_canvas(image: tf.Tensor, canvas: int) -> tuple[tf.Tensor, tf.Tensor]:
  """The whole image in the top-left corner of a zero [canvas, canvas, 3] square.

  Downscaled (aspect kept) only if a side exceeds `canvas`, never upscaled: the device crops
  it at the resolution it has. Returns (the canvas, int32 [2] height and width of the image).
  """
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  factor = tf.minimum(1.0, canvas / tf.maximum(h, w))
  hw = tf.cast(tf.maximum(tf.round(tf.stack([h, w]) * factor), 1.0), tf.int32)
  x = tf.cond(factor < 1.0, lambda: tf.clip_by_value(_resize(image, hw), 0.0, 1.0),
              lambda: image)
  x = tf.image.pad_to_bounding_box(x, 0, 0, canvas, canvas)
  x.set_shape([canvas, canvas, 3])
  return x, hw


def _resize_shorter(image: tf.Tensor, size: int, crop_fraction: float) -> tf.Tensor:
  """Resizes so the shorter side is size / crop_fraction (and neither side below `size`)."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  factor = (size / crop_fraction) / tf.minimum(h, w)
  new_h = tf.maximum(tf.cast(tf.round(h * factor), tf.int32), size)
  new_w = tf.maximum(tf.cast(tf.round(w * factor), tf.int32), size)
  return _resize(image, tf.stack([new_h, new_w]))


def _square(x: tf.Tensor, size: int, y0: tf.Tensor, x0: tf.Tensor) -> tf.Tensor:
  x = tf.slice(x, tf.stack([y0, x0, 0]), [size, size, 3])
  x = tf.clip_by_value(x, 0.0, 1.0)
  x.set_shape([size, size, 3])
  return x


def center_crop_resize(image: tf.Tensor, size: int, crop_fraction: float = 1.0) -> tf.Tensor:
  """Evaluation view: resize the shorter side to size / crop_fraction, centre-crop `size`."""
  x = _resize_shorter(image, size, crop_fraction)
  shape = tf.shape(x)
  return _square(x, size, (shape[0] - size) // 2, (shape[1] - size) // 2)


def resize_random_crop(image: tf.Tensor, seed: tf.Tensor, size: int,
                       crop_fraction: float = 1.0) -> tf.Tensor:
  """Like `center_crop_resize` but the `size` square is placed at random."""
  x = _resize_shorter(image, size, crop_fraction)
  shape = tf.shape(x)
  s_y, s_x = tf.unstack(_split(seed, 2))
  y0 = tf.random.stateless_uniform([], s_y, 0, shape[0] - size + 1, dtype=tf.int32)
  x0 = tf.random.stateless_uniform([], s_x, 0, shape[1] - size + 1, dtype=tf.int32)
  return _square(x, size, y0, x0)
