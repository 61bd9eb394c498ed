"""Losses of semi-supervised learning on labelled and unlabelled images: pure functions of
logits, labels and random numbers. No model, optimiser or config here.

  pseudo_label_loss   Lee (2013): the model's most probable class on an unlabelled image is
                      its target where the probability reaches `threshold`; an optional
                      entropy-minimisation term (Grandvalet & Bengio, 2005).
  sharpen, mixup, mixmatch_loss
                      MixMatch (Berthelot et al., 2019, Algorithm 1 and eqs. 2-5): the
                      average prediction over K augmentations sharpened with temperature T,
                      MixUp with lambda' = max(lambda, 1 - lambda), cross-entropy on the
                      labelled part and squared error on the unlabelled part.
  fixmatch_loss       FixMatch (Sohn et al., 2020, eq. 4): a weakly augmented view's argmax is
                      the target of the strongly augmented view where its probability
                      exceeds tau; the mean is over every unlabelled image (mu B).
  ramp                the unlabelled weight's linear warm-up (MixMatch, pseudo-label).

Everything is computed on the global batch (under jit on the sharded batch), so one device and
eight agree. Targets derived from predictions carry no gradient (stop_gradient), as in the
papers' reference code.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-row -sum_c targets_c log softmax(logits)_c."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), -1), -1)


def ramp(step: jax.Array, ramp_steps: int) -> jax.Array:
  """min(1, step / ramp_steps) (1 when ramp_steps is 0)."""
  if ramp_steps <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.clip(jnp.asarray(step, jnp.float32) / ramp_steps, 0.0, 1.0)


def _mask_metrics(probs: jax.Array, mask: jax.Array, labels: jax.Array | None
                  ) -> dict[str, jax.Array]:
  metrics = {"mask_rate": jnp.mean(mask), "confidence": jnp.mean(jnp.max(probs, -1))}
  if labels is not None:  # Where the unlabelled images' true labels are known (monitoring).
    correct = (jnp.argmax(probs, -1) == labels).astype(jnp.float32)
    metrics["pseudo_label_accuracy"] = jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1)
  return metrics


def pseudo_label_loss(logits: jax.Array, *, threshold: float, entropy_weight: float = 0.0,
                      labels: jax.Array | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean over the unlabelled rows of mask * CE(logits, argmax), mask = max prob >= threshold,
  plus entropy_weight * the mean entropy of the predictions (which does take gradient)."""
  logits = logits.astype(jnp.float32)
  probs = jax.lax.stop_gradient(jax.nn.softmax(logits, -1))
  mask = (jnp.max(probs, -1) >= threshold).astype(jnp.float32)
  targets = jax.nn.one_hot(jnp.argmax(probs, -1), logits.shape[-1])
  loss = jnp.mean(mask * soft_cross_entropy(logits, targets))
  metrics = _mask_metrics(probs, mask, labels)
  if entropy_weight:
    p = jax.nn.softmax(logits, -1)
    entropy = -jnp.mean(jnp.sum(p * jax.nn.log_softmax(logits, -1), -1))
    metrics["entropy"] = entropy
    loss = loss + entropy_weight * entropy
  return loss, metrics


def sharpen(probs: jax.Array, temperature: float) -> jax.Array:
  """MixMatch eq. 7: p_i^(1/T) / sum_j p_j^(1/T), computed in log space."""
  logp = jnp.log(jnp.maximum(probs, 1e-30)) / temperature
  return jax.nn.softmax(logp, -1)


def mixup(key: jax.Array, x: jax.Array, y: jax.Array, alpha: float
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MixMatch eqs. 8-11 on the whole batch W: for each row, lambda ~ Beta(alpha, alpha) and
  lambda' = max(lambda, 1 - lambda) (one draw per row, as eq. 8 and the reference code), mixed
  with the row a random permutation of W puts there. Returns (mixed x, mixed y, lambda' [N])."""
  lam_key, perm_key = jax.random.split(key)
  lam = jax.random.beta(lam_key, alpha, alpha, (x.shape[0],))
  lam = jnp.maximum(lam, 1.0 - lam)
  perm = jax.random.permutation(perm_key, x.shape[0])
  lx = lam.reshape((-1,) + (1,) * (x.ndim - 1))
  ly = lam.reshape((-1,) + (1,) * (y.ndim - 1))
  return lx * x + (1.0 - lx) * x[perm], ly * y + (1.0 - ly) * y[perm], lam


def mixmatch_loss(logits_x: jax.Array, targets_x: jax.Array, logits_u: jax.Array,
                  targets_u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(L_X, L_U) of MixMatch eqs. 3-4: mean cross-entropy of the mixed labelled rows against
  their mixed targets, and the mean over the mixed unlabelled rows of ||q - p||^2 / C."""
  l_x = jnp.mean(soft_cross_entropy(logits_x, targets_x))
  p_u = jax.nn.softmax(logits_u.astype(jnp.float32), -1)
  l_u = jnp.mean(jnp.sum(jnp.square(p_u - targets_u), -1)) / logits_u.shape[-1]
  return l_x, l_u


def fixmatch_loss(logits_weak: jax.Array, logits_strong: jax.Array, *, tau: float,
                  labels: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """FixMatch's unlabelled loss l_u: (1 / mu B) sum_b 1(max q_b >= tau) H(argmax q_b,
  p(y | strong_b)), q_b = softmax(weak logits) without gradient."""
  probs = jax.lax.stop_gradient(jax.nn.softmax(logits_weak.astype(jnp.float32), -1))
  mask = (jnp.max(probs, -1) >= tau).astype(jnp.float32)
  targets = jax.nn.one_hot(jnp.argmax(probs, -1), logits_weak.shape[-1])
  loss = jnp.mean(mask * soft_cross_entropy(logits_strong, targets))
  return loss, _mask_metrics(probs, mask, labels)
