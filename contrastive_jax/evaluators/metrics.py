"""Accuracy from scores, shared by the kNN, linear and fine-tuning protocols: on the host
(`topk_accuracy`), or on the device for scores sharded over the mesh (`sharded_topk`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
  """Share of rows of `scores` [N, C] whose label is among the row's k highest scores."""
  scores = np.asarray(scores)
  k = min(k, scores.shape[1])
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


@jax.jit
def _hits(scores: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, ...]:
  # lax.top_k puts the lower index first among equal scores, as the stable argsort above.
  _, top = jax.lax.top_k(scores, min(5, scores.shape[1]))
  hit = (top == labels[:, None]).astype(jnp.float32)
  total = jnp.sum(weights)
  return jnp.sum(hit[:, 0] * weights) / total, jnp.sum(jnp.max(hit, 1) * weights) / total


def sharded_topk(scores: jax.Array, labels: jax.Array, valid: jax.Array) -> dict[str, float]:
  """{"top1", "top5"} over the rows of `scores` [M, C] where `valid` is true (padding is
  not), computed where the scores lie; the same value on every process."""
  top1, top5 = _hits(scores, labels, valid.astype(jnp.float32))
  return {"top1": float(top1), "top5": float(top5)}
