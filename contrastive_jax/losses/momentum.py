"""Losses of the momentum-encoder methods: MoCo v2's queue InfoNCE, MoCo v3's in-batch InfoNCE
and BYOL's normalised regression. Pure functions of arrays.

MoCo (He et al., 2020; Chen et al., 2020 "Improved baselines", v2): a query q, its positive key
k+ from the momentum encoder and K negatives from a queue of past keys,

    L_q = -log( exp(q.k+ / t) / (exp(q.k+ / t) + sum_{i=1..K} exp(q.k_i / t)) ),

with q and every key L2-normalised. MoCo v3 (Chen, Xie & He, 2021, Algorithm 1) has no queue:
the keys of the whole global batch are the candidates, the positive on the diagonal, and the
loss is scaled by 2t ("ctr(q, k) ... * 2 * tau"). BYOL (Grill et al., 2020, eq. 2): the online
prediction p and the target projection z of the other view,

    L = || p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z),

summed over both orderings of the views (eq. 3) and averaged over the batch.

Keys never carry a gradient (they come from the momentum encoder); the kernels stop it anyway
so that a caller cannot differentiate through them by mistake. With `axis_name` (inside
`jax.shard_map`) the inputs are this replica's rows: MoCo v3 gathers every replica's keys and
offsets its labels by the replica's first row, and every kernel averages over the global batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax.losses.common import gather_rows, l2_normalize

_HIGHEST = jax.lax.Precision.HIGHEST


def _global_mean(total: jax.Array, count: int, axis_name: str | None) -> jax.Array:
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = count * jax.lax.psum(1, axis_name)
  return total / count


def moco_queue_loss(q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float,
                    axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MoCo v1/v2's InfoNCE against a queue of negatives.

  Args:
    q: [n, d] query embeddings (unnormalised; local rows under `axis_name`).
    k: [n, d] positive keys, row i for query i (unnormalised; no gradient flows into them).
    queue: [K, d] L2-normalised negative keys, the same on every replica.
    temperature: t > 0.
    axis_name: mesh axis of the batch inside `jax.shard_map`, or None for the whole batch.
  Returns:
    (mean loss over the global batch, {"contrastive_acc", "pos_sim", "neg_sim"}).
  """
  if temperature <= 0:
    raise ValueError(f"MoCo temperature must be > 0, got {temperature}.")
  q = l2_normalize(q)
  k = jax.lax.stop_gradient(l2_normalize(k))
  queue = jax.lax.stop_gradient(queue.astype(jnp.float32))
  pos = jnp.sum(q * k, axis=-1)  # [n]
  neg = jnp.matmul(q, queue.T, precision=_HIGHEST)  # [n, K]
  logits = jnp.concatenate([pos[:, None], neg], axis=1) / temperature
  losses = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
  correct = (jnp.argmax(logits, axis=1) == 0).astype(jnp.float32)
  n = q.shape[0]
  loss = _global_mean(jnp.sum(losses), n, axis_name)
  return loss, {"contrastive_acc": _global_mean(jnp.sum(correct), n, axis_name),
                "pos_sim": _global_mean(jnp.sum(pos), n, axis_name),
                "neg_sim": _global_mean(jnp.sum(jnp.mean(neg, axis=1)), n, axis_name)}


def moco_v3_loss(q: jax.Array, k: jax.Array, *, temperature: float,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """One direction of MoCo v3's loss: query i against the keys of the global batch.

  Args:
    q: [n, d] predictions of the online network (local rows under `axis_name`).
    k: [n, d] momentum-encoder projections of the other view; row i is query i's positive.
    temperature: t > 0.
    axis_name: mesh axis to gather keys over, or None for the whole batch.
  Returns:
    (2t x the mean cross-entropy, as the paper's pseudo-code, and {"contrastive_acc"}).
  """
  if temperature <= 0:
    raise ValueError(f"MoCo v3 temperature must be > 0, got {temperature}.")
  q = l2_normalize(q)
  k = jax.lax.stop_gradient(l2_normalize(k))
  keys, offset = gather_rows(k, axis_name)  # [N, d]
  logits = jnp.matmul(q, keys.T, precision=_HIGHEST) / temperature  # [n, N]
  labels = offset + jnp.arange(q.shape[0])
  picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  losses = jax.nn.logsumexp(logits, axis=1) - picked
  correct = (jnp.argmax(logits, axis=1) == labels).astype(jnp.float32)
  n = q.shape[0]
  loss = _global_mean(jnp.sum(losses), n, axis_name) * (2.0 * temperature)
  return loss, {"contrastive_acc": _global_mean(jnp.sum(correct), n, axis_name)}


def byol_loss(p: jax.Array, z: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """BYOL's regression loss of one ordering, averaged over the rows: 2 - 2 cos(p, z).

  Per row, so it needs no collective: under `jax.jit` on batch-sharded inputs the mean is
  already global.
  """
  p = l2_normalize(p)
  z = jax.lax.stop_gradient(l2_normalize(z))
  cos = jnp.sum(p * z, axis=-1)
  return jnp.mean(2.0 - 2.0 * cos), {"cosine": jnp.mean(cos)}
