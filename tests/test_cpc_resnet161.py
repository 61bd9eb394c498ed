"""ResNet-161 (CPC v2's encoder): its size against the paper's description, and the
pre-activation block against a transcription in lax ops (at a tiny width: never the full net)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from contrastive_jax.models import factory
from contrastive_jax.models.resnet_v2 import PreActResNet

# Hénaff et al. (2020), section 4.1: ResNet-v2-101's first two stacks unchanged, its third stack
# widened to 46 blocks with 512-d bottlenecks and a 4096-d output. Written out here, not read
# from the model's table.
PAPER_STACKS = ((3, 64, 256), (4, 128, 512), (46, 512, 4096))
# The size later papers' comparison tables give for CPC v2's ResNet-161 (SimCLR Table 6, BYOL
# Table 1): 305M, rounded.
REPORTED_PARAMS = 305e6


def _count_formula(stacks, in_channels=3, stem=64, norm_params_per_channel=2):
  """Parameters of a pre-activation bottleneck trunk with LayerNorm (scale and bias) and
  bias-free convolutions: 7x7 stem; per block norms on (in, mid, mid), convs 1x1 in->mid,
  3x3 mid->mid, 1x1 mid->out, a 1x1 projection where the width changes; a final norm."""
  total = 7 * 7 * in_channels * stem
  features = stem
  for count, mid, out in stacks:
    for _ in range(count):
      total += norm_params_per_channel * (features + 2 * mid)
      total += features * mid + 9 * mid * mid + mid * out
      if features != out:
        total += features * out
      features = out
  return total + norm_params_per_channel * features


def _params(model):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_resnet161_size_and_features_match_the_paper():
  """Counted without allocating (abstract shapes only): the formula exactly, the reported size
  to within 1%, and a 4096-d feature from an 80 px patch."""
  model = nnx.eval_shape(lambda: PreActResNet(161, norm="layer", rngs=nnx.Rngs(0)))
  count = _params(model)
  assert count == _count_formula(PAPER_STACKS)
  assert abs(count - REPORTED_PARAMS) / REPORTED_PARAMS < 0.01, count
  assert model.out_features == 4096 and len(model.blocks) == 53
  # 161 layers: 53 blocks of three convolutions, the stem and a classifier on top.
  assert 3 * len(model.blocks) + 2 == 161
  patch = jax.ShapeDtypeStruct((2, 80, 80, 3), jnp.float32)
  build = lambda: PreActResNet(161, norm="layer", rngs=nnx.Rngs(0))  # noqa: E731
  assert jax.eval_shape(lambda x: build().feature_map(x), patch).shape == (2, 5, 5, 4096)
  assert jax.eval_shape(lambda x: build()(x), patch).shape == (2, 4096)


def _conv(x, kernel, stride=1):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def _layer_norm(x, scale, bias, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps) * scale + bias


def _reference(params, x, stacks):
  """He et al. (2016) full pre-activation, from the parameter tree alone."""
  x = (x - 0.5) / 0.25
  x = _conv(x, params["stem"]["kernel"])  # No norm or ReLU: the first block's pre-activation.
  features, i = None, 0
  for s, (count, _, _) in enumerate(stacks):
    for b in range(count):
      p = params["blocks"][i]
      stride = 2 if s > 0 and b == 0 else 1
      act = lambda h, n, p=p: jax.nn.relu(  # noqa: E731
          _layer_norm(h, p["norms"][n]["scale"], p["norms"][n]["bias"]))
      pre = act(x, 0)
      shortcut = x if p["shortcut"] is None else _conv(pre, p["shortcut"]["kernel"], stride)
      h = _conv(pre, p["convs"][0]["kernel"])
      h = _conv(act(h, 1), p["convs"][1]["kernel"], stride)
      h = _conv(act(h, 2), p["convs"][2]["kernel"])
      x = shortcut + h
      i += 1
    features = x
  out = jax.nn.relu(_layer_norm(features, params["final_norm"]["scale"],
                                params["final_norm"]["bias"]))
  return out.mean(axis=(1, 2))


def test_tiny_forward_matches_pre_activation_reference():
  """ResNet-101's three stacks at 1/16 width on 16 px images, against the lax transcription."""
  model = PreActResNet(101, width=1 / 16, stem="cifar", norm="layer", rngs=nnx.Rngs(3))
  # Random norm parameters, so a swapped scale or bias would show.
  state = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda v: jnp.asarray(v + 0.1 * rng.normal(size=v.shape), v.dtype),
                       state)
  nnx.update(model, state)
  params = nnx.to_pure_dict(state)
  params["blocks"] = [params["blocks"][i] for i in range(len(model.blocks))]
  for p in params["blocks"]:
    p["norms"] = [p["norms"][n] for n in range(3)]
    p["convs"] = [p["convs"][n] for n in range(3)]
    p.setdefault("shortcut", None)
  images = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)
  stacks = ((3, 4, 16), (4, 8, 32), (23, 16, 64))
  got = nnx.jit(lambda m, x: m(x))(model, images)
  want = jax.jit(_reference, static_argnums=2)(params, images, stacks)
  assert got.shape == (2, 64)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_factory_builds_it_from_the_config_and_names_bad_depths():
  config = ml_collections.ConfigDict(dict(
      dtype="float32", model=dict(arch="resnet_v2", depth=161, width=1.0, stem="imagenet",
                                  norm="batch", bn_momentum=0.9)))
  model = nnx.eval_shape(lambda: factory.build_encoder(config, nnx.Rngs(0), norm="layer"))
  assert isinstance(model, PreActResNet) and model.out_features == 4096
  assert isinstance(model.final_norm, nnx.LayerNorm)  # CPC's norm overrides config.model.norm.
  config.model.depth = 50
  with pytest.raises(ValueError, match=r"config\.model\.depth.*resnet_v2.*\[101, 161\]"):
    factory.build_encoder(config, nnx.Rngs(0))
  config.model.arch = "resnet_v3"
  with pytest.raises(ValueError, match=r"resnet_v2"):
    factory.build_encoder(config, nnx.Rngs(0))
