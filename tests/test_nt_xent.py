"""NT-Xent against a numpy transcription of the SimCLR paper and against plain autodiff, across
device counts and block sizes, and the fused kernel's memory against the plain one's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive_jax.losses import nt_xent as nt_xent_lib
from contrastive_jax.losses.nt_xent import nt_xent

KERNELS = {"fused": nt_xent, "autodiff": nt_xent_lib._nt_xent_autodiff}


def numpy_nt_xent(z1, z2, temperature):
  """Algorithm 1 of the paper, literally: 2N samples, pairs (2k-1, 2k), loops over anchors."""
  z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
  z[0::2], z[1::2] = z1, z2  # Sample 2k-1 and 2k are the two views of image k.
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  s = z @ z.T

  def ell(i, j):
    denom = sum(np.exp(s[i, k] / temperature) for k in range(len(z)) if k != i)
    return -np.log(np.exp(s[i, j] / temperature) / denom)

  n = len(z1)
  return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def numpy_metrics(z1, z2):
  """contrastive_acc, pos_sim, neg_sim in the paper's indexing: sample i's positive is i ^ 1."""
  z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
  z[0::2], z[1::2] = z1, z2
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  s = z @ z.T
  m = len(z)
  correct, pos, neg = 0, 0.0, []
  for i in range(m):
    others = [k for k in range(m) if k != i]
    correct += others[int(np.argmax(s[i, others]))] == i ^ 1
    pos += s[i, i ^ 1]
    neg += [s[i, k] for k in others if k != i ^ 1]
  return {"contrastive_acc": correct / m, "pos_sim": pos / m, "neg_sim": np.mean(neg)}


@pytest.fixture(params=["default", 3])
def row_block(request, monkeypatch):
  """The fused kernel's block size: its default (one block at test sizes) and 3 rows, which
  splits every test batch into several blocks and pads the last one."""
  if request.param != "default":
    monkeypatch.setattr(nt_xent_lib, "_ROW_BLOCK", request.param)
  return request.param


# (kernel, block) pairs worth running: the autodiff kernel has no blocks.
KERNEL_CASES = [("fused", "default"), ("fused", 3), ("autodiff", "default")]


def _kernel(case, monkeypatch):
  kernel, block = case
  if block != "default":
    monkeypatch.setattr(nt_xent_lib, "_ROW_BLOCK", block)
  return KERNELS[kernel]


def _loss_metrics_grads(fn, z1, z2, temperature):
  (loss, metrics), grads = jax.value_and_grad(
      lambda a, b: fn(a, b, temperature=temperature), argnums=(0, 1), has_aux=True)(z1, z2)
  return loss, metrics, grads


def _assert_same(got, want, rtol=1e-5, atol=1e-6, grad_rtol=None, grad_atol=None):
  (loss, metrics, grads), (ref_loss, ref_metrics, ref_grads) = got, want
  np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol)
  assert metrics.keys() == ref_metrics.keys()
  for k in ref_metrics:
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=rtol, atol=atol, err_msg=k)
  for g, rg in zip(grads, ref_grads):
    assert g.dtype == rg.dtype
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(rg, np.float32),
                               rtol=grad_rtol or rtol, atol=grad_atol or atol)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("n,d", [(1, 3), (4, 8), (16, 5)])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_matches_paper_formula(case, n, d, temperature, monkeypatch):
  rng = np.random.default_rng(n * 100 + d)
  z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  loss, metrics = _kernel(case, monkeypatch)(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32),
                                  temperature=temperature)
  np.testing.assert_allclose(loss, numpy_nt_xent(z1, z2, temperature), rtol=2e-5, atol=1e-6)
  assert 0.0 <= metrics["contrastive_acc"] <= 1.0


@pytest.mark.parametrize("n,d", [(1, 3), (5, 4), (16, 8)])
@pytest.mark.parametrize("temperature", [0.05, 0.3])
def test_fused_matches_autodiff(n, d, temperature, row_block):
  """Loss, every metric and both gradients (through l2_normalize) of the two kernels."""
  rng = np.random.default_rng(n + d)
  z1 = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  z2 = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  _assert_same(_loss_metrics_grads(nt_xent, z1, z2, temperature),
               _loss_metrics_grads(KERNELS["autodiff"], z1, z2, temperature))


def test_gradient_matches_finite_differences(row_block):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  temperature = 0.3
  g1, g2 = jax.grad(lambda a, b: nt_xent(a, b, temperature=temperature)[0], argnums=(0, 1))(
      jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32))
  eps = 1e-5
  for z, g, which in ((z1, g1, 0), (z2, g2, 1)):
    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
      zp, zm = z.copy(), z.copy()
      zp[idx] += eps
      zm[idx] -= eps
      args_p = (zp, z2) if which == 0 else (z1, zp)
      args_m = (zm, z2) if which == 0 else (z1, zm)
      numeric[idx] = (numpy_nt_xent(*args_p, temperature) -
                      numpy_nt_xent(*args_m, temperature)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_metrics_match_paper_formula(case, monkeypatch):
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  z1[:3] = z2[:3] + 0.1 * rng.normal(size=(3, 4))  # Some anchors find their positive.
  _, metrics = _kernel(case, monkeypatch)(jnp.asarray(z1, jnp.float32),
                                          jnp.asarray(z2, jnp.float32), temperature=0.5)
  want = numpy_metrics(z1, z2)
  assert 0.0 < want["contrastive_acc"] < 1.0
  for k, v in want.items():
    np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_perfect_embeddings_reach_full_accuracy_and_low_loss(row_block):
  z = jnp.eye(8) * 10
  loss, metrics = nt_xent(z, z, temperature=0.05)
  assert metrics["contrastive_acc"] == 1.0
  assert loss < 1e-3


def test_duplicated_embeddings_match_autodiff(row_block):
  """Identical views and repeated images: similarities tie, and argmax must break the ties the
  same way (lowest column first) in both kernels."""
  rng = np.random.default_rng(4)
  base = rng.normal(size=(3, 5))
  z = jnp.asarray(base[[0, 0, 1, 2, 2, 2, 1]], jnp.float32)
  for z1, z2 in ((z, z), (z, z[::-1])):
    got = _loss_metrics_grads(nt_xent, z1, z2, 0.1)
    _assert_same(got, _loss_metrics_grads(KERNELS["autodiff"], z1, z2, 0.1))
    np.testing.assert_allclose(got[0], numpy_nt_xent(np.asarray(z1), np.asarray(z2), 0.1),
                               rtol=2e-5)


def test_tiny_temperature_does_not_overflow(row_block):
  """At t = 0.01 aligned views give logits of 100, and exp(100) overflows float32."""
  rng = np.random.default_rng(5)
  z2 = rng.normal(size=(8, 4))
  z1 = jnp.asarray(z2 + 1e-3 * rng.normal(size=(8, 4)), jnp.float32)
  z2 = jnp.asarray(z2, jnp.float32)
  got = _loss_metrics_grads(nt_xent, z1, z2, 0.01)
  assert np.isfinite(got[0]) and all(np.isfinite(g).all() for g in got[2])
  _assert_same(got, _loss_metrics_grads(KERNELS["autodiff"], z1, z2, 0.01), rtol=1e-4)


def test_bfloat16_inputs_match_autodiff(row_block):
  """Mixed-precision heads hand over bfloat16 embeddings; both kernels compute in float32 and
  return bfloat16 gradients, equal up to bfloat16 rounding."""
  rng = np.random.default_rng(6)
  z1 = jnp.asarray(rng.normal(size=(8, 16)), jnp.bfloat16)
  z2 = jnp.asarray(rng.normal(size=(8, 16)), jnp.bfloat16)
  got = _loss_metrics_grads(nt_xent, z1, z2, 0.1)
  want = _loss_metrics_grads(KERNELS["autodiff"], z1, z2, 0.1)
  assert got[2][0].dtype == jnp.bfloat16
  _assert_same(got, want, grad_rtol=1e-2, grad_atol=1e-4)


def test_metrics_have_no_gradient():
  z1, z2 = jnp.ones((4, 3)).at[0, 0].set(2.0), jnp.ones((4, 3))
  grads = jax.grad(lambda a: nt_xent(a, z2, temperature=0.5)[1]["pos_sim"])(z1)
  np.testing.assert_array_equal(grads, 0.0)


def _sharded_loss_and_grads(fn, z1, z2, temperature, num_devices):
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  kernel = functools.partial(fn, temperature=temperature, axis_name="data")
  sharded = jax.shard_map(kernel, mesh=mesh, in_specs=(P("data"), P("data")),
                          out_specs=(P(), P()))
  (loss, metrics), grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1), has_aux=True))(
      z1, z2)
  return loss, metrics, grads


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
def test_replicas_agree_with_whole_batch(num_devices, row_block):
  """Same global batch on 1, 2, 4, 8 devices: same loss, metrics and gradients as the whole
  batch on one device, as the autodiff kernel on as many devices, and as the paper's formula."""
  rng = np.random.default_rng(1)
  z1 = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  z2 = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  got = _sharded_loss_and_grads(nt_xent, z1, z2, 0.2, num_devices)
  _assert_same(got, _loss_metrics_grads(nt_xent, z1, z2, 0.2), atol=1e-7)
  _assert_same(got, _sharded_loss_and_grads(KERNELS["autodiff"], z1, z2, 0.2, num_devices),
               atol=1e-7)
  np.testing.assert_allclose(got[0], numpy_nt_xent(np.asarray(z1), np.asarray(z2), 0.2),
                             rtol=1e-5)
  for k, v in numpy_metrics(np.asarray(z1), np.asarray(z2)).items():
    np.testing.assert_allclose(got[1][k], v, rtol=1e-5, atol=1e-7, err_msg=k)


def _temp_bytes(fn, global_batch, dim, num_devices):
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  sharded = jax.shard_map(lambda a, b: fn(a, b, temperature=0.1, axis_name="data")[0],
                          mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
  spec = jax.ShapeDtypeStruct((global_batch, dim), jnp.float32,
                              sharding=NamedSharding(mesh, P("data")))
  compiled = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1))).lower(spec, spec).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_fused_kernel_needs_a_fraction_of_autodiff_memory():
  """Forward + backward under 8-device shard_map, compiled only. At global batch 4096 each
  device scores 1024 anchors, four blocks of 256: the autodiff kernel keeps 116 MiB of temps
  per device there, the fused one 25 MiB (measured with the test XLA flags)."""
  fused = _temp_bytes(nt_xent, 4096, 128, 8)
  autodiff = _temp_bytes(KERNELS["autodiff"], 4096, 128, 8)
  assert autodiff / fused > 3.0, (autodiff, fused)


def test_rejects_bad_input():
  for fn in KERNELS.values():
    with pytest.raises(ValueError, match="temperature"):
      fn(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match="equal shape"):
      fn(jnp.ones((2, 3)), jnp.ones((3, 3)), temperature=0.5)
