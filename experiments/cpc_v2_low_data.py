"""CPC v2 against SimCLR and a supervised ResNet on CIFAR-10 with 1%, 10% and 100% of the labels.

Pretraining (`--run`): CPC v2 and SimCLR with the same encoder (ResNet-18 x --width, 3x3 stem),
resolution, batch and number of steps, each with its own loss, augmentations and optimiser
(configs/cpc_v2.py and the SimCLR settings of docs/suncet_experiment.md); warmup over a tenth of
the run. CPC v2 cuts each image into a grid of --patch px patches at stride --patch / 2 (5x5 at
24 px) and predicts rows below and above, left and right.

Evaluation (`--eval`), per pretraining run of seed s, on labelled subsets of 1%, 10% and 100% of
the 50,000 training images (drawn with seed s; every protocol of that seed sees the same
images), scored on the 10,000 test images:

  linear           a linear probe on the frozen, mean-pooled features (L-BFGS; the L2 strength
                   chosen on held-out labelled images), both runs
  grid_classifier  CPC v2's protocol: a ResNet g_phi trained on the grid of frozen patch
                   features (CPC v2 runs only)
  supervised       a ResNet-18 x --width trained on pixels from a random initialisation with
                   the same labels and the same steps (evaluated with the CPC v2 run of s)

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  for seed in 0 1 2; do for r in cpc_v2 simclr; do
    python experiments/cpc_v2_low_data.py --run=$r --seed=$seed
    python experiments/cpc_v2_low_data.py --run=$r --seed=$seed --eval
  done; done
  for seed in 0 1 2; do   # the floor: CPC v2's encoder at its random initialisation
    python experiments/cpc_v2_low_data.py --run=cpc_v2 --seed=$seed --eval --random_init
  done
  python experiments/cpc_v2_low_data.py --report --out=docs
  # Diagnostic: three times the steps (seed 0, linear probe only).
  for r in cpc_v2 simclr; do
    python experiments/cpc_v2_low_data.py --run=$r --steps=600 --workdir=/tmp/cpc_low_data_600
    python experiments/cpc_v2_low_data.py --run=$r --steps=600 --workdir=/tmp/cpc_low_data_600 \\
        --eval --only=linear
  done

`--run` trains into <workdir>/<run>-<seed> (resuming if it exists); `--eval` writes that run's
<workdir>/<run>-<seed>/eval/results.json (with --random_init: eval_random/); `--report` writes
<out>/cpc_v2_low_data.{json,csv} and <out>/figures/cpc_v2_low_data.png with mean and standard
deviation over the seeds found.
"""
from __future__ import annotations

import csv
import json
import os
import sys

import ml_collections
import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import recipes  # noqa: E402  pylint: disable=g-import-not-at-top

RUNS = ("cpc_v2", "simclr")
FRACTIONS = (0.01, 0.1, 1.0)
# (row label, run, protocol) in the order of the table.
SERIES = (("CPC v2, ResNet on the feature grid", "cpc_v2", "grid_classifier"),
          ("CPC v2, linear probe", "cpc_v2", "linear"),
          ("SimCLR, linear probe", "simclr", "linear"),
          ("supervised ResNet on pixels", "cpc_v2", "supervised"),
          ("CPC v2's encoder at random initialisation, linear probe", "cpc_v2",
           "linear/random_init"))
FLAGS = flags.FLAGS
flags.DEFINE_enum("run", None, list(RUNS), "Pretrain (or with --eval, evaluate) this run.")
flags.DEFINE_bool("eval", False, "Evaluate the --run of --seed instead of training it.")
flags.DEFINE_bool("report", False, "Write the table and figure from the evaluations found.")
flags.DEFINE_string("workdir", "/tmp/cpc_low_data", "Parent of the run directories.")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_integer("seed", 0, "Initialisation, data order, augmentation, labelled subsets.")
flags.DEFINE_integer("steps", 200, "Pretraining steps (both runs).")
flags.DEFINE_integer("batch_size", 128, "Images per pretraining step (both runs).")
flags.DEFINE_integer("image_size", 24, "Training and evaluation resolution.")
flags.DEFINE_float("width", 0.25, "ResNet-18 width multiplier (encoder and supervised baseline).")
flags.DEFINE_integer("patch", 8, "CPC v2 patch side in pixels (stride: half of it).")
flags.DEFINE_float("cpc_lr", 2e-3, "CPC v2's Adam learning rate (its preset: 4e-4 over 300 "
                   "epochs).")
flags.DEFINE_integer("eval_steps", 200, "Steps of g_phi and of the supervised baseline, per "
                     "subset.")
flags.DEFINE_integer("eval_batch", 64, "Labelled images per step of g_phi and the baseline.")
flags.DEFINE_integer("pool", 10_000, "Labelled pool: class-balanced training images drawn with "
                     "the run's seed; the fractions are of this pool (0: all 50,000).")
flags.DEFINE_bool("random_init", False, "With --eval: the linear probe of the run's "
                  "architecture at a random initialisation (and of the run again), into "
                  "<run>/eval_random.")
flags.DEFINE_string("only", "", "With --eval: these evaluators only (comma-separated, e.g. "
                    "linear); '' runs every one of the run's.")
flags.DEFINE_integer("test", 5_000, "Class-balanced test images scored (0: all 10,000).")


def make_config(name: str) -> ml_collections.ConfigDict:
  """The CPU-sized CIFAR-10 pretraining config of `name`; see the docstring."""
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  c = presets.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), "cifar10_folder")
  c.seed = FLAGS.seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(depth=18, width=FLAGS.width)
  c.batch_size, c.num_steps = FLAGS.batch_size, FLAGS.steps
  c.optim.warmup_steps = max(1, FLAGS.steps // 10)
  if name == "simclr":
    recipes.simclr_cpu(c, FLAGS.steps)
  else:
    c.cpc.update(patch_size=FLAGS.patch, patch_stride=FLAGS.patch // 2)
    c.optim.base_lr = FLAGS.cpc_lr
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.evals.knn.update(at_end=True, every_steps=0, max_train_examples=5_000,
                     max_test_examples=2_000)
  c.evals.linear.at_end = False
  return c


def eval_config(name: str) -> ml_collections.ConfigDict:
  """configs/eval.py's blocks at the subsets and budgets of the docstring."""
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  c = presets.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "default")
  subsets = dict(fractions=FRACTIONS, seeds=(FLAGS.seed,), max_train_examples=FLAGS.pool,
                 max_test_examples=FLAGS.test)
  c.evals.linear.update(subsets)
  keep = ["linear"]
  if name == "cpc_v2":
    keep += ["grid_classifier", "supervised"]
    crop = dict(steps=FLAGS.eval_steps, train_batch_size=FLAGS.eval_batch,
                crop_scale=(0.25, 1.0), **subsets)
    # g_phi at this scale: 2 residual blocks 128 wide on the 5x5 grid (the paper: 11 x 4096).
    c.evals.grid_classifier.update(depth=2, width=128, bottleneck=32, **crop)
    c.evals.supervised.update(**crop)
    for block in ("grid_classifier", "supervised"):
      c.evals[block].optim.base_lr = 0.4  # 0.1 at batch 64 (lr_scaling="linear").
  for block in list(c.evals):
    if block not in keep:
      del c.evals[block]
  c.plots = False
  c.only = "linear" if FLAGS.random_init else FLAGS.only
  c.evals.linear.random_init = FLAGS.random_init
  return c


def _run_dir(name: str, seed: int) -> str:
  return os.path.join(FLAGS.workdir, f"{name}-{seed}")


def train_run(name: str) -> None:
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(make_config(name), _run_dir(name, FLAGS.seed))


def evaluate_run(name: str) -> None:
  from contrastive_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
  workdir = _run_dir(name, FLAGS.seed)
  suite.run_suite(workdir, eval_config(name),
                  os.path.join(workdir, "eval_random" if FLAGS.random_init else "eval"))


def _rows() -> list[dict]:
  """Every evaluated row: {"series", "fraction", "seed", "top1" (%)}."""
  out = []
  for label, name, series in SERIES:
    protocol, _, encoder = series.partition("/")
    for seed in range(100):
      path = os.path.join(_run_dir(name, seed), "eval_random" if encoder else "eval",
                          "results.json")
      if not os.path.isfile(path):
        continue
      with open(path) as f:
        rows = json.load(f)["rows"]
      out += [{"series": label, "fraction": float(r["label_fraction"]), "seed": seed,
               "top1": 100 * float(r["top1"])} for r in rows
              if r["protocol"] == protocol and r["encoder"] == (encoder or r["encoder"])]
  return out


def _knn() -> dict[str, list[float]]:
  """Each run's kNN top-1 (%) at the end of pretraining, by run name, seeds ascending."""
  out: dict[str, list[float]] = {}
  for name in RUNS:
    for seed in range(100):
      path = os.path.join(_run_dir(name, seed), "results.json")
      if os.path.isfile(path):
        with open(path) as f:
          rows = json.load(f).get("evals", {}).get("knn", [])
        out.setdefault(name, []).extend(100 * float(r["top1"]) for r in rows)
  return out


def report() -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  found = _rows()
  table = []
  for label, _, _ in SERIES:
    for fraction in FRACTIONS:
      by_seed = {r["seed"]: r["top1"] for r in found
                 if r["series"] == label and np.isclose(r["fraction"], fraction)}
      if by_seed:
        values = [by_seed[s] for s in sorted(by_seed)]
        table.append({"series": label, "fraction": fraction, "seeds": sorted(by_seed),
                      "top1": values, "mean": float(np.mean(values)),
                      "std": float(np.std(values))})
  settings = {k: FLAGS[k].value for k in ("steps", "batch_size", "image_size", "width", "patch",
                                          "cpc_lr", "eval_steps", "eval_batch", "pool",
                                          "test")}
  knn = {name: {"top1": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
         for name, v in _knn().items()}
  os.makedirs(os.path.join(FLAGS.out, "figures"), exist_ok=True)
  with open(os.path.join(FLAGS.out, "cpc_v2_low_data.json"), "w") as f:
    json.dump({"settings": settings, "rows": table, "knn_end_of_pretraining": knn}, f,
              indent=1)
  with open(os.path.join(FLAGS.out, "cpc_v2_low_data.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["series", "label_fraction", "seeds", "top1_mean", "top1_std"])
    for r in table:
      w.writerow([r["series"], r["fraction"], len(r["seeds"]), f"{r['mean']:.2f}",
                  f"{r['std']:.2f}"])
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, _, _ in SERIES:
    rows = [r for r in table if r["series"] == label]
    if rows:
      ax.errorbar([100 * r["fraction"] for r in rows], [r["mean"] for r in rows],
                  yerr=[r["std"] for r in rows], marker="o", capsize=3, label=label)
  ax.set_xscale("log")
  pool = f"a class-balanced pool of {FLAGS.pool:,}" if FLAGS.pool else "all 50,000"
  ax.set_xlabel(f"labelled images (% of {pool} training images)")
  ax.set_xticks([100 * f for f in FRACTIONS], [f"{100 * f:g}%" for f in FRACTIONS])
  ax.set_ylabel("CIFAR-10 test top-1 (%)")
  ax.set_title(f"{settings['steps']} pretraining steps of {settings['batch_size']}, "
               f"{settings['image_size']} px, ResNet-18 x{settings['width']:g}; "
               "mean ± std over seeds", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "figures", "cpc_v2_low_data.png"), dpi=120)
  print("| protocol | 1% | 10% | 100% |\n|---|---|---|---|")
  for label, _, _ in SERIES:
    cells = {r["fraction"]: f"{r['mean']:.1f} ± {r['std']:.1f}" for r in table
             if r["series"] == label}
    print(f"| {label} | " + " | ".join(cells.get(f, "") for f in FRACTIONS) + " |")
  for name, k in knn.items():
    print(f"kNN after pretraining, {name}: {k['mean']:.1f} ± {k['std']:.1f}")


def main(argv):
  del argv
  if FLAGS.report:
    report()
  elif FLAGS.run and FLAGS.eval:
    evaluate_run(FLAGS.run)
  elif FLAGS.run:
    train_run(FLAGS.run)
  else:
    raise app.UsageError("Give --run=<run> [--eval] or --report.")


if __name__ == "__main__":
  app.run(main)
