"""Joins this process to a multi-host JAX job, or leaves a single-process run alone.

`initialize()` decides whether and how to call `jax.distributed.initialize`; the
coordination itself is JAX's. It must run before anything touches JAX devices
(`contrastive_jax.main` calls it first).

Resolution, for each of coordinator address, process count and process id:
explicit argument, else environment variable. Then:

1. all three known: initialise with them (the launch/local_multiprocess.sh path);
2. some or none known, inside a cluster JAX can detect (SLURM job step with more
   than one task, Open MPI, Cloud TPU VM): `jax.distributed.initialize` with what is
   known, JAX fills in the rest;
3. some known, no cluster: ValueError naming what is missing;
4. none known, no cluster: single process, nothing to do.

Environment variables (read only when the matching argument is None):

  CJ_COORDINATOR_ADDRESS  host:port of the coordinator that process 0 starts,
                          e.g. 10.0.0.1:8476; every process gets the same value.
  CJ_NUM_PROCESSES        total number of processes in the job.
  CJ_PROCESS_ID           this process's index, 0 .. CJ_NUM_PROCESSES - 1.
  CJ_LOCAL_DEVICE_IDS     comma-separated local device ids this process owns,
                          e.g. "0,1,2,3" (under SLURM JAX otherwise gives each GPU
                          process only the GPU numbered SLURM_LOCALID).
  CJ_CPU_COLLECTIVES      "gloo" or "mpi": cross-process collectives on the CPU
                          backend (multi-process CPU runs and tests need "gloo").
  CJ_INIT_TIMEOUT         seconds to wait for all processes to join (JAX: 300).
  CJ_DISTRIBUTED          "auto" (default): the rules above; "cluster": call
                          `jax.distributed.initialize` and let JAX detect the
                          cluster even where the checks here see none; "off":
                          never initialise (single process, whatever the env says).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Mapping, Sequence

import jax
from absl import logging

ENV_COORDINATOR_ADDRESS = "CJ_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "CJ_NUM_PROCESSES"
ENV_PROCESS_ID = "CJ_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "CJ_LOCAL_DEVICE_IDS"
ENV_CPU_COLLECTIVES = "CJ_CPU_COLLECTIVES"
ENV_INIT_TIMEOUT = "CJ_INIT_TIMEOUT"
ENV_MODE = "CJ_DISTRIBUTED"

_MODES = ("auto", "cluster", "off")
# "megascale" is also accepted by JAX but is internal to multi-slice TPU jobs.
_CPU_COLLECTIVES = ("gloo", "mpi")
# The variables JAX's own SLURM detection reads; without all of them (e.g. a python
# started in the batch script rather than by srun) JAX would not find the cluster.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")
_TPU_ENV_VARS = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID",
                 "TPU_ACCELERATOR_TYPE", "CLOUD_TPU_TASK_ID")

# Set once initialize() has decided, so later calls (tests, notebooks, a second
# entry point) are no-ops rather than a RuntimeError from JAX.
_initialized = False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    cpu_collectives: str | None = None,
    initialization_timeout: int | None = None,
) -> None:
  """Initialises multi-host JAX if this process is part of a multi-process job.

  See the module docstring for the resolution order and environment variables.
  A second call is a no-op.

  Args:
    coordinator_address: "host:port" of process 0's coordinator service.
    num_processes: total number of processes.
    process_id: index of this process, in [0, num_processes).
    local_device_ids: local device ids this process may use (default: all).
    cpu_collectives: "gloo" or "mpi"; sets `jax_cpu_collectives_implementation`.
    initialization_timeout: seconds to wait for every process to connect.

  Raises:
    ValueError: on inconsistent or malformed settings.
  """
  global _initialized
  if _initialized or jax.distributed.is_initialized():
    logging.info("distributed.initialize: already initialised, nothing to do.")
    _initialized = True
    return

  env = os.environ
  mode = env.get(ENV_MODE, "auto").strip().lower() or "auto"
  if mode not in _MODES:
    raise ValueError(f"{ENV_MODE}={mode!r}; valid values: {', '.join(_MODES)}.")
  if mode == "off":
    _initialized = True
    logging.info("distributed.initialize: %s=off, running as a single process.", ENV_MODE)
    _log_topology()
    return

  if coordinator_address is None:
    coordinator_address = env.get(ENV_COORDINATOR_ADDRESS) or None
  if num_processes is None:
    num_processes = _int_from_env(env, ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _int_from_env(env, ENV_PROCESS_ID)
  if local_device_ids is None:
    local_device_ids = _ids_from_env(env, ENV_LOCAL_DEVICE_IDS)
  if cpu_collectives is None:
    cpu_collectives = env.get(ENV_CPU_COLLECTIVES) or None
  if initialization_timeout is None:
    initialization_timeout = _int_from_env(env, ENV_INIT_TIMEOUT)
  _validate(coordinator_address, num_processes, process_id, cpu_collectives,
            initialization_timeout)

  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  cluster = "forced by CJ_DISTRIBUTED=cluster" if mode == "cluster" else detect_cluster(env)
  if all(v is not None for v in given.values()):
    how = "explicit settings"
  elif cluster:
    how = f"auto-detection ({cluster})"
  elif any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    raise ValueError(
        f"Incomplete multi-process settings: missing {', '.join(missing)} (arguments or "
        f"{ENV_COORDINATOR_ADDRESS}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID}), and no "
        "SLURM, Open MPI or Cloud TPU environment was detected to fill them in.")
  else:
    _initialized = True
    logging.info("distributed.initialize: no multi-process settings or cluster found; "
                 "running as a single process.")
    _log_topology()
    return

  if cpu_collectives is not None:
    # Read when the CPU client is created, which jax.distributed.initialize precedes.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = dict(given, local_device_ids=local_device_ids)
  if initialization_timeout is not None:
    kwargs["initialization_timeout"] = initialization_timeout
  logging.info("distributed.initialize: calling jax.distributed.initialize via %s with %s"
               "; CPU collectives: %s", how, {k: v for k, v in kwargs.items() if v is not None},
               cpu_collectives or "JAX's default")
  jax.distributed.initialize(**kwargs)
  _initialized = True
  _log_topology()


def detect_cluster(env: Mapping[str, str] | None = None) -> str | None:
  """Names the multi-process environment JAX can auto-configure, or None.

  Only environments where `jax.distributed.initialize()` without arguments works,
  and (for SLURM) only job steps with more than one task: a single-task job is a
  single-process run.
  """
  env = os.environ if env is None else env
  if all(k in env for k in _SLURM_VARS):
    ntasks = env["SLURM_NTASKS"]
    if ntasks.isdigit() and int(ntasks) > 1:
      return f"slurm, {ntasks} tasks"
  if "OMPI_MCA_orte_hnp_uri" in env:
    world = env.get("OMPI_COMM_WORLD_SIZE", "")
    if not world.isdigit() or int(world) > 1:
      return "open mpi"
  if _tpu_vm_present(env):
    return "cloud tpu vm"
  return None


def _tpu_vm_present(env: Mapping[str, str]) -> bool:
  # JAX configures a TPU VM from the metadata server, not from env vars, so look for
  # the hardware (/dev/accel* up to v4, /dev/vfio/N from v5e) next to libtpu, which
  # JAX needs to use it at all. Cheap, and touches no JAX backend.
  if importlib.util.find_spec("libtpu") is None:
    return False
  return (any(k in env for k in _TPU_ENV_VARS) or bool(glob.glob("/dev/accel[0-9]*"))
          or bool(glob.glob("/dev/vfio/[0-9]*")))


def _int_from_env(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def _ids_from_env(env: Mapping[str, str], name: str) -> list[int] | None:
  value = env.get(name, "").strip()
  if not value:
    return None
  try:
    return [int(v) for v in value.split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"{name}={value!r} is not a comma-separated list of integers.") from None


def _validate(coordinator_address: str | None, num_processes: int | None,
              process_id: int | None, cpu_collectives: str | None,
              initialization_timeout: int | None) -> None:
  """Raises ValueError on settings JAX would reject late, or hang on."""
  if coordinator_address is not None:
    _split_address(coordinator_address)
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
  if process_id is not None:
    if process_id < 0:
      raise ValueError(f"process_id must be >= 0, got {process_id}.")
    if num_processes is not None and process_id >= num_processes:
      raise ValueError(f"process_id={process_id} must be < num_processes={num_processes} "
                       "(process ids are 0 .. num_processes - 1).")
  if cpu_collectives is not None and cpu_collectives not in _CPU_COLLECTIVES:
    raise ValueError(f"cpu_collectives={cpu_collectives!r}; valid values: "
                     f"{', '.join(_CPU_COLLECTIVES)}.")
  if initialization_timeout is not None and initialization_timeout <= 0:
    raise ValueError(f"initialization_timeout must be > 0 s, got {initialization_timeout}.")


def _split_address(address: str) -> tuple[str, int]:
  """Splits "host:port" or "[ipv6]:port"; ValueError if either part is missing."""
  host, sep, port = address.strip().rpartition(":")
  if not sep or not host or host.endswith(":"):
    raise ValueError(f"coordinator_address={address!r} must be host:port, "
                     "e.g. 10.0.0.1:8476 (or [::1]:8476 for IPv6).")
  if host.startswith("[") != host.endswith("]"):
    raise ValueError(f"coordinator_address={address!r}: unbalanced IPv6 brackets.")
  if not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"coordinator_address={address!r}: port {port!r} is not in 1..65535.")
  return host, int(port)


def _log_topology() -> None:
  logging.info("JAX process %d of %d on %s: %d local devices, %d global devices.",
               jax.process_index(), jax.process_count(), jax.default_backend(),
               jax.local_device_count(), jax.device_count())
