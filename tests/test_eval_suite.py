"""The evaluation suite end to end on a tiny pretrained SimCLR checkpoint, and its errors."""
import csv
import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from contrastive_jax import data, train
from contrastive_jax import evaluate as evaluate_cli
from contrastive_jax.evaluation import device_augment, knn, pretrained, suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_CONFIG = os.path.join(ROOT, "configs", "eval.py")


def _eval_config(*overrides, preset="tiny"):
  """Parses an eval config the way `python -m contrastive_jax.evaluate` does."""
  argv = ["prog", f"--eval_config={EVAL_CONFIG}:{preset}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("eval_config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.eval_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A 3-step tiny SimCLR run (checkpoints at steps 2 and 3), shared by every test here."""
  spec = importlib.util.spec_from_file_location("simclr_cfg", f"{ROOT}/configs/simclr.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  config.model.depth = 10
  config.eval.linear_probe = False
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  train.train_and_evaluate(config, workdir)
  return workdir


def test_whole_suite_writes_tables_and_figures(run_dir, tmp_path):
  cfg = _eval_config("--eval_config.checkpoints=all", "--eval_config.fractions=(0.25,1.0)",
                     "--eval_config.finetune.from_head_layer=1")  # SimCLRv2-style.
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
  assert list(rows[0])[:7] == ["protocol", "label_fraction", "top1", "top5", "seed", "step",
                               "method"]
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


def test_linear_evaluation_leaves_encoder_bit_identical(run_dir):
  pre = pretrained.Pretrained.open(run_dir)
  state = pre.restore(3)
  before = jax.device_get((state.params, state.batch_stats))
  cfg = _eval_config("--eval_config.fractions=(1.0,)")
  config = pre.config
  x, y = data.load_arrays(config, config.data.train_split)
  tx, ty = data.load_arrays(config, config.data.eval_split)
  arrays = {"train_x": x[:64], "train_y": y[:64], "test_x": tx[:32], "test_y": ty[:32]}
  subs = {0: suite.make_subsets(cfg, arrays["train_y"], 0)}
  rows = suite.frozen_protocols(pre, state, cfg, arrays, subs, 10, 3)
  assert {r["protocol"] for r in rows} == {"linear", "knn"}
  after = jax.device_get((state.params, state.batch_stats))
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
  with pytest.raises(ValueError, match=r"fractions contains .*\(0, 1\]"):
    suite.run_suite(run_dir, _eval_config(f"--eval_config.fractions={value}"),
                    str(tmp_path / "out"))


def test_subset_file_naming_unknown_examples(run_dir, tmp_path):
  path = tmp_path / "subset.txt"
  path.write_text("0\n5\n123456\n")
  cfg = _eval_config(f"--eval_config.index_file={path}", "--eval_config.fractions=()")
  with pytest.raises(ValueError, match=r"unknown example.*123456"):
    suite.run_suite(run_dir, cfg, str(tmp_path / "out"))


def test_eval_config_presets_are_valid():
  for preset in ("default", "digits", "tiny"):
    suite.validate(_eval_config(preset=preset))
  with pytest.raises(ValueError, match="protocols"):
    suite.validate(_eval_config("--eval_config.protocols=('linear','probe')"))


def test_device_crop_with_full_scale_and_no_flip_is_identity():
  images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
  out = device_augment.random_resized_crop_flip(jax.random.key(0), images, scale=(1.0, 1.0),
                                                ratio=(1.0, 1.0), flip=False)
  np.testing.assert_allclose(out, images, atol=1e-5)
  flipped = device_augment.random_resized_crop_flip(jax.random.key(1), images,
                                                    scale=(0.3, 1.0), flip=True)
  assert flipped.shape == images.shape and np.all(np.isfinite(flipped))


def test_finetuning_moves_the_encoder_and_leaves_the_checkpoint_state_alone(run_dir):
  """Fine-tuning is end to end (encoder weights change) and starts from a copy: the restored
  state survives the donated train steps, so every subset and seed starts from the same one."""
  pre = pretrained.Pretrained.open(run_dir)
  state = pre.restore(3)
  before = jax.device_get(state.params)
  cfg = _eval_config()
  tuners = suite._Tuners(pre, cfg, num_classes=10)  # pylint: disable=protected-access
  tuner = tuners.get(2, supervised=False)
  x, y = data.load_arrays(pre.config, pre.config.data.train_split)
  tuned = tuner.init(state.params, state.batch_stats, 0)
  tuned, metrics = tuner.fit(tuned, x[:32], y[:32], seed=0)
  assert np.isfinite(metrics["loss"])
  after = jax.device_get(state.params)  # Raises if a donated buffer was the caller's.
  for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert np.array_equal(a, b)
  stem = lambda p: np.asarray(p["encoder"]["stem"]["kernel"])  # noqa: E731
  assert not np.array_equal(stem(jax.device_get(tuned.params)["backbone"]), stem(before))


def test_knn_monitor_from_config_for_the_train_loop(run_dir):
  """The call train.py makes: capped, class-balanced arrays; a kNN top-1 in [0, 1]."""
  pre = pretrained.Pretrained.open(run_dir)
  config = pre.config
  config.eval.update(knn_max_train_examples=100, knn_max_test_examples=40, knn_k=10)
  monitor = knn.KNNMonitor.from_config(config, pre.features_fn, pre.mesh)
  labels = monitor._train[1]  # pylint: disable=protected-access
  assert len(labels) == 100 and np.all(np.bincount(labels, minlength=10) == 10)
  assert len(monitor._test[1]) == 40  # pylint: disable=protected-access
  out = monitor(pre.restore(3))
  assert set(out) == {"knn_top1"} and 0.0 <= out["knn_top1"] <= 1.0
