"""Reliability, in process: corrupt checkpoints, NaN/Inf, configs checked up front, work dirs.

The kill-and-resume runs of the command line are in test_reliability_resume.py.
"""
import importlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from contrastive_jax import checkpointing, data, preemption, train
from contrastive_jax import step as step_lib
from tests import helpers
from tests.helpers import TEST_XLA_FLAGS
from tests.test_end_to_end import ROOT, SIMCLR, _tiny

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _config(num_steps, **kw):
  """The tiny SimCLR preset without kNN monitor or probe, checkpoints kept every 2 steps."""
  config = _tiny(num_steps, **kw)
  config.evals.knn.every_steps = 0
  return config


def _assert_trees_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


_read = helpers.read_checkpoint


_steps = helpers.checkpoint_steps


def _warnings(caplog):
  return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---- Checkpoint safety ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A finished 4-step run (checkpoints 2 and 4) to copy, and its step-4 state."""
  workdir = str(tmp_path_factory.mktemp("four") / "run")
  train.train_and_evaluate(_config(4), workdir)
  assert _steps(workdir) == [2, 4]
  return workdir, _read(workdir, 4)


def _corrupt(step_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  if how == "garbled_metadata":
    for f in files:
      if os.path.basename(f) == "_METADATA":
        with open(f, "w") as fh:
          fh.write("{not json")
  elif how == "truncated_arrays":
    for f in files:
      if os.sep + "d" + os.sep in f:
        with open(f, "r+b") as fh:
          fh.truncate(7)
  elif how == "missing_files":
    shutil.rmtree(os.path.join(step_dir, "default"))


@pytest.mark.parametrize("how", ["garbled_metadata", "truncated_arrays", "missing_files"])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's loop
def test_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(four_steps, tmp_path,
                                                                         how, caplog):
  source, state4 = four_steps
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  want = _read(workdir, 2)
  _corrupt(os.path.join(workdir, "checkpoints", "4"), how)
  caplog.set_level(logging.INFO)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ckpt.restore_latest(state4)
  ckpt.close()
  assert step == 2
  _assert_trees_equal(jax.device_get(state), want)
  assert ("Checkpoint step 4 in " + os.path.join(workdir, "checkpoints") + " cannot be used"
          in _warnings(caplog))
  # Set aside (not deleted), so that the resumed run can write step 4 again.
  assert _steps(workdir) == [2]
  assert os.listdir(os.path.join(workdir, "checkpoints.unreadable")) == ["4"]


def test_run_resumes_past_a_corrupt_checkpoint_and_redoes_its_steps_exactly(four_steps,
                                                                            tmp_path, caplog):
  source, want = four_steps
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  _corrupt(os.path.join(workdir, "checkpoints", "4"), "garbled_metadata")
  caplog.set_level(logging.INFO)
  assert train.train_and_evaluate(_config(4), workdir)["step"] == 4
  assert "Checkpoint step 4 in " in _warnings(caplog)
  assert "Restoring checkpoint step 2" in caplog.text
  assert _steps(workdir) == [2, 4]
  _assert_trees_equal(_read(workdir, 4), want)


def test_no_restorable_checkpoint_stops_instead_of_starting_over(four_steps, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(four_steps[0], workdir)
  for step in ("2", "4"):
    _corrupt(os.path.join(workdir, "checkpoints", step), "missing_files")
  with pytest.raises(checkpointing.NoRestorableCheckpointError, match=r"tried steps \[4, 2\]"):
    train.train_and_evaluate(_config(4), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


# ---- Preemption notices (the full path, through the CLI, is in test_reliability_resume.py) --


@pytest.mark.parametrize("mode", ["signal", "all_gather"])
def test_sigterm_becomes_a_stop_at_the_next_step_and_a_second_one_is_fatal_again(mode):
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher() as watcher:
    assert watcher.mode == "signal"  # One process.
    watcher.mode = mode  # The multi-process fallback's all-gather runs on one process too.
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.should_stop(2)
    # The first notice is taken; a second SIGTERM would get the previous handler again.
    assert signal.getsignal(signal.SIGTERM) == before
  assert signal.getsignal(signal.SIGTERM) == before


# ---- Non-finite values ---------------------------------------------------------------------


def _nan_at(monkeypatch, bad_index):
  """The real input pipeline, except that batch `bad_index` (from step 0) is all NaN."""
  real = data.build_train_iterator

  def build(config, spec, *, start_step=0, **kw):
    for i, batch in enumerate(real(config, spec, start_step=start_step, **kw),
                              start=start_step):
      if i == bad_index:
        batch = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                 for k, v in batch.items()}
      yield batch

  monkeypatch.setattr(data, "build_train_iterator", build)


@pytest.mark.parametrize("checkpoint_every,saved", [
    (1, [1, 2, 3]),  # A save is due at the bad step itself: the check must come first.
    (3, [3]),  # No boundary at the bad step: the lagged check catches it one step later.
])
def test_nan_stops_naming_the_step_and_never_reaches_a_checkpoint(monkeypatch, tmp_path,
                                                                  checkpoint_every, saved):
  _nan_at(monkeypatch, 3)  # Batch 3 feeds the update from step 3 to step 4.
  workdir = str(tmp_path / "run")
  config = _config(8, checkpoint_every_steps=checkpoint_every, log_every_steps=100)
  with pytest.raises(train.NonFiniteLossError, match=r"Non-finite loss at step 4 \("):
    train.train_and_evaluate(config, workdir)
  assert _steps(workdir) == saved
  last = _read(workdir, saved[-1])
  assert int(last["step"]) == saved[-1]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(last) if x.dtype.kind == "f")


@pytest.mark.parametrize("values,quantity", [
    ({"loss": np.nan, "grad_norm": np.nan, "param_norm": 1.0}, "loss"),
    ({"loss": 1.0, "grad_norm": np.inf, "param_norm": np.nan}, "gradient norm"),
    ({"loss": 1.0, "grad_norm": 1.0, "param_norm": np.inf}, "parameters"),
    ({"loss": 1.0, "grad_norm": 1.0, "param_norm": 1.0}, "BatchNorm statistics"),
])
def test_nonfinite_message_names_the_quantity(values, quantity):
  with pytest.raises(train.NonFiniteLossError, match=f"Non-finite {quantity} at step 7 "):
    train._check_finite({**values, "finite": 0.0}, 7)  # pylint: disable=protected-access


def test_skip_nonfinite_updates_keeps_the_state_and_moves_on(monkeypatch, tmp_path, caplog):
  _nan_at(monkeypatch, 2)
  workdir = str(tmp_path / "run")
  caplog.set_level(logging.INFO)
  config = _config(4, checkpoint_every_steps=1, keep_checkpoints=10,
                   skip_nonfinite_updates=True)
  assert train.train_and_evaluate(config, workdir)["step"] == 4
  s2, s3, s4 = (_read(workdir, s) for s in (2, 3, 4))
  # The bad update (step 2 -> 3) left parameters, statistics and optimiser state untouched,
  # but the step (hence the data and the RNG) moved on; the next update was applied.
  assert int(s3["step"]) == 3
  for tree in ("params", "batch_stats", "opt_state"):
    _assert_trees_equal(s3[tree], s2[tree])
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(s4["params"]), jax.tree.leaves(s3["params"])))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(s4["params"]))
  assert "Skipped 1 non-finite update(s) in steps 3-3" in _warnings(caplog)


# ---- Configs checked before anything is compiled or written --------------------------------


def _cpc_tiny():
  spec = importlib.util.spec_from_file_location("_cpc_cfg", os.path.join(ROOT, "configs",
                                                                         "cpc_v2.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("tiny")


def _with(config, **overrides):
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *path, last = key.split(".")
    node = config
    for p in path:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[last] = value
  return config


BAD_CONFIGS = [
    ({"method": "swav"}, r"Unknown config.method 'swav'; valid: \[.*'simclr'"),
    ({"data.source": "ftp"}, r"Unknown data source 'ftp' \(config.data.source\); valid"),
    ({"data.source": "tfds", "data.name": "no_such_dataset"},
     r"Unknown TFDS dataset 'no_such_dataset' \(config.data.name\)"),
    ({"optim.base_lr": -0.1}, r"config.optim.base_lr=-0.1 is invalid: must be > 0"),
    ({"simclr.temperature": 0.0}, r"config.simclr.temperature must be > 0"),
    ({"suncet.label_fraction": 0.0},
     r"config.suncet.label_fraction=0.0 is invalid: .*in \(0, 1\]"),
    ({"suncet.label_fraction": 1.5},
     r"config.suncet.label_fraction=1.5 is invalid: .*in \(0, 1\]"),
    ({"evals.knn.every_steps": 2, "evals.knn.temperature": 0.0},
     r"evals.knn.temperature=0.0 is invalid"),
    ({"evals.knn.k": 0}, r"evals.knn.k=0 is invalid: a positive integer"),
    ({"evals.linear.steps": 0}, r"evals.linear.steps=0 is invalid: a positive integer"),
    ({"evals.linear.batch_size": 0}, r"evals.linear.batch_size=0 is invalid"),
    ({"evals.knn.type": "probe"}, r"evals.knn.type='probe' is unknown; valid types"),
    ({"optim.weight_decay": -1e-4}, r"config.optim.weight_decay=-0.0001 is invalid: must be >= 0"),
    ({"optim.momentum": 1.0}, r"config.optim.momentum=1.0 is invalid: must be in \[0, 1\)"),
    ({"optim.warmup_steps": -5}, r"config.optim.warmup_steps=-5 is invalid: must be >= 0"),
    ({"optim.grad_clip_norm": -1.0}, r"config.optim.grad_clip_norm=-1.0 is invalid"),
    ({"checkpoint_every_steps": 0}, r"config.checkpoint_every_steps=0 is invalid"),
    ({"log_every_steps": 0}, r"config.log_every_steps=0 is invalid"),
    ({"init_from.step": -2}, r"config.init_from.step=-2 is invalid"),
    ({"init_from.workdir": "/nonexistent/run"}, r"config.init_from.workdir='/nonexistent/run'"),
    ({"batch_size": 12}, r"config.batch_size=12 is not divisible by the number of devices"),
    ({"num_steps": -1, "num_epochs": 0},
     r"config.num_epochs=0 is invalid: > 0 \(or set num_steps > 0\)"),
    ({"keep_checkpoints": 0}, r"config.keep_checkpoints=0 is invalid"),
    ({"optim.schedule": "linear"}, r"Unknown config.optim.schedule 'linear'"),
]


@pytest.fixture
def no_compilation(monkeypatch):
  """Fails the test if anything is traced for, or compiled by, XLA."""
  compiled = []

  def listener(event, duration, **kw):
    del duration, kw
    if event == _COMPILE_EVENT:
      compiled.append(event)

  def forbidden(*args, **kwargs):
    raise AssertionError("compilation started before the config was fully validated")

  # Evaluator modules are imported lazily, and some jit functions at import: import them
  # first, so that the test does not depend on which tests ran before it.
  from contrastive_jax.evaluators import common  # pylint: disable=g-import-not-at-top
  for target in common.TYPES.values():
    importlib.import_module(f"contrastive_jax.evaluators.{target.split(':')[0]}")
  for name in ("make_init_fn", "make_train_step", "model_defs"):
    monkeypatch.setattr(step_lib, name, forbidden)
  monkeypatch.setattr(jax, "jit", forbidden)
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield
  jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiled, "XLA compiled something before the config was rejected"


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS,
                         ids=["-".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD_CONFIGS])
def test_bad_config_is_rejected_before_any_compilation(no_compilation, tmp_path, overrides,
                                                       message):
  config = _with(_config(4), **overrides)
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # Nothing written either.


def test_cpc_patch_grid_that_does_not_fit_is_rejected_before_any_compilation(no_compilation,
                                                                             tmp_path):
  config = _with(_cpc_tiny(), **{"cpc.patch_size": 20})  # 16 px images.
  with pytest.raises(ValueError, match=r"cpc.patch_size=20 is larger than the 16x16 image"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


# ---- Work directory holding another config's checkpoints -----------------------------------


def test_workdir_of_another_config_is_refused_unless_allowed(tmp_path, monkeypatch, caplog):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(2), workdir)
  other = _config(2)
  other.simclr.temperature = 0.3
  with monkeypatch.context() as m:
    m.setattr(step_lib, "make_init_fn", lambda *a: pytest.fail("compiled before refusing"))
    with pytest.raises(train.ConfigMismatchError,
                       match=r"holds checkpoints \(steps \[2\]\) of a different config; "
                             r"differing keys: simclr.temperature: 0.2 -> 0.3\. .*"
                             r"--allow_config_change"):
      train.train_and_evaluate(other, workdir)

  # Run settings may change: training goes on to step 4, with another log/eval cadence.
  caplog.set_level(logging.INFO)
  longer = _config(4, log_every_steps=2)
  longer.evals.linear.steps = 5
  assert train.train_and_evaluate(longer, workdir)["step"] == 4
  assert "Restoring checkpoint step 2" in caplog.text
  assert "num_steps: 2 -> 4" in caplog.text
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_steps"] == 4
  with open(os.path.join(workdir, "config.until_step_2.json")) as f:
    assert json.load(f)["num_steps"] == 2  # The first run's config is kept.

  # Explicitly allowed: resumes despite the changed temperature.
  other.num_steps = 4
  assert train.train_and_evaluate(other, workdir, allow_config_change=True)["step"] == 4
  assert "despite config changes (allow_config_change): simclr.temperature" in _warnings(caplog)


def test_cli_refuses_another_config_and_allow_config_change_overrides(four_steps, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(four_steps[0], workdir)
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": "", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "PYTHONPATH": ROOT}
  env.pop("CJ_FAULT", None)
  command = [sys.executable, "-m", "contrastive_jax.main", f"--config={SIMCLR}:tiny",
             f"--workdir={workdir}", "--config.num_steps=4", "--config.evals.linear.at_end=False",
             "--config.evals.knn.every_steps=0", "--config.simclr.temperature=0.3"]
  refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
  assert refused.returncode == 1
  assert "differing keys: simclr.temperature: 0.2 -> 0.3" in refused.stderr, refused.stderr[-2000:]
  allowed = subprocess.run(command + ["--allow_config_change"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert allowed.returncode == 0, allowed.stderr[-2000:]
  assert "Restoring checkpoint step 4" in allowed.stderr
