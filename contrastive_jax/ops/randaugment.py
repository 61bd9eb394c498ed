"""FixMatch's strong and weak augmentations on the accelerator: RandAugment, Cutout, flip-and-shift.

Strong (`rand_augment`): RandAugment as the FixMatch paper describes it (Sohn et al., 2020,
appendix, Table 12 "List of transformations used in RandAugment"), with a random magnitude
instead of RandAugment's global one: per image, `num_ops` = 2 operations drawn uniformly from
the 14 below, each with a magnitude drawn uniformly from its range (integers for Posterize's
bits), then Cutout. The reference code's CIFAR variant (libml/augment.py, AugmentPoolRAMC)
differs: it applies each drawn op with probability 0.5, at AutoAugment's levels 1-9 of 10
(enhance factors in [0.28, 1.72], up to 27 degrees, 1-4 bits); the paper's table is followed.

  AutoContrast  -                 Brightness  B in [0.05, 0.95]   Color       C in [0.05, 0.95]
  Contrast      C in [0.05, 0.95] Equalize    -                   Identity    -
  Posterize     B in [4, 8] bits  Rotate      theta in [-30, 30] degrees
  Sharpness     S in [0.05, 0.95] ShearX, ShearY  R in [-0.3, 0.3]
  Solarize      T in [0, 1]       TranslateX, TranslateY  lambda in [-0.3, 0.3] of the side

Every op mirrors the PIL call the reference code (github.com/google-research/fixmatch) makes:
`ImageOps.autocontrast / equalize / posterize / solarize`, `ImageEnhance.Brightness / Color /
Contrast / Sharpness(image).enhance(factor)`, `Image.rotate(theta)` and
`Image.transform(size, AFFINE, matrix)` for shears and translations. PIL keeps every
intermediate image in uint8; here images stay float32 in [0, 1] and only what PIL's result
depends on discretely is put on the 8-bit grid: the pixel levels of Equalize and Posterize,
and the degenerate images of the enhance ops (PIL's grey, mean level and smoothed image).
On 8-bit inputs Equalize, Posterize and Solarize then equal PIL's output, and the enhance ops
and AutoContrast differ only by PIL's truncation of its result (less than one level).

Geometric ops sample with nearest neighbour, PIL's default for `rotate` and `transform` and
what the reference uses: output pixel (x, y) reads input pixel floor(A (x + 0.5, y + 0.5, 1)),
A the inverse affine map as PIL states it, shears about the top-left corner, rotations about
(W / 2, H / 2). Pixels that map outside the image take `fill`: grey 0.5 by default, because the
reference's RandAugment works on RGBA images and turns the transparent border to 0 in its
[-1, 1] scale, which is 0.5 here.

Cutout (`cutout`, after RandAugment as the reference's AugmentPoolRAMC applies it): a square
of side `size_frac` x the shorter side (16 px at 32 px, the reference's `cutout_numpy(size=16)`),
centred on a uniformly drawn pixel and clipped at the border, filled with grey 0.5 (the
reference's 0 in [-1, 1]). `random_size=True` draws the side per image in [1, size_frac x side]
instead, as CTAugment's cutout does (side up to half the image).

Weak (`weak_augment`): FixMatch's flip-and-shift, a horizontal flip with probability 0.5 then a
translation of up to 12.5% of the side by reflect padding and a random crop (the reference's
`augment_shift(augment_mirror(x), 4)` at 32 px).

All of it is jittable for a static image size and draws independently for every image
(per-example keys, `jax.vmap`). Nothing here imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from contrastive_jax.ops.augment import to_float01

# PIL's "L" conversion in 16-bit fixed point (ITU-R 601-2 luma), which ImageEnhance.Color and
# ImageEnhance.Contrast degenerate to.
_LUMA = (19595 / 65536, 38470 / 65536, 7471 / 65536)
# ImageFilter.SMOOTH, the blurred image ImageEnhance.Sharpness blends with.
_SMOOTH = ((1, 1, 1), (1, 5, 1), (1, 1, 1))


def _levels(x: jax.Array) -> jax.Array:
  """Nearest 8-bit level of each value (int32), the pixels PIL would hold."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.int32)


def _to8(x: jax.Array) -> jax.Array:
  return _levels(x).astype(jnp.float32) / 255.0


def _blend(degenerate: jax.Array, image: jax.Array, factor: jax.Array) -> jax.Array:
  """Image.blend(degenerate, image, factor), what every ImageEnhance op returns."""
  return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _luma(image: jax.Array) -> jax.Array:
  return _to8(jnp.sum(image * jnp.asarray(_LUMA, image.dtype), axis=-1, keepdims=True))


# The ops: one float32 image [H, W, 3] in [0, 1] and the magnitude in Table 12's units.


def identity(image: jax.Array, magnitude: jax.Array | None = None) -> jax.Array:
  del magnitude
  return image


def auto_contrast(image: jax.Array, magnitude: jax.Array | None = None) -> jax.Array:
  """ImageOps.autocontrast: each channel stretched from its [min, max] to [0, 1]."""
  del magnitude
  lo = jnp.min(image, axis=(0, 1), keepdims=True)
  hi = jnp.max(image, axis=(0, 1), keepdims=True)
  span = hi - lo
  # A constant channel stays as it is, as in PIL.
  return jnp.where(span > 0, (image - lo) / jnp.where(span > 0, span, 1.0), image)


def _equalize_channel(levels: jax.Array) -> jax.Array:
  # ImageOps.equalize's lookup table, in integers as PIL computes it.
  hist = jnp.bincount(levels.reshape(-1), length=256)
  bins = jnp.arange(256)
  last = hist[jnp.max(jnp.where(hist > 0, bins, 0))]
  step = (jnp.sum(hist) - last) // 255
  lut = (step // 2 + jnp.cumsum(hist) - hist) // jnp.maximum(step, 1)
  keep = (jnp.sum(hist > 0) <= 1) | (step == 0)
  return jnp.where(keep, bins, jnp.clip(lut, 0, 255))[levels]


def equalize(image: jax.Array, magnitude: jax.Array | None = None) -> jax.Array:
  """ImageOps.equalize: each channel's histogram spread over the 256 levels."""
  del magnitude
  levels = _levels(image)
  out = jnp.stack([_equalize_channel(levels[..., c]) for c in range(image.shape[-1])], -1)
  return out.astype(jnp.float32) / 255.0


def posterize(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageOps.posterize: keeps the top `magnitude` bits (an integer in [1, 8]) of each level."""
  drop = 8 - jnp.clip(jnp.floor(magnitude), 1, 8).astype(jnp.int32)
  return ((_levels(image) >> drop) << drop).astype(jnp.float32) / 255.0


def solarize(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageOps.solarize: values at or above the threshold `magnitude` in [0, 1] inverted."""
  return jnp.where(image >= magnitude, 1.0 - image, image)


def brightness(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageEnhance.Brightness: blend with black."""
  return _blend(jnp.zeros_like(image), image, magnitude)


def color(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageEnhance.Color: blend with the image's grey (PIL's luma, on the 8-bit grid)."""
  return _blend(_luma(image), image, magnitude)


def contrast(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageEnhance.Contrast: blend with the mean grey level, one value for all channels (PIL
  rounds it to a level; TF's adjust_contrast uses each channel's mean instead)."""
  return _blend(_to8(jnp.mean(_luma(image))), image, magnitude)


def sharpness(image: jax.Array, magnitude: jax.Array) -> jax.Array:
  """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH's image, whose border pixels PIL
  leaves unfiltered."""
  h, w = image.shape[:2]
  smooth = sum(k * image[dy:dy + h - 2, dx:dx + w - 2]
               for dy, row in enumerate(_SMOOTH) for dx, k in enumerate(row)) / 13.0
  return _blend(image.at[1:-1, 1:-1].set(_to8(smooth)), image, magnitude)


def affine(image: jax.Array, matrix: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.transform(size, AFFINE, matrix, NEAREST, fillcolor=fill): output pixel (x, y)
  reads input pixel floor(matrix @ (x + 0.5, y + 0.5, 1)) (x the column), `fill` outside."""
  h, w, c = image.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                        jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
  a, b, t_x, d, e, t_y = (matrix[i] for i in range(6))
  src_x = jnp.floor(a * xs + b * ys + t_x).astype(jnp.int32)
  src_y = jnp.floor(d * xs + e * ys + t_y).astype(jnp.int32)
  inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
  index = jnp.clip(src_y, 0, h - 1) * w + jnp.clip(src_x, 0, w - 1)
  # One gather over flattened pixels: under vmap a single batched gather.
  out = jnp.take(image.reshape(h * w, c), index.reshape(-1), axis=0).reshape(h, w, c)
  return jnp.where(inside[..., None], out, jnp.asarray(fill, image.dtype))


def _matrix(*entries) -> jax.Array:
  return jnp.stack([jnp.asarray(v, jnp.float32) for v in entries])


def _rotate_matrix(h: int, w: int, degrees: jax.Array) -> jax.Array:
  # Image.rotate's inverse map: counter-clockwise by `degrees` about (W / 2, H / 2).
  t = -jnp.deg2rad(degrees)
  cos, sin = jnp.cos(t), jnp.sin(t)
  cx, cy = w / 2.0, h / 2.0
  return _matrix(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


# PIL's inverse affine maps (a, b, c, d, e, f) of the geometric ops, by image height, width and
# magnitude: shears about the top-left corner, translations by a fraction of the side.
_MATRICES = {
    "Rotate": _rotate_matrix,
    "ShearX": lambda h, w, m: _matrix(1, m, 0, 0, 1, 0),
    "ShearY": lambda h, w, m: _matrix(1, 0, 0, m, 1, 0),
    "TranslateX": lambda h, w, m: _matrix(1, 0, m * w, 0, 1, 0),
    "TranslateY": lambda h, w, m: _matrix(1, 0, 0, 0, 1, m * h),
}


def rotate(image: jax.Array, magnitude: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.rotate(magnitude): counter-clockwise by `magnitude` degrees about the centre."""
  return affine(image, _MATRICES["Rotate"](*image.shape[:2], magnitude), fill)


def shear_x(image: jax.Array, magnitude: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.transform(AFFINE, (1, R, 0, 0, 1, 0)): column x reads x + R y."""
  return affine(image, _MATRICES["ShearX"](*image.shape[:2], magnitude), fill)


def shear_y(image: jax.Array, magnitude: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.transform(AFFINE, (1, 0, 0, R, 1, 0)): row y reads y + R x."""
  return affine(image, _MATRICES["ShearY"](*image.shape[:2], magnitude), fill)


def translate_x(image: jax.Array, magnitude: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.transform(AFFINE, (1, 0, lambda W, 0, 1, 0)): column x reads x + lambda W."""
  return affine(image, _MATRICES["TranslateX"](*image.shape[:2], magnitude), fill)


def translate_y(image: jax.Array, magnitude: jax.Array, fill: float = 0.5) -> jax.Array:
  """Image.transform(AFFINE, (1, 0, 0, 0, 1, lambda H)): row y reads y + lambda H."""
  return affine(image, _MATRICES["TranslateY"](*image.shape[:2], magnitude), fill)


class Op(NamedTuple):
  fn: Callable[..., jax.Array]
  low: float
  high: float
  integer: bool = False  # Magnitudes drawn as integers in [low, high] (Posterize's bits).


# Table 12, in its order.
OPS = {
    "AutoContrast": Op(auto_contrast, 0.0, 0.0),
    "Brightness": Op(brightness, 0.05, 0.95),
    "Color": Op(color, 0.05, 0.95),
    "Contrast": Op(contrast, 0.05, 0.95),
    "Equalize": Op(equalize, 0.0, 0.0),
    "Identity": Op(identity, 0.0, 0.0),
    "Posterize": Op(posterize, 4, 8, integer=True),
    "Rotate": Op(rotate, -30.0, 30.0),
    "Sharpness": Op(sharpness, 0.05, 0.95),
    "ShearX": Op(shear_x, -0.3, 0.3),
    "ShearY": Op(shear_y, -0.3, 0.3),
    "Solarize": Op(solarize, 0.0, 1.0),
    "TranslateX": Op(translate_x, -0.3, 0.3),
    "TranslateY": Op(translate_y, -0.3, 0.3),
}


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
  """RandAugment + Cutout: `num_ops` ops per image from `ops` (names in OPS), then a Cutout
  square of `cutout` x the shorter side (0: none); `fill` for uncovered and cut-out pixels.
  `ranges`, if given, is each op's (low, high) magnitude range in the order of `ops`, in place
  of table 12's (AutoAugment's ranges, for example)."""
  num_ops: int = 2
  ops: tuple[str, ...] = tuple(OPS)
  cutout: float = 0.5
  cutout_random_size: bool = False
  fill: float = 0.5
  ranges: tuple[tuple[float, float], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "ops", tuple(self.ops))
    object.__setattr__(self, "ranges", tuple(tuple(map(float, r)) for r in self.ranges))
    if self.ranges and len(self.ranges) != len(self.ops):
      raise ValueError(f"RandAugmentSpec.ranges has {len(self.ranges)} (low, high) pairs for "
                       f"{len(self.ops)} ops; give one per op, in the order of `ops`.")
    unknown = [name for name in self.ops if name not in OPS]
    if unknown or not self.ops:
      raise ValueError(f"Unknown RandAugment ops {unknown or '(none given)'}; valid: "
                       f"{', '.join(OPS)}.")
    if not (isinstance(self.num_ops, int) and self.num_ops >= 0):
      raise ValueError(f"RandAugmentSpec.num_ops={self.num_ops!r}: an integer >= 0.")
    if not 0.0 <= self.cutout <= 1.0:
      raise ValueError(f"RandAugmentSpec.cutout={self.cutout!r}: a fraction of the side in "
                       "[0, 1] (FixMatch: 0.5).")
    if not 0.0 <= self.fill <= 1.0:
      raise ValueError(f"RandAugmentSpec.fill={self.fill!r}: a grey level in [0, 1].")


def _policy_one(key: jax.Array, spec: RandAugmentSpec) -> tuple[jax.Array, jax.Array]:
  k_op, k_mag = jax.random.split(key)
  index = jax.random.randint(k_op, (spec.num_ops,), 0, len(spec.ops))
  table = [OPS[name] for name in spec.ops]
  ranges = spec.ranges or [(op.low, op.high) for op in table]
  low = jnp.asarray([r[0] for r in ranges], jnp.float32)[index]
  high = jnp.asarray([r[1] for r in ranges], jnp.float32)[index]
  integer = jnp.asarray([op.integer for op in table])[index]
  u = jax.random.uniform(k_mag, (spec.num_ops,))
  magnitude = jnp.where(integer, jnp.minimum(jnp.floor(low + u * (high - low + 1)), high),
                        low + u * (high - low))
  return index, magnitude


def sample_policy(key: jax.Array, batch: int,
                  spec: RandAugmentSpec) -> tuple[jax.Array, jax.Array]:
  """Per image (image i from `jax.random.split(key, batch)[i]`), `num_ops` op indices into
  `spec.ops` (int32 [batch, num_ops]) drawn uniformly, and their magnitudes (float32
  [batch, num_ops]) drawn uniformly from each op's range."""
  return jax.vmap(lambda k: _policy_one(k, spec))(jax.random.split(key, batch))


def _apply_one(image: jax.Array, op: jax.Array, magnitude: jax.Array,
               names: tuple[str, ...], fill: float) -> jax.Array:
  """Op `op` (an index into `names`) of one image.

  Under vmap a `lax.switch` evaluates every branch anyway, so the ops are computed and the
  wanted result picked, with the five geometric ops folded into one nearest-neighbour gather
  whose matrix `op` picks (the identity for the others). Measured on 2 CPU cores, batch 64 at
  32 px, two ops: 11 ms, against 15 ms for all 14 ops computed and picked and 27 ms for
  `lax.switch` under vmap (32 at 96 px: 108, 145 and 199 ms); `lax.select_n` over the
  candidates was slower than indexing their stack.
  """
  h, w = image.shape[:2]
  candidates, slot = [], []
  if any(n in _MATRICES for n in names):
    identity_matrix = _matrix(1, 0, 0, 0, 1, 0)
    matrices = jnp.stack([_MATRICES[n](h, w, magnitude) if n in _MATRICES else identity_matrix
                          for n in names])
    candidates.append(affine(image, matrices[op], fill))
  for n in names:
    if n in _MATRICES:
      slot.append(0)
    else:
      slot.append(len(candidates))
      candidates.append(OPS[n].fn(image, magnitude))
  if len(candidates) == 1:
    return candidates[0]
  return jnp.stack(candidates)[jnp.asarray(slot, jnp.int32)[op]]


def apply_policy(images: jax.Array, index: jax.Array, magnitude: jax.Array,
                 spec: RandAugmentSpec) -> jax.Array:
  """Applies ops `index` [B, N] (into spec.ops) with `magnitude` [B, N] to images [B, H, W, 3]
  in order, each image its own."""

  def one(image, ops, mags):
    for j in range(ops.shape[0]):
      image = _apply_one(image, ops[j], mags[j], spec.ops, spec.fill)
    return image

  return jax.vmap(one)(images, index, magnitude)


def _check(images: jax.Array) -> jax.Array:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Expected images [B, H, W, 3], got shape {tuple(images.shape)}.")
  return to_float01(images)


def _cutout_one(key: jax.Array, image: jax.Array, side_max: int, fill: float,
                random_size: bool) -> jax.Array:
  h, w = image.shape[:2]
  k_y, k_x, k_s = jax.random.split(key, 3)
  cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
  side = jax.random.randint(k_s, (), 1, side_max + 1) if random_size else side_max
  top, left = cy - side // 2, cx - side // 2
  rows, cols = jnp.arange(h), jnp.arange(w)
  inside = (((rows >= top) & (rows < top + side))[:, None, None]
            & ((cols >= left) & (cols < left + side))[None, :, None])
  return jnp.where(inside, jnp.asarray(fill, image.dtype), image)


def cutout(key: jax.Array, images: jax.Array, size_frac: float = 0.5, *, fill: float = 0.5,
           random_size: bool = False) -> jax.Array:
  """Each image with one square of side size_frac x min(H, W) (or, `random_size`, a side drawn
  in [1, that]) set to `fill`, centred on a uniformly drawn pixel, clipped at the border.
  Image i draws from `jax.random.split(key, B)[i]`."""
  images = _check(images)
  side_max = int(size_frac * min(images.shape[1:3]))
  if side_max < 1:
    return images
  return jax.vmap(lambda k, im: _cutout_one(k, im, side_max, fill, random_size))(
      jax.random.split(key, images.shape[0]), images)


def _strong_one(key: jax.Array, image: jax.Array, spec: RandAugmentSpec) -> jax.Array:
  k_policy, k_cut = jax.random.split(key)
  index, magnitude = _policy_one(k_policy, spec)
  for j in range(spec.num_ops):
    image = _apply_one(image, index[j], magnitude[j], spec.ops, spec.fill)
  side_max = int(spec.cutout * min(image.shape[:2]))
  if side_max >= 1:
    image = _cutout_one(k_cut, image, side_max, spec.fill, spec.cutout_random_size)
  return image


def rand_augment(key: jax.Array, images: jax.Array,
                 spec: RandAugmentSpec = RandAugmentSpec()) -> jax.Array:
  """FixMatch's strong augmentation of images [B, H, W, 3] (float in [0, 1], or uint8):
  RandAugment with random magnitudes, then Cutout. Image i draws from
  `jax.random.split(key, B)[i]`, so its result does not depend on the rest of the batch or on
  how the batch is sharded (the partitionable threefry PRNG, as in ops/augment.py)."""
  images = _check(images)
  return jax.vmap(lambda k, im: _strong_one(k, im, spec))(
      jax.random.split(key, images.shape[0]), images)


def _weak_one(key: jax.Array, image: jax.Array, pad_h: int, pad_w: int,
              flip: bool) -> jax.Array:
  h, w, c = image.shape
  k_flip, k_y, k_x = jax.random.split(key, 3)
  if flip:
    image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1], image)
  if not (pad_h or pad_w):
    return image
  # TF's REFLECT padding, as the reference's augment_shift: the edge pixel is not repeated.
  padded = jnp.pad(image, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)), mode="reflect")
  top = jax.random.randint(k_y, (), 0, 2 * pad_h + 1)
  left = jax.random.randint(k_x, (), 0, 2 * pad_w + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, c))


def weak_augment(key: jax.Array, images: jax.Array, translate: float = 0.125,
                 flip: bool = True) -> jax.Array:
  """FixMatch's weak augmentation: horizontal flip with probability 0.5 (`flip`), then a shift
  of up to round(translate x side) pixels per axis by reflect padding and a random crop.
  Image i draws from `jax.random.split(key, B)[i]`."""
  images = _check(images)
  h, w = images.shape[1:3]
  pad_h, pad_w = round(translate * h), round(translate * w)
  if not (0 <= translate and pad_h < h and pad_w < w):
    raise ValueError(f"weak_augment translate={translate!r}: a fraction in [0, 1) of the "
                     "side (FixMatch: 0.125).")
  return jax.vmap(lambda k, im: _weak_one(k, im, pad_h, pad_w, flip))(
      jax.random.split(key, images.shape[0]), images)


def magnitude_range(name: str) -> tuple[float, float]:
  """Table 12's range of op `name`'s magnitude ((0, 0) for ops without one)."""
  if name not in OPS:
    raise ValueError(f"Unknown RandAugment op {name!r}; valid: {', '.join(OPS)}.")
  return OPS[name].low, OPS[name].high
