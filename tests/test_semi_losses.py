"""The semi-supervised losses against plain numpy transcriptions of their papers' formulas:
pseudo-label masking, entropy and ramp (Lee, 2013), MixMatch sharpening, MixUp with lambda' and
the two terms (Berthelot et al., 2019), FixMatch's thresholded consistency (Sohn et al., 2020)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax.losses import semi


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _logits(n=12, c=5, seed=0, scale=3.0):
  return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32) * scale


@pytest.mark.parametrize("threshold", [0.0, 0.6, 0.95])
def test_pseudo_label_masks_by_confidence(threshold):
  logits = _logits()
  p = _softmax(logits.astype(np.float64))
  mask = p.max(1) >= threshold
  want = np.mean(mask * -np.log(p[np.arange(len(p)), p.argmax(1)]))
  got, m = semi.pseudo_label_loss(jnp.asarray(logits), threshold=threshold)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(m["mask_rate"]) == pytest.approx(mask.mean())


def test_pseudo_label_entropy_term_and_its_gradient():
  logits = _logits(seed=1)
  p = _softmax(logits.astype(np.float64))
  entropy = np.mean(-np.sum(p * np.log(p), 1))
  base, _ = semi.pseudo_label_loss(jnp.asarray(logits), threshold=0.5)
  got, m = semi.pseudo_label_loss(jnp.asarray(logits), threshold=0.5, entropy_weight=0.3)
  np.testing.assert_allclose(got, base + 0.3 * entropy, rtol=1e-5)
  np.testing.assert_allclose(m["entropy"], entropy, rtol=1e-5)
  # The pseudo-labels themselves carry no gradient: with threshold > 1 nothing is left but
  # the entropy, whose gradient is that of the numpy entropy.
  g = jax.grad(lambda z: semi.pseudo_label_loss(z, threshold=1.1, entropy_weight=1.0)[0])(
      jnp.asarray(logits))
  eps, num = 1e-3, np.zeros_like(logits, np.float64)
  for i in range(2):
    for j in range(logits.shape[1]):
      d = np.zeros_like(logits, np.float64)
      d[i, j] = eps
      f = lambda z: np.mean(-np.sum(_softmax(z) * np.log(_softmax(z)), 1))  # noqa: E731
      num[i, j] = (f(logits + d) - f(logits - d)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g)[:2], num[:2], atol=1e-4)


def test_ramp():
  assert [float(semi.ramp(s, 10)) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
  assert float(semi.ramp(3, 0)) == 1.0


@pytest.mark.parametrize("t", [0.5, 1.0, 0.25])
def test_sharpen_is_eq_7(t):
  p = _softmax(_logits(seed=2).astype(np.float64))
  want = p ** (1 / t) / np.sum(p ** (1 / t), 1, keepdims=True)
  np.testing.assert_allclose(semi.sharpen(jnp.asarray(p, jnp.float32), t), want, rtol=1e-5,
                             atol=1e-7)


def test_mixup_uses_lambda_prime_per_row_and_one_permutation():
  x = np.random.default_rng(3).normal(size=(16, 4, 4, 3)).astype(np.float32)
  y = np.eye(5, dtype=np.float32)[np.arange(16) % 5]
  key = jax.random.key(7)
  mx, my, lam = semi.mixup(key, jnp.asarray(x), jnp.asarray(y), alpha=0.75)
  lam = np.asarray(lam)
  assert lam.shape == (16,) and np.all((lam >= 0.5) & (lam <= 1.0)) and np.ptp(lam) > 0
  # Recover the draw independently: the same Beta samples and permutation keys.
  lam_key, perm_key = jax.random.split(key)
  raw = np.asarray(jax.random.beta(lam_key, 0.75, 0.75, (16,)))
  np.testing.assert_allclose(lam, np.maximum(raw, 1 - raw), rtol=1e-6)
  perm = np.asarray(jax.random.permutation(perm_key, 16))
  lx = lam[:, None, None, None]
  np.testing.assert_allclose(mx, lx * x + (1 - lx) * x[perm], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(my, lam[:, None] * y + (1 - lam[:, None]) * y[perm], rtol=1e-5,
                             atol=1e-6)


def test_mixmatch_terms_are_eqs_3_and_4():
  lx, lu = _logits(8, 5, 4), _logits(8, 5, 5)
  tx = _softmax(_logits(8, 5, 6)).astype(np.float32)
  tu = _softmax(_logits(8, 5, 7)).astype(np.float32)
  want_x = np.mean(-np.sum(tx * np.log(_softmax(lx.astype(np.float64))), 1))
  want_u = np.sum((tu - _softmax(lu.astype(np.float64))) ** 2) / (8 * 5)  # 1/(L |U'|)
  got_x, got_u = semi.mixmatch_loss(*map(jnp.asarray, (lx, tx, lu, tu)))
  np.testing.assert_allclose(got_x, want_x, rtol=1e-5)
  np.testing.assert_allclose(got_u, want_u, rtol=1e-5)


@pytest.mark.parametrize("tau", [0.5, 0.95])
def test_fixmatch_is_eq_4(tau):
  weak, strong = _logits(14, 6, 8, scale=4.0), _logits(14, 6, 9)
  q = _softmax(weak.astype(np.float64))
  mask = q.max(1) >= tau
  p_strong = _softmax(strong.astype(np.float64))
  want = np.sum(mask * -np.log(p_strong[np.arange(14), q.argmax(1)])) / 14  # 1 / (mu B)
  labels = q.argmax(1).copy()
  labels[0] = (labels[0] + 1) % 6
  got, m = semi.fixmatch_loss(jnp.asarray(weak), jnp.asarray(strong), tau=tau,
                              labels=jnp.asarray(labels))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(m["mask_rate"]) == pytest.approx(mask.mean())
  right = (q.argmax(1) == labels) & mask
  assert float(m["pseudo_label_accuracy"]) == pytest.approx(right.sum() / max(mask.sum(), 1))
  # No gradient flows into the weak branch.
  g = jax.grad(lambda w: semi.fixmatch_loss(w, jnp.asarray(strong), tau=tau)[0])(
      jnp.asarray(weak))
  assert not np.any(np.asarray(g))
