"""Array sources read with numpy alone (data/arrays.py) give the pixels TensorFlow's ops give:
the bicubic and bilinear resizes, the evaluation crop, and whole evaluation splits."""
import ml_collections
import numpy as np
import pytest

from contrastive_jax import data, presets
from contrastive_jax.data import arrays

tf = pytest.importorskip("tensorflow")

SHAPES = [(8, 8, 16, 16), (32, 32, 36, 36), (10, 12, 8, 8), (96, 96, 32, 32), (7, 9, 20, 13),
          (5, 5, 5, 5), (3, 50, 70, 2)]


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", SHAPES)
def test_resize_matches_tf_image_resize(method, shape):
  h, w, out_h, out_w = shape
  x = np.random.default_rng(h * w).uniform(size=(2, h, w, 3)).astype(np.float32)
  ref = tf.image.resize(x, [out_h, out_w], method=method).numpy()
  np.testing.assert_allclose(arrays.resize(x, (out_h, out_w), method), ref, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("hw,size,fraction", [((32, 32), 32, 1.0), ((32, 32), 24, 0.875),
                                              ((40, 30), 16, 1.0), ((12, 20), 32, 0.9)])
def test_center_crop_resize_matches_the_pipeline_op(dtype, hw, size, fraction):
  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(3, *hw, 3)).astype(np.uint8)
  if dtype == np.float32:
    x = x.astype(np.float32) / 255.0
  ref = np.stack([augment.center_crop_resize(augment.to_float01(tf.constant(img)), size,
                                             fraction).numpy() for img in x])
  out = arrays.center_crop_resize(x, size, fraction)
  assert out.shape == (3, size, size, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, ref, atol=2e-6)


def _config(source, **data_overrides):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("digits")
  c.data.update(source=source, **data_overrides)
  c.augment = presets.augment_config("digits")
  c.batch_size, c.seed = 8, 0
  return c


def test_eval_arrays_equal_the_tf_data_pipeline(tmp_path):
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  path = tmp_path / "x.npz"
  np.savez(path, images=rng.integers(0, 256, size=(20, 12, 10, 3), dtype=np.uint8),
           labels=rng.integers(0, 4, size=20))
  cases = [_config("npz", path=str(path), image_size=8, eval_crop_fraction=0.875),
           _config("digits", image_size=12, eval_crop_fraction=0.9),
           _config("digits", image_size=16)]
  for config in cases:
    x, y = data.load_arrays(config, config.data.eval_split or "train")
    ref_x, ref_y = pipeline.load_arrays(config, config.data.eval_split or "train")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(x, ref_x, atol=2e-6)


def test_digits_pixels_are_tf_bilinear_resizes():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  raw = datasets.load_digits().images.astype(np.float32) / 16.0
  for size in (16, 6):
    digits = arrays.Digits(size)
    x, y = digits.arrays("train")
    idx = digits._index["train"]  # pylint: disable=protected-access
    ref = tf.image.resize(np.repeat(raw[idx][..., None], 3, -1), [size, size],
                          method="bilinear").numpy()
    np.testing.assert_allclose(x, np.clip(ref, 0, 1), atol=1e-6)
    assert x.shape == (len(y), size, size, 3) and len(y) == 1437


def test_npz_errors_are_raised_without_tensorflow_code(tmp_path):
  path = tmp_path / "bad.npz"
  np.savez(path, images=np.zeros((4, 5, 5, 3), np.float32) + 2.0, labels=np.arange(4))
  with pytest.raises(ValueError, match="float images must lie in"):
    arrays.Npz(str(path), None, ("train",))
  np.savez(path, images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 2, 7]))
  with pytest.raises(ValueError, match="Label 7 out of range"):
    arrays.Npz(str(path), 3, ("train",)).arrays("train")
