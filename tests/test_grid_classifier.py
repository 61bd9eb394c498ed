"""CPC v2's ResNet on the patch-feature grid (evaluators/grid_classifier.py) on a tiny CPC run:
g_phi against a numpy transcription, the grid against CPC's own patch encoder, a frozen
encoder left bit for bit, the labelled subset as all the classifier sees, rows through the
evaluate command's library, no row for a run without a grid, and bad block values named."""
import hashlib
import importlib.util
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import data, presets, runs, train
from contrastive_jax import step as step_lib
from contrastive_jax.evaluators import common, finetune, suite
from contrastive_jax.evaluators import grid_classifier as grid_eval
from contrastive_jax.methods.simclr import SimCLR
from contrastive_jax.models import grid_classifier as grid_model
from contrastive_jax.ops.patches import extract_patches
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eval_config(*overrides):
  return helpers.parse_config("eval_config", os.path.join(ROOT, "configs", "eval.py"), "tiny",
                              *overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A 2-step tiny CPC v2 run (16 px digits, 8 px patches at stride 4: a 3x3 grid)."""
  spec = importlib.util.spec_from_file_location("cpc_cfg", f"{ROOT}/configs/cpc_v2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  config.evals.linear.at_end = False
  config.evals.knn.every_steps = 0
  config.num_steps = 2  # One checkpoint, at step 2.
  workdir = str(tmp_path_factory.mktemp("cpc"))
  train.train_and_evaluate(config, workdir)
  return workdir


def _evaluator(run, **block):
  cfg = _eval_config()
  cfg.evals.grid_classifier.update(block)
  (ev,) = common.from_config(cfg.evals, common.Subject.of_run(run), only=("grid_classifier",))
  return ev


def _copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


# g_phi against numpy.


def _np_layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_conv(x, p):
  """'SAME' convolution with odd kernels, stride 1, as sums of shifted 1x1 products."""
  k = np.asarray(p["kernel"])
  kh, kw = k.shape[:2]
  padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  h, w = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (k.shape[-1],))
  for i in range(kh):
    for j in range(kw):
      out += padded[:, i:i + h, j:j + w] @ k[i, j]
  return out + p["bias"]


def _np_g_phi(params, grid):
  relu = lambda v: np.maximum(v, 0)  # noqa: E731
  x = _np_conv(grid, params["proj"])
  for b in params["blocks"].values():
    h = _np_conv(relu(_np_layer_norm(x, b["norm1"])), b["conv1"])
    h = _np_conv(relu(_np_layer_norm(h, b["norm2"])), b["conv2"])
    h = _np_conv(relu(_np_layer_norm(h, b["norm3"])), b["conv3"])
    x = x + h
  x = relu(_np_layer_norm(x, params["norm"])).mean(axis=(1, 2))
  return x @ params["classifier"]["kernel"] + params["classifier"]["bias"]


def test_g_phi_matches_a_numpy_transcription():
  g = grid_model.GridResNet(5, 4, depth=2, width=6, bottleneck=3, norm="layer",
                            rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(g)
  rng = np.random.default_rng(0)
  # Random values everywhere (the classifier starts at zero; norms at scale 1, bias 0).
  params = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                        nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, params)
  grid = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)  # A non-square 4x5 grid.
  got = nnx.merge(graphdef, state)(grid)
  want = _np_g_phi(jax.tree.map(lambda p: np.asarray(p, np.float64), params),
                   grid.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _grid_model(frozen: bool) -> grid_model.GridClassifier:
  """Two BatchNorm convolutions (an encoder that returns its feature map, pooled per patch) on
  the 3x3 grid of 8 px patches of 16 px images; the same weights for the same seeds."""
  encoder = helpers.SmallConvEncoder(features=(8, 16), norm="batch", rngs=nnx.Rngs(0))
  model = grid_model.GridClassifier(encoder, 3, patch_size=8, patch_stride=4, frozen=frozen,
                                    depth=1, width=8, bottleneck=4, rngs=nnx.Rngs(1))
  # Random classifier weights: with the zero init, no gradient reaches the layers below.
  kernel = model.g.classifier.kernel
  kernel[...] = jax.random.normal(jax.random.key(2), kernel.shape)
  return model


@pytest.mark.parametrize("frozen", [True, False])
def test_a_frozen_encoder_reads_running_statistics_and_gets_no_gradient(frozen):
  """A frozen encoder, in a model in training mode, gives the inference-mode grid, keeps its
  BatchNorm statistics and receives exactly zero gradient; unfrozen, it does neither."""
  images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype(np.float32)
  model = _grid_model(frozen)
  reference = _grid_model(frozen)
  reference.eval()
  stats = _copy(nnx.to_pure_dict(nnx.state(model.encoder, nnx.BatchStat)))
  assert np.array_equal(model.grid(images), reference.grid(images)) == frozen
  weights = jax.random.normal(jax.random.key(3), (4, 3))
  grads = nnx.grad(lambda m: jnp.sum(m(images) * weights))(model)
  grads = nnx.to_pure_dict(grads)
  after = nnx.to_pure_dict(nnx.state(model.encoder, nnx.BatchStat))
  encoder_moves = [np.any(g != 0) for g in jax.tree.leaves(grads["encoder"])]
  stats_move = [not np.array_equal(a, b)
                for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(after))]
  assert len(encoder_moves) == 8 and len(stats_move) == 4
  assert not any(encoder_moves) if frozen else all(encoder_moves)
  assert not any(stats_move) if frozen else any(stats_move)
  assert np.any(grads["g"]["proj"]["kernel"] != 0)


# The evaluator on a tiny CPC run.


# One schedule (the tiny eval config's: 2 steps at 0.1, weight decay 1e-4) everywhere, so each
# mode's programs compile once for the whole file.
STEPS, LR, WD = 2, 0.1, 1e-4


@pytest.fixture(scope="module")
def evaluators(run_dir):
  run = runs.Run.open(run_dir)
  return run, {m: _evaluator(run, mode=m, fractions=(0.25,)) for m in ("frozen", "finetune")}


def test_the_grid_is_cpc_patch_encoders_grid(evaluators):
  """After the transplant, the classifier's grid is CPC's z for the deterministic grid of
  patches, and its mean is the features CPC's other evaluators read."""
  run, evs = evaluators
  state = run.restore(2)
  ev = evs["frozen"]
  init, tx, _, _ = ev._program(STEPS, LR, WD)  # pylint: disable=protected-access
  start = step_lib.transplant(init(0), state, ev.spec.mapping, tx)
  method = grid_eval.GridMethod(ev.supervised_config(STEPS, LR, WD))
  model = step_lib.model_defs(method).merge(start, train=False)
  images = data.load_arrays(run.config, ev.subject.labelled_split)[0][:6]
  c = run.config.cpc
  cpc = step_lib.eval_model(run.method, run.defs, state)
  want = cpc.embed(extract_patches(images, c.patch_size, c.patch_stride))
  got = model.grid(images)
  assert got.shape == (6, 3, 3, want.shape[-1])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.features(images), run.method.features(cpc, images),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_frozen_encoder_stays_bit_identical_and_finetuning_moves_it(evaluators, mode):
  run, evs = evaluators
  ev = evs[mode]
  state = run.restore(2)
  before = _copy(state.params)
  init, _, _, _ = ev._program(STEPS, LR, WD)  # pylint: disable=protected-access
  fresh = _copy(init(0).params)
  tuned = ev.fit(state, np.arange(48), seed=0, steps=STEPS, base_lr=LR, weight_decay=WD)
  tuned = jax.device_get(tuned.params)
  helpers.assert_trees_equal(before, jax.device_get(state.params))  # Not donated.
  pretrained = before["patch_encoder"]["encoder"]
  if mode == "frozen":
    helpers.assert_trees_equal(pretrained, tuned["encoder"])
  else:
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(pretrained), jax.tree.leaves(tuned["encoder"])))
  # g_phi trained in both modes, every layer (weight decay alone moves them all).
  for path in ("proj/kernel", "blocks/0/conv2/kernel", "classifier/kernel"):
    a = step_lib._subtree(tuned["g"], path)  # pylint: disable=protected-access
    b = step_lib._subtree(fresh["g"], path)  # pylint: disable=protected-access
    assert not np.array_equal(a, b), path


def _digest(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


def test_the_classifier_sees_only_the_labelled_subset(evaluators, monkeypatch):
  """Every training image is one of the subset's examples (by content), and the pipeline is
  restricted to exactly the subset's positions. The rows pair with the supervised
  baseline's: the same subsets, so the same label counts."""
  run, evs = evaluators
  ev = evs["frozen"]
  seen, restricted = [], []
  build = data.build_train_iterator

  def spy(config, spec, **kw):
    restricted.append(np.asarray(config.data.train_indices))
    for batch in build(config, spec, **kw):
      seen.append(np.array(batch["image"]))
      yield batch

  monkeypatch.setattr(finetune.data, "build_train_iterator", spy)
  (row,) = ev.run(run.restore(2), 2)
  assert row["protocol"] == "grid_classifier" and row["step"] == 2
  (subs,) = ev.labelled_subsets().values()
  positions = subs[0]["positions"]
  images, labels = data.load_arrays(run.config, ev.subject.labelled_split)[:2]
  assert row["num_labelled"] == len(positions) < len(labels) // 2
  assert len(restricted) == 1 and np.array_equal(restricted[0], positions)
  inside = {_digest(images[i]) for i in positions}
  outside = {_digest(images[i]) for i in np.setdiff1d(np.arange(len(labels)), positions)}
  got = [_digest(x) for batch in seen for x in batch]
  assert len(got) == STEPS * ev.cfg.train_batch_size
  assert set(got) <= inside and not set(got) & outside
  cfg = _eval_config("--eval_config.evals.supervised.fractions=(0.25,)")
  (baseline,) = common.from_config(cfg.evals, ev.subject, only=("supervised",))
  (base_subs,) = baseline.labelled_subsets().values()
  assert np.array_equal(base_subs[0]["positions"], positions)


def test_rows_through_the_evaluate_library(run_dir, tmp_path):
  """g_phi fine-tuned with the encoder, through `python -m contrastive_jax.evaluate`'s
  library: one row per subset, written with the low-data curve."""
  cfg = _eval_config("--eval_config.only=grid_classifier",
                     "--eval_config.evals.grid_classifier.mode=finetune")
  result = suite.run_suite(run_dir, cfg, str(tmp_path / "eval"))
  rows = result["rows"]
  assert [(r["protocol"], r["label_fraction"], r["step"]) for r in rows] == [
      ("grid_classifier_finetune", 0.25, 2), ("grid_classifier_finetune", 1.0, 2)]
  for r in rows:
    assert 0 <= r["top1"] <= r["top5"] <= 1 and r["method"] == "cpc_v2"
  assert os.path.getsize(tmp_path / "eval" / "low_data_curve.png") > 0


def test_a_run_without_a_patch_grid_gives_no_row(caplog):
  config = helpers.tiny_simclr_config()
  config.data = presets.data_config("digits")
  subject = common.Subject(config=config, method=SimCLR(config), defs=None, mesh=None,
                           init_fn=None, num_classes=10)
  cfg = _eval_config().evals.grid_classifier
  ev = grid_eval.GridClassifier("grid_classifier", cfg, subject, common.EvalData(config))
  with caplog.at_level(logging.INFO):
    assert ev.run(None, 3) == []
  assert "no patch-feature grid" in caplog.text


@pytest.mark.parametrize("key, value, match", [
    ("mode", "partial", r"evals\.grid_classifier\.mode='partial' is invalid.*frozen"),
    ("depth", -1, r"evals\.grid_classifier\.depth=-1"),
    ("width", 0, r"evals\.grid_classifier\.width=0"),
    ("bottleneck", 2.5, r"evals\.grid_classifier\.bottleneck=2\.5"),
    ("norm", "group", r"evals\.grid_classifier\.norm='group'"),
    ("steps", 0, r"evals\.grid_classifier\.steps=0"),
    ("fractions", (0.0,), r"evals\.grid_classifier\.fractions contains 0\.0"),
])
def test_bad_block_values_are_named(key, value, match):
  common.validate(ml_collections.ConfigDict({"grid_classifier": presets.grid_classifier_eval()}))
  # Built from a dict: assigning into the preset would meet ConfigDict's own type check first.
  block = {**presets.grid_classifier_eval().to_dict(), key: value}
  evals = ml_collections.ConfigDict({"grid_classifier": block})
  with pytest.raises(ValueError, match=match) as e:
    common.validate(evals)
  assert "\n" not in str(e.value)
