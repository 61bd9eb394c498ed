"""SimCLR's augmentation conventions on CIFAR-10: kNN accuracy after the same pretraining budget.

Four variants of `config.augment` (docs/augmentation.md), each trained with 3 seeds:
  old         crop="torchvision", brightness="additive"        (the defaults before)
  crop        crop="inception",      brightness="additive"        (the reference's crop alone)
  brightness  crop="torchvision", brightness="multiplicative"  (its brightness alone)
  new         crop="inception",      brightness="multiplicative"  (the reference; the defaults now)
A seed fixes the initialisation, the data order and the augmentation's random streams, so the
variants of one seed differ in the augmentation conventions alone.

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  python experiments/augment_defaults.py --workdir=/tmp/augment_exp          # trains all 12
  python experiments/augment_defaults.py --workdir=/tmp/augment_exp --report --out=docs

Runs are resumed or skipped when their work directory holds a finished run, so an interrupted
sweep continues where it stopped. `--report` writes <out>/augment_defaults.{json,csv} from each
run's results.json (the kNN row of its last step). The scale flags default to the CPU-sized
run of docs/augmentation.md.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import statistics
import sys
import time

import ml_collections
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import recipes  # noqa: E402  pylint: disable=g-import-not-at-top

VARIANTS = {
    "old": dict(crop="torchvision", brightness="additive"),
    "crop": dict(crop="inception", brightness="additive"),
    "brightness": dict(crop="torchvision", brightness="multiplicative"),
    "new": dict(crop="inception", brightness="multiplicative"),
}

FLAGS = flags.FLAGS
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to train: {', '.join(VARIANTS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to train.")
flags.DEFINE_bool("report", False, "Write the table from the finished runs instead of training.")
flags.DEFINE_string("workdir", "/tmp/augment_exp", "Parent of the run directories.")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_integer("steps", 200, "Pretraining steps of every run.")
flags.DEFINE_integer("batch_size", 128, "Images per step (two views each).")
flags.DEFINE_integer("image_size", 16, "Training and evaluation resolution.")
flags.DEFINE_integer("depth", 18, "ResNet depth.")
flags.DEFINE_float("width", 0.25, "ResNet width multiplier.")


def _load_config(name: str, preset: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def make_config(variant: str, seed: int) -> ml_collections.ConfigDict:
  """docs/suncet_experiment.md's CPU scale, shorter; kNN once, at the last step."""
  c = _load_config("simclr", "cifar10_folder")
  c.seed = seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(depth=FLAGS.depth, width=FLAGS.width)
  recipes.simclr_cpu(c, FLAGS.steps)
  c.batch_size, c.num_steps = FLAGS.batch_size, FLAGS.steps
  c.augment.update(VARIANTS[variant])
  c.log_every_steps = 50
  c.checkpoint_every_steps = FLAGS.steps
  # JPEGs decoded per step: a short run reads under half the split, so caching all is slower.
  c.data.cache = False
  c.evals.knn.update(every_steps=FLAGS.steps, max_train_examples=10_000,
                     max_test_examples=5_000)
  c.evals.linear.at_end = False
  return c


def _knn_top1(workdir: str) -> float | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    results = json.load(f)
  rows = results.get("evals", {}).get("knn") or []
  return float(rows[-1]["top1"]) if rows else None


def train_all() -> None:
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  for seed in (int(s) for s in FLAGS.seeds):
    for variant in FLAGS.variants:
      workdir = os.path.join(FLAGS.workdir, f"{variant}-seed{seed}")
      if _knn_top1(workdir) is not None:
        logging.info("%s: done, skipped", workdir)
        continue
      start = time.time()
      train.train_and_evaluate(make_config(variant, seed), workdir)
      with open(os.path.join(workdir, "wall_time.json"), "w") as f:
        json.dump({"seconds": time.time() - start}, f)
      logging.info("%s: kNN top-1 %s in %.0f s", workdir, _knn_top1(workdir),
                   time.time() - start)


def report() -> None:
  table = {}
  for variant in VARIANTS:
    accs, seconds = {}, []
    for seed in (int(s) for s in FLAGS.seeds):
      workdir = os.path.join(FLAGS.workdir, f"{variant}-seed{seed}")
      top1 = _knn_top1(workdir)
      if top1 is None:
        continue
      accs[seed] = top1
      timing = os.path.join(workdir, "wall_time.json")
      if os.path.isfile(timing):
        with open(timing) as f:
          seconds.append(json.load(f)["seconds"])
    values = list(accs.values())
    table[variant] = {
        **VARIANTS[variant], "knn_top1_by_seed": accs,
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "seconds_per_run": statistics.mean(seconds) if seconds else None}
  old = table["old"]["knn_top1_by_seed"]
  for row in table.values():  # Paired by seed: same initialisation, data order and streams.
    diffs = [v - old[s] for s, v in row["knn_top1_by_seed"].items() if s in old]
    row["minus_old_by_seed"] = diffs
  summary = {"scale": {"steps": FLAGS.steps, "batch_size": FLAGS.batch_size,
                       "image_size": FLAGS.image_size, "depth": FLAGS.depth,
                       "width": FLAGS.width, "seeds": FLAGS.seeds},
             "variants": table}
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "augment_defaults.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(FLAGS.out, "augment_defaults.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["variant", "crop", "brightness", "knn_top1_mean", "knn_top1_std",
                "knn_top1_by_seed"])
    for name, row in table.items():
      w.writerow([name, row["crop"], row["brightness"], _fmt(row["mean"]), _fmt(row["std"]),
                  " ".join(f"{v:.4f}" for v in row["knn_top1_by_seed"].values())])
  print(json.dumps(summary, indent=2))
  print("| variant | crop | brightness | kNN top-1 (%), mean ± std | per seed | minus old, "
        "per seed (points) |\n|---|---|---|---|---|---|")
  for name, row in table.items():
    if row["mean"] is None:
      continue
    std = f" ± {100 * row['std']:.1f}" if row["std"] is not None else ""
    seeds = ", ".join(f"{100 * v:.1f}" for v in row["knn_top1_by_seed"].values())
    diffs = ", ".join(f"{100 * d:+.1f}" for d in row["minus_old_by_seed"])
    print(f"| {name} | {row['crop']} | {row['brightness']} | {100 * row['mean']:.1f}{std} | "
          f"{seeds} | {diffs} |")


def _fmt(v: float | None) -> str:
  return "" if v is None else f"{v:.4f}"


def main(argv):
  del argv
  if FLAGS.report:
    report()
  else:
    train_all()


if __name__ == "__main__":
  app.run(main)
