"""The evaluators end to end on a tiny pretrained SimCLR checkpoint, and their errors."""
import csv
import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest

from contrastive_jax import data, train
from contrastive_jax import evaluate as evaluate_cli
from contrastive_jax import runs
from contrastive_jax import step as step_lib
from contrastive_jax.evaluators import common, suite
from contrastive_jax.ops import augment as device_augment
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_CONFIG = os.path.join(ROOT, "configs", "eval.py")


def _eval_config(*overrides, preset="tiny"):
  """Parses an eval config the way `python -m contrastive_jax.evaluate` does."""
  return helpers.parse_config("eval_config", EVAL_CONFIG, preset, *overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A 3-step tiny SimCLR run (checkpoints at steps 2 and 3), shared by every test here."""
  spec = importlib.util.spec_from_file_location("simclr_cfg", f"{ROOT}/configs/simclr.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  config.model.depth = 10
  config.evals.linear.at_end = False
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  train.train_and_evaluate(config, workdir)
  return workdir


def _subject(run):
  return common.Subject.of_run(run)


def _copy(tree):
  """Host copies that share no memory with the device buffers (device_get may alias them)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def test_whole_suite_writes_tables_and_figures(run_dir, tmp_path):
  blocks = ("linear", "finetune", "supervised")
  cfg = _eval_config("--eval_config.checkpoints=all",
                     *(f"--eval_config.evals.{b}.fractions=(0.25,1.0)" for b in blocks),
                     "--eval_config.evals.finetune.from_head_layer=1")  # SimCLRv2-style.
  out = str(tmp_path / "eval")
  result = evaluate_cli.evaluate(run_dir, cfg, out)
  assert result["checkpoint_steps"] == [2, 3]
  for name in ("results.json", "results.csv", "results_step_2.json", "results_step_3.json",
               "low_data_curve.png", "learning_dynamics.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for png in ("low_data_curve.png", "learning_dynamics.png"):
    with open(os.path.join(out, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == suite.CSV_COLUMNS
  got = {(r["protocol"], float(r["label_fraction"]), int(r["step"])) for r in rows}
  for step in (2, 3):
    assert ("knn", 1.0, step) in got
    for protocol in ("linear", "finetune"):
      assert {(protocol, 0.25, step), (protocol, 1.0, step)} <= got
  assert {("supervised", 0.25, 0), ("supervised", 1.0, 0)} <= got
  assert all(0 <= float(r["top1"]) <= float(r["top5"]) <= 1 for r in rows)
  assert {r["method"] for r in rows} == {"simclr"}
  with open(os.path.join(out, "results_step_3.json")) as f:
    per_step = json.load(f)
  assert {r["step"] for r in per_step["rows"]} == {0, 3}  # Its rows plus the baseline.
  # Pretraining moved the encoder: frozen features beat chance on 10 digit classes.
  linear = [r for r in result["rows"] if r["protocol"] == "linear" and r["step"] == 3]
  assert max(r["top1"] for r in linear) > 0.2
  tuned = [r for r in result["rows"] if r["protocol"] in ("finetune", "supervised")]
  assert all(r["base_lr"] > 0 and r["weight_decay"] >= 0 for r in tuned)


def test_evaluators_use_eval_mode_features_and_leave_the_state_alone(run_dir):
  """Features come from the eval-mode model (running BatchNorm statistics): with train-mode
  features (batch statistics) the kNN scores change. The restored state is never donated."""
  run = runs.Run.open(run_dir)
  state = run.restore(3)
  before = _copy((state.params, state.batch_stats))
  cfg = _eval_config("--eval_config.evals.linear.fractions=(1.0,)",
                     "--eval_config.evals.knn.max_train_examples=64",
                     "--eval_config.evals.knn.max_test_examples=32",
                     "--eval_config.evals.linear.max_train_examples=64",
                     "--eval_config.evals.linear.max_test_examples=32")
  subject = _subject(run)
  knn_eval, linear_eval = common.from_config(cfg.evals, subject, only=("knn", "linear"))
  got, _, positions = knn_eval.train_features(state).numpy()
  assert len(positions) == 64
  images = data.load_arrays(run.config, subject.labelled_split)[0][positions]
  eval_mode = run.method.features(run.defs.merge(state, train=False), images)
  train_mode = run.method.features(run.defs.merge(state, train=True), images)
  np.testing.assert_allclose(got, eval_mode, rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(np.asarray(train_mode) - got)) > 1e-3
  rows = knn_eval.run(state, 3) + linear_eval.run(state, 3)
  assert {r["protocol"] for r in rows} == {"linear", "knn"}
  assert {r["encoder"] for r in rows if r["protocol"] == "linear"} == {"pretrained"}
  after = jax.device_get((state.params, state.batch_stats))  # Raises if donated.
  leaves = jax.tree_util.tree_leaves_with_path(before)
  assert len(leaves) == len(jax.tree.leaves(after)) and leaves
  for (path, b), a in zip(leaves, jax.tree.leaves(after)):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


def test_checkpoint_of_another_architecture(run_dir, tmp_path):
  bad = str(tmp_path / "bad")
  shutil.copytree(run_dir, bad)
  with open(os.path.join(bad, "config.json")) as f:
    config = json.load(f)
  config["model"]["depth"] = 18
  with open(os.path.join(bad, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match=r"architecture doesn't match.*--workdir"):
    suite.run_suite(bad, _eval_config(), str(tmp_path / "out"))


@pytest.mark.parametrize("value", ["(0.0,)", "(0.5,1.5)"])
def test_fraction_outside_range(run_dir, tmp_path, value):
  with pytest.raises(ValueError, match=r"evals.linear.fractions contains .*\(0, 1\]"):
    suite.run_suite(run_dir, _eval_config(f"--eval_config.evals.linear.fractions={value}"),
                    str(tmp_path / "out"))


def test_subset_file_naming_unknown_examples(run_dir, tmp_path):
  path = tmp_path / "subset.txt"
  path.write_text("0\n5\n123456\n")
  cfg = _eval_config(f"--eval_config.evals.linear.index_file={path}",
                     "--eval_config.evals.linear.fractions=()", "--eval_config.only=linear")
  with pytest.raises(ValueError, match=r"unknown example.*123456"):
    suite.run_suite(run_dir, cfg, str(tmp_path / "out"))


@pytest.mark.parametrize("override, match", [
    ("--eval_config.evals.knn.type=probe", r"evals.knn.type='probe' is unknown"),
    ("--eval_config.evals.knn.k=0", r"evals.knn.k=0"),
    ("--eval_config.evals.knn.every_steps=-1", r"evals.knn.every_steps=-1"),
    ("--eval_config.evals.linear.steps=0", r"evals.linear.steps=0"),
    ("--eval_config.evals.linear.batch_size=0", r"evals.linear.batch_size=0"),
    ("--eval_config.evals.finetune.label_smoothing=1.0", r"label_smoothing=1.0"),
    ("--eval_config.evals.finetune.flip=sometimes", r"flip='sometimes'"),
    ("--eval_config.evals.supervised.sweep.val_fraction=1.0", r"val_fraction=1.0"),
    ("--eval_config.only=linear,probe", r"only='linear,probe'"),
])
def test_bad_eval_config_values_are_named(override, match):
  for preset in ("default", "digits", "tiny"):
    suite.validate(_eval_config(preset=preset))
  with pytest.raises(ValueError, match=match):
    suite.validate(_eval_config(override))


def test_device_crop_with_full_scale_and_no_flip_is_identity():
  images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
  out = device_augment.random_resized_crop_flip(jax.random.key(0), images, scale=(1.0, 1.0),
                                                ratio=(1.0, 1.0), flip=False)
  np.testing.assert_allclose(out, images, atol=1e-5)
  flipped = device_augment.random_resized_crop_flip(jax.random.key(1), images,
                                                    scale=(0.3, 1.0), flip=True)
  assert flipped.shape == images.shape and np.all(np.isfinite(flipped))


def test_finetuning_copies_the_encoder_trains_it_and_leaves_the_checkpoint_alone(run_dir):
  """The supervised classifier starts from the pretrained encoder (and the head's first layer,
  SimCLRv2), training changes it end to end, and the restored state survives the donated
  train steps, so every subset and seed starts from the same one."""
  run = runs.Run.open(run_dir)
  state = run.restore(3)
  before = _copy(state.params)
  cfg = _eval_config("--eval_config.evals.finetune.from_head_layer=1")
  (tuner,) = common.from_config(cfg.evals, _subject(run), only=("finetune",))
  init, tx, _, _ = tuner._program(2, 0.1, 0.0)  # pylint: disable=protected-access
  start = step_lib.transplant(init(0), state, tuner.spec.mapping, tx)
  for path in ("encoder", "head/layers/0", "head/norms/0"):
    a = step_lib._subtree(jax.device_get(start.params), path)  # pylint: disable=protected-access
    b = step_lib._subtree(before, path)  # pylint: disable=protected-access
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      assert np.array_equal(x, y), path
  tuned = tuner.fit(state, np.arange(32), seed=0, steps=2, base_lr=0.1, weight_decay=0.0)
  after = jax.device_get(state.params)  # Raises if a donated buffer was the caller's.
  for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert np.array_equal(a, b)
  stem = lambda p: np.asarray(p["encoder"]["stem"]["kernel"])  # noqa: E731
  assert not np.array_equal(stem(jax.device_get(tuned.params)), stem(before))


def test_transplant_names_the_parameters_that_differ(run_dir):
  run = runs.Run.open(run_dir)
  state = run.restore(3)
  cfg = _eval_config()
  (tuner,) = common.from_config(cfg.evals, _subject(run), only=("finetune",))
  init, tx, _, _ = tuner._program(2, 0.1, 0.0)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"source has no parameters at 'backbone'"):
    step_lib.transplant(init(0), state, (("backbone", "encoder"),), tx)
  with pytest.raises(ValueError, match=r"classifier/kernel: source \(\d+, \d+\) vs target"):
    step_lib.transplant(init(0), state, (("head/layers/0", "classifier"),), tx)


def test_sweep_chooses_on_the_labelled_subset_and_reports_its_choice(run_dir):
  run = runs.Run.open(run_dir)
  cfg = _eval_config("--eval_config.evals.supervised.sweep.base_lr=(0.05,0.5)",
                     "--eval_config.evals.supervised.fractions=(0.25,)")
  (baseline,) = common.from_config(cfg.evals, _subject(run), only=("supervised",))
  seen = []
  real_accuracy = baseline.accuracy

  def accuracy(state, split, positions, key):
    seen.append(baseline.data.size(split) if positions is None else len(positions))
    return real_accuracy(state, split, positions, key)

  baseline.accuracy = accuracy
  rows = baseline.run(None, 0)
  n = rows[0]["num_labelled"]
  test_size = baseline.data.size(run.config.data.eval_split)
  # Two sweep fits scored on the held-out fifth of the subset, then the test split once.
  assert seen == [round(0.2 * n), round(0.2 * n), test_size]
  assert rows[0]["base_lr"] in (0.05, 0.5) and rows[0]["protocol"] == "supervised"


def test_the_suite_never_loads_a_split_whole(run_dir, tmp_path, monkeypatch):
  """Every evaluator streams: the suite runs with each whole-split pixel loader disabled."""
  from contrastive_jax.data import arrays  # pylint: disable=g-import-not-at-top
  from contrastive_jax.evaluators import features  # pylint: disable=g-import-not-at-top

  def refuse(*args, **kwargs):
    raise AssertionError("a whole split was loaded into memory as pixels")

  monkeypatch.setattr(data, "load_arrays", refuse)
  monkeypatch.setattr(arrays, "eval_arrays", refuse)
  monkeypatch.setattr(features, "extract_features", refuse)
  if data.tensorflow_available():
    from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(pipeline, "load_arrays", refuse)
  cfg = _eval_config("--eval_config.plots=False",
                     *(f"--eval_config.evals.{b}.fractions=(0.25,)"
                       for b in ("linear", "finetune", "supervised")))
  result = suite.run_suite(run_dir, cfg, str(tmp_path / "out"))
  assert {r["protocol"] for r in result["rows"]} == {"knn", "linear", "finetune", "supervised"}
  assert result["num_train_examples"] == 1437 and result["num_eval_examples"] == 360
