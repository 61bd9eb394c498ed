"""On-device SimCLR augmentation (contrastive_jax.augment_device): each op against a reference,
batched draws, sharding invariance, and a SimCLR step that augments on the device."""
import colorsys
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive_jax.ops import augment as ad
from contrastive_jax import presets, parallel
from tests.helpers import run_steps, tiny_simclr_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = ad.AugmentSpec(color_strength=1.0, blur_prob=0.5)  # every op switched on


def _images(n=4, size=12, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _views(key, images, spec=FULL, size=None):
  return np.asarray(jax.jit(lambda k, x: ad.simclr_views(k, x, spec, size=size))(key, images))


def test_importing_and_running_it_imports_no_tensorflow():
  code = ("import sys, jax, ml_collections\n"
          "import contrastive_jax.ops.augment as ad, contrastive_jax.methods.simclr\n"
          "from contrastive_jax import data, presets\n"
          "c = ml_collections.ConfigDict(dict(batch_size=8, seed=0))\n"
          "c.data = presets.data_config('digits'); c.data.image_size = 8\n"
          "c.augment = presets.augment_config('digits'); c.augment.on_device = True\n"
          "b = next(data.build_train_iterator(c, 'raw', process_index=0, "
          "process_count=1))\n"
          "assert b['image'].shape == (8, 8, 8, 3), b['image'].shape\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


def test_views_shape_range_determinism_and_independence():
  images = np.repeat(_images(1), 6, axis=0)  # one image six times
  v = _views(jax.random.key(0), images, size=10)
  assert v.shape == (6, 10, 10, 3) and v.dtype == np.float32
  assert v.min() >= 0.0 and v.max() <= 1.0
  np.testing.assert_array_equal(v, _views(jax.random.key(0), images, size=10))
  # Same pixels, different draws: no two examples' views coincide.
  flat = v.reshape(6, -1)
  assert min(np.abs(flat[i] - flat[j]).max() for i in range(6) for j in range(i)) > 1e-3
  v1, v2 = jax.jit(lambda k, x: ad.two_views(k, x, FULL))(jax.random.key(1), images)
  assert np.all(np.abs(np.asarray(v1) - np.asarray(v2)).reshape(6, -1).max(axis=1) > 1e-3)


def test_uint8_input_is_scaled_to_unit_range():
  images = (_images(2) * 255).round().astype(np.uint8)
  spec = ad.AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False,
                        color_prob=0.0, grayscale_prob=0.0)
  np.testing.assert_allclose(_views(jax.random.key(0), images, spec), images / 255.0,
                             atol=1e-6)


def test_full_crop_is_the_image_or_its_mirror():
  images = _images(8)
  spec = ad.AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_prob=0.0,
                        grayscale_prob=0.0)
  v = _views(jax.random.key(3), images, spec)
  same = np.all(np.isclose(v, images, atol=1e-6), axis=(1, 2, 3))
  mirrored = np.all(np.isclose(v, images[:, :, ::-1], atol=1e-6), axis=(1, 2, 3))
  assert np.all(same | mirrored) and same.any() and mirrored.any()


def test_crop_boxes_follow_scale_and_ratio():
  keys = jax.random.split(jax.random.key(0), 400)
  boxes = np.asarray(jax.vmap(lambda k: ad.crop_box(k, 64, 48, scale=(0.25, 0.5),
                                                    ratio=(3 / 4, 4 / 3)))(keys))
  y, x, h, w = boxes.T
  assert np.all((y >= 0) & (x >= 0) & (y + h <= 64) & (x + w <= 48))
  area = h * w / (64 * 48)
  assert 0.2 < area.min() and area.max() < 0.56 and 0.3 < area.mean() < 0.45
  assert 0.65 < (w / h).min() and (w / h).max() < 1.45
  assert len(np.unique(y)) > 10 and len(np.unique(x)) > 10  # positions vary per example


def _numpy_bicubic(image, y0, x0, ch, cw, size):
  """Crop then resize with Keys' cubic (a=-0.5), half-pixel centres, taps outside renormalised."""
  def weights(start, length):
    out = np.zeros((size, image.shape[0]))
    for o in range(size):
      src = start + (o + 0.5) * length / size - 0.5
      for t in range(int(np.floor(src)) - 1, int(np.floor(src)) + 3):
        if start <= t < start + length:
          d = abs(src - t)
          out[o, t] = (1.5 * d - 2.5) * d * d + 1 if d <= 1 else \
              ((-0.5 * d + 2.5) * d - 4) * d + 2 if d < 2 else 0
      out[o] /= out[o].sum()
    return out
  return np.einsum("oh,pw,hwc->opc", weights(y0, ch), weights(x0, cw), image)


def test_crop_and_resize_matches_a_numpy_bicubic_and_tensorflow():
  image = _images(1, 16)[0]
  for box, size in (((3, 2, 9, 11), 16), ((0, 4, 16, 12), 8), ((5, 5, 7, 7), 7)):
    got = np.asarray(ad.crop_and_resize(jnp.asarray(image), jnp.asarray(box, jnp.float32), size))
    np.testing.assert_allclose(got, _numpy_bicubic(image, *box, size), atol=1e-5)
  tf = pytest.importorskip("tensorflow")
  y0, x0, ch, cw = 3, 2, 9, 11
  ref = tf.image.resize(image[y0:y0 + ch, x0:x0 + cw], (16, 16), method="bicubic").numpy()
  got = ad.crop_and_resize(jnp.asarray(image), jnp.asarray([y0, x0, ch, cw], jnp.float32), 16)
  np.testing.assert_allclose(np.asarray(got), ref, atol=2e-3)  # TF tabulates the kernel


def test_brightness_contrast_grayscale_formulas():
  x = _images(1, 6)[0]
  np.testing.assert_allclose(ad.adjust_brightness(x, 0.1), x + 0.1, atol=1e-6)
  mean = x.mean(axis=(0, 1), keepdims=True)
  np.testing.assert_allclose(ad.adjust_contrast(jnp.asarray(x), 1.7), (x - mean) * 1.7 + mean,
                             atol=1e-6)
  luma = x @ np.array([0.2989, 0.5870, 0.1140])
  np.testing.assert_allclose(ad.to_grayscale(jnp.asarray(x)), np.repeat(luma[..., None], 3, -1),
                             atol=1e-6)


def _hsv_reference(x, fn):
  out = [colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*p))) for p in x.reshape(-1, 3)]
  return np.array(out).reshape(x.shape)


def test_hsv_saturation_and_hue_against_colorsys():
  x = np.concatenate([_images(1, 5)[0].reshape(-1, 3),
                      [[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.9]]])
  x = x.astype(np.float32)[None]  # [1, 29, 3]: a one-row image
  hsv = np.array([colorsys.rgb_to_hsv(*p) for p in x[0]])
  np.testing.assert_allclose(ad.rgb_to_hsv(jnp.asarray(x))[0], hsv, atol=1e-6)
  np.testing.assert_allclose(ad.hsv_to_rgb(ad.rgb_to_hsv(jnp.asarray(x))), x, atol=1e-6)
  np.testing.assert_allclose(ad.adjust_saturation(jnp.asarray(x), 1.5),
                             _hsv_reference(x, lambda h, s, v: (h, min(1.0, s * 1.5), v)),
                             atol=1e-5)
  for delta in (0.13, -0.37):
    np.testing.assert_allclose(ad.adjust_hue(jnp.asarray(x), delta),
                               _hsv_reference(x, lambda h, s, v: ((h + delta) % 1.0, s, v)),
                               atol=1e-5)


def test_blur_matches_a_numpy_convolution():
  image = _images(1, 12)[0]
  sigma, kernel = 1.3, 5
  t = np.arange(-2, 3)
  k = np.exp(-t**2 / (2 * sigma**2))
  k /= k.sum()
  conv = lambda v: np.convolve(v, k, mode="same")  # noqa: E731  (zero padding, symmetric k)
  ref = np.apply_along_axis(conv, 1, np.apply_along_axis(conv, 0, image))
  np.testing.assert_allclose(ad.gaussian_blur(jnp.asarray(image), sigma, kernel), ref, atol=1e-5)
  np.testing.assert_array_equal(ad.gaussian_blur(jnp.asarray(image), sigma, 1), image)


def test_colour_and_grayscale_probabilities():
  images = np.repeat(_images(1, 8), 200, axis=0)
  spec = ad.AugmentSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False)
  v = _views(jax.random.key(5), images, spec)
  grey = np.all(np.isclose(v[..., 0], v[..., 1], atol=1e-5), axis=(1, 2))
  untouched = np.all(np.isclose(v, images, atol=1e-5), axis=(1, 2, 3))
  assert 20 <= grey.sum() <= 60  # grayscale_prob 0.2
  assert 15 <= untouched.sum() <= 55  # (1 - color_prob) * (1 - grayscale_prob) = 0.16


def test_sharded_batch_augments_like_one_device():
  assert jax.config.jax_threefry_partitionable
  images = _images(16, 8)
  fn = jax.jit(lambda k, x: ad.two_views(k, x, FULL))
  ref = fn(jax.random.key(7), images)
  mesh = parallel.make_mesh(8)
  sharded = jax.device_put(images, NamedSharding(mesh, P(parallel.DATA_AXIS)))
  got = fn(jax.random.key(7), sharded)
  for r, g in zip(ref, got):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-6)


def test_spec_from_config_reads_every_key():
  """Every field comes from the config: each is set to a value no default has."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  aug = presets.augment_config("imagenet2012")
  values = dict(crop_scale=(0.2, 0.9), crop_ratio=(0.5, 1.5), flip=False, color_strength=0.3,
                color_prob=0.6, grayscale_prob=0.35, blur_prob=0.25, blur_sigma=(0.3, 1.7),
                blur_kernel_frac=0.2, crop="torchvision", brightness="additive")
  assert set(values) == {f.name for f in dataclasses.fields(ad.AugmentSpec)}
  aug.update(values)
  spec = ad.AugmentSpec.from_config(aug)
  for name, value in values.items():
    assert getattr(spec, name) == value, name
    assert getattr(ad.AugmentSpec(), name) != value, name
  assert "on_device" in aug and not aug.on_device


def _simclr_step_losses(num_devices, steps):
  config = tiny_simclr_config(**{"optim.name": "adamw", "optim.base_lr": 3e-3})
  config.augment = presets.augment_config("digits")
  # Mild augmentation of images whose only content is a coarse colour layout, so that a tiny
  # encoder learns within a few steps.
  config.augment.update(on_device=True, crop_scale=(0.8, 1.0), color_strength=0.25,
                        grayscale_prob=0.0)
  coarse = np.repeat(np.repeat(np.random.default_rng(0).uniform(size=(16, 2, 2, 3)), 4, 1), 4, 2)
  batch = {"image": (coarse * 255).astype(np.uint8), "label": np.zeros(16, np.int32)}
  _, history = run_steps(config, num_devices, [batch] * steps, steps)
  return [float(m["loss"]) for m in history]


@pytest.fixture(scope="module")
def one_device_losses():
  return _simclr_step_losses(1, 12)


def test_simclr_step_with_device_augmentation_learns(one_device_losses):
  losses = one_device_losses
  assert all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses


def test_simclr_step_with_device_augmentation_on_8_devices_matches_1(one_device_losses):
  np.testing.assert_allclose(_simclr_step_losses(8, 2), one_device_losses[:2], rtol=1e-5)


def test_simclr_rejects_host_augmented_batches_when_on_device():
  from contrastive_jax.methods import get_method  # pylint: disable=g-import-not-at-top
  config = tiny_simclr_config()
  config.augment = ml_collections.ConfigDict({"on_device": True})
  with pytest.raises(ValueError, match="on_device"):
    get_method(config).device_views({"view1": None, "view2": None}, jax.random.key(0))
