"""SimCLR augmentations (contrastive_jax.data.augment): range, shape, determinism, each op."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contrastive_jax import presets  # noqa: E402
from contrastive_jax.data import augment  # noqa: E402


def _image(h=24, w=20, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(h, w, 3)).astype(np.float32))


def _seed(a, b=0):
  return tf.constant([a, b], tf.int64)


def _aug(**overrides):
  a = presets.augment_config("imagenet2012")  # every op switched on
  a.update(overrides)
  return a


def _view(image, seed, aug, size=16):
  return augment.simclr_view(image, seed, aug, size=size).numpy()


def test_view_shape_range_and_determinism():
  image = _image()
  v = _view(image, _seed(1), _aug())
  assert v.shape == (16, 16, 3) and v.dtype == np.float32
  assert v.min() >= 0.0 and v.max() <= 1.0
  np.testing.assert_array_equal(v, _view(image, _seed(1), _aug()))
  assert not np.allclose(v, _view(image, _seed(2), _aug()))


def test_colour_and_grayscale_are_applied_with_their_probabilities():
  image = _image(16, 16)
  aug = _aug(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, blur_prob=0.0)
  views = np.stack([_view(image, _seed(i), aug) for i in range(100)])
  grey = np.all(np.isclose(views[..., 0], views[..., 1], atol=1e-5), axis=(1, 2))
  untouched = np.all(np.isclose(views, image.numpy(), atol=1e-5), axis=(1, 2, 3))
  assert 8 <= grey.sum() <= 35  # grayscale_prob 0.2
  assert 5 <= untouched.sum() <= 35  # (1 - color_prob) * (1 - grayscale_prob) = 0.16


def test_full_crop_without_colour_is_image_or_its_mirror():
  image = _image(16, 16)
  aug = _aug(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_prob=0.0,
             grayscale_prob=0.0)
  outs = [_view(image, _seed(i), aug) for i in range(8)]
  img = image.numpy()
  for o in outs:
    assert np.allclose(o, img, atol=1e-5) or np.allclose(o, img[:, ::-1], atol=1e-5)
  assert any(np.allclose(o, img[:, ::-1], atol=1e-5) for o in outs)
  assert any(np.allclose(o, img, atol=1e-5) for o in outs)


def test_random_resized_crop_area_and_ratio():
  # A crop of a coordinate image tells us which pixels were taken: check its area fraction.
  h = w = 64
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  coords = tf.constant(np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.float32))
  fractions = []
  for i in range(50):
    crop = augment.random_resized_crop(coords, _seed(i), size=64, scale=(0.25, 0.5),
                                       ratio=(3 / 4, 4 / 3)).numpy()
    ch = crop[..., 0].max() - crop[..., 0].min() + 1
    cw = crop[..., 1].max() - crop[..., 1].min() + 1
    fractions.append(ch * cw / (h * w))
    assert 0.6 < cw / ch < 1.6
  assert 0.2 < min(fractions) and max(fractions) < 0.6


def test_color_jitter_zero_strength_is_identity_and_stays_in_range():
  image = _image()
  np.testing.assert_allclose(augment.color_jitter(image, _seed(3), 0.0).numpy(), image.numpy(),
                             atol=1e-5)
  out = augment.color_jitter(image, _seed(3), 1.0).numpy()
  assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, image.numpy())


def test_grayscale_and_blur():
  image = _image()
  g = augment.to_grayscale(image).numpy()
  assert g.shape == image.shape and np.allclose(g[..., 0], g[..., 2])
  blurred = augment.gaussian_blur(image, _seed(0), kernel_size=5, sigma=(1.0, 2.0)).numpy()
  # Blur averages neighbours: noise loses most of its variance in the interior.
  assert blurred[3:-3, 3:-3].std() < 0.6 * image.numpy()[3:-3, 3:-3].std()
  same = augment.gaussian_blur(image, _seed(0), kernel_size=1, sigma=(1.0, 2.0)).numpy()
  np.testing.assert_array_equal(same, image.numpy())


def test_center_crop_resize_non_square_and_fraction():
  image = _image(40, 20)
  out = augment.center_crop_resize(image, 16).numpy()
  assert out.shape == (16, 16, 3) and out.min() >= 0 and out.max() <= 1
  # Fraction 0.5 resizes the shorter side to 32 and keeps the central 16: a 2x zoom.
  ramp = tf.constant(np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None],
                             (32, 1, 3)))
  full = augment.center_crop_resize(ramp, 32, 1.0).numpy()
  np.testing.assert_allclose(full, ramp.numpy(), atol=1e-5)
  zoom = augment.center_crop_resize(ramp, 16, 0.5).numpy()
  np.testing.assert_allclose(zoom, ramp.numpy()[8:24, 8:24], atol=1e-5)


def test_uint8_and_float_inputs_agree():
  pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  a = augment.to_float01(tf.constant(pixels)).numpy()
  b = augment.to_float01(tf.constant(pixels.astype(np.float32) / 255)).numpy()
  np.testing.assert_allclose(a, b, atol=1e-6)



def test_blur_is_applied_with_blur_prob():
  # 32 px: the kernel is 10% of the size, 3 taps (at 16 px it would be 1 tap, a no-op).
  image = _image(32, 32)
  plain = _aug(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, color_prob=0.0,
               grayscale_prob=0.0, blur_prob=0.0)
  blurred = _aug(**{**plain.to_dict(), "blur_prob": 1.0})
  np.testing.assert_allclose(_view(image, _seed(0), plain, 32), image.numpy(), atol=1e-5)
  out = _view(image, _seed(0), blurred, 32)
  assert out[4:-4, 4:-4].std() < 0.9 * image.numpy()[4:-4, 4:-4].std()
