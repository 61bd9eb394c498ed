"""Distillation (SimCLRv2): the loss against numpy, a frozen teacher that gets no gradient and
stays bit-identical, a student that fits its teacher, 1 device against 8, the teacher checked
before compiling, and a tiny run through the loop that resumes bit-identically."""
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import optim, parallel, train
from contrastive_jax import step as step_lib
from contrastive_jax.losses.distill import distillation_loss
from contrastive_jax.methods import get_method
from contrastive_jax.methods.base import LossContext
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, **overrides):
  config = helpers.parse_config("config", os.path.join(ROOT, "configs", f"{name}.py"), "tiny")
  config.unlock()
  config.model.depth = 10
  config.data.num_classes = 10
  config.supervised.num_classes = 10
  config.evals.knn.every_steps = 0
  config.evals.linear.at_end = False
  config.async_checkpointing = False
  return helpers.set_keys(config, overrides)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_loss_matches_simclr_v2_formula(t):
  rng = np.random.default_rng(0)
  s, te = rng.normal(size=(2, 12, 5)).astype(np.float32) * 3
  loss, metrics = distillation_loss(s, te, temperature=t)
  p_t = _softmax(te.astype(np.float64) / t)
  log_p_s = np.log(_softmax(s.astype(np.float64) / t))
  np.testing.assert_allclose(float(loss), -np.mean(np.sum(p_t * log_p_s, -1)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["teacher_agreement"]),
                             np.mean(s.argmax(-1) == te.argmax(-1)))
  assert not np.any(np.asarray(jax.grad(
      lambda x: distillation_loss(s, x, temperature=t)[0])(te)))
  with pytest.raises(ValueError, match="temperature"):
    distillation_loss(s, te, temperature=0.0)


def _batch(n=16, labelled=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(size=(n, 8, 8, 3)).astype(np.float32),
          "label": np.full((n,), -1, np.int32),
          "labelled_image": rng.uniform(size=(labelled, 8, 8, 3)).astype(np.float32),
          "labelled_label": rng.integers(0, 10, size=labelled).astype(np.int32)}


def _state_with_teacher(method, tx, mesh, seed=0):
  """A fresh state whose teacher has a random (non-zero) classifier."""
  state = step_lib.create_train_state(method, tx, 0, mesh)
  teacher = jax.device_get(state.extra["teacher"])
  rng = np.random.default_rng(seed)
  kernel = teacher["params"]["classifier"]["kernel"]
  teacher["params"]["classifier"]["kernel"] = rng.normal(size=kernel.shape).astype(np.float32)
  source = state.replace(params=teacher["params"], batch_stats=teacher["batch_stats"])
  return step_lib.load_frozen(state, "teacher", source)


def _steps(config, num_devices, batches):
  mesh = parallel.make_mesh(num_devices)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, len(batches))
  state = _state_with_teacher(method, tx, mesh)
  teacher0 = jax.device_get(state.extra["teacher"])
  step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                  total_steps=len(batches))
  history = []
  for b in batches:
    state, metrics = step(state, parallel.shard_batch(b, mesh))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history, teacher0


def test_loss_with_labels_and_no_gradient_to_the_teacher():
  config = _config("distill", **{"distill.alpha": 0.25, "distill.temperature": 2.0,
                                 "distill.teacher.workdir": "unused"})
  method = get_method(config)
  mesh = parallel.make_mesh(1)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  state = _state_with_teacher(method, tx, mesh)
  defs = step_lib.model_defs(method)
  batch = parallel.shard_batch(_batch(), mesh)
  ctx = LossContext(mesh=mesh)

  def loss_of(teacher_params):
    extra = {"teacher": {**state.extra["teacher"], "params": teacher_params}}
    model = nnx.merge(defs.train, state.params, state.batch_stats)
    return method.loss_with_extra(model, extra, batch, jax.random.key(0), ctx)[0]

  grads = jax.grad(loss_of)(state.extra["teacher"]["params"])
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
  # The value: alpha * distillation (t = 2) + (1 - alpha) * cross-entropy on the labels.
  model = nnx.merge(defs.train, state.params, state.batch_stats)
  loss, metrics, _ = method.loss_with_extra(model, state.extra, batch, jax.random.key(0), ctx)
  teacher = nnx.merge(method._teacher_def(), state.extra["teacher"]["params"],  # pylint: disable=protected-access
                      state.extra["teacher"]["batch_stats"])
  t_logits = np.asarray(teacher(batch["image"]), np.float64)
  model = nnx.merge(defs.train, state.params, state.batch_stats)
  s_logits = np.asarray(model(batch["image"]), np.float64)
  l_logits = np.asarray(model(batch["labelled_image"]), np.float64)
  distill = -np.mean(np.sum(_softmax(t_logits / 2) * np.log(_softmax(s_logits / 2)), -1))
  ce = -np.mean(np.log(_softmax(l_logits))[np.arange(8), np.asarray(batch["labelled_label"])])
  np.testing.assert_allclose(float(loss), 0.25 * distill + 0.75 * ce, rtol=1e-4)
  assert float(metrics["teacher_confidence"]) > 0.1


def test_student_fits_its_teacher_and_the_teacher_does_not_move():
  config = _config("distill", **{"optim.name": "adamw", "optim.base_lr": 1e-2,
                                 "optim.schedule": "constant", "optim.lr_scaling": "none",
                                 "distill.teacher.workdir": "x"})
  batch = _batch()
  state, history, teacher0 = _steps(config, 1, [batch] * 40)
  kl = [float(h["distill_loss"] - h["teacher_entropy"]) for h in history]
  assert kl[-1] < 0.2 * kl[0], kl
  assert history[-1]["teacher_agreement"] >= 0.8, history[-1]
  for a, b in zip(jax.tree.leaves(teacher0), jax.tree.leaves(state.extra["teacher"])):
    np.testing.assert_array_equal(a, b)


def test_eight_devices_equal_one():
  config = _config("distill", **{"distill.alpha": 0.5, "distill.teacher.workdir": "x"})
  batches = [_batch(seed=s) for s in range(2)]
  s1, h1, _ = _steps(config, 1, batches)
  s8, h8, _ = _steps(config, 8, batches)
  np.testing.assert_allclose([h["loss"] for h in h8], [h["loss"] for h in h1], rtol=1e-5)
  helpers.assert_states_close(s1, s8)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train.train_and_evaluate(_config("supervised", num_steps=2, checkpoint_every_steps=2), workdir)
  return workdir


def _student(teacher, **overrides):
  return _config("distill", num_steps=4, checkpoint_every_steps=2,
                 **{"distill.teacher.workdir": teacher, **overrides})


def test_tiny_run_carries_the_teacher_and_resumes_bit_identical(teacher_run, tmp_path):
  workdir = str(tmp_path / "student")
  results = train.train_and_evaluate(_student(teacher_run), workdir)
  assert results["step"] == 4 and np.isfinite(results["train"]["loss"])
  unbroken = helpers.read_checkpoint(workdir, 4)
  teacher = helpers.read_checkpoint(teacher_run, 2)
  for kind in ("params", "batch_stats"):  # The teacher, frozen, in the student's state.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(teacher[kind]),
                            jax.tree.leaves(unbroken["extra"]["teacher"][kind])):
      np.testing.assert_array_equal(a, b, err_msg=f"{kind}{jax.tree_util.keystr(path)}")
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  resumed = train.train_and_evaluate(_student(teacher_run), workdir)
  assert resumed["step"] == 4
  again = helpers.read_checkpoint(workdir, 4)
  helpers.assert_trees_equal(unbroken, again)


@pytest.mark.parametrize("overrides,match", [
    ({"distill.teacher.workdir": "/nonexistent/teacher"}, "config.distill.teacher.workdir"),
    ({"data.image_size": 16}, "image_size"),
    ({"distill.teacher.depth": 18}, "model.depth"),
    ({"distill.teacher.hidden_dims": (8,)}, "hidden_dims"),
    ({"distill.temperature": 0.0}, "temperature"),
    ({"distill.alpha": 1.5}, "alpha"),
])
def test_bad_teacher_or_values_fail_before_compiling(teacher_run, overrides, match):
  config = _student(teacher_run, **overrides)
  with pytest.raises(ValueError, match=match):
    train.plan(config)


def test_teacher_with_other_classes_is_named(teacher_run, tmp_path):
  config = _student(teacher_run, **{"data.num_classes": 10, "supervised.num_classes": 7})
  with pytest.raises(ValueError, match="classifier"):
    train.train_and_evaluate(config, str(tmp_path / "s"))


def test_simclr_v2_presets_have_a_three_layer_head_to_fine_tune_from():
  for preset, width in (("cifar10", 2048), ("imagenet2012", 6144), ("digits", 128)):
    config = helpers.parse_config("config", os.path.join(ROOT, "configs", "simclr_v2.py"),
                                  preset)
    method = get_method(config)
    method.validate()
    assert tuple(config.simclr.proj_dims) == (width, width, 128 if width > 128 else 64)
    spec = method.finetune_spec(1)
    assert spec.config["hidden_dims"] == (width,)
    assert ("head/layers/0", "head/layers/0") in spec.mapping



def test_stochastic_depth_noises_the_student_and_not_the_teacher():
  """Noisy Student's stochastic depth (config.model.drop_path): the student's logits depend on
  the step's key, the teacher's do not, and the evaluation path is deterministic."""
  config = _config("distill", **{"distill.teacher.workdir": "unused",
                                 "model.drop_path": 0.5, "supervised.zero_init": False})
  method = get_method(config)
  mesh = parallel.make_mesh(1)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  state = _state_with_teacher(method, tx, mesh)
  defs = step_lib.model_defs(method)
  images = jax.numpy.asarray(_batch()["image"])
  # Residual branches start at zero (zero-initialised last BatchNorm scale), where dropping
  # one changes nothing: move every parameter off its initial value first.
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  state = state.replace(params=jax.tree.unflatten(tree, [
      p + 0.3 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]))
  model = nnx.merge(defs.train, state.params, state.batch_stats)
  a, b = (np.asarray(method.student_logits(model, images, jax.random.key(k))) for k in (1, 2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(
      method.teacher_logits(state.extra, images), method.teacher_logits(state.extra, images))
  evaluated = step_lib.eval_model(method, defs, state)
  np.testing.assert_array_equal(method.logits(evaluated, images),
                                method.logits(evaluated, images))
