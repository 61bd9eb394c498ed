"""SimCLR's augmentation as the reference code draws it (google-research/simclr, tf2/data_util.py):
the crop sampler on the host and on the device against `tf.image.sample_distorted_bounding_box`
called with the reference's arguments, brightness factors read back from constant images, and
on-device crops of a non-square image that reach all of it."""
import functools

import jax
import ml_collections
import numpy as np
import pytest

from contrastive_jax import presets
from contrastive_jax.ops import augment as ad
from contrastive_jax.ops import crops

tf = pytest.importorskip("tensorflow")

from contrastive_jax.data import augment, transforms  # noqa: E402

DRAWS = 2000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SHAPES = ((32, 32), (24, 40))  # CIFAR, and a non-square image wider than 4:3


@functools.lru_cache
def _reference_boxes(h, w, n=DRAWS, seed=1):
  """(y, x, h, w) of n crops from the reference's call of the stateful TF op."""
  tf.random.set_seed(seed)

  @tf.function(autograph=False)
  def draw():
    return tf.map_fn(one, tf.range(n), fn_output_signature=tf.int32)

  def one(_):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        [h, w, 3], bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=100, use_image_if_no_bounding_boxes=True)
    return tf.concat([begin[:2], size[:2]], 0)
  try:
    return draw().numpy().astype(np.float64)
  finally:
    # The global seed is process-wide: later tests in this process (references built
    # in-process against fresh subprocesses) must see TensorFlow as it starts.
    tf.random.set_seed(None)


def _area_and_aspect(boxes, h, w):
  return (np.quantile(boxes[:, 2] * boxes[:, 3] / (h * w), QUANTILES),
          np.quantile(boxes[:, 3] / boxes[:, 2], QUANTILES))


def _assert_same_distribution(boxes, reference, h, w):
  area, aspect = _area_and_aspect(boxes, h, w)
  ref_area, ref_aspect = _area_and_aspect(reference, h, w)
  # 2,000 draws: a quantile's sampling error is about 0.01 (area) and 0.01 (aspect).
  np.testing.assert_allclose(area, ref_area, atol=0.035)
  np.testing.assert_allclose(aspect, ref_aspect, atol=0.035)
  assert (boxes[:, 2] * boxes[:, 3] >= 0.1 * h * w).all()  # min_object_covered
  assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= h).all()
  assert (boxes[:, 1] + boxes[:, 3] <= w).all()


@pytest.mark.parametrize("h,w", SHAPES)
def test_host_crops_match_sample_distorted_bounding_box(h, w):
  seeds = tf.random.experimental.stateless_split(tf.constant([3, 4], tf.int64), DRAWS)

  def one(seed):
    begin, size = augment.inception_crop_box(tf.constant([h, w, 3]), seed, scale=(0.08, 1.0),
                                          ratio=(3 / 4, 4 / 3))
    return tf.concat([begin[:2], size[:2]], 0)
  draw = tf.function(lambda: tf.map_fn(one, seeds, fn_output_signature=tf.int32),
                     autograph=False)
  boxes = draw().numpy().astype(np.float64)
  _assert_same_distribution(boxes, _reference_boxes(h, w), h, w)


def test_host_view_crops_the_sampled_box():
  image = tf.constant(np.random.default_rng(0).uniform(size=(24, 40, 3)).astype(np.float32))
  seed = tf.constant([5, 6], tf.int64)
  begin, size = augment.inception_crop_box(tf.shape(image), seed, scale=(0.08, 1.0),
                                        ratio=(3 / 4, 4 / 3))
  expected = tf.image.resize(tf.slice(image, begin, size), (16, 16), method="bicubic")
  got = augment.random_resized_crop(image, seed, size=16, scale=(0.08, 1.0),
                                    ratio=(3 / 4, 4 / 3))
  np.testing.assert_array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("h,w", SHAPES)
def test_device_crops_match_sample_distorted_bounding_box(h, w):
  keys = jax.random.split(jax.random.key(0), DRAWS)
  sample = jax.jit(jax.vmap(lambda k: crops.inception_box(k, h, w, scale=(0.08, 1.0),
                                                       ratio=(3 / 4, 4 / 3))))
  boxes = np.asarray(sample(keys), np.float64)
  np.testing.assert_array_equal(boxes, np.round(boxes))  # whole pixels
  _assert_same_distribution(boxes, _reference_boxes(h, w), h, w)


def test_device_crops_fall_back_to_the_whole_image():
  # No crop of a 10 x 100 strip has an aspect in [3/4, 4/3] and covers 90% of it.
  box = jax.jit(lambda k: crops.inception_box(k, 10, 100, scale=(0.9, 1.0),
                                           ratio=(3 / 4, 4 / 3)))(jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(box), [0, 0, 10, 100])
  begin, size = augment.inception_crop_box(tf.constant([10, 100, 3]), tf.constant([0, 0]),
                                        scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
  np.testing.assert_array_equal(np.concatenate([begin[:2], size[:2]]), [0, 0, 10, 100])


def _colour_only(brightness, strength=0.5):
  a = presets.augment_config("cifar10")
  a.update(brightness=brightness, color_strength=strength, color_prob=1.0, grayscale_prob=0.0,
           flip=False)
  return a


BRIGHTNESS = {  # strength 0.5: 0.8s = 0.4
    "multiplicative": (lambda out, c: out / c, (0.6, 1.4)),
    "additive": (lambda out, c: out - c, (-0.4, 0.4)),
}


def _check_factors(factors, brightness):
  _, (lo, hi) = BRIGHTNESS[brightness]
  assert lo - 1e-4 <= factors.min() and factors.max() <= hi + 1e-4
  # Uniform over [lo, hi]: its quantiles, within the sampling error of a few hundred draws.
  np.testing.assert_allclose(np.quantile(factors, QUANTILES),
                             [lo + q * (hi - lo) for q in QUANTILES], atol=0.06)


@pytest.mark.parametrize("brightness", sorted(BRIGHTNESS))
def test_brightness_factors_read_back_from_constant_images(brightness):
  """Contrast, saturation and hue leave a constant grey image unchanged, so a SimCLR view of
  one with colour jitter always on shows the brightness draw alone (no clip at grey 0.4)."""
  c, n = 0.4, 400
  read = BRIGHTNESS[brightness][0]
  aug = _colour_only(brightness)
  grey = np.full((8, 8, 3), c, np.float32)
  seeds = tf.random.experimental.stateless_split(tf.constant([7, 8], tf.int64), n)
  draw = tf.function(lambda: tf.map_fn(
      lambda s: augment.simclr_view(tf.constant(grey), s, aug, size=8), seeds,
      fn_output_signature=tf.float32))
  host = draw().numpy()
  spec = ad.AugmentSpec.from_config(aug)
  device = np.asarray(jax.jit(lambda k, x: ad.simclr_views(k, x, spec))(
      jax.random.key(0), np.repeat(grey[None], n, 0)))
  for views in (host, device):
    assert np.ptp(views.reshape(n, -1), axis=1).max() < 1e-5  # still constant per view
    _check_factors(read(views[:, 0, 0, 0], c), brightness)


def _raw_config(image_size, raw_size=0):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("cifar10")
  c.data.image_size = image_size
  c.augment = presets.augment_config("cifar10")
  c.augment.update(on_device=True, raw_size=raw_size)
  return c


def test_raw_view_sends_the_whole_image_downscaled_only_to_fit():
  image = tf.constant(np.random.default_rng(0).uniform(size=(30, 60, 3)).astype(np.float32))
  out = transforms.raw_view(image, tf.constant(0), None, _raw_config(16, raw_size=40))
  assert out["image"].shape == (40, 40, 3) and out["image"].dtype == tf.uint8
  np.testing.assert_array_equal(out["hw"].numpy(), [20, 40])
  assert not out["image"].numpy()[20:].any() and out["image"].numpy()[:20].any()
  small = transforms.raw_view(image[:10, :12], tf.constant(0), None, _raw_config(16))
  np.testing.assert_array_equal(small["hw"].numpy(), [10, 12])  # never upscaled
  np.testing.assert_array_equal(small["image"].numpy()[:10, :12],
                                np.round(image.numpy()[:10, :12] * 255))


def test_device_views_of_a_non_square_image_reach_every_edge():
  """A 20 x 36 ramp image (x in red, y in green, blue 1 marks image pixels) through the host's
  raw view and the device's views: crops come from the whole image and never from padding."""
  h, w, n = 20, 36, 400
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  ramp = np.stack([xx, yy, np.ones_like(xx)], -1).astype(np.float32)
  raw = transforms.raw_view(tf.constant(ramp), tf.constant(0), None, _raw_config(16, 36))
  canvas, hw = raw["image"].numpy(), raw["hw"].numpy()
  assert canvas.shape == (36, 36, 3) and list(hw) == [h, w]
  spec = ad.AugmentSpec(flip=False, color_prob=0.0, grayscale_prob=0.0)
  views = np.asarray(jax.jit(lambda k, x, v: ad.simclr_views(k, x, spec, size=16, hw=v))(
      jax.random.key(1), np.repeat(canvas[None], n, 0), np.repeat(hw[None], n, 0)))
  assert views[..., 2].min() > 0.98  # no padding in any view
  x_seen, y_seen = views[..., 0], views[..., 1]
  # Every edge of the image appears in some view. TF's sampler (and so the reference) places a
  # crop against the far edge of an axis only when it spans that axis, which no crop of this
  # wide image does along x: the right edge is reached to within one source pixel.
  assert x_seen.min() < 0.5 / w and x_seen.max() > (w - 2.5) / (w - 1)
  assert y_seen.min() < 0.5 / h and y_seen.max() > 1 - 0.5 / h
  keys = jax.random.split(jax.random.key(1), n)
  for crop, right in (("inception", w - 1), ("torchvision", w)):
    boxes = np.asarray(jax.jit(jax.vmap(lambda k, c=crop: crops.crop_box(
        k, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), crop=c)))(keys))
    assert boxes[:, 0].min() == 0 and boxes[:, 1].min() == 0, crop
    assert (boxes[:, 0] + boxes[:, 2]).max() == h, crop
    assert (boxes[:, 1] + boxes[:, 3]).max() == right, crop


def test_supervised_crops_use_the_valid_region_and_output_size():
  canvas = np.zeros((4, 24, 24, 3), np.float32)
  canvas[:, :12, :20] = 1.0
  hw = np.tile(np.array([[12, 20]], np.int32), (4, 1))
  for crop in crops.CROPS:
    fn = jax.jit(lambda k, x, v, c=crop: ad.random_resized_crop_flip(k, x, crop=c, size=8, hw=v))
    out = np.asarray(fn(jax.random.key(0), canvas, hw))
    assert out.shape == (4, 8, 8, 3) and out.min() > 0.99, crop


@pytest.mark.parametrize("key,value", [("crop", "torchvison"), ("brightness", "additve"),
                                       ("raw_size", -1)])
def test_bad_convention_values_are_named(key, value):
  from contrastive_jax.data import checks  # pylint: disable=g-import-not-at-top
  config = _raw_config(16)
  config.augment[key] = value
  with pytest.raises(ValueError, match=f"config.augment.{key}"):
    checks.check_values(config)


def test_center_crops_take_the_centre_square_of_the_valid_region():
  canvas = np.zeros((1, 24, 24, 3), np.float32)
  canvas[0, :12, :20] = np.linspace(0, 1, 20)[None, :, None]  # a ramp along x, 12 x 20
  out = np.asarray(jax.jit(lambda x, v: ad.center_crops(x, size=12, hw=v))(
      canvas, np.array([[12, 20]], np.int32)))
  np.testing.assert_allclose(out[0], canvas[0, :12, 4:16], atol=1e-5)
