"""A machine with JAX but no TensorFlow (a typical GPU host) trains, monitors and probes SimCLR
on an array source with on-device augmentation, and a config that needs TensorFlow fails there
at once with the fix. TensorFlow (and TFDS) are made unimportable in a child process, so clu's
TensorBoard writer cannot load either: the TF-free writer takes over."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from contrastive_jax import writers
from tests import helpers
from tests.helpers import TEST_XLA_FLAGS
from tests.test_end_to_end import ROOT, SIMCLR

BLOCKED = ("tensorflow", "tensorflow_datasets")
# Runs a module as __main__ with TensorFlow unimportable (as if not installed), then reports
# which of the blocked packages got loaded anyway.
_RUNNER = """
import json, runpy, sys
BLOCKED = {blocked!r}
for name in BLOCKED:
  sys.modules[name] = None
sys.argv = [{module!r}] + sys.argv[1:]
try:
  runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
finally:
  loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
  print("LOADED " + json.dumps(loaded))
"""


def _run_without_tf(module: str, *args: str) -> subprocess.CompletedProcess:
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": "", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "PYTHONPATH": ROOT}
  code = _RUNNER.format(blocked=BLOCKED, module=module)
  return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_simclr_trains_and_probes_without_tensorflow(tmp_path):
  workdir = tmp_path / "run"
  proc = _run_without_tf("contrastive_jax.main", f"--config={SIMCLR}:tiny",
                         f"--workdir={workdir}", "--config.augment.on_device=True")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "LOADED []" in proc.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 3 and np.isfinite(results["train"]["loss"])
  assert set(helpers.probe_rows(results)) == {"pretrained", "random_init"}
  assert 0.0 < helpers.knn_top1(results) <= 1.0
  # TensorBoard events written by the tensorboard package alone, readable by TensorBoard.
  from tensorboard.backend.event_processing import event_accumulator  # noqa: E501
  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  loss = [e.value for e in events.Scalars("train/loss")]
  assert len(loss) == 3 and np.allclose(loss[-1], results["train"]["loss"], rtol=1e-5)
  assert {"eval/linear/top1", "eval/linear/random_init/top1"} <= set(events.Tags()["scalars"])
  assert json.loads((workdir / "hparams.json").read_text())["method"] == "simclr"


@pytest.mark.parametrize("override,why", [
    ("--config.augment.on_device=False", "augmentation runs in tf.data"),
    ("--config.data.source=folder", "decodes images with TensorFlow"),
])
def test_a_config_that_needs_tensorflow_fails_before_compiling(tmp_path, override, why):
  proc = _run_without_tf("contrastive_jax.main", f"--config={SIMCLR}:tiny",
                         f"--workdir={tmp_path / 'run'}", "--config.augment.on_device=True",
                         "--config.data.path=/nonexistent", override)
  assert proc.returncode == 1
  assert "TensorFlow is not installed" in proc.stderr and why in proc.stderr
  assert "config.augment.on_device=True" in proc.stderr  # names the way to run without it
  assert "Method simclr" not in proc.stderr  # stopped during validation, before compiling
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_tf_free_writer_logs_and_writes_events(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # noqa: E501
  writer = writers.create_writer(str(tmp_path), just_logging=False, prefer_clu=False)
  assert isinstance(writer, writers.TfFreeWriter)
  progress = writers.progress_hook(4, writer, every_steps=2)
  for step in range(1, 5):
    writer.write_scalars(step, {"train/loss": 1.0 / step})
    progress(step)
  writer.write_hparams({"a": 1, "b": (2, 3)})
  writer.close()
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
  np.testing.assert_allclose([e.value for e in events.Scalars("train/loss")],
                             [1, 0.5, 1 / 3, 0.25], rtol=1e-6)
  # The first call only starts the clock; then every 2 steps.
  assert [e.step for e in events.Scalars("steps_per_sec")] == [2, 4]
  assert json.loads((tmp_path / "hparams.json").read_text()) == {"a": 1, "b": [2, 3]}
  logging_only = writers.create_writer(str(tmp_path / "other"), just_logging=True,
                                       prefer_clu=False)
  logging_only.write_scalars(1, {"x": 1.0})
  assert not (tmp_path / "other").exists()
