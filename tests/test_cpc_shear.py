"""The per-patch shear of CPC v2's augmentations (TensorFlow, host side) against NumPy."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contrastive_jax import input_spec  # noqa: E402
from contrastive_jax.data import patches as cpc_patches  # noqa: E402


def _numpy_shear(x, amount, along_x):
  """out[y, c] = in[y, c + amount * (y - centre)] (along x; the transpose along y), the border
  mirrored with its edge pixel repeated, for shifts that land on whole pixels."""
  size = x.shape[0]
  centre = (size - 1) / 2
  if not along_x:
    return _numpy_shear(x.transpose(1, 0, 2), amount, True).transpose(1, 0, 2)
  padded = np.pad(x, [(0, 0), (size, size), (0, 0)], mode="symmetric")
  out = np.empty_like(x)
  for y in range(size):
    shift = amount * (y - centre)
    assert shift == int(shift)
    out[y] = padded[y, size + int(shift):2 * size + int(shift)]
  return out


@pytest.mark.parametrize("interpolation", ["BILINEAR", "NEAREST"])
def test_shear_matches_numpy_on_whole_pixel_shifts(interpolation):
  # 9 px patches: the centre is pixel 4, so amounts of +-1 and +-0.5 (on even rows) move rows
  # by whole pixels, where bilinear and nearest agree with the plain shift.
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(4, 9, 9, 3)).astype(np.float32)
  amount = np.array([1.0, -1.0, 1.0, -2.0], np.float32)
  along_x = np.array([True, True, False, False])
  got = cpc_patches.shear(tf.constant(x), tf.constant(amount), tf.constant(along_x),
                          interpolation).numpy()
  for i in range(4):
    np.testing.assert_allclose(got[i], _numpy_shear(x[i], amount[i], along_x[i]), atol=1e-6)


def test_shear_switch_in_the_grid():
  """shear=1 changes every patch, the same way for the same seed and another for another seed;
  True is the paper's rate; a rate outside [0, 1] is named."""
  image = np.random.default_rng(1).uniform(0.05, 0.95, size=(24, 24, 3)).astype(np.float32)

  def run(p, seed=(1, 2)):
    grid = input_spec.PatchGrid.from_settings(8, 8, {"shear": p}, key="cpc")
    return cpc_patches.patch_grid(tf.constant(image), tf.constant(seed, tf.int64), grid).numpy()

  plain, sheared = run(0.0), run(1.0)
  assert not any(np.array_equal(a, b) for a, b in zip(plain.reshape(9, -1),
                                                      sheared.reshape(9, -1)))
  np.testing.assert_array_equal(sheared, run(1.0))
  assert not np.array_equal(sheared, run(1.0, (3, 4)))
  assert input_spec.PatchGrid.from_settings(8, 8, {"shear": True}).shear == 0.2
  with pytest.raises(ValueError, match=r"cpc\.augment\.shear"):
    input_spec.PatchGrid.from_settings(8, 8, {"shear": 2.0}, key="cpc")
