"""Pieces every contrastive loss shares: L2 normalisation and the gather of keys from replicas."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def gather_rows(tree: Any, axis_name: str | None, *, axis: int = 0) -> tuple[Any, Any]:
  """(every replica's rows of each array of `tree`, in replica order, and the global index of
  this replica's first row). Without `axis_name` the local arrays are all of them (offset 0).

  `tiled=True` keeps gradients flowing back to every replica: the gather's transpose is a
  reduce-scatter that returns each row's gradient to the replica that owns it.
  """
  if axis_name is None:
    return tree, 0
  rows = jax.tree.leaves(tree)[0].shape[axis]
  gathered = jax.tree.map(lambda x: jax.lax.all_gather(x, axis_name, axis=axis, tiled=True),
                          tree)
  return gathered, jax.lax.axis_index(axis_name) * rows
