"""CPC v2's elastic deformation and colour histogram per patch (TensorFlow, host side) against
NumPy, and their switches in the grid: determinism, a draw per patch, other draws untouched."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contrastive_jax import input_spec  # noqa: E402
from contrastive_jax.data import patches as cpc_patches  # noqa: E402

NEW = ("elastic", "color_histogram")
SEED = (3, 4)


def _patches(n=6, size=9, seed=0):
  return np.random.default_rng(seed).uniform(0.05, 0.95, (n, size, size, 3)).astype(np.float32)


def _augment(x, seed=SEED, **augment):
  grid = input_spec.PatchGrid.from_settings(x.shape[1], x.shape[1], augment, key="cpc")
  return cpc_patches.augment_patches(tf.constant(x), grid, tf.constant(seed, tf.int64)).numpy()


def _numpy_warp(x, field):
  """Bilinear sampling of each patch at (y + dy, x + dx) on the patch mirrored beyond its edges
  with the edge pixel repeated (np.pad "symmetric", wide enough for any displacement)."""
  n, size = x.shape[:2]
  margin = int(np.ceil(np.abs(field).max())) + 2
  out = np.empty_like(x)
  for i in range(n):
    padded = np.pad(x[i], [(margin, margin), (margin, margin), (0, 0)], mode="symmetric")
    for y in range(size):
      for c in range(size):
        r, s = y + field[i, y, c, 0] + margin, c + field[i, y, c, 1] + margin
        r0, s0 = int(np.floor(r)), int(np.floor(s))
        wr, ws = r - r0, s - s0
        out[i, y, c] = ((1 - wr) * ((1 - ws) * padded[r0, s0] + ws * padded[r0, s0 + 1])
                        + wr * ((1 - ws) * padded[r0 + 1, s0] + ws * padded[r0 + 1, s0 + 1]))
  return out


def _field(seed, n, size):
  """The displacement field `augment_patches` draws for its elastic deformation."""
  s = cpc_patches.op_seeds(tf.constant(seed, tf.int64), "elastic", 2)[0]
  return cpc_patches.elastic_field(s, n, size, input_spec.PATCH_ELASTIC_SIGMA * size,
                                   input_spec.PATCH_ELASTIC_ALPHA * size).numpy()


def _curves(seed, n):
  s = cpc_patches.op_seeds(tf.constant(seed, tf.int64), "color_histogram", 2)[0]
  return cpc_patches.histogram_curves(s, n, 3).numpy()


def test_warp_is_a_bilinear_sample_with_reflected_border():
  x = _patches(n=3)
  rng = np.random.default_rng(1)
  # Up to two patch sides, so samples land beyond the first reflection too, plus whole pixels.
  field = rng.uniform(-18, 18, (3, 9, 9, 2)).astype(np.float32)
  field[2] = np.round(field[2])
  got = cpc_patches.warp(tf.constant(x), tf.constant(field)).numpy()
  np.testing.assert_allclose(got, _numpy_warp(x, field), atol=1e-5)
  zero = cpc_patches.warp(tf.constant(x), tf.zeros([3, 9, 9, 2])).numpy()
  np.testing.assert_allclose(zero, x, atol=1e-6)


def test_elastic_field_is_smoothed_noise_scaled_to_alpha():
  seed, n, size, sigma, alpha = tf.constant([5, 6], tf.int64), 4, 10, 1.5, 2.0
  got = cpc_patches.elastic_field(seed, n, size, sigma, alpha).numpy()
  noise = tf.random.stateless_uniform([n, 2, size, size], seed, minval=-1.0,
                                      maxval=1.0).numpy().astype(np.float64)
  # Gaussian smoothing along each axis, the kernel truncated at the border and renormalised.
  i = np.arange(size)
  kernel = np.exp(-((i[:, None] - i[None]) ** 2) / (2 * sigma ** 2))
  kernel /= kernel.sum(1, keepdims=True)
  smooth = np.einsum("ij,ncjk,lk->ncil", kernel, noise, kernel)
  want = alpha * smooth / np.abs(smooth).max(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), atol=1e-5)
  # Smooth: relative to their peaks (alpha, 1), neighbouring displacements differ far less
  # than neighbouring noise values do.
  assert np.abs(np.diff(got, axis=1)).mean() / alpha < 0.3 * np.abs(np.diff(noise, axis=2)).mean()


def test_histogram_curves_are_monotone_from_0_to_1_and_remap_is_interp():
  n = 5
  curves = _curves((7, 8), n)
  k = input_spec.PATCH_HISTOGRAM_POINTS
  assert curves.shape == (n, 3, k)
  np.testing.assert_allclose(curves[..., 0], 0.0)
  np.testing.assert_allclose(curves[..., -1], 1.0, atol=1e-6)
  rises = np.diff(curves, axis=-1)
  assert (rises > 0).all()
  # Rises drawn in [min, 1] and scaled by one factor: no rise below min x the largest.
  assert (rises.min(-1) >= input_spec.PATCH_HISTOGRAM_MIN_RISE * rises.max(-1) - 1e-6).all()
  assert len({tuple(np.round(c, 6)) for c in curves.reshape(-1, k)}) == n * 3
  x = _patches(n=n)
  x[0, 0, :3, 0] = [0.0, 1.0, 0.5]  # Ends and a control point.
  got = cpc_patches.remap(tf.constant(x), tf.constant(curves)).numpy()
  points = np.linspace(0.0, 1.0, k)
  for i in range(n):
    for c in range(3):
      np.testing.assert_allclose(got[i, ..., c], np.interp(x[i, ..., c], points, curves[i, c]),
                                 atol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_off_leaves_patches_and_on_changes_every_one(name):
  x = _patches()
  np.testing.assert_array_equal(_augment(x, **{name: 0.0}), x)
  on = _augment(x, **{name: 1.0})
  assert on.shape == x.shape and on.dtype == np.float32
  assert 0.0 <= on.min() and on.max() <= 1.0
  assert all(not np.array_equal(a, b) for a, b in zip(on, x))


def test_in_the_grid_they_are_the_numpy_ops_on_the_drawn_values():
  """At probability 1, alone: the grid's patches are the warp of the plain patches by the field
  of the op's seeds, or np.interp through its curves."""
  image = np.random.default_rng(2).uniform(0.05, 0.95, (16, 16, 3)).astype(np.float32)
  seed = tf.constant(SEED, tf.int64)

  def grid(**augment):
    g = input_spec.PatchGrid.from_settings(8, 4, augment, key="cpc")
    return cpc_patches.patch_grid(tf.constant(image), seed, g).numpy().reshape(9, 8, 8, 3)

  plain = grid()
  augment_seed = tf.random.experimental.stateless_split(seed, num=2)[1].numpy()
  np.testing.assert_allclose(grid(elastic=1.0), _numpy_warp(plain, _field(augment_seed, 9, 8)),
                             atol=1e-5)
  curves, points = _curves(augment_seed, 9), np.linspace(0.0, 1.0, 5)
  want = np.stack([np.stack([np.interp(plain[i, ..., c], points, curves[i, c])
                             for c in range(3)], -1) for i in range(9)])
  np.testing.assert_allclose(grid(color_histogram=1.0), want, atol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_deterministic_per_seed_and_a_draw_per_patch(name):
  one = _patches(n=1)
  x = np.repeat(one, 6, axis=0)  # Six identical patches.
  first, again = _augment(x, **{name: 1.0}), _augment(x, **{name: 1.0})
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, _augment(x, (5, 6), **{name: 1.0}))
  distinct = {first[i].tobytes() for i in range(6)}
  assert len(distinct) == 6


def _zeroed_and_grey(x):
  """Per patch: which channels colour dropping zeroed, and whether the patch is grey."""
  zeroed = (x == 0).all(axis=(1, 2))
  grey = np.isclose(x[..., 0], x[..., 1]).all((1, 2)) & np.isclose(x[..., 1], x[..., 2]).all(
      (1, 2))
  return zeroed, grey


def test_switching_a_new_op_on_leaves_the_other_draws():
  """The geometric ops alone: elastic on = the warp of what elastic off gives (flip and shear
  drew the same). The colour ops alone: histogram on = its remap of what it off gives. All on:
  the same patches turned grey and the same channels dropped."""
  x = _patches(n=12)
  geometric = dict(flip=0.5, shear=0.5)
  off = _augment(x, **geometric)
  np.testing.assert_allclose(_augment(x, elastic=1.0, **geometric),
                             _numpy_warp(off, _field(SEED, 12, 9)), atol=1e-5)
  colour = dict(color_jitter=0.5)
  off = _augment(x, **colour)
  curves = _curves(SEED, 12)
  got = _augment(x, color_histogram=1.0, **colour)
  points = np.linspace(0.0, 1.0, 5)
  for i in range(12):
    for c in range(3):
      np.testing.assert_allclose(got[i, ..., c], np.interp(off[i, ..., c], points, curves[i, c]),
                                 atol=1e-6)
  everything = dict(flip=0.5, shear=0.5, color_jitter=0.5, grayscale=0.5, color_drop=0.5)
  zeroed, grey = _zeroed_and_grey(_augment(x, **everything))
  assert zeroed.any() and grey.any() and not grey.all()
  for name in NEW:
    got_zeroed, got_grey = _zeroed_and_grey(_augment(x, **{name: 1.0}, **everything))
    np.testing.assert_array_equal(got_zeroed, zeroed, err_msg=name)
    np.testing.assert_array_equal(got_grey, grey, err_msg=name)


def test_true_picks_the_papers_rate_and_bad_rates_are_named():
  grid = input_spec.PatchGrid.from_settings(8, 4, {"elastic": True, "color_histogram": True})
  assert grid.elastic == 0.2 and grid.color_histogram == 0.2
  for name in NEW:
    for bad in (-0.1, 1.5, float("nan")):
      with pytest.raises(ValueError, match=rf"^cpc\.augment\.{name} is a probability"):
        input_spec.PatchGrid.from_settings(8, 4, {name: bad}, key="cpc")
