"""Pretrain, fine-tune, distil (SimCLRv2) on CIFAR-10 with 1% and 10% of the labels.

Per seed s and label fraction f (the subset `config.data.train_subset` draws with seed s):

  teacher           SimCLR-pretrained ResNet-18 x0.25 fine-tuned on the labels
                    (`supervised`, init_from the pretraining run)
  self_distilled    a randomly initialised ResNet-18 x0.25 learns the teacher's
                    probabilities (t = 1) on all 50,000 training images, no labels
  small_distilled   the same for a ResNet-10 x0.25 student (big-to-small)
  supervised        ResNet-18 x0.25 from scratch on the labels alone
  small_supervised  ResNet-10 x0.25 from scratch on the labels alone

The pretraining runs are experiments/momentum_methods.py's SimCLR runs (16 px, batch 128,
300 steps; --pretrained). Every classifier is scored by the "classifier" evaluator at its last
step on 5,000 class-balanced test images.

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  for seed in 0 1 2; do python experiments/momentum_methods.py --run=simclr --seed=$seed; done
  for seed in 0 1 2; do for f in 0.01 0.1; do for r in teacher self_distilled \\
      small_distilled supervised small_supervised; do
    python experiments/distillation.py --run=$r --seed=$seed --fraction=$f
  done; done; done
  python experiments/distillation.py --report --out=docs

`--run` trains into <workdir>/<run>-f<fraction>-<seed> (resuming if it exists; the students
need their seed's teacher). `--report` writes <out>/distillation.{json,csv} from the runs
found, with mean and standard deviation over seeds.
"""
from __future__ import annotations

import csv
import json
import os
import sys

import ml_collections
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RUNS = ("teacher", "self_distilled", "small_distilled", "supervised", "small_supervised")
FLAGS = flags.FLAGS
flags.DEFINE_enum("run", None, list(RUNS), "Train this run.")
flags.DEFINE_bool("report", False, "Write the table from the runs found.")
flags.DEFINE_string("workdir", "/tmp/distillation", "Parent of the run directories.")
flags.DEFINE_string("pretrained", "/tmp/momentum/simclr-{seed}",
                    "SimCLR pretraining run of each seed ({seed} is replaced).")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_float("fraction", 0.1, "Share of the training labels.")
flags.DEFINE_integer("seed", 0, "Labelled subset, initialisation, data order, augmentation.")
flags.DEFINE_integer("finetune_steps", 150, "Steps of every run trained on the labels.")
flags.DEFINE_integer("distill_steps", 200, "Steps of the distilled students.")
flags.DEFINE_integer("batch_size", 128, "Images per step.")
flags.DEFINE_integer("image_size", 16, "Training and evaluation resolution.")
flags.DEFINE_integer("test_examples", 5_000, "Class-balanced test images scored.")
SMALL = dict(depth=10, width=0.25)
BIG = dict(depth=18, width=0.25)


def _name(run: str, fraction: float, seed: int) -> str:
  return f"{run}-f{fraction:g}-{seed}"


def make_config(run: str) -> ml_collections.ConfigDict:
  """The CPU-sized CIFAR-10 config of `run` at --fraction and --seed; see the docstring."""
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  distilled = run.endswith("distilled")
  c = presets.load_config_file(
      os.path.join(ROOT, "configs", "distill.py" if distilled else "supervised.py"),
      "cifar10_folder")
  c.seed = FLAGS.seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(**(SMALL if run.startswith("small") else BIG))
  c.batch_size = FLAGS.batch_size
  # SGD with momentum 0.9, lr 0.4 x B/256 (the digits preset's rate for this width), cosine.
  c.optim.update(name="sgd", base_lr=0.4, lr_scaling="linear", weight_decay=5e-4,
                 momentum=0.9)
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.evals.classifier.update(at_end=True, max_test_examples=FLAGS.test_examples)
  for name in ("linear", "knn"):
    if name in c.evals:
      c.evals[name].update(at_end=False, every_steps=0)
  if distilled:
    c.num_steps = FLAGS.distill_steps
    c.optim.warmup_steps = FLAGS.distill_steps // 10
    c.distill.teacher.update(workdir=os.path.join(FLAGS.workdir, _name("teacher", FLAGS.fraction,
                                                                      FLAGS.seed)), **BIG)
    c.distill.update(temperature=1.0, alpha=1.0)  # SimCLRv2: unlabelled images, t = 1.
  else:
    c.num_steps = FLAGS.finetune_steps
    c.optim.warmup_steps = FLAGS.finetune_steps // 10
    c.data.train_subset.update(fraction=FLAGS.fraction, seed=FLAGS.seed)
    if run == "teacher":
      c.init_from.workdir = FLAGS.pretrained.format(seed=FLAGS.seed)
  return c


def run(name: str) -> None:
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(make_config(name),
                           os.path.join(FLAGS.workdir, _name(name, FLAGS.fraction, FLAGS.seed)))


def report() -> None:
  from experiments import classifier_runs  # pylint: disable=g-import-not-at-top
  table = classifier_runs.seed_table(FLAGS.workdir, RUNS, lambda v: float(v[1:]),
                                     "label_fraction")
  os.makedirs(FLAGS.out, exist_ok=True)
  settings = {k: FLAGS[k].value for k in ("finetune_steps", "distill_steps", "batch_size",
                                          "image_size", "test_examples")}
  with open(os.path.join(FLAGS.out, "distillation.json"), "w") as f:
    json.dump({"settings": settings, "rows": table}, f, indent=1)
  with open(os.path.join(FLAGS.out, "distillation.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "label_fraction", "seeds", "top1_mean", "top1_std"])
    for r in table:
      w.writerow([r["run"], r["label_fraction"], len(r["seeds"]), f"{r['mean']:.2f}",
                  f"{r['std']:.2f}"])
  print("| run | labels | seeds | top-1 (%) |\n|---|---|---|---|")
  for r in table:
    print(f"| {r['run']} | {100 * r['label_fraction']:g}% | {len(r['seeds'])} | "
          f"{r['mean']:.1f} ± {r['std']:.1f} |")


def main(argv):
  del argv
  if FLAGS.report:
    report()
  elif FLAGS.run:
    run(FLAGS.run)
  else:
    raise app.UsageError("Give --run=<run> or --report.")


if __name__ == "__main__":
  app.run(main)
