"""Noisy Student: its pseudo-label variants against numpy, the teacher labelling clean images
while the student sees noisy ones, and iterations that resume at the one that failed."""
import os
import shutil

import jax
import numpy as np

from contrastive_jax.losses.distill import distillation_loss
from contrastive_jax.methods import get_method
from tests import helpers
from tests.test_distill import _config, _softmax, teacher_run  # noqa: F401  (a fixture)


def test_noisy_student_targets_filter_and_balance():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(10, 4)).astype(np.float32)
  te = (rng.normal(size=(10, 4)) * 2).astype(np.float32)
  p = _softmax(te.astype(np.float64))
  log_q = np.log(_softmax(s.astype(np.float64)))
  conf, pseudo = p.max(-1), p.argmax(-1)
  keep = conf >= 0.5
  hard = -log_q[np.arange(10), pseudo]
  loss, metrics = distillation_loss(s, te, temperature=1.0, hard=True, min_confidence=0.5)
  np.testing.assert_allclose(float(loss), hard[keep].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kept"]), keep.mean())
  # Balanced: each pseudo-class among the kept rows weighs the same in total.
  soft = -np.sum(p * log_q, -1)
  classes = np.unique(pseudo[keep])
  want = np.mean([soft[keep & (pseudo == c)].mean() for c in classes])
  loss, _ = distillation_loss(s, te, temperature=1.0, min_confidence=0.5, balance=True)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_noisy_views_teacher_sees_the_clean_image():
  config = _config("noisy_student", **{"distill.teacher.workdir": "x"})
  method = get_method(config)
  method.validate()
  images = (np.random.default_rng(0).uniform(size=(4, 8, 8, 3)) * 255).astype(np.uint8)
  student, teacher = method._views({"image": images}, jax.random.key(0))  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(teacher), images / 255.0, atol=1e-5)
  assert not np.allclose(np.asarray(student), np.asarray(teacher), atol=1e-2)


def test_noisy_student_iterates_and_resumes_at_the_failed_iteration(teacher_run, tmp_path):  # noqa: F811
  from contrastive_jax import self_training  # pylint: disable=g-import-not-at-top
  config = _config("noisy_student", num_steps=2, checkpoint_every_steps=1,
                   **{"distill.teacher.workdir": teacher_run,
                      "noisy_student.widths": (0.125, 0.25)})
  workdir = str(tmp_path / "ns")
  results = self_training.run_iterations(config, workdir)
  assert results["iteration"] == 2 and results["step"] == 2
  first, second = (os.path.join(workdir, f"iteration_{k}") for k in (1, 2))
  student1 = helpers.read_checkpoint(first, 2)
  state2 = helpers.read_checkpoint(second, 1)
  helpers.assert_trees_equal(student1["params"], state2["extra"]["teacher"]["params"])
  # Iteration 2 "fails" after step 1: its results and last checkpoint are gone. The rerun
  # leaves iteration 1 as it was and finishes iteration 2 from step 1.
  final2 = helpers.read_checkpoint(second, 2)
  os.remove(os.path.join(second, "results.json"))
  shutil.rmtree(os.path.join(second, "checkpoints", "2"))
  stamp = os.path.getmtime(os.path.join(first, "results.json"))
  again = self_training.run_iterations(config, workdir)
  assert again["iteration"] == 2 and again["step"] == 2
  assert os.path.getmtime(os.path.join(first, "results.json")) == stamp
  assert helpers.checkpoint_steps(first) == [1, 2]
  helpers.assert_trees_equal(final2, helpers.read_checkpoint(second, 2))
