"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020).

For 2N embeddings (two views of N images) with cosine similarity s and temperature t,

    l(i, j) = -log( exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t) ),
    L = 1 / (2N) * sum_n [ l(2n-1, 2n) + l(2n, 2n-1) ],

so each anchor has one positive and 2N - 2 negatives. This is the paper's average; the
reference TF code returns the sum of the two directions (twice this value).

With `axis_name` (inside `jax.shard_map`), each replica holds its local n rows of each view,
gathers every replica's embeddings (gradients flow back through the gather), offsets its
positive labels by `axis_index * n`, and scores its 2n anchors against all 2N keys: never the
full (2N, 2N) square. Without `axis_name` the inputs are the whole batch.

The logits are the only large array, so the kernel never keeps them: a custom VJP saves the
queries, keys and one logsumexp per anchor, and the backward pass recomputes the similarities
block by block (`_ROW_BLOCK` anchors at a time). Autodiff of the plain formulation
(`_nt_xent_autodiff`, kept as the reference for tests and benchmarks) keeps several
[n, 2N]-sized intermediates per view alive instead, which is why its memory fell only 4.6x
from 1 to 8 devices.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive_jax.losses.common import gather_rows, l2_normalize

_HIGHEST = jax.lax.Precision.HIGHEST

# Anchors scored per step of the blocked loops. Peak memory is two or three [_ROW_BLOCK, 2N]
# blocks plus the keys and their gradient ([2N, d] each): at d = 128, 256 rows put the blocks at
# about the keys' size, so smaller blocks barely lower the total (BENCHMARKS.md, section 5), and
# at 32k keys a block is still only 32 MiB.
_ROW_BLOCK = 256


def _check_inputs(z1: jax.Array, z2: jax.Array, temperature: float) -> None:
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"nt_xent expects two [n, d] arrays of equal shape, got {z1.shape} and "
                     f"{z2.shape}.")
  if temperature <= 0:
    raise ValueError(f"NT-Xent temperature must be > 0, got {temperature}.")


def _queries_and_keys(z1: jax.Array, z2: jax.Array, axis_name: str | None):
  """Local queries [2n, d] and all keys [2N, d], each view 1 then view 2, and the row offset."""
  q = jnp.stack([l2_normalize(z1), l2_normalize(z2)])  # [2, n, d]
  # One gather along the row axis brings both views' keys, view-major, in one collective. It
  # stays outside the custom VJP: its transpose, a reduce-scatter, carries each key's gradient
  # back to the replica that owns it.
  keys, offset = gather_rows(q, axis_name, axis=1)  # [2, N, d]
  return q.reshape(-1, q.shape[-1]), keys.reshape(-1, keys.shape[-1]), offset


def _reduce(totals: jax.Array, global_n: int, axis_name: str | None):
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
    highest similarity, "pos_sim", "neg_sim": mean cosine similarities}. The metrics carry no
    gradient.
  """
  _check_inputs(z1, z2, temperature)
  queries, keys, offset = _queries_and_keys(z1, z2, axis_name)
  n, global_n = z1.shape[0], keys.shape[0] // 2
  rows = offset + jnp.arange(n)
  # A view-1 anchor's positive is its view-2 twin at N + row and its self-pair is at row; a
  # view-2 anchor's, the other way round.
  self_col = jnp.concatenate([rows, global_n + rows])
  pos_col = jnp.concatenate([global_n + rows, rows])
  block = min(_ROW_BLOCK, 2 * n)
  pad = -queries.shape[0] % block
  if pad:  # Padded anchors have no positive (column -1), which drops them from every sum.
    queries = jnp.pad(queries, ((0, pad), (0, 0)))
    self_col = jnp.pad(self_col, (0, pad), constant_values=-1)
    pos_col = jnp.pad(pos_col, (0, pad), constant_values=-1)
  totals = _blocked(temperature, block, queries, keys, self_col, pos_col)
  return _reduce(totals, global_n, axis_name)


def _block_logits(q, keys, self_col, temperature):
  sims = jnp.matmul(q, keys.T, precision=_HIGHEST)  # [block, 2N] cosine similarities.
  is_self = jnp.arange(keys.shape[0])[None, :] == self_col[:, None]
  return sims, jnp.where(is_self, -jnp.inf, sims / temperature)


def _block_forward(q, keys, self_col, pos_col, temperature):
  """Sums of loss, correct, positive and negative similarity over one block, and its lse."""
  sims, logits = _block_logits(q, keys, self_col, temperature)
  valid = (pos_col >= 0).astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=1)
  # Row dots against the positive and self keys: no further [block, 2N] masks to materialise.
  pos_sim = jnp.sum(q * keys[pos_col], axis=1)
  neg_sim = jnp.sum(sims, axis=1) - pos_sim - jnp.sum(q * keys[self_col], axis=1)
  correct = (jnp.argmax(logits, axis=1) == pos_col).astype(jnp.float32)
  sums = jnp.stack([jnp.sum(valid * (lse - pos_sim / temperature)), jnp.sum(valid * correct),
                    jnp.sum(valid * pos_sim), jnp.sum(valid * neg_sim)])
  return sums, lse


def _chunks(block, *arrays):
  return tuple(a.reshape((-1, block) + a.shape[1:]) for a in arrays)


def _blocked_fwd(temperature, block, queries, keys, self_col, pos_col):
  def step(_, xs):
    q, s, p = xs
    return None, _block_forward(q, keys, s, p, temperature)

  _, (sums, lse) = jax.lax.scan(step, None, _chunks(block, queries, self_col, pos_col))
  return jnp.sum(sums, axis=0), (queries, keys, self_col, pos_col, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _blocked(temperature, block, queries, keys, self_col, pos_col):
  """[loss, correct, pos_sim, neg_sim] summed over the local anchors, scored `block` at a time.

  Only the loss has a gradient; the other sums are metrics.
  """
  return _blocked_fwd(temperature, block, queries, keys, self_col, pos_col)[0]


def _blocked_bwd(temperature, block, residuals, d_totals):
  queries, keys, self_col, pos_col, lse = residuals
  scale = d_totals[0] / temperature

  def step(d_keys, xs):
    q, s, p, row_lse = xs
    _, logits = _block_logits(q, keys, s, temperature)
    # d(lse - pos logit) / d logits = softmax - onehot(pos); the self column's softmax is 0.
    # Padded anchors need no mask: they are zero rows, so they add nothing to g.T @ q, and
    # their d_q is cut off by the transpose of the padding.
    is_pos = jnp.arange(keys.shape[0])[None, :] == p[:, None]
    g = (jnp.exp(logits - row_lse[:, None]) - is_pos) * scale
    d_q = jnp.matmul(g, keys, precision=_HIGHEST)
    return d_keys + jnp.matmul(g.T, q, precision=_HIGHEST), d_q

  d_keys, d_q = jax.lax.scan(step, jnp.zeros_like(keys),
                             _chunks(block, queries, self_col, pos_col) + (lse,))
  return d_q.reshape(queries.shape), d_keys, None, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


def _nt_xent_autodiff(z1: jax.Array, z2: jax.Array, *, temperature: float,
                      axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`nt_xent` written plainly and differentiated by JAX: the reference for tests and benchmarks.

  Same arguments and results (its metrics do have gradients), but its backward pass keeps
  several [n, 2N] arrays per view.
  """
  _check_inputs(z1, z2, temperature)
  q1, q2 = l2_normalize(z1), l2_normalize(z2)
  n = q1.shape[0]
  (k1, k2), offset = gather_rows((q1, q2), axis_name)
  global_n = k1.shape[0]
  keys = jnp.concatenate([k1, k2], axis=0)  # [2N, d]: view 1 then view 2 of every image.
  rows = offset + jnp.arange(n)
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
  return _reduce(jnp.stack([sum_loss, sum_correct, sum_pos, sum_neg]), global_n, axis_name)
