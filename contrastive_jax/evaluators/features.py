"""Frozen-encoder features, streamed batch by batch from the evaluation iterators.

`stream_features` places each process's batch (of its own block of the split, from
`data.build_eval_iterator`) on the mesh with `jax.make_array_from_process_local_data`, applies
the jitted function and keeps its output alone: float32 features [M, D] as a global jax.Array
sharded over the batch axis, with the labels and split positions of its rows sharded alike.
No pixels outlive their batch, so host memory grows with the features, not with the images.

Rows are in device-major order: each device keeps the rows it computed, batch after batch, so
assembling the result moves no data. Padding rows (the evaluation iterators pad every process
to the same number of batches) carry label -1 and index -1; consumers mask them.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from contrastive_jax import parallel

# Per-device blocks are concatenated this many batches at a time: one concatenation over
# thousands of operands would compile slowly, thousands of small arrays would fragment memory.
_GROUP = 64
# Batches dispatched but not yet computed. Dispatch is asynchronous: without a bound, a host
# pipeline faster than the encoder queues every batch's pixels on the device.
IN_FLIGHT = 2


class Backpressure:
  """Waits, after each dispatch, for the step `IN_FLIGHT` dispatches back to finish."""

  def __init__(self, depth: int = IN_FLIGHT):
    self._depth, self._pending = depth, collections.deque()

  def __call__(self, out: Any) -> None:
    self._pending.append(out)
    if len(self._pending) > self._depth:
      jax.block_until_ready(self._pending.popleft())


@dataclasses.dataclass(frozen=True)
class Features:
  """Features of some examples of a split, sharded over the mesh's batch axis.

  x: float32 [M, D]; labels: int32 [M] (-1: padding or unlabelled); index: int32 [M], each
  row's position in the split (-1: padding).
  """
  x: jax.Array
  labels: jax.Array
  index: jax.Array

  @property
  def num_rows(self) -> int:
    return int(self.x.shape[0])

  def host_index(self) -> np.ndarray:
    """int32 [M]: `index` on every process (integers only; never the features)."""
    return to_host(self.index)

  def host_labels(self) -> np.ndarray:
    return to_host(self.labels)

  def host_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, labels, positions) of the real rows, in split order, on every process."""
    index = self.host_index()
    keep = np.flatnonzero(index >= 0)
    rows = keep[np.argsort(index[keep], kind="stable")]
    return rows, self.host_labels()[rows], index[rows]

  def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, labels, positions) of the real rows in split order, on every process. For tests
    and small splits: it copies the features to the host."""
    rows, labels, positions = self.host_order()
    return to_host(self.x)[rows], labels, positions


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as numpy on every process (gathered across processes if need be)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def row_values(features: Features, values: np.ndarray) -> jax.Array:
  """A host vector over the rows of `features` (the same on every process) as a global array
  sharded like them, e.g. 0/1 weights that pick a labelled subset."""
  sharding = features.index.sharding
  values = np.asarray(values)
  if values.shape[:1] != (features.num_rows,):
    raise ValueError(f"{values.shape[0]} values for {features.num_rows} rows.")
  return jax.make_array_from_callback(values.shape, sharding, lambda idx: values[idx])


def from_host(x: np.ndarray, labels: np.ndarray, mesh: jax.sharding.Mesh) -> Features:
  """Host features and labels (every process the same) as `Features` sharded over `mesh`,
  padded to whole devices; positions are the row numbers. For small inputs and tests."""
  n = mesh.devices.size
  rows = -(-len(x) // n) * n
  pad = rows - len(x)
  x = np.concatenate([np.asarray(x, np.float32), np.zeros((pad, x.shape[1]), np.float32)])
  labels = np.concatenate([np.asarray(labels, np.int32), np.full(pad, -1, np.int32)])
  index = np.concatenate([np.arange(rows - pad, dtype=np.int32), np.full(pad, -1, np.int32)])
  sharding = parallel.batch_sharding(mesh)
  place = lambda a: jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])  # noqa: E731
  return Features(x=place(x), labels=place(labels), index=place(index))


def eval_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """`batch_size` rounded down to a multiple of the device count (at least one per device)."""
  n = mesh.devices.size
  return max(n, (batch_size // n) * n)


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable[[Any, jax.Array], jax.Array], mesh: jax.sharding.Mesh) -> Callable:
  # One wrapper per (function, mesh): a fresh one per pass would be traced and compiled again.
  return jax.jit(lambda s, x: fn(s, x).astype(jnp.float32),
                 out_shardings=parallel.batch_sharding(mesh))


def stream_features(fn: Callable[[Any, jax.Array], jax.Array], state: Any,
                    batches: Iterable[dict[str, np.ndarray]],
                    mesh: jax.sharding.Mesh) -> Features:
  """`fn(state, images) -> [B, D]` over every batch of `batches` (each process its own
  {"image", "label", "index"} batches, as `data.build_eval_iterator` yields them)."""
  sharding = parallel.batch_sharding(mesh)
  apply = _jitted(fn, mesh)
  devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  pending = {d: ([], [], []) for d in devices}
  blocks = {d: ([], [], []) for d in devices}

  def flush():
    for d in devices:
      for part, done in zip(pending[d], blocks[d]):
        if part:
          done.append(jnp.concatenate(part) if len(part) > 1 else part[0])
          part.clear()

  count, wait = 0, Backpressure()
  for batch in batches:
    local = {"image": batch["image"], "label": np.asarray(batch["label"], np.int32),
             "index": np.asarray(batch["index"], np.int32)}
    placed = parallel.shard_batch(local, mesh)
    out = (apply(state, placed["image"]), placed["label"], placed["index"])
    wait(out[0])
    for k, arr in enumerate(out):
      for shard in arr.addressable_shards:
        pending[shard.device][k].append(shard.data)
    count += 1
    if count % _GROUP == 0:
      flush()
  if not count:
    raise ValueError("The evaluation stream yielded no batch.")
  flush()
  parts = {d: [jnp.concatenate(p) if len(p) > 1 else p[0] for p in blocks[d]]
           for d in devices}
  rows = parts[devices[0]][0].shape[0] * mesh.devices.size

  def assemble(k: int) -> jax.Array:
    first = parts[devices[0]][k]
    return jax.make_array_from_single_device_arrays(
        (rows, *first.shape[1:]), sharding, [parts[d][k] for d in devices])

  return Features(x=assemble(0), labels=assemble(1), index=assemble(2))


def extract_features(features_fn: Callable[[Any, jax.Array], jax.Array], state: Any,
                     images: np.ndarray, mesh: jax.sharding.Mesh, *,
                     batch_size: int = 256) -> np.ndarray:
  """`features_fn(state, images)` over images already in host memory (every process the
  same); float32 [N, D] on every process. For small in-memory inputs and tests: evaluators
  stream `stream_features` instead."""
  batch_size = eval_batch_size(batch_size, mesh)
  sharding = parallel.batch_sharding(mesh)
  fn = jax.jit(features_fn, out_shardings=parallel.replicated(mesh))
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
