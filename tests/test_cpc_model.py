"""CPC model: patch grid, a context network that cannot see the future, and the full forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from contrastive_jax.losses.info_nce import DIRECTIONS, orient
from contrastive_jax.models import cpc
from tests import helpers


@pytest.mark.parametrize("shape,patch,stride,grid", [
    ((2, 32, 32, 3), 8, 4, (7, 7)),
    ((1, 20, 28, 1), 8, 6, (3, 4)),  # Trailing (28 - 8) % 6 = 2 columns fall outside the grid.
    ((1, 260, 260, 3), 80, 36, (6, 6)),  # The paper's ImageNet recipe.
])
def test_extract_patches_equals_slicing(shape, patch, stride, grid):
  images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
  patches = np.asarray(cpc.extract_patches(jnp.asarray(images), patch, stride))
  assert patches.shape == (shape[0], *grid, patch, patch, shape[-1])
  for i in range(grid[0]):
    for j in range(grid[1]):
      want = images[:, i * stride:i * stride + patch, j * stride:j * stride + patch]
      np.testing.assert_array_equal(patches[:, i, j], want)


def test_grid_size_names_config_keys():
  with pytest.raises(ValueError, match=r"cpc\.patch_size.*32x32"):
    cpc.grid_size((32, 32), 40, 4)
  with pytest.raises(ValueError, match=r"cpc\.patch_size.*cpc\.patch_stride"):
    cpc.grid_size((32, 32), 8, 30)  # A single patch per side predicts nothing.
  with pytest.raises(ValueError, match=r"cpc\.patch_stride"):
    cpc.grid_size((32, 32), 8, 0)


def _model(directions, norm="layer", num_offsets=2, context_layers=2):
  # Widths all 8, so few distinct parameter shapes: eager init compiles one program per shape.
  rngs = nnx.Rngs(0)
  encoder = helpers.SmallConvEncoder(3, (8, 8), norm=norm, rngs=rngs)
  return cpc.CPCModel(encoder, embed_dim=8, context_dim=8, context_layers=context_layers,
                      num_offsets=num_offsets, directions=directions, rngs=rngs)


def _row_dependence(jac, z, direction):
  """dep[r, s] = total |d out[:, r] / d z| over the inputs in oriented row s."""
  out_rank = jac.ndim - z.ndim
  per_out_row = jnp.abs(jac).sum(axis=(0, *range(2, out_rank)))  # [R_out, *z.shape]
  turned = jax.vmap(lambda g: orient(g, direction))(per_out_row)  # [R_out, B, R, C, D]
  return np.asarray(turned.sum(axis=(1, 3, 4)))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_context_cannot_see_the_future(direction):
  """In the oriented frame c(i, j) sees rows <= i (and does see rows < i); z_hat_k likewise."""
  model = _model((direction,))
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4, 8)), jnp.float32)

  def outputs(z):
    c = model.context[direction](orient(z, direction))
    return (c, *model.heads[direction](c))

  # Forward mode: jit(jacrev) of LayerNorm is miscompiled by XLA:CPU's YNN reduce fusion in
  # jaxlib 0.10.2 (jax-ml/jax#39103), which shows up here as false leaks from the future.
  context_jac, *prediction_jacs = jax.jit(jax.jacfwd(outputs))(z)
  dep = _row_dependence(context_jac, z, direction)
  for i in range(dep.shape[0]):
    assert np.all(dep[i, i + 1:] == 0.0), f"row {i} sees rows {np.nonzero(dep[i, i + 1:])}"
    assert dep[i, i] > 0
    if i > 0:
      assert dep[i, :i].max() > 0
  for jac in prediction_jacs:  # z_hat_k at row r comes from context row r, targets row r + k.
    dep = _row_dependence(jac, z, direction)
    for r in range(dep.shape[0]):
      assert np.all(dep[r, r + 1:] == 0.0) and dep[r, r] > 0
  # Nor does one image's context see another image.
  assert np.all(np.asarray(context_jac[0, ..., 1, :, :, :]) == 0.0)
  assert np.abs(np.asarray(context_jac[0, ..., 0, :, :, :])).max() > 0


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_forward_shapes_loss_and_features(norm):
  model = _model(("down", "right"), norm=norm, num_offsets=3)
  images = jnp.asarray(np.random.default_rng(4).uniform(size=(4, 32, 28, 3)), jnp.float32)

  @nnx.jit
  def step(model, images):
    patches = cpc.extract_patches(images, 8, 4)  # 7 x 6 grid.
    z, predictions = model(patches)
    loss_and_metrics, grads = nnx.value_and_grad(
        lambda m: helpers.cpc_loss(m, patches), has_aux=True)(model)
    shapes = {"z": z.shape, **{d: [p.shape for p in ps] for d, ps in predictions.items()}}
    return loss_and_metrics, grads, shapes, model.features(images, 8, 4)

  (loss, metrics), grads, shapes, features = step(model, images)
  assert np.isfinite(loss) and set(metrics) >= {"loss", "accuracy", "accuracy_k3"}
  leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  assert shapes["z"] == (4, 7, 6, 8)
  assert shapes["down"] == [(4, 7 - k, 6, 8) for k in (1, 2, 3)]
  assert shapes["right"] == [(4, 6 - k, 7, 8) for k in (1, 2, 3)]
  assert features.shape == (4, 8)


def test_forward_values_follow_the_definitions():
  """z(i, j) is the encoder on patch (i, j) alone, mean-pooled; z_hat_k = W_k c on the rows that
  have a target; the features are z averaged over the grid."""
  model = _model(("down",), norm="layer", num_offsets=2)
  images = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 16, 16, 3)), jnp.float32)
  patches = cpc.extract_patches(images, 8, 4)  # 3 x 3 grid.
  z, predictions = model(patches)
  alone = model.patch_encoder.encoder(patches[:, 1, 2])  # [B, h, w, D] of one patch
  np.testing.assert_allclose(z[:, 1, 2], alone.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  c = model.context["down"](z)
  for k, z_hat in enumerate(predictions["down"], start=1):
    want = model.heads["down"].heads[k - 1](c[:, :3 - k])
    np.testing.assert_allclose(z_hat, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.features(images, 8, 4), z.mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)


def test_bad_model_config_raises():
  with pytest.raises(ValueError, match=r"cpc\.directions"):
    _model(("down", "diagonal"))
  with pytest.raises(ValueError, match=r"cpc\.num_offsets"):
    _model(("down",), num_offsets=0)
  with pytest.raises(ValueError, match=r"cpc\.norm"):
    helpers.SmallConvEncoder(3, (8, 8), norm="instance", rngs=nnx.Rngs(0))
  heads = cpc.PredictionHeads(6, 8, num_offsets=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"cpc\.num_offsets"):
    heads(jnp.zeros((1, 4, 4, 6)))
