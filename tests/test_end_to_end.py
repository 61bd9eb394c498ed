"""Short runs of the whole loop: CLI, config overrides, checkpoint and resume."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from contrastive_jax import train
from tests import helpers
from tests.helpers import TEST_XLA_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMCLR = os.path.join(ROOT, "configs", "simclr.py")


def _parse(*args, preset="tiny"):
  """Parses a command line the way contrastive_jax.main does (overrides read from argv)."""
  return helpers.parse_config("config", SIMCLR, preset, *args)


def test_config_overrides_apply():
  config = _parse("--config.optim.base_lr=0.125", "--config.simclr.temperature=0.3")
  assert config.optim.base_lr == 0.125
  assert config.simclr.temperature == 0.3


@pytest.mark.parametrize("arg,message", [
    ("--config.no_such_key=1", "unknown config key 'no_such_key'.*batch_size"),
    ("--config.optim.lr=1", "unknown config key 'optim.lr'.*optim.base_lr"),
    ("--config.batch_size=lots", "batch_size"),
])
def test_bad_override_fails_with_the_key(arg, message):
  """The CLI stops before any JAX work, naming the key and the valid ones."""
  proc = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.main", f"--config={SIMCLR}:tiny", arg],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert re.search(message, proc.stderr), proc.stderr[-2000:]


def test_unknown_preset_lists_valid_ones():
  with pytest.raises(flags.Error, match="cifar10"):
    _parse(preset="cifar11")


def _tiny(num_steps, **kw):
  config = _parse()
  config.unlock()
  config.num_steps = num_steps
  config.checkpoint_every_steps = 2
  config.async_checkpointing = False
  config.evals.linear.at_end = False
  config.update(kw)
  return config


_steps = helpers.checkpoint_steps


def _device_augmented(num_steps):
  config = _tiny(num_steps)
  config.augment.on_device = True  # The step draws the views from its RNG: resume that too.
  return config


_read = helpers.read_checkpoint


def test_resume_of_a_device_augmented_run_is_bit_identical(tmp_path):
  workdir = str(tmp_path / "run")
  whole = train.train_and_evaluate(_device_augmented(4), workdir)
  assert whole["step"] == 4 and _steps(workdir) == [2, 4]
  unbroken = _read(workdir, 4)
  # Drop the last checkpoint: the rerun must resume at step 2 and redo steps 3 and 4.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  resumed = train.train_and_evaluate(_device_augmented(4), workdir)
  assert resumed["step"] == 4 and _steps(workdir) == [2, 4]
  # Same batches, same RNG, same steps: the interrupted run ends where the unbroken one did.
  again = _read(workdir, 4)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(unbroken), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert resumed["train"]["loss"] == whole["train"]["loss"]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["method"] == "simclr"


def test_cli_runs_offline_and_reports_both_probes(tmp_path):
  """The README's entry point, on the tiny preset: trains, checkpoints, probes, writes results."""
  workdir = tmp_path / "cli"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": ""}
  proc = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.main", f"--config={SIMCLR}:tiny",
       f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "pretrained" in proc.stdout and "random_init" in proc.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 3
  probe = helpers.probe_rows(results)
  assert set(probe) == {"pretrained", "random_init"}
  # The demo's own claim, at 3 steps: the pretrained encoder beats a random one.
  assert probe["pretrained"]["top1"] > probe["random_init"]["top1"]
  assert np.isfinite(results["train"]["loss"])
  assert 0.0 <= helpers.knn_top1(results) <= 1.0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert (workdir / "checkpoints" / "3").exists()


def test_cpc_v2_tiny_run_trains_and_probes(tmp_path):
  """configs/cpc_v2.py:tiny through the same loop: patches from the pipeline, probe at the end."""
  argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'cpc_v2.py')}:tiny"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
  fv(argv)
  config = fv.config
  config.evals.knn.every_steps = 0
  results = train.train_and_evaluate(config, str(tmp_path / "cpc"))
  assert results["step"] == 3
  assert np.isfinite(results["train"]["loss"])
  assert set(helpers.probe_rows(results)) == {"pretrained", "random_init"}
