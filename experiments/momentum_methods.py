"""SimCLR, MoCo v2, MoCo v3 and BYOL on CIFAR-10: kNN accuracy against pretraining steps.

Every run shares the encoder, batch, step budget, augmentation (the cifar10_folder preset) and
kNN monitor; each method keeps its own paper's CIFAR recipe otherwise (its config file's cifar10
preset: optimiser, learning rate per 256 images, temperature, momentum, queue, heads), with a
warmup of a tenth of the run. SimCLR uses the settings of docs/suncet_experiment.md.

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  for seed in 0 1 2; do for m in simclr moco_v2 moco_v3 byol; do
    python experiments/momentum_methods.py --run=$m --seed=$seed --workdir=/tmp/momentum
  done; done
  python experiments/momentum_methods.py --report --workdir=/tmp/momentum --out=docs

`moco_v2_lr8` is MoCo v2 with 8x its recipe's learning rate, to see whether the recipe's rate
(tuned for 200 epochs) is what holds it back in a short run.

`--run` trains one method and seed into <workdir>/<method>-<seed> (resuming if it exists);
`--report` reads every run's logged kNN accuracy (eval/knn/top1) and writes
<out>/momentum_methods.{json,csv} and <out>/figures/momentum_methods_knn.png (mean and standard
deviation over the seeds found).
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

METHODS = ("simclr", "moco_v2", "moco_v3", "byol")
# Runs beyond the methods' own recipes: name -> (method, base learning-rate multiplier).
VARIANTS = {"moco_v2_lr8": ("moco_v2", 8.0)}
RUNS = METHODS + tuple(VARIANTS)
FLAGS = flags.FLAGS
flags.DEFINE_enum("run", None, list(RUNS), "Train this method (or variant).")
flags.DEFINE_bool("report", False, "Write the table and figure from the runs found.")
flags.DEFINE_bool("random_baseline", False, "kNN of randomly initialised encoders (SimCLR's "
                  "architecture, seeds 0-2) into <workdir>/random_init.json.")
flags.DEFINE_string("workdir", "/tmp/momentum", "Parent of the run directories.")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_integer("steps", 300, "Pretraining steps (every run).")
flags.DEFINE_integer("batch_size", 128, "Images per step (two views each).")
flags.DEFINE_integer("image_size", 16, "Training and evaluation resolution.")
flags.DEFINE_integer("depth", 18, "ResNet depth.")
flags.DEFINE_float("width", 0.25, "ResNet width multiplier.")
flags.DEFINE_integer("knn_every", 50, "Steps between kNN evaluations.")
flags.DEFINE_integer("knn_train", 5_000, "kNN bank: class-balanced training images.")
flags.DEFINE_integer("knn_test", 2_000, "kNN queries: class-balanced test images.")
flags.DEFINE_integer("seed", 0, "Initialisation, data order and augmentation.")


def make_config(name: str) -> ml_collections.ConfigDict:
  """The CPU-sized CIFAR-10 config of `name` (a method or a variant); see the docstring."""
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  method, lr_scale = VARIANTS.get(name, (name, 1.0))
  c = presets.load_config_file(os.path.join(ROOT, "configs", f"{method}.py"), "cifar10_folder")
  c.seed = FLAGS.seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(depth=FLAGS.depth, width=FLAGS.width)
  c.batch_size, c.num_steps = FLAGS.batch_size, FLAGS.steps
  c.optim.warmup_steps = max(1, FLAGS.steps // 10)
  if method == "simclr":
    recipes.simclr_cpu(c, FLAGS.steps)
  c.optim.base_lr *= lr_scale
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.evals.knn.update(every_steps=FLAGS.knn_every, max_train_examples=FLAGS.knn_train,
                     max_test_examples=FLAGS.knn_test)
  c.evals.linear.at_end = False
  return c


def run(method: str) -> None:
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(make_config(method),
                           os.path.join(FLAGS.workdir, f"{method}-{FLAGS.seed}"))


def random_baseline() -> None:
  """The kNN monitor on randomly initialised encoders: the floor every curve starts from."""
  # pylint: disable=g-import-not-at-top
  from contrastive_jax import step as step_lib
  from contrastive_jax import train
  from contrastive_jax.evaluators import common
  # pylint: enable=g-import-not-at-top
  out = {}
  for seed in (0, 1, 2):
    FLAGS.seed = seed
    config = make_config("simclr")
    p = train.plan(config)
    subject = common.Subject(config=config, method=p.method,
                             defs=step_lib.model_defs(p.method, seed), mesh=p.mesh,
                             init_fn=step_lib.make_init_fn(p.method, p.tx, p.mesh),
                             num_classes=p.info.num_classes)
    (knn,) = common.from_config(config.evals, subject, only=("knn",))
    (row,) = knn.run(subject.init_fn(seed), 0)
    out[seed] = row["top1"]
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "random_init.json"), "w") as f:
    json.dump(out, f)
  print(f"random encoders: kNN {100 * np.mean(list(out.values())):.1f} +- "
        f"{100 * np.std(list(out.values())):.1f} ({out})")


def _curves() -> dict[str, dict[int, list[tuple[int, float]]]]:
  from contrastive_jax.evaluators import plots  # pylint: disable=g-import-not-at-top
  out: dict[str, dict[int, list[tuple[int, float]]]] = {}
  for name in sorted(os.listdir(FLAGS.workdir)):
    method, _, seed = name.rpartition("-")
    path = os.path.join(FLAGS.workdir, name)
    if method not in RUNS or not os.path.isfile(os.path.join(path, "results.json")):
      continue
    knn = plots.read_scalars(path).get("eval/knn/top1", [])
    out.setdefault(method, {})[int(seed)] = [(int(s), float(v)) for s, v in knn]
  return out


def report() -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  curves = _curves()
  rows, summary = [], {}
  fig, ax = plt.subplots(figsize=(6, 4))
  for method in RUNS:
    if method not in curves:
      continue
    seeds = sorted(curves[method])
    steps = sorted({s for seed in seeds for s, _ in curves[method][seed]})
    table = {s: [dict(curves[method][seed]).get(s) for seed in seeds] for s in steps}
    mean = [float(np.mean([v for v in table[s] if v is not None])) for s in steps]
    std = [float(np.std([v for v in table[s] if v is not None])) for s in steps]
    for s, m, d in zip(steps, mean, std):
      rows.append({"method": method, "step": s, "seeds": len(seeds), "knn_top1_mean": m,
                   "knn_top1_std": d})
    final = [curves[method][seed][-1][1] for seed in seeds]
    summary[method] = {"seeds": seeds, "final_step": steps[-1],
                       "final_knn_top1": final, "mean": float(np.mean(final)),
                       "std": float(np.std(final))}
    ax.errorbar(steps, [100 * m for m in mean], yerr=[100 * d for d in std], label=method,
                capsize=2)
  baseline_path = os.path.join(FLAGS.workdir, "random_init.json")
  baseline = None
  if os.path.isfile(baseline_path):
    with open(baseline_path) as f:
      values = list(json.load(f).values())
    baseline = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                "seeds": len(values)}
    ax.axhline(100 * baseline["mean"], color="grey", linestyle="--",
               label="random encoder")
    ax.legend()
  ax.set_xlabel("pretraining step")
  ax.set_ylabel("kNN top-1 (%)")
  ax.set_title("CIFAR-10, 16 px, ResNet-18 x0.25, batch 128")
  ax.legend()
  ax.grid(alpha=0.3)
  os.makedirs(os.path.join(FLAGS.out, "figures"), exist_ok=True)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "figures", "momentum_methods_knn.png"), dpi=120)
  with open(os.path.join(FLAGS.out, "momentum_methods.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  scale = {k: getattr(FLAGS, k) for k in ("steps", "batch_size", "image_size", "depth",
                                          "width", "knn_every", "knn_train", "knn_test")}
  with open(os.path.join(FLAGS.out, "momentum_methods.json"), "w") as f:
    json.dump({"scale": scale, "final": summary, "random_init": baseline, "curves": rows}, f,
              indent=2)
  if baseline:
    print(f"random encoder: kNN {100 * baseline['mean']:.1f} +- {100 * baseline['std']:.1f}")
  for method, s in summary.items():
    print(f"{method}: step {s['final_step']} kNN {100 * s['mean']:.1f} +- {100 * s['std']:.1f} "
          f"(seeds {s['seeds']})")


def main(argv) -> None:
  del argv
  if FLAGS.run:
    run(FLAGS.run)
  if FLAGS.random_baseline:
    random_baseline()
  if FLAGS.report:
    report()


if __name__ == "__main__":
  app.run(main)
