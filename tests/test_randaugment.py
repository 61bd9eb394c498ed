"""FixMatch's augmentations on the device (contrastive_jax.ops.randaugment): every RandAugment op
against PIL, the policy's draws, Cutout's square, the weak flip-and-shift's bounds."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from contrastive_jax.ops import randaugment as ra


def _uint8_images():
  rng = np.random.default_rng(0)
  full = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  # A narrow range (AutoContrast and Equalize stretch it) and a constant channel (left alone).
  narrow = rng.integers(60, 140, (16, 16, 3), dtype=np.uint8)
  narrow[..., 2] = 77
  return [full, narrow]


GREY = 128  # A fill PIL can hold: 128 / 255 here.


def _pil(name: str, im: Image.Image, m: float) -> Image.Image:
  """The PIL call the FixMatch reference makes for op `name` at magnitude m."""
  size, g = im.size, (GREY,) * 3
  return {
      "AutoContrast": lambda: ImageOps.autocontrast(im),
      "Equalize": lambda: ImageOps.equalize(im),
      "Identity": lambda: im,
      "Posterize": lambda: ImageOps.posterize(im, int(m)),
      "Solarize": lambda: ImageOps.solarize(im, round(m * 255)),
      "Brightness": lambda: ImageEnhance.Brightness(im).enhance(m),
      "Color": lambda: ImageEnhance.Color(im).enhance(m),
      "Contrast": lambda: ImageEnhance.Contrast(im).enhance(m),
      "Sharpness": lambda: ImageEnhance.Sharpness(im).enhance(m),
      "Rotate": lambda: im.rotate(m, fillcolor=g),
      "ShearX": lambda: im.transform(size, Image.AFFINE, (1, m, 0, 0, 1, 0), fillcolor=g),
      "ShearY": lambda: im.transform(size, Image.AFFINE, (1, 0, 0, m, 1, 0), fillcolor=g),
      "TranslateX": lambda: im.transform(size, Image.AFFINE, (1, 0, m * size[0], 0, 1, 0),
                                         fillcolor=g),
      "TranslateY": lambda: im.transform(size, Image.AFFINE, (1, 0, 0, 0, 1, m * size[1]),
                                         fillcolor=g),
  }[name]()


def _near_pixel_edge(name: str, m: float, size: int) -> np.ndarray:
  """Output pixels whose source coordinate (float64, PIL's inverse map) lies within 1e-4 of a
  pixel edge, where float32 and PIL's double may floor to different pixels."""
  y, x = np.mgrid[:size, :size] + 0.5
  if name == "Rotate":
    t, c = -math.radians(m), size / 2
    a, b, d, e = math.cos(t), math.sin(t), -math.sin(t), math.cos(t)
    coords = (a * (x - c) + b * (y - c) + c, d * (x - c) + e * (y - c) + c)
  else:
    coords = {"ShearX": (x + m * y, y), "ShearY": (x, y + m * x),
              "TranslateX": (x + m * size, y), "TranslateY": (x, y + m * size)}[name]
  return np.any([np.abs(v - np.round(v)) < 1e-4 for v in coords], axis=0)


def _magnitudes(name):
  low, high = ra.magnitude_range(name)
  if name == "Posterize":
    return [4, 6, 8]
  if name == "Solarize":
    return [0.0, 100 / 255, 200 / 255, 1.0]
  return sorted({low, round(0.37 * low + 0.63 * high, 4), high})


CASES = [(name, m) for name in ra.OPS for m in _magnitudes(name)]


@pytest.mark.parametrize("name, m", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_each_op_matches_pil(name, m):
  """On 8-bit images: Equalize, Posterize, Solarize and the nearest-neighbour geometric ops equal
  PIL. The enhance ops and AutoContrast are exact blends/stretches that PIL truncates to a level
  (Image.blend and autocontrast's lookup table cast a float to uint8), so ours x 255 - PIL lies
  in [0, 1]; the 1e-3 slack is float32 against PIL's float arithmetic."""
  fn = ra.OPS[name].fn
  for a in _uint8_images():
    x = jnp.asarray(a, jnp.float32) / 255.0
    kwargs = {"fill": GREY / 255.0} if name in ra._MATRICES else {}
    ours = np.asarray(fn(x, jnp.float32(m), **kwargs), np.float64) * 255.0
    want = np.asarray(_pil(name, Image.fromarray(a), m), np.float64)
    diff = ours - want
    if name in ("AutoContrast", "Brightness", "Color", "Contrast", "Sharpness"):
      assert diff.min() >= -1e-3 and diff.max() <= 1 + 1e-3, (diff.min(), diff.max())
    else:
      if name in ra._MATRICES:
        diff[_near_pixel_edge(name, m, a.shape[0])] = 0.0
      np.testing.assert_allclose(diff, 0.0, atol=1e-3)


def test_ops_keep_float_images_in_range():
  """Inputs off the 8-bit grid, every op at both ends of its range: outputs stay in [0, 1]."""
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 16, 3)), jnp.float32)
  for name, op in ra.OPS.items():
    for m in (op.low, op.high):
      out = np.asarray(op.fn(x, jnp.float32(m)))
      assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0, name


def test_policy_draws_ops_uniformly_and_magnitudes_from_table_12():
  spec = ra.RandAugmentSpec()
  index, magnitude = jax.device_get(ra.sample_policy(jax.random.key(0), 7000, spec))
  assert index.shape == magnitude.shape == (7000, 2)
  counts = np.bincount(index.ravel(), minlength=14)
  expected = index.size / 14
  # Binomial counts: 6 standard deviations from the uniform mean would fail by chance ~1e-9.
  assert np.all(np.abs(counts - expected) < 6 * math.sqrt(expected * (1 - 1 / 14))), counts
  for i, name in enumerate(spec.ops):
    low, high = ra.magnitude_range(name)
    m = magnitude[index == i]
    assert m.min() >= low and m.max() <= high, name
    if name == "Posterize":
      assert set(np.unique(m)) == {4, 5, 6, 7, 8}
    elif high > low:
      # Uniform on [low, high]: its quartiles, within a few percent of the range.
      q = np.quantile(m, [0.25, 0.5, 0.75])
      np.testing.assert_allclose(q, low + (high - low) * np.array([0.25, 0.5, 0.75]),
                                 atol=0.06 * (high - low), err_msg=name)
  # Each image draws its own ops: pairs of rows that repeat are as rare as chance makes them.
  rows = {tuple(r) for r in index}
  assert len(rows) == 14 * 14


@pytest.mark.parametrize("ops", [tuple(ra.OPS), ("Rotate", "Color", "TranslateY"),
                                 ("ShearX",), ("Equalize", "Posterize")])
def test_apply_policy_is_the_ops_one_after_another(ops):
  """The batched dispatch (one gather for all geometric ops, a pick among the pixel ops) equals
  calling the chosen public ops in order on each image."""
  spec = ra.RandAugmentSpec(ops=ops, fill=0.25)
  n = len(ops)
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(n, 16, 16, 3)), jnp.float32)
  # Every op at every position, with random magnitudes.
  index = np.stack([np.arange(n) % len(ops), (np.arange(n) * 3 + 1) % len(ops)], 1)
  u = np.random.default_rng(3).uniform(size=index.shape)
  table = [[ra.OPS[ops[i]] for i in row] for row in index]
  magnitude = np.array([[op.low + v * (op.high - op.low) for op, v in zip(r, ur)]
                        for r, ur in zip(table, u)])
  magnitude = np.where(np.array([[op.integer for op in r] for r in table]),
                       np.floor(magnitude), magnitude)
  got = jax.jit(lambda x, i, m: ra.apply_policy(x, i, m, spec))(
      images, jnp.asarray(index), jnp.asarray(magnitude, jnp.float32))
  for b in range(n):
    want = images[b]
    for j in range(2):
      op = ra.OPS[ops[index[b, j]]]
      kwargs = {"fill": 0.25} if ops[index[b, j]] in ra._MATRICES else {}
      want = op.fn(want, jnp.float32(magnitude[b, j]), **kwargs)
    np.testing.assert_allclose(got[b], want, atol=1e-6, err_msg=str(index[b]))


@pytest.fixture(scope="module")
def strong():
  return jax.jit(ra.rand_augment, static_argnums=2)


def test_rand_augment_draws_per_image_and_repeats_per_key(strong):
  spec = ra.RandAugmentSpec()
  one = np.random.default_rng(3).integers(0, 256, (1, 16, 16, 3)).astype(np.float32) / 255
  images = jnp.asarray(np.repeat(one, 32, axis=0))
  a = np.asarray(strong(jax.random.key(0), images, spec))
  assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
  np.testing.assert_array_equal(a, np.asarray(strong(jax.random.key(0), images, spec)))
  assert not np.array_equal(a, np.asarray(strong(jax.random.key(1), images, spec)))
  # The same image 32 times gives 32 different results (ops, magnitudes and Cutout differ).
  assert len({r.tobytes() for r in a}) == 32
  # Each image draws from its own key: other images of the batch do not change its result.
  others = images.at[16:].set(jnp.asarray(np.random.default_rng(4).uniform(size=(16, 16, 16, 3)),
                                          jnp.float32))
  np.testing.assert_array_equal(np.asarray(strong(jax.random.key(0), others, spec))[:16], a[:16])


def _boxes(mask):
  """(height, width, top, left) of the region of each [H, W] mask, asserting it is a rectangle."""
  out = []
  for m in mask:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    box = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.all() and box.sum() == m.sum()
    out.append((len(rows), len(cols), rows[0], cols[0]))
  return np.array(out)


@pytest.mark.parametrize("random_size", [False, True])
def test_cutout_is_one_clipped_grey_square(random_size):
  size, side, n = 16, 8, 400
  images = np.random.default_rng(4).integers(0, 256, (n, size, size, 3)).astype(np.float32) / 255
  out = np.asarray(jax.jit(lambda k, x: ra.cutout(k, x, 0.5, random_size=random_size))(
      jax.random.key(5), images))
  mask = np.all(out == 0.5, axis=-1)  # 0.5 is not an 8-bit level, so only Cutout wrote it.
  np.testing.assert_array_equal(out[~mask], images[~mask])
  h, w, top, left = _boxes(mask).T
  assert h.max() == w.max() == side and h.min() >= 1 and w.min() >= 1
  if random_size:
    # Sides drawn in [1, 8]: squares wherever the border does not clip them, and of every size.
    inner = (top > 0) & (left > 0) & (top + h < size) & (left + w < size)
    assert np.all(h[inner] == w[inner]) and set(h[inner]) == set(range(1, side + 1))
  else:
    # A side-8 square centred on a uniform pixel: shorter only where the border clips it.
    clipped_h = (top == 0) | (top + h == size)
    assert np.all(h[~clipped_h] == side)
    # Mean covered area against the exact mean over the 16 x 16 centres.
    lengths = [min(c + side // 2, size) - max(c - side // 2, 0) for c in range(size)]
    want = np.mean(lengths) ** 2
    assert abs(mask.sum((1, 2)).mean() - want) < 4 * mask.sum((1, 2)).std() / math.sqrt(n)


def test_weak_augment_flips_and_shifts_within_the_bound():
  size, pad, n = 16, 2, 64
  # Distinct pixel values, so each output identifies its flip and offset.
  base = (np.arange(size * size * 3, dtype=np.float32).reshape(size, size, 3) + 1) / 1000
  images = np.repeat(base[None], n, axis=0)
  out = np.asarray(jax.jit(ra.weak_augment)(jax.random.key(6), images))
  seen = set()
  for o in out:
    found = [(f, dy, dx) for f in (False, True) for dy in range(2 * pad + 1)
             for dx in range(2 * pad + 1)
             if np.array_equal(o, np.pad(base[:, ::-1] if f else base,
                                         ((pad, pad), (pad, pad), (0, 0)),
                                         mode="reflect")[dy:dy + size, dx:dx + size])]
    assert found, "output is no flip-and-shift of the input within 2 px (12.5% of 16)"
    seen.add(found[0])
  # Both flips and many of the 25 offsets occur across the batch.
  assert {f for f, _, _ in seen} == {False, True} and len(seen) > 20
  same = ra.weak_augment(jax.random.key(6), images[:2], translate=0.0, flip=False)
  np.testing.assert_array_equal(same, images[:2])
  # uint8 images are taken as levels 0..255.
  levels = np.random.default_rng(7).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
  np.testing.assert_allclose(ra.weak_augment(jax.random.key(8), levels),
                             ra.weak_augment(jax.random.key(8), levels / np.float32(255)),
                             atol=1e-7)


@pytest.mark.parametrize("call, match", [
    (lambda: ra.RandAugmentSpec(ops=("Rotate", "Invert")), r"\['Invert'\]; valid: AutoContrast"),
    (lambda: ra.RandAugmentSpec(num_ops=-1), r"num_ops=-1"),
    (lambda: ra.RandAugmentSpec(cutout=2.0), r"cutout=2.0"),
    (lambda: ra.magnitude_range("Blur"), r"Unknown RandAugment op 'Blur'"),
    (lambda: ra.weak_augment(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), translate=1.0),
     r"translate=1.0"),
    (lambda: ra.rand_augment(jax.random.key(0), jnp.zeros((8, 8, 3))), r"\[B, H, W, 3\]"),
])
def test_bad_input_is_named(call, match):
  with pytest.raises(ValueError, match=match):
    call()
