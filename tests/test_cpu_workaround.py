"""The jaxlib CPU reduce-fusion miscompile is worked around whenever this package is imported."""
import jax
import jax.numpy as jnp
import numpy as np


def test_jitted_broadcast_reduce_matches_eager():
  a = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
  b = np.random.default_rng(1).normal(size=(8, 512, 64)).astype(np.float32)
  f = lambda a, b: b + (a[None] * b).sum(2)[:, :, None]  # noqa: E731
  expected = b + np.einsum("ij,bij->bi", a, b)[:, :, None]
  np.testing.assert_allclose(jax.jit(f)(jnp.asarray(a), jnp.asarray(b)), expected, rtol=1e-4,
                             atol=1e-3)
