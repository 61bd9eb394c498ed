"""Device mesh, shardings and placement of per-process batches as global arrays.

One 1-D mesh axis, "data", spans every device of every process. Parameters are replicated; the
batch is split along its leading axis. Under `jax.jit` this already makes BatchNorm statistics
global; kernels that need explicit collectives run under `jax.shard_map` over the same axis.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  devices = jax.devices() if num_devices is None else jax.devices()[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> None:
  devices, processes = mesh.devices.size, jax.process_count()
  for what, n in (("devices", devices), ("processes", processes)):
    if global_batch % n:
      raise ValueError(
          f"config.batch_size={global_batch} is not divisible by the number of {what} ({n}); "
          f"use a multiple of {np.lcm(devices, processes)}.")


def shard_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Assembles each process's slice of the batch into global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def per_replica_apply(model: Any, fn: Any, inputs: Any, mesh: jax.sharding.Mesh,
                      axis: str = DATA_AXIS) -> Any:
  """Runs `fn(model, inputs)` on each device's shard alone: BatchNorm sees local statistics.

  The ablation of the SimCLR paper's global BatchNorm. Parameters enter replicated (their
  gradients are summed over devices by `shard_map`'s transpose); the updated running statistics
  are averaged over devices so the train state stays replicated. Outputs stay sharded.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def body(params, stats, inputs):
    local = nnx.merge(graphdef, params, stats)
    out = fn(local, inputs)
    new_stats = jax.tree.map(lambda s: jax.lax.pmean(s, axis),
                             nnx.state(local, nnx.BatchStat))
    return out, new_stats

  out, new_stats = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(axis)),
                                 out_specs=(P(axis), P()))(params, stats, inputs)
  nnx.update(model, new_stats)
  return out
