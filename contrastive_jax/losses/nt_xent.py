"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020).

For 2N embeddings (two views of N images) with cosine similarity s and temperature t,

    l(i, j) = -log( exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t) ),
    L = 1 / (2N) * sum_n [ l(2n-1, 2n) + l(2n, 2n-1) ],

so each anchor has one positive and 2N - 2 negatives. This is the paper's average; the
reference TF code returns the sum of the two directions (twice this value).

With `axis_name` (inside `jax.shard_map`), each replica holds its local n rows of each view,
gathers every replica's embeddings (gradients flow back through the gather), offsets its
positive labels by `axis_index * n`, and builds logits of shape (n, 2N) per view: never the full
(2N, 2N) square. Without `axis_name` the inputs are the whole batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float,
            axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """NT-Xent loss of two views.

  Args:
    z1: [n, d] embeddings of the first view (local rows when `axis_name` is given).
    z2: [n, d] embeddings of the second view; row i is the positive of z1's row i.
    temperature: softmax temperature t > 0.
    axis_name: mesh axis to gather negatives over, or None when z1, z2 are the whole batch.

  Returns:
    (loss, metrics): the scalar loss averaged over all 2N anchors of the global batch (the same
    value on every replica) and {"contrastive_acc": fraction of anchors whose positive has the
    highest similarity, "pos_sim", "neg_sim": mean cosine similarities}.
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"nt_xent expects two [n, d] arrays of equal shape, got {z1.shape} and "
                     f"{z2.shape}.")
  if temperature <= 0:
    raise ValueError(f"NT-Xent temperature must be > 0, got {temperature}.")
  q1, q2 = l2_normalize(z1), l2_normalize(z2)
  n = q1.shape[0]
  if axis_name is None:
    k1, k2, offset = q1, q2, 0
  else:
    k1 = jax.lax.all_gather(q1, axis_name, tiled=True)
    k2 = jax.lax.all_gather(q2, axis_name, tiled=True)
    offset = jax.lax.axis_index(axis_name) * n
  global_n = k1.shape[0]
  keys = jnp.concatenate([k1, k2], axis=0)  # [2N, d]: view 1 then view 2 of every image.
  rows = offset + jnp.arange(n)
  # For a view-1 anchor the positive is its view-2 twin at N + row, the self-pair is at row;
  # for a view-2 anchor, the other way round.
  sum_loss, sum_correct, sum_pos, sum_neg = 0.0, 0.0, 0.0, 0.0
  for q, self_col, pos_col in ((q1, rows, global_n + rows), (q2, global_n + rows, rows)):
    sims = jnp.matmul(q, keys.T, precision=_HIGHEST)  # [n, 2N] cosine similarities.
    cols = jnp.arange(2 * global_n)[None, :]
    is_self = cols == self_col[:, None]
    is_pos = cols == pos_col[:, None]
    logits = jnp.where(is_self, -jnp.inf, sims / temperature)
    pos_logit = jnp.sum(jnp.where(is_pos, logits, 0.0), axis=1)
    sum_loss += jnp.sum(jax.nn.logsumexp(logits, axis=1) - pos_logit)
    sum_correct += jnp.sum(jnp.argmax(logits, axis=1) == pos_col)
    sum_pos += jnp.sum(jnp.where(is_pos, sims, 0.0))
    neg = ~(is_pos | is_self)
    sum_neg += jnp.sum(jnp.where(neg, sims, 0.0))
  totals = jnp.stack([sum_loss, sum_correct, sum_pos, sum_neg])
  if axis_name is not None:
    totals = jax.lax.psum(totals, axis_name)
  anchors = 2 * global_n
  loss = totals[0] / anchors
  metrics = {
      "contrastive_acc": totals[1] / anchors,
      "pos_sim": totals[2] / anchors,
      "neg_sim": totals[3] / (anchors * (2 * global_n - 2)),
  }
  return loss, metrics
