"""Host-side CPC patch augmentation (TensorFlow): grid, determinism, and each switch."""
import jax.numpy as jnp
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contrastive_jax import input_spec  # noqa: E402
from contrastive_jax.data import patches as cpc_patches  # noqa: E402
from contrastive_jax.models.cpc import extract_patches  # noqa: E402

_OFF = {"spatial_jitter": 0, "flip": 0.0, "color_jitter": 0.0, "grayscale": 0.0,
        "color_drop": 0.0}
_ON = {"spatial_jitter": 2, "flip": 0.5, "color_jitter": 0.5, "grayscale": 0.25,
       "color_drop": 0.5}


def _config(patch=8, stride=4, **augment):
  return input_spec.PatchGrid.from_settings(patch, stride, {**_OFF, **augment}, key="cpc")


def _image(seed=0, size=(32, 32)):
  # Strictly inside (0, 1), so a zeroed channel is unambiguous.
  rng = np.random.default_rng(seed)
  return rng.uniform(0.05, 0.95, size=(*size, 3)).astype(np.float32)


def _run(image, config, seed=(1, 2)):
  fn = tf.function(lambda im, s: cpc_patches.patch_grid(im, s, config))
  return fn(tf.constant(image), tf.constant(seed, tf.int64)).numpy()


def test_all_off_equals_device_extraction():
  image = _image(size=(32, 28))
  got = _run(image, _config())
  want = np.asarray(extract_patches(jnp.asarray(image)[None], 8, 4))[0]
  assert got.shape == (7, 6, 8, 8, 3) and got.dtype == np.float32
  np.testing.assert_array_equal(got, want)


def test_all_on_shape_range_and_determinism():
  image = _image()
  config = _config(**_ON)
  first, again = _run(image, config, (3, 4)), _run(image, config, (3, 4))
  other = _run(image, config, (5, 6))
  assert first.shape == (7, 7, 8, 8, 3) and first.dtype == np.float32
  assert first.min() >= 0.0 and first.max() <= 1.0
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_bools_switch_defaults_on_and_off():
  grid = _config(flip=True, grayscale=False, color_drop=True)
  assert grid.flip == 0.5 and grid.grayscale == 0.0
  assert grid.color_drop == 1.0 and grid.spatial_jitter == 0


@pytest.mark.parametrize("key", sorted(_ON))
def test_each_augmentation_alone_changes_the_patches(key):
  image = _image(1)
  plain = _run(image, _config())
  got = _run(image, _config(**{key: _ON[key]}))
  assert got.shape == plain.shape and 0.0 <= got.min() and got.max() <= 1.0
  assert not np.array_equal(got, plain)


def test_flip_grayscale_and_color_drop_do_what_they_say():
  image = _image(2)
  plain = _run(image, _config())
  np.testing.assert_array_equal(_run(image, _config(flip=1.0)), plain[:, :, :, ::-1])
  grey = _run(image, _config(grayscale=1.0))
  np.testing.assert_allclose(grey[..., 0], grey[..., 1])
  np.testing.assert_allclose(grey[..., 0], grey[..., 2])
  dropped = _run(image, _config(color_drop=1.0))
  kept = (dropped != 0).all(axis=(2, 3))  # [Gh, Gw, 3]: which channel survived per patch.
  assert (kept.sum(-1) == 1).all() and len(set(np.argmax(kept, -1).ravel())) > 1
  np.testing.assert_array_equal(dropped, plain * kept[:, :, None, None, :])


def test_spatial_jitter_moves_each_patch_within_bounds():
  image, jitter = _image(3), 2
  got = _run(image, _config(spatial_jitter=jitter))
  padded = np.pad(image, [(jitter, jitter), (jitter, jitter), (0, 0)], mode="reflect")
  shifts = set()
  for i in range(7):
    for j in range(7):
      matches = [(dy, dx) for dy in range(-jitter, jitter + 1) for dx in range(-jitter, jitter + 1)
                 if np.array_equal(got[i, j], padded[i * 4 + jitter + dy:i * 4 + jitter + dy + 8,
                                                     j * 4 + jitter + dx:j * 4 + jitter + dx + 8])]
      assert matches, f"patch {(i, j)} is no shifted window of the image"
      shifts.update(matches)
  assert len(shifts) > 1


def test_bad_config_names_keys():
  with pytest.raises(ValueError, match=r"cpc\.patch_size"):
    _run(_image(), _config(patch=40))
  with pytest.raises(ValueError, match=r"cpc\.augment\.flip"):
    _run(_image(), _config(flip=1.5))
  with pytest.raises(ValueError, match=r"cpc\.augment\.spatial_jitter"):
    _run(_image(), _config(spatial_jitter=-1))
