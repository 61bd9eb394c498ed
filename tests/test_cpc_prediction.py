"""CPC v2's prediction settings (the paper's appendix pseudo-code): skipped offsets, scaled
predictions, summed per-offset losses and projected targets against NumPy; its PixelCNN context
against a transcription of the pseudo-code, and still blind to the future at several sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import cpc_v2 as cpc_config
from contrastive_jax.losses.info_nce import cpc_info_nce, orient
from contrastive_jax.methods.cpc_v2 import CPCv2
from contrastive_jax.models import cpc
from tests import helpers


def _image_coords(direction, r, c, gh, gw):
  return {"down": (r, c), "up": (gh - 1 - r, c), "right": (c, r),
          "left": (c, gw - 1 - r)}[direction]


def _numpy_loss(z, predictions, skip, scale, reduction):
  """The pseudo-code's loss: per (direction, k = skip + 1 ..), the mean over positions of
  -log softmax(scale * z_hat . every patch); then the sum (the pseudo-code's `loss +=`) or the
  mean over the (direction, k) segments."""
  z = np.asarray(z, np.float64)
  b, gh, gw, d = z.shape
  keys = z.reshape(-1, d)
  segments = []
  for direction, z_hats in predictions.items():
    for j, z_hat in enumerate(z_hats):
      k = skip + 1 + j
      z_hat = scale * np.asarray(z_hat, np.float64)
      losses = []
      for image in range(b):
        for r in range(z_hat.shape[1]):
          for c in range(z_hat.shape[2]):
            i, jj = _image_coords(direction, r + k, c, gh, gw)
            logits = keys @ z_hat[image, r, c]
            log_norm = logits.max() + np.log(np.exp(logits - logits.max()).sum())
            losses.append(log_norm - logits[(image * gh + i) * gw + jj])
      segments.append(np.mean(losses))
  return np.sum(segments) if reduction == "sum" else np.mean(segments)


def _inputs(seed, b, gh, gw, d, skip, k, directions):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, gh, gw, d)).astype(np.float32)
  predictions = {}
  for direction in directions:
    rows, cols = orient(np.zeros((1, gh, gw)), direction).shape[1:]
    predictions[direction] = [rng.normal(size=(b, rows - o, cols, d)).astype(np.float32)
                              for o in range(skip + 1, k + 1)]
  return z, predictions


@pytest.mark.parametrize("b,gh,gw,d,skip,k,directions,scale,reduction", [
    (2, 6, 6, 4, 2, 3, ("down",), 0.1, "sum"),  # The paper's offsets on its 6x6 grid.
    (2, 6, 6, 4, 2, 3, ("down", "up", "right", "left"), 0.1, "sum"),
    (3, 5, 4, 3, 1, 3, ("down", "right"), 2.0, "mean"),
    (2, 4, 4, 5, 0, 2, ("up",), 1.0, "sum"),
])
def test_loss_options_match_numpy(b, gh, gw, d, skip, k, directions, scale, reduction):
  z, predictions = _inputs(0, b, gh, gw, d, skip, k, directions)
  loss, metrics = jax.jit(lambda z, p: cpc_info_nce(
      z, p, skip_offsets=skip, prediction_scale=scale, offset_reduction=reduction))(
          z, predictions)
  np.testing.assert_allclose(loss, _numpy_loss(z, predictions, skip, scale, reduction),
                             rtol=1e-5)
  assert set(metrics) == {"loss", "accuracy", *(f"accuracy_k{o}" for o in range(skip + 1,
                                                                                 k + 1))}


def test_bad_loss_options_name_the_key():
  z, predictions = _inputs(0, 1, 4, 4, 3, 0, 1, ("down",))
  with pytest.raises(ValueError, match=r"cpc\.offset_reduction.*'mean', 'sum'"):
    cpc_info_nce(z, predictions, offset_reduction="max")
  with pytest.raises(ValueError, match="shape"):  # Offset 1's predictions read as offset 2's.
    cpc_info_nce(z, predictions, skip_offsets=1)


def _pixelcnn_reference(block, x):
  """The pseudo-code's block in lax ops, from the block's parameters."""
  def conv(h, layer, padding):
    out = jax.lax.conv_general_dilated(h, layer.kernel[...], (1, 1), padding,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision=jax.lax.Precision.HIGHEST)
    return out + layer.bias[...]
  h = jax.nn.relu(conv(x, block.conv1, "VALID"))
  h = conv(h, block.conv2, "SAME")
  h = jnp.pad(h, ((0, 0), (1, 0), (0, 0), (0, 0)))  # Pad([[0, 0], [1, 0], [0, 0], [0, 0]])
  h = jax.nn.relu(conv(h, block.conv3, "VALID"))
  return x + conv(h, block.conv4, "VALID")


def test_pixelcnn_block_is_the_pseudo_code():
  block = cpc.PixelCNNBlock(6, 5, rngs=nnx.Rngs(0))
  for layer in (block.conv1, block.conv2, block.conv3, block.conv4):  # Non-zero biases.
    layer.bias[...] = jax.random.normal(jax.random.key(1), layer.bias.shape)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 4, 6)), jnp.float32)
  np.testing.assert_allclose(block(x), _pixelcnn_reference(block, x), rtol=1e-5, atol=1e-5)


def _row_dependence(jac, z, direction):
  out_rank = jac.ndim - z.ndim
  per_out_row = jnp.abs(jac).sum(axis=(0, *range(2, out_rank)))
  turned = jax.vmap(lambda g: orient(g, direction))(per_out_row)
  return np.asarray(turned.sum(axis=(1, 3, 4)))


@pytest.mark.parametrize("context,hidden,layers,direction", [
    ("pixelcnn", 4, 1, "down"),
    ("pixelcnn", 16, 3, "left"),
    ("pixelcnn", 8, 5, "up"),  # The paper's depth.
    ("residual", 8, 3, "right"),
])
def test_context_cannot_see_the_future(context, hidden, layers, direction):
  """Every size of either context: c(i) sees rows <= i and does see row i and those above;
  z_hat_k (k > skip) at row r sees rows <= r; targets (projected z) see their own patch."""
  rngs = nnx.Rngs(0)
  encoder = helpers.SmallConvEncoder(3, (8, 8), rngs=rngs)
  model = cpc.CPCModel(encoder, embed_dim=8, context_dim=hidden, context_layers=layers,
                       num_offsets=3, skip_offsets=1, target_dim=4, context=context,
                       directions=(direction,), rngs=rngs)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5, 8)), jnp.float32)

  def outputs(z):
    c = model.context[direction](orient(z, direction))
    return (c, *model.heads[direction](c))

  context_jac, *prediction_jacs = jax.jit(jax.jacfwd(outputs))(z)
  assert len(prediction_jacs) == 2  # k = 2, 3.
  dep = _row_dependence(context_jac, z, direction)
  for i in range(dep.shape[0]):
    assert np.all(dep[i, i + 1:] == 0.0), f"row {i} sees rows {np.nonzero(dep[i, i + 1:])}"
    assert dep[i, i] > 0 and (i == 0 or dep[i, :i].max() > 0)
  for jac in prediction_jacs:
    dep = _row_dependence(jac, z, direction)
    for r in range(dep.shape[0]):
      assert np.all(dep[r, r + 1:] == 0.0) and dep[r, r] > 0
  assert np.all(np.asarray(context_jac[0, ..., 1, :, :, :]) == 0.0)  # Nor other images.


def test_model_with_the_paper_settings_feeds_the_loss():
  """Projected targets of target_dim channels, predictions for k = 3 only, and the loss of the
  model's outputs equal to the NumPy loss of those outputs."""
  rngs = nnx.Rngs(0)
  encoder = helpers.SmallConvEncoder(3, (8, 8), rngs=rngs)
  model = cpc.CPCModel(encoder, embed_dim=8, context_dim=6, context_layers=2, num_offsets=3,
                       skip_offsets=2, target_dim=4, context="pixelcnn",
                       directions=("down", "right"), rngs=rngs)
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 20, 20, 3)), jnp.float32)
  patches = cpc.extract_patches(images, 8, 3)  # 5 x 5 grid.
  targets, predictions = model(patches)
  z = model.embed(patches)
  np.testing.assert_allclose(targets, model.target_proj(z), rtol=1e-6)
  assert targets.shape == (2, 5, 5, 4)
  assert {d: [p.shape for p in ps] for d, ps in predictions.items()} == {
      "down": [(2, 2, 5, 4)], "right": [(2, 2, 5, 4)]}
  loss, _ = cpc_info_nce(targets, predictions, skip_offsets=2, prediction_scale=0.1,
                         offset_reduction="sum")
  np.testing.assert_allclose(loss, _numpy_loss(targets, predictions, 2, 0.1, "sum"), rtol=1e-5)


@pytest.mark.parametrize("key,value,match", [
    ("skip_offsets", 3, r"config\.cpc\.skip_offsets=3.*\[0, config\.cpc\.num_offsets - 1 = 2\]"),
    ("context", "gru", r"config\.cpc\.context='gru'.*'residual', 'pixelcnn'"),
    ("target_dim", -1, r"config\.cpc\.target_dim=-1"),
    ("prediction_scale", 0.0, r"config\.cpc\.prediction_scale=0\.0"),
    ("offset_reduction", "max", r"config\.cpc\.offset_reduction='max'"),
])
def test_validate_names_the_key(key, value, match):
  config = cpc_config.get_config("imagenet2012")
  config.cpc[key] = value
  with pytest.raises(ValueError, match=match):
    CPCv2(config).validate()


def test_imagenet_preset_has_the_paper_settings():
  config = cpc_config.get_config("imagenet2012")
  CPCv2(config).validate()
  assert (config.model.arch, config.model.depth) == ("resnet_v2", 161)
  c = config.cpc
  assert (c.target_dim, c.prediction_scale, c.skip_offsets, c.num_offsets) == (64, 0.1, 2, 3)
  assert (c.context, c.context_dim, c.context_layers) == ("pixelcnn", 256, 5)


@pytest.mark.parametrize("preset,patch,jitter", [
    ("imagenet2012", 80, 10), ("cifar10", 8, 1), ("cifar10_folder", 8, 1), ("stl10", 24, 3)])
def test_spatial_jitter_is_the_papers_share_of_the_patch(preset, patch, jitter):
  # The paper jitters 80 px patches by up to 10 px; smaller patches keep that share.
  c = cpc_config.get_config(preset).cpc
  assert (c.patch_size, c.augment.spatial_jitter) == (patch, jitter)
