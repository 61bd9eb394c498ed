"""The wide ResNet (models/wide_resnet.py) against FixMatch's network written out with lax ops,
its parameter count against a formula, config.model.arch, and drop-path/dropout in both
encoders: off by default and at inference, per example in training, loud without a key."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import presets
from contrastive_jax.models import factory, resnet
from contrastive_jax.models.classifier import Classifier
from contrastive_jax.models.wide_resnet import WideResNet
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERVISED = os.path.join(ROOT, "configs", "supervised.py")


@functools.partial(jax.jit, static_argnums=0)
def _call(graphdef, state, images, rng):
  return nnx.merge(graphdef, state)(images, rng=rng)


def _run(model, images, rng=None):
  """model(images, rng=rng), compiled (once per model structure) rather than op by op."""
  return _call(*nnx.split(model), images, rng)


def _expected_params(depth: int, k: int, classes: int) -> int:
  """Trainable parameters of WRN-depth-k plus a linear head, summed layer by layer: 3x3 convs
  without bias, BatchNorm scale and offset, 1x1 projections where the width changes."""
  n = (depth - 4) // 6
  total, c_in = 3 * 3 * 3 * 16, 16  # stem
  for c_out in (16 * k, 32 * k, 64 * k):
    for _ in range(n):
      total += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out
      total += c_in * c_out if c_in != c_out else 0
      c_in = c_out
  return total + 2 * c_in + c_in * classes + classes  # final norm, head


def _count(depth, width, classes=10):
  model = nnx.eval_shape(lambda: Classifier(WideResNet(depth, width=width, rngs=nnx.Rngs(0)),
                                            classes, rngs=nnx.Rngs(1)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("depth, width", [(28, 2), (10, 1), (16, 4), (40, 2)])
def test_parameter_count(depth, width):
  assert _count(depth, width) == _expected_params(depth, width, 10)


def test_wrn_28_2_has_the_quoted_1_47m_parameters():
  assert _count(28, 2) == 1_467_610 == _expected_params(28, 2, 10)


def _reference(p: dict, images: jax.Array, depth: int, k: int) -> jax.Array:
  """FixMatch's libml/models.py ResNet.classifier (train mode, batch statistics, epsilon 1e-3,
  leaky ReLU 0.1), written out with lax ops on the model's parameters."""
  def conv(x, kernel, stride=1):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)

  def bn(x, q):
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    return (x - mean) / jnp.sqrt(var + 1e-3) * q["scale"] + q["bias"]

  def act(x):
    return jnp.where(x > 0, x, 0.1 * x)

  blocks = iter(p["blocks"][i] for i in sorted(p["blocks"]))

  def residual(x0, filters, stride=1, activate_before_residual=False):
    q = next(blocks)
    x = act(bn(x0, q["norm1"]))
    if activate_before_residual:
      x0 = x
    x = conv(x, q["conv1"]["kernel"], stride)
    x = act(bn(x, q["norm2"]))
    x = conv(x, q["conv2"]["kernel"])
    if x0.shape[3] != filters:
      x0 = conv(x0, q["shortcut"]["kernel"], stride)
    return x0 + x

  y = conv((images - 0.5) / 0.25, p["stem"]["kernel"])
  for scale in range(3):
    filters = (16 * k) << scale
    y = residual(y, filters, stride=2 if scale else 1, activate_before_residual=scale == 0)
    for _ in range((depth - 4) // 6 - 1):
      y = residual(y, filters)
  return act(bn(y, p["final_norm"])).mean((1, 2))


@pytest.mark.parametrize("depth, width", [(10, 1), (16, 2)])
def test_forward_is_fixmatch_network(depth, width):
  """(10, 1): the first block keeps 16 channels, so its identity shortcut carries the activated
  input; (16, 2): projections from the activated (first group) and raw (later groups) input,
  and identity shortcuts of the raw input."""
  model = WideResNet(depth, width=width, rngs=nnx.Rngs(0))
  params = _perturb(model)  # Norm parameters away from 1 and 0, so none can be misplaced.
  images = jax.random.uniform(jax.random.key(1), (6, 8, 8, 3))
  got = _run(model, images)
  assert got.shape == (6, 64 * width) and got.dtype == jnp.float32
  want = jax.jit(_reference, static_argnums=(2, 3))(params, images, depth, width)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_bfloat16_computes_in_bfloat16_and_pools_to_float32():
  model = WideResNet(10, width=1, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x = jnp.zeros((2, 8, 8, 3))
  graphdef, state = nnx.split(model)
  fmap = jax.eval_shape(lambda s: nnx.merge(graphdef, s).feature_map(x), state)
  assert fmap.dtype == jnp.bfloat16 and fmap.shape == (2, 2, 2, 64)
  assert _run(model, x).dtype == jnp.float32 and model.out_features == 64


def test_cross_replica_batch_norm_sees_the_whole_batch():
  """With axis_name, BatchNorm statistics are averaged over the named axis: two groups of 3
  give what one batch of 6 gives."""
  images = jax.random.uniform(jax.random.key(2), (6, 8, 8, 3))
  want = _run(WideResNet(10, width=1, rngs=nnx.Rngs(0)), images)
  graphdef, state = nnx.split(WideResNet(10, width=1, axis_name="data", rngs=nnx.Rngs(0)))
  got = jax.jit(jax.vmap(lambda s, x: nnx.merge(graphdef, s)(x), in_axes=(None, 0),
                         axis_name="data"))(state, images.reshape(2, 3, 8, 8, 3))
  np.testing.assert_allclose(got.reshape(6, -1), want, rtol=1e-4, atol=1e-5)


def _model_config(**overrides):
  c = presets.base_config()
  c.model = presets.model_config(**overrides)
  return c


def test_factory_builds_the_configured_arch():
  wrn = factory.build_encoder(_model_config(arch="wide_resnet", depth=10, width=1.0),
                              nnx.Rngs(0))
  assert isinstance(wrn, WideResNet) and wrn.out_features == 64
  assert isinstance(factory.build_encoder(_model_config(depth=10, width=0.125), nnx.Rngs(0)),
                    resnet.ResNet)
  # A config written before config.model.arch existed builds the ResNet it built then.
  old = _model_config(depth=10, width=0.125)
  for key in ("arch", "drop_path", "dropout"):
    del old.model[key]
  assert isinstance(factory.build_encoder(old, nnx.Rngs(0)), resnet.ResNet)


@pytest.mark.parametrize("overrides, match", [
    (dict(arch="vit"), r"Unknown config.model.arch 'vit'; valid: resnet, wide_resnet"),
    (dict(arch="wide_resnet", depth=27), r"6n \+ 4 .* config.model.depth=27"),
    (dict(arch="wide_resnet", depth=28, stem="imagenet"), r"config.model.stem='cifar'"),
    (dict(depth=18, dropout=0.1), r"config.model.dropout=0.1: .*wide ResNet"),
    (dict(arch="wide_resnet", depth=10, drop_path=1.0), r"config.model.drop_path=1.0"),
])
def test_bad_model_config_is_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    factory.build_encoder(_model_config(**overrides), nnx.Rngs(0))


def test_wide_resnet_trains_in_the_supervised_method():
  config = helpers.parse_config("config", SUPERVISED, "tiny", "--config.model.arch=wide_resnet",
                                "--config.model.depth=10", "--config.model.width=1.0",
                                "--config.supervised.num_classes=10",
                                "--config.supervised.zero_init=False")
  config.unlock()
  rng = np.random.default_rng(1)
  batch = {"image": rng.uniform(size=(16, 8, 8, 3)).astype(np.float32),
           "label": rng.integers(0, 10, 16).astype(np.int32)}
  state, history = helpers.run_steps(config, 1, [batch] * 8, 8)
  assert set(state.params["encoder"]) == {"stem", "blocks", "final_norm"}
  assert history[-1]["loss"] < history[0]["loss"] - 0.3, [h["loss"] for h in history]


# Drop-path and dropout.


def _perturb(model, seed=3):
  """Every parameter moved by noise: the ResNet's zero-initialised last norm of each block would
  otherwise silence its branch, and drop-path with it."""
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(seed), x.shape),
                        nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  nnx.update(model, params)
  return params


def _pair(arch, **rates):
  """(model with `rates`, the same parameters without them)."""
  build = {"resnet": lambda **r: resnet.ResNet(10, width=0.125, stem="cifar", rngs=nnx.Rngs(0),
                                               **r),
           "wrn": lambda **r: WideResNet(10, width=1, rngs=nnx.Rngs(0), **r)}[arch]
  noisy, plain = build(**rates), build()
  _perturb(noisy)
  _perturb(plain)
  return noisy, plain


@pytest.mark.parametrize("arch, rates", [("resnet", dict(drop_path=0.3)),
                                         ("wrn", dict(drop_path=0.3)),
                                         ("wrn", dict(dropout=0.3))])
def test_rates_act_in_training_only_and_need_a_key(arch, rates):
  images = jax.random.uniform(jax.random.key(4), (8, 8, 8, 3))
  noisy, plain = _pair(arch, **rates)
  want = _run(plain, images)
  # Rate 0: a key changes nothing, so every call site without one is as before.
  np.testing.assert_array_equal(_run(plain, images, jax.random.key(0)), want)
  with pytest.raises(ValueError, match=rf"config.model.{next(iter(rates))} > 0 needs a random "):
    _run(noisy, images)
  a = _run(noisy, images, jax.random.key(0))
  np.testing.assert_array_equal(a, _run(noisy, images, jax.random.key(0)))
  assert not np.allclose(a, want) and not np.allclose(a, _run(noisy, images, jax.random.key(1)))
  noisy.eval()
  plain.eval()
  np.testing.assert_array_equal(_run(noisy, images), _run(plain, images))
  np.testing.assert_array_equal(_run(noisy, images, jax.random.key(0)), _run(plain, images))


def test_drop_path_rates_grow_linearly_to_the_last_block():
  model = resnet.ResNet(18, width=0.125, stem="cifar", drop_path=0.2, rngs=nnx.Rngs(0))
  np.testing.assert_allclose([b.drop_path for b in model.blocks],
                             [0.2 * (i + 1) / 8 for i in range(8)])
  wrn = WideResNet(16, width=1, drop_path=0.3, rngs=nnx.Rngs(0))
  np.testing.assert_allclose([b.drop_path for b in wrn.blocks], [0.05 * (i + 1) for i in range(6)])


def test_drop_path_drops_whole_branches_per_example():
  """A wide block with an identity shortcut: each example's output is its input (branch
  dropped) or input + branch / (1 - q) (kept), dropped at the block's rate q."""
  p, n = 0.45, 512
  block = WideResNet(16, width=1, drop_path=p, rngs=nnx.Rngs(0)).blocks[3]
  q = block.drop_path  # Block 4 of 6: 32 -> 32 channels, stride 1, raw-input shortcut.
  assert np.isclose(q, p * 4 / 6) and block.shortcut is None
  x = jax.random.normal(jax.random.key(5), (n, 4, 4, 32))
  out = np.asarray(block(x, jax.random.key(6)))
  block.drop_path = 0.0
  branch = np.asarray(block(x)) - np.asarray(x)
  dropped = np.all(np.isclose(out, x, atol=1e-6), axis=(1, 2, 3))
  kept = np.all(np.isclose(out, x + branch / (1 - q), rtol=1e-4, atol=1e-4), axis=(1, 2, 3))
  assert np.all(dropped ^ kept)
  # The dropped share within 5 binomial standard deviations of q.
  assert abs(dropped.mean() - q) < 5 * np.sqrt(q * (1 - q) / n)
