"""The "classifier" evaluator: a supervised run on a labelled subset, trained from the command
line (`--config.data.train_subset.per_class`), scored by its own logits, with the labels it
used; a distilled student reports its teacher's labels; runs without a classifier give no row."""
import json
import os

import jax
import numpy as np
import pytest

from contrastive_jax import data, runs, train
from contrastive_jax.data import subsets
from contrastive_jax.evaluators import classifier, common, suite
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERVISED = os.path.join(ROOT, "configs", "supervised.py")
EVAL = os.path.join(ROOT, "configs", "eval.py")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A tiny supervised run on 3 labelled images per class (step 4)."""
  config = helpers.parse_config("config", SUPERVISED, "tiny", "--config.model.depth=10",
                                "--config.data.train_subset.per_class=3",
                                "--config.data.train_subset.seed=2", "--config.num_steps=4")
  config.unlock()
  config.async_checkpointing = False
  workdir = str(tmp_path_factory.mktemp("teacher"))
  results = train.train_and_evaluate(config, workdir)
  return workdir, results


def test_row_is_the_classifiers_own_accuracy_with_its_labels(teacher):
  workdir, results = teacher
  (row,) = results["evals"]["classifier"]
  run = runs.Run.open(workdir, runs.load_config(workdir))
  state = run.restore(4)
  # Reference: the restored classifier's logits on the whole evaluation split, on the host.
  images, labels = data.load_arrays(run.config, "test")
  model = run.defs.merge(jax.device_get(state), train=False)
  logits = np.asarray(run.method.logits(model, images))
  assert row["top1"] == pytest.approx(np.mean(np.argmax(logits, 1) == labels), abs=1e-6)
  assert row["protocol"] == "classifier" and row["subset"] == "per_class=3"
  train_labels = data.split_labels(run.config, "train")
  want = subsets.labelled_subset(train_labels, per_class=3, seed=2)
  assert row["num_labelled"] == len(want) == 30
  assert row["label_fraction"] == pytest.approx(30 / len(train_labels))


def test_training_read_only_the_subset(teacher):
  workdir, _ = teacher
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["data"]["train_subset"]["per_class"] == 3
  # Epochs count the subset: 30 examples at batch 16 (the step count is set, so compare).
  config = runs.load_config(workdir)
  info = data.validate_data_config(config, process_count=1, device_count=jax.device_count())
  assert info.num_train_examples == 30


def test_a_distilled_student_reports_its_teachers_labels(teacher, tmp_path):
  workdir, _ = teacher
  student = helpers.parse_config("config", os.path.join(ROOT, "configs", "distill.py"), "tiny")
  student.unlock()
  student.distill.teacher.workdir = workdir
  name, kw = classifier._subset_of(student)  # pylint: disable=protected-access
  assert name == "per_class=3" and kw == {"per_class": 3, "seed": 2}
  student.distill.alpha = 0.5  # Its own labelled term decides.
  name, kw = classifier._subset_of(student)  # pylint: disable=protected-access
  assert name == "fraction=0.1" and kw["fraction"] == 0.1


def test_the_evaluate_suite_lists_the_row_and_other_runs_give_none(teacher, tmp_path):
  workdir, results = teacher
  cfg = helpers.parse_config("eval_config", EVAL, "tiny", "--eval_config.only=classifier")
  out = suite.run_suite(workdir, cfg, str(tmp_path / "eval"))
  (row,) = out["rows"]
  assert row["top1"] == results["evals"]["classifier"][0]["top1"]
  # A method without logits: no row, no error.
  run = runs.Run.open(workdir, runs.load_config(workdir))
  subject = common.Subject.of_run(run)
  subject = common.Subject(config=subject.config, method=object(), defs=subject.defs,
                           mesh=subject.mesh, init_fn=subject.init_fn, num_classes=10)
  (evaluator,) = common.from_config(cfg.evals, subject, only=("classifier",))
  assert evaluator.run(None, 0) == []


def test_several_runs_share_one_table_and_curve(teacher, tmp_path):
  from contrastive_jax import evaluate as evaluate_cli  # pylint: disable=g-import-not-at-top
  workdir, results = teacher
  cfg = helpers.parse_config("eval_config", EVAL, "tiny", "--eval_config.only=classifier")
  out = str(tmp_path / "joint")
  with pytest.raises(ValueError, match="need --output"):
    evaluate_cli.evaluate(f"teacher={workdir},student={workdir}", cfg)
  result = evaluate_cli.evaluate(f"teacher={workdir},student={workdir}", cfg, out)
  assert [r["run"] for r in result["rows"]] == ["teacher", "student"]
  assert {r["top1"] for r in result["rows"]} == {results["evals"]["classifier"][0]["top1"]}
  table = open(os.path.join(out, "results.csv")).read().splitlines()
  assert table[0].startswith("run,evaluator") and table[1].startswith("teacher,classifier")
  assert os.path.getsize(os.path.join(out, "low_data_curve.png")) > 0
  from contrastive_jax.evaluators import plots  # pylint: disable=g-import-not-at-top
  text = plots.format_table(result["rows"])
  assert "| student: classifier | per_class=3 |" in text and "| teacher: classifier |" in text
  assert suite.parse_runs("a/b/run1, x=gs://bucket/r2") == [("run1", "a/b/run1"),
                                                           ("x", "gs://bucket/r2")]
