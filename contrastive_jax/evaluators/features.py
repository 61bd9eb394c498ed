"""Frozen-encoder feature extraction over in-memory arrays, on every device of the mesh."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from contrastive_jax import parallel


def extract_features(features_fn: Callable[[Any, jax.Array], jax.Array], state: Any,
                     images: np.ndarray, mesh: jax.sharding.Mesh, *,
                     batch_size: int = 256) -> np.ndarray:
  """Applies `features_fn(state, images)` in batches; returns float32 [N, D] on every process.

  Every process passes the same `images` (the whole split). Batches are padded to a multiple of
  the device count so each compiles once, and trimmed after.
  """
  n_dev = mesh.devices.size
  batch_size = max(n_dev, (batch_size // n_dev) * n_dev)
  sharding = parallel.batch_sharding(mesh)
  replicated = parallel.replicated(mesh)
  fn = jax.jit(features_fn, out_shardings=replicated)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    valid = len(chunk)
    if valid < batch_size:
      pad = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
      chunk = np.concatenate([chunk, pad])
    global_chunk = jax.make_array_from_callback(chunk.shape, sharding, lambda idx, c=chunk: c[idx])
    feats = fn(state, global_chunk)
    out.append(np.asarray(feats.addressable_data(0))[:valid])
  return np.concatenate(out).astype(np.float32)
