"""SuNCEt, the supervised contrastive loss of Assran et al. (2020).

For a support set of S labelled embeddings z_1..z_S with classes y, cosine similarity s and
temperature t, every support image i is an anchor:

    l_i = -log( sum_{j != i, y_j = y_i} exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t) ),
    L = mean of l_i over the anchors that have a positive (some j != i with y_j = y_i).

An anchor alone in its class has an empty numerator, so l_i would be +inf (the reference code's
log(0)). Such anchors are left out of the average and of the metrics, while still serving as
negatives for the others; with no valid anchor at all the loss is 0 (no supervised signal).
The class-stratified sampler (data/labelled.py) never produces a singleton class when
images_per_class >= 2; the rule is for callers that pass arbitrary supports.

With `axis_name` (inside `jax.shard_map`), each replica holds its local rows, gathers every
replica's embeddings and labels (gradients flow back through the gather to the replica that
owns each row), and computes its anchors' terms against the whole support set; the sums are
psum'd, so every replica returns the global mean.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax.losses.common import gather_rows, l2_normalize

_HIGHEST = jax.lax.Precision.HIGHEST


def suncet(z: jax.Array, labels: jax.Array, *, temperature: float,
           axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """SuNCEt loss of a labelled support set.

  Args:
    z: [n, d] support embeddings (local rows when `axis_name` is given).
    labels: int [n] class of each row (>= 0).
    temperature: softmax temperature t > 0.
    axis_name: mesh axis to gather the support set over, or None when `z` is all of it.

  Returns:
    (loss, metrics): the loss averaged over the valid anchors of the global support set (the
    same value on every replica) and {"suncet_nn_acc": fraction of valid anchors whose most
    similar other support image shares their class, "suncet_anchors": number of valid
    anchors (float)}.
  """
  if z.ndim != 2 or labels.shape != z.shape[:1]:
    raise ValueError(f"suncet expects z [n, d] and labels [n], got {z.shape} and "
                     f"{labels.shape}.")
  if temperature <= 0:
    raise ValueError(f"SuNCEt temperature must be > 0, got {temperature}.")
  q = l2_normalize(z)
  n = q.shape[0]
  (keys, key_labels), offset = gather_rows((q, labels), axis_name)
  sims = jnp.matmul(q, keys.T, precision=_HIGHEST)  # [n, S]
  cols = jnp.arange(keys.shape[0])[None, :]
  is_self = cols == (offset + jnp.arange(n))[:, None]
  is_pos = (labels[:, None] == key_labels[None, :]) & ~is_self
  valid = jnp.any(is_pos, axis=1)
  logits = jnp.where(is_self, -jnp.inf, sims / temperature)
  # A row without positives would give logsumexp over only -inf (-inf, and NaN gradients that a
  # final `where` cannot mask): compute such rows on a zero dummy and drop them afterwards.
  keep = valid[:, None]
  per_anchor = (jax.nn.logsumexp(jnp.where(keep, logits, 0.0), axis=1) -
                jax.nn.logsumexp(jnp.where(keep & is_pos, logits,
                                           jnp.where(keep, -jnp.inf, 0.0)), axis=1))
  nearest = jnp.argmax(logits, axis=1)
  nn_correct = key_labels[nearest] == labels
  totals = jnp.stack([jnp.sum(jnp.where(valid, per_anchor, 0.0)),
                      jnp.sum(valid & nn_correct).astype(jnp.float32),
                      jnp.sum(valid).astype(jnp.float32)])
  if axis_name is not None:
    totals = jax.lax.psum(totals, axis_name)
  anchors = jnp.maximum(totals[2], 1.0)
  return totals[0] / anchors, {"suncet_nn_acc": totals[1] / anchors, "suncet_anchors": totals[2]}
