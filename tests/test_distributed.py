"""initialize() resolves arguments, CJ_* variables and cluster detection, and validates.

jax.distributed.initialize is replaced by a recorder: these tests check what would
be asked of JAX, not JAX itself (tests/test_launch.py runs a real two-process job).
"""
import inspect

import jax
import pytest

from contrastive_jax import distributed

_CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                 "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE",
                 "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID",
                 "TPU_ACCELERATOR_TYPE", "CLOUD_TPU_TASK_ID")
_CJ_VARS = (distributed.ENV_COORDINATOR_ADDRESS, distributed.ENV_NUM_PROCESSES,
            distributed.ENV_PROCESS_ID, distributed.ENV_LOCAL_DEVICE_IDS,
            distributed.ENV_CPU_COLLECTIVES, distributed.ENV_INIT_TIMEOUT,
            distributed.ENV_MODE)


@pytest.fixture
def calls(monkeypatch):
  """A clean slate: no CJ_*/cluster variables, no TPU, a recording initialize."""
  for name in _CLUSTER_VARS + _CJ_VARS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_initialized", False)
  monkeypatch.setattr(distributed, "_tpu_vm_present", lambda env: False)
  recorded = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: recorded.append(kw))
  config_updates = []
  real_update = jax.config.update

  def update(name, value):
    if name == "jax_cpu_collectives_implementation":
      config_updates.append(value)  # Left unset: the test process has no peers.
    else:
      real_update(name, value)

  monkeypatch.setattr(jax.config, "update", update)
  return {"init": recorded, "config": config_updates}


def _set_slurm(monkeypatch, ntasks):
  for k, v in {"SLURM_JOB_ID": "1234", "SLURM_STEP_NODELIST": "node[001-002]",
               "SLURM_NTASKS": str(ntasks), "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}.items():
    monkeypatch.setenv(k, v)


def test_single_process_does_nothing(calls):
  distributed.initialize()
  assert calls["init"] == []
  assert calls["config"] == []


def test_explicit_arguments_are_passed_through(calls):
  distributed.initialize("10.0.0.1:8476", 4, 3, local_device_ids=[0, 1])
  assert calls["init"] == [dict(coordinator_address="10.0.0.1:8476", num_processes=4,
                                process_id=3, local_device_ids=[0, 1])]


def test_environment_variables(calls, monkeypatch):
  monkeypatch.setenv("CJ_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  monkeypatch.setenv("CJ_NUM_PROCESSES", "2")
  monkeypatch.setenv("CJ_PROCESS_ID", "1")
  monkeypatch.setenv("CJ_LOCAL_DEVICE_IDS", "0,1,2,3")
  monkeypatch.setenv("CJ_CPU_COLLECTIVES", "gloo")
  monkeypatch.setenv("CJ_INIT_TIMEOUT", "30")
  distributed.initialize()
  assert calls["init"] == [dict(coordinator_address="127.0.0.1:1234", num_processes=2,
                                process_id=1, local_device_ids=[0, 1, 2, 3],
                                initialization_timeout=30)]
  assert calls["config"] == ["gloo"]


def test_arguments_take_precedence_over_environment(calls, monkeypatch):
  monkeypatch.setenv("CJ_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  monkeypatch.setenv("CJ_NUM_PROCESSES", "2")
  monkeypatch.setenv("CJ_PROCESS_ID", "1")
  distributed.initialize(coordinator_address="10.0.0.9:99", process_id=0)
  assert calls["init"][0]["coordinator_address"] == "10.0.0.9:99"
  assert calls["init"][0]["num_processes"] == 2  # Not given: from the environment.
  assert calls["init"][0]["process_id"] == 0


def test_second_call_is_a_noop(calls):
  distributed.initialize("127.0.0.1:1234", 2, 0)
  distributed.initialize("127.0.0.1:1234", 2, 0)
  distributed.initialize()
  assert len(calls["init"]) == 1


def test_slurm_with_several_tasks_lets_jax_detect(calls, monkeypatch):
  _set_slurm(monkeypatch, ntasks=16)
  distributed.initialize()
  assert calls["init"] == [dict(coordinator_address=None, num_processes=None,
                                process_id=None, local_device_ids=None)]


def test_slurm_per_node_passes_local_device_ids(calls, monkeypatch):
  _set_slurm(monkeypatch, ntasks=2)
  monkeypatch.setenv("CJ_LOCAL_DEVICE_IDS", "0,1,2,3,4,5,6,7")
  distributed.initialize()
  assert calls["init"][0]["local_device_ids"] == list(range(8))
  assert calls["init"][0]["coordinator_address"] is None


def test_single_task_slurm_job_is_single_process(calls, monkeypatch):
  _set_slurm(monkeypatch, ntasks=1)
  distributed.initialize()
  assert calls["init"] == []


def test_slurm_batch_step_without_srun_is_not_a_cluster(monkeypatch):
  # SLURM_STEP_NODELIST and friends come from srun; JAX cannot configure without them.
  monkeypatch.setattr(distributed, "_tpu_vm_present", lambda env: False)
  assert distributed.detect_cluster({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}) is None


def test_tpu_vm_lets_jax_detect(calls, monkeypatch):
  monkeypatch.setattr(distributed, "_tpu_vm_present", lambda env: True)
  distributed.initialize()
  assert calls["init"] == [dict(coordinator_address=None, num_processes=None,
                                process_id=None, local_device_ids=None)]


def test_mode_cluster_forces_auto_detection(calls, monkeypatch):
  monkeypatch.setenv("CJ_DISTRIBUTED", "cluster")
  distributed.initialize()
  assert len(calls["init"]) == 1


def test_mode_off_ignores_everything(calls, monkeypatch):
  monkeypatch.setenv("CJ_DISTRIBUTED", "off")
  _set_slurm(monkeypatch, ntasks=16)
  distributed.initialize("127.0.0.1:1234", 2, 0)
  assert calls["init"] == []


@pytest.mark.parametrize("kwargs, env, match", [
    (dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2), {},
     "must be < num_processes"),
    (dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=-1), {}, ">= 0"),
    (dict(coordinator_address="127.0.0.1:1", num_processes=0, process_id=0), {}, ">= 1"),
    (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0), {}, "host:port"),
    (dict(coordinator_address="127.0.0.1:", num_processes=2, process_id=0), {}, "port"),
    (dict(coordinator_address="host:70000", num_processes=2, process_id=0), {}, "1..65535"),
    (dict(coordinator_address="::1", num_processes=2, process_id=0), {}, "host:port"),
    (dict(coordinator_address="127.0.0.1:1", num_processes=2), {}, "missing process_id"),
    ({}, {"CJ_COORDINATOR_ADDRESS": "127.0.0.1:1"}, "missing num_processes, process_id"),
    ({}, {"CJ_NUM_PROCESSES": "two"}, "CJ_NUM_PROCESSES='two' is not an integer"),
    ({}, {"CJ_LOCAL_DEVICE_IDS": "0;1"}, "comma-separated"),
    (dict(cpu_collectives="nccl"), {}, "gloo, mpi"),
    ({}, {"CJ_DISTRIBUTED": "yes"}, "auto, cluster, off"),
])
def test_inconsistent_settings_raise(calls, monkeypatch, kwargs, env, match):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with pytest.raises(ValueError, match=match):
    distributed.initialize(**kwargs)
  assert calls["init"] == []


def test_ipv6_coordinator_address(calls):
  distributed.initialize("[::1]:8476", 2, 1)
  assert calls["init"][0]["coordinator_address"] == "[::1]:8476"


def test_initialize_signature_still_accepts_our_keywords():
  # Guards the pass-through against JAX renaming its arguments (it moves fast).
  params = inspect.signature(jax.distributed.initialize).parameters
  for name in ("coordinator_address", "num_processes", "process_id", "local_device_ids",
               "initialization_timeout"):
    assert name in params
