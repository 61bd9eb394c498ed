"""Pseudo-label, MixMatch and FixMatch on the one train step: 1 device against 8 (loss,
parameters, BatchNorm statistics, the weight average), the EMA rule and what the evaluators
read, the two streams' sizes and draws, tiny runs through the loop that resume bit-identically,
and every bad value named before compute."""
import os
import shutil

import jax
import numpy as np
import pytest

from contrastive_jax import data, optim, parallel, train
from contrastive_jax import step as step_lib
from contrastive_jax.data import arrays, subsets
from contrastive_jax.methods import get_method
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("fixmatch", "mixmatch", "pseudo_label")


def _config(method, *args):
  config = helpers.parse_config("config", os.path.join(ROOT, "configs", f"{method}.py"),
                                "tiny", *args)
  config.unlock()
  config.async_checkpointing = False
  config.supervised.num_classes = 10  # Digits; step-level tests run without a dataset.
  return config


def _batches(config, n, seed=0):
  """Raw 8 px batches: mu x B unlabelled images and B labelled ones per step."""
  rng = np.random.default_rng(seed)
  b = config.batch_size // config.semi.mu
  out = []
  for _ in range(n):
    out.append({"image": rng.integers(0, 256, (config.batch_size, 8, 8, 3)).astype(np.uint8),
                "label": rng.integers(0, 10, config.batch_size).astype(np.int32),
                "labelled_image": rng.integers(0, 256, (b, 8, 8, 3)).astype(np.uint8),
                "labelled_label": rng.integers(0, 10, b).astype(np.int32)})
  return out


def _run(config, num_devices, batches):
  mesh = parallel.make_mesh(num_devices)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, len(batches))
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  init = jax.device_get(state)
  step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                  total_steps=len(batches))
  history, params = [], []
  for b in batches:
    state, metrics = step(state, parallel.shard_batch(b, mesh))
    history.append(jax.device_get(metrics))
    params.append(jax.device_get(state.params))
  return init, jax.device_get(state), history, params


# Pseudo-label and MixMatch share FixMatch's streams, views, model call and weight average;
# their losses are tested against numpy on the global batch and their runs go through the loop
# below. (MixMatch's permutation and Beta draws are functions of the global batch under jit.)
SHARDED = ("fixmatch",)


@pytest.fixture(scope="module")
def two_steps():
  """FixMatch, 2 steps of global batch 16 (B = 8 labelled) over 1 and over 8 devices."""
  out = {}
  for method in SHARDED:
    config = _config(method, "--config.batch_size=16", "--config.model.depth=10")
    if method != "mixmatch":
      config.semi.mu = 2
    else:
      config.batch_size = 8
    batches = _batches(config, 2)
    out[method] = (config, [_run(config, n, batches) for n in (1, 8)])
  return out


@pytest.mark.parametrize("method", SHARDED)
def test_eight_devices_equal_one(two_steps, method):
  _, ((_, s1, h1, _), (_, s8, h8, _)) = two_steps[method]
  for key in ("loss", "labelled_loss", "unlabelled_loss"):
    np.testing.assert_allclose([float(h[key]) for h in h8], [float(h[key]) for h in h1],
                               rtol=2e-5, atol=1e-6, err_msg=key)
  helpers.assert_states_close(s1, s8)


def test_the_weight_average_follows_its_rule_and_is_what_evaluators_read(two_steps):
  config, ((init, state, _, steps), _) = two_steps["fixmatch"]
  d = np.float32(config.semi.ema_decay)
  # The average starts as a copy of the initial weights and follows e <- d e + (1 - d) w
  # after every update.
  want = init.params
  for params in steps:
    want = jax.tree.map(lambda e, w: d * e + (np.float32(1) - d) * w, want, params)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want),
                          jax.tree.leaves(state.extra["ema"]["params"])):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  helpers.assert_trees_equal(state.batch_stats, state.extra["ema"]["batch_stats"])
  method = get_method(config)
  params, _ = method.eval_variables(state.params, state.batch_stats, state.extra)
  helpers.assert_trees_equal(state.extra["ema"]["params"], params)
  config.semi.eval_ema = False
  params, _ = get_method(config).eval_variables(state.params, state.batch_stats, state.extra)
  helpers.assert_trees_equal(state.params, params)


def test_one_ema_step_is_exact():
  config = _config("fixmatch", "--config.model.depth=10")
  method = get_method(config)
  params = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
  extra = method.init_extra(params, {}, jax.random.key(0))
  new = {"w": np.full((2, 2), 3.0, np.float32), "b": np.ones(2, np.float32)}
  out = method.update_extra(extra, None, new, {}, 0, None)
  d = config.semi.ema_decay
  np.testing.assert_allclose(out["ema"]["params"]["w"], d * 1.0 + (1 - d) * 3.0, rtol=1e-6)
  np.testing.assert_allclose(out["ema"]["params"]["b"], d * 0.0 + (1 - d) * 1.0, rtol=1e-6)


def test_streams_have_the_documented_sizes_and_labels_from_the_subset():
  pytest.importorskip("tensorflow")  # The labelled and unlabelled streams are tf.data's.
  config = _config("fixmatch", "--config.batch_size=16", "--config.semi.mu=2",
                   "--config.semi.per_class=3", "--config.semi.subset_seed=5")
  method = get_method(config)
  spec = method.inputs()
  it = data.build_train_iterator(config, spec, process_index=0, process_count=1)
  first = [next(it) for _ in range(3)]
  images, labels = arrays.get(config).arrays("train")
  subset = subsets.labelled_subset(labels, per_class=3, seed=5)
  members = np.asarray(images)[subset].reshape(len(subset), -1)
  for b in first:
    assert b["image"].shape[0] == 16 and b["labelled_image"].shape[0] == 8
    raw = np.asarray(b["labelled_image"], np.float32).reshape(8, -1) / 255.0  # uint8 canvas.
    for image, label in zip(raw, b["labelled_label"]):
      # A member of the labelled subset (up to the uint8 rounding), with its own label.
      gap = np.max(np.abs(members - image), axis=1)
      assert gap.min() <= 0.51 / 255
      assert labels[subset[int(np.argmin(gap))]] == label
    assert len({np.asarray(x).tobytes() for x in b["labelled_image"]}) == 8  # Distinct.
  # Deterministic, and a resumed stream draws what the unbroken one drew at that step.
  resumed = data.build_train_iterator(config, spec, process_index=0, process_count=1,
                                      start_step=2)
  again = next(resumed)
  for key in ("image", "labelled_image", "labelled_label"):
    np.testing.assert_array_equal(again[key], first[2][key])
  # Two processes: each holds half of the same global labelled draw.
  halves = [next(data.build_train_iterator(config, spec, process_index=p, process_count=2))
            for p in (0, 1)]
  np.testing.assert_array_equal(
      np.concatenate([h["labelled_image"] for h in halves]), first[0]["labelled_image"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Each method through the loop: 4 steps, checkpoints at 2 and 4, the classifier's row."""
  out = {}
  for method in METHODS:
    config = _config(method, "--config.num_steps=4", "--config.checkpoint_every_steps=2",
                     "--config.model.depth=10")
    workdir = str(tmp_path_factory.mktemp(method))
    out[method] = (config, workdir, train.train_and_evaluate(config, workdir))
  return out


@pytest.mark.parametrize("method", METHODS)
def test_tiny_run_evaluates_and_resumes_bit_identical(runs, method):
  config, workdir, whole = runs[method]
  (row,) = whole["evals"]["classifier"]
  assert row["subset"] == "per_class=2" and row["num_labelled"] == 20
  assert 0.0 <= row["top1"] <= 1.0 and np.isfinite(whole["train"]["loss"])
  if method != "fixmatch":
    return  # Their resume is FixMatch's: the same state, streams and weight average.
  unbroken = helpers.read_checkpoint(workdir, 4)
  assert "ema" in unbroken["extra"]
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  os.remove(os.path.join(workdir, "results.json"))
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed["step"] == 4
  helpers.assert_trees_equal(unbroken, helpers.read_checkpoint(workdir, 4))


@pytest.mark.parametrize("method, args, match", [
    ("fixmatch", ["--config.fixmatch.tau=0.0"], r"config.fixmatch.tau=0.0 is invalid"),
    ("fixmatch", ["--config.fixmatch.tau=1.5"], r"config.fixmatch.tau=1.5 is invalid"),
    ("fixmatch", ["--config.batch_size=24", "--config.semi.mu=5"],
     r"batch_size=24 .* not a multiple of config.semi.mu=5"),
    ("fixmatch", ["--config.augment.on_device=False"], r"set config.augment.on_device=True"),
    ("fixmatch", ["--config.semi.per_class=1000"],
     r"labelled subset \(config.semi.label_fraction / per_class / index_file\) cannot be "
     r"drawn from split 'train'"),
    ("fixmatch", ["--config.semi.strong.num_ops=-1"], r"config.semi.strong"),
    ("mixmatch", ["--config.mixmatch.temperature=0.0"], r"mixmatch.temperature"),
    ("mixmatch", ["--config.mixmatch.k=0"], r"mixmatch.k"),
    ("pseudo_label", ["--config.pseudo_label.threshold=2.0"], r"pseudo_label.threshold"),
    ("pseudo_label", ["--config.semi.eval_ema=True", "--config.semi.ema_decay=0.0"],
     r"eval_ema=True"),
])
def test_bad_values_are_named_before_compute(method, args, match, tmp_path):
  config = _config(method, *args)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints" / "0")


def test_a_labelled_subset_missing_a_class_is_named(tmp_path):
  config = _config("fixmatch")
  labels = arrays.get(config).arrays("train")[1]
  (tmp_path / "few.txt").write_text("\n".join(str(i) for i in np.flatnonzero(labels < 5)[:20]))
  config.semi.index_file = str(tmp_path / "few.txt")
  with pytest.raises(ValueError, match=r"has no example of class\(es\) \[5, 6, 7, 8, 9\]"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_labelled_batch_must_divide_over_devices(tmp_path):
  # 8 fake devices: B = 12 / 2 = 6 labelled images cannot be split evenly; neither can 12.
  config = _config("fixmatch", "--config.batch_size=24", "--config.semi.mu=4")
  with pytest.raises(ValueError, match=r"labelled batch of config.semi \(6 images\) must be "
                                       r"divisible by the device count"):
    train.train_and_evaluate(config, str(tmp_path))


def test_init_from_a_run_of_another_encoder_names_the_parameters(runs, tmp_path):
  _, source, _ = runs["fixmatch"]
  config = _config("fixmatch", "--config.model.depth=18", f"--config.init_from.workdir={source}")
  with pytest.raises(ValueError, match=r"encoder"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("method", METHODS)
def test_presets_validate(method):
  for preset in ("digits", "cifar10", "cifar10_folder", "cifar100", "imagenet2012"):
    config = helpers.parse_config("config", os.path.join(ROOT, "configs", f"{method}.py"),
                                  preset)
    info = data.DatasetInfo(num_classes=1000 if preset == "imagenet2012" else 100,
                            num_train_examples=50_000, num_eval_examples=10_000,
                            image_size=config.data.image_size)
    get_method(config, info).validate()
    assert config.batch_size % config.semi.mu == 0
