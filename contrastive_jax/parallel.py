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
