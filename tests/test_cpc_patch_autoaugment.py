"""CPC v2's two AutoAugment operations per patch, on the accelerator (methods/cpc_v2.py): the
draws, a draw per patch through ops/randaugment.py, the enhance factors above 1 against PIL, the
config key, and the method's loss with them on."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image, ImageEnhance

from contrastive_jax import parallel
from contrastive_jax import step as step_lib
from contrastive_jax.methods import cpc_v2
from contrastive_jax.methods.base import LossContext
from contrastive_jax.ops import randaugment
from tests.test_cpc_method import _config

NAMES = tuple(cpc_v2.AUTOAUGMENT_RANGES)
SHAPE = (2, 3, 3, 8, 8, 3)  # One patch-grid shape throughout: one compilation.
# Jitted: eagerly, every op of every draw would dispatch on its own.
_augment = jax.jit(cpc_v2.autoaugment_patches, static_argnums=2)


def _grid(seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=SHAPE), jnp.float32)


def test_the_ops_are_autoaugments_less_invert_cutout_and_sample_pairing():
  autoaugment = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast",
                 "Invert", "Equalize", "Solarize", "Posterize", "Contrast", "Color",
                 "Brightness", "Sharpness", "Cutout", "SamplePairing"}
  assert set(NAMES) == autoaugment - {"Invert", "Cutout", "SamplePairing"}
  assert set(NAMES) == set(randaugment.OPS) - {"Identity"}


def test_policy_draws_ops_uniformly_and_magnitudes_from_autoaugments_ranges():
  index, magnitude = jax.device_get(cpc_v2.autoaugment_policy(jax.random.key(0), 6500, 2))
  assert index.shape == magnitude.shape == (6500, 2)
  k = len(NAMES)
  counts = np.bincount(index.ravel(), minlength=k)
  expected = index.size / k
  # Binomial counts: 6 standard deviations from the uniform mean would fail by chance ~1e-9.
  assert np.all(np.abs(counts - expected) < 6 * math.sqrt(expected * (1 - 1 / k))), counts
  for i, name in enumerate(NAMES):
    low, high = cpc_v2.AUTOAUGMENT_RANGES[name]
    m = magnitude[index == i]
    assert m.min() >= low and m.max() <= high, name
    if name == "Posterize":
      assert set(np.unique(m)) == {4, 5, 6, 7, 8}
    elif high > low:
      q = np.quantile(m, [0.25, 0.5, 0.75])
      np.testing.assert_allclose(q, low + (high - low) * np.array([0.25, 0.5, 0.75]),
                                 atol=0.06 * (high - low), err_msg=name)
  # Enhance factors on both sides of 1, as AutoAugment's: they weaken and strengthen.
  enhance = magnitude[index == NAMES.index("Contrast")]
  assert (enhance < 0.5).any() and (enhance > 1.5).any()


def test_each_patch_is_apply_policy_of_its_own_draw():
  patches, key = _grid(), jax.random.key(1)
  got = np.asarray(_augment(key, patches, 2))
  assert got.shape == patches.shape and got.dtype == np.float32
  assert got.min() >= 0.0 and got.max() <= 1.0
  spec = randaugment.RandAugmentSpec(num_ops=2, ops=NAMES, cutout=0.0)
  want = jax.jit(lambda k, x: randaugment.apply_policy(
      x, *cpc_v2.autoaugment_policy(k, 18, 2), spec))(key, patches.reshape(18, 8, 8, 3))
  np.testing.assert_array_equal(got, np.asarray(want).reshape(SHAPE))
  np.testing.assert_array_equal(np.asarray(_augment(key, patches, 2)), got)
  assert not np.array_equal(np.asarray(_augment(jax.random.key(2), patches, 2)), got)
  assert cpc_v2.autoaugment_patches(key, patches, 0) is patches


def test_a_draw_per_patch_and_no_patch_sees_another():
  same = jnp.broadcast_to(_grid()[0, 0, 0], SHAPE)  # 18 identical patches.
  got = np.asarray(_augment(jax.random.key(3), same, 2)).reshape(18, -1)
  # Equal results need equal draws or two no-op pairs; 18 patches give at least 16 results.
  assert len({row.tobytes() for row in got}) >= 16
  patches = _grid(4)
  other = patches.at[1, 0, 2].set(1.0 - patches[1, 0, 2])
  a = np.asarray(_augment(jax.random.key(5), patches, 2))
  b = np.asarray(_augment(jax.random.key(5), other, 2))
  changed = ~np.all(a == b, axis=(3, 4, 5))
  assert changed.sum() == 1 and changed[1, 0, 2]


@pytest.mark.parametrize("name", ["Brightness", "Color", "Contrast", "Sharpness"])
@pytest.mark.parametrize("factor", [1.3, 1.9])
def test_enhance_factors_above_one_match_pil(name, factor):
  """ops/randaugment.py's tests reach factors up to 0.95; AutoAugment's go to 1.9, where the
  blend extrapolates and clips. Ours x 255 - PIL lies in [0, 1] (PIL truncates to a level)."""
  a = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  ours = np.asarray(randaugment.OPS[name].fn(jnp.asarray(a, jnp.float32) / 255.0,
                                             jnp.float32(factor)), np.float64) * 255.0
  want = np.asarray(getattr(ImageEnhance, name)(Image.fromarray(a)).enhance(factor), np.float64)
  diff = ours - want
  assert diff.min() >= -1e-3 and diff.max() <= 1 + 1e-3, (diff.min(), diff.max())


@pytest.mark.parametrize("value", [-1, 1.5, "two"])
def test_a_bad_count_is_named_before_compute(value):
  config = _config()
  config.cpc.augment = dict(config.cpc.augment, autoaugment_ops=value)
  with pytest.raises(ValueError, match=r"^config\.cpc\.augment\.autoaugment_ops="):
    cpc_v2.CPCv2(config).validate()


def test_true_is_the_papers_two_and_absent_is_off():
  config = _config()
  assert cpc_v2.CPCv2(config).autoaugment_ops() == 0
  config.cpc.augment = dict(config.cpc.augment, autoaugment_ops=True)
  assert cpc_v2.CPCv2(config).autoaugment_ops() == 2


def test_the_loss_runs_with_two_ops_per_patch_in_training_only():
  """The method's loss, jitted on two devices with the tiny model: finite, another value than
  without the operations for the same parameters and patches, and the same in evaluation
  (train=False), where nothing is augmented."""
  mesh = parallel.make_mesh(2)
  grid = np.random.default_rng(7).uniform(size=(8, 3, 3, 8, 8, 3)).astype(np.float32)
  patches = parallel.shard_batch({"p": grid}, mesh)["p"]
  # Initialised by the jitted init of the train step: eager initialisation takes seconds.
  plain = cpc_v2.CPCv2(_config())
  defs, state = step_lib.model_defs(plain), step_lib.create_train_state(plain, optax.identity(),
                                                                        0, mesh)
  losses = {}
  for ops, train in ((0, True), (2, True), (2, False)):
    config = _config()
    config.cpc.augment = dict(config.cpc.augment, autoaugment_ops=ops)
    method = cpc_v2.CPCv2(config)
    method.validate()
    ctx = LossContext(mesh=mesh, train=train)

    def loss(s, p, k, m=method, c=ctx):
      return m.loss(defs.merge(s, train=True), {"patches": p}, k, c)[0]

    losses[ops, train] = float(jax.jit(loss)(state, patches, jax.random.key(0)))
  assert all(np.isfinite(v) for v in losses.values()), losses
  assert losses[2, True] != losses[0, True], losses
  assert losses[2, False] == losses[0, True], losses
