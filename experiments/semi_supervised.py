"""Both families of label-efficient learning on CIFAR-10 with 250 and 4,000 labels.

Per seed s and label count n (25 or 400 images per class, the subset drawn with seed s by the
shared subset code, so every run of (n, s) sees the same labelled images):

  supervised        ResNet-18 x0.25 from scratch on the n labels alone
  pseudo_label      thresholded pseudo-labels on the unlabelled images (Lee, 2013)
  mixmatch          MixMatch (Berthelot et al., 2019)
  fixmatch          FixMatch (Sohn et al., 2020)
  simclr_ft         the SimCLR run of seed s, fine-tuned on the n labels (`supervised`,
                    init_from)
  suncet_ft         the SimCLR + SuNCEt run of (n, s), fine-tuned on the n labels
  simclr_fixmatch   FixMatch starting from the SimCLR run of seed s
  fixmatch_no_u     (diagnostic) FixMatch with lambda_u = 0: its batches, views and weight
                    average, the labelled term alone
  suncet            (pretraining) SimCLR + SuNCEt with the n labels, the SimCLR runs' recipe

Every classifier run has the same budget: --steps steps, B = --labelled_batch labelled images
per step, the same network, optimiser (SGD, Nesterov momentum 0.9, lr --lr, weight decay 5e-4,
FixMatch's cosine) and seed; the semi-supervised ones add mu x B unlabelled images (mu = 7 for
pseudo-label and FixMatch, 1 for MixMatch: their papers' ratios). The pretraining runs (SimCLR:
experiments/momentum_methods.py's, 300 steps of 128 images at 16 px; SuNCEt: the same recipe
with its labelled term) are not counted in that budget; the table says so. Every classifier is
scored by the "classifier" evaluator on the whole test split (10,000 images).

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  for seed in 0 1 2; do python experiments/momentum_methods.py --run=simclr --seed=$seed; done
  for seed in 0 1 2; do for n in 25 400; do
    python experiments/semi_supervised.py --run=suncet --seed=$seed --per_class=$n
    for r in supervised pseudo_label mixmatch fixmatch simclr_ft suncet_ft simclr_fixmatch; do
      python experiments/semi_supervised.py --run=$r --seed=$seed --per_class=$n
    done
  done; done
  python experiments/semi_supervised.py --report --out=docs

`--run` trains into <workdir>/<run>-n<labels>-<seed> (resuming if it exists). `--report`
writes <out>/semi_supervised.{json,csv} and <out>/figures/semi_supervised.png from the runs
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

from experiments import recipes  # noqa: E402  pylint: disable=g-import-not-at-top

CLASSIFIERS = ("supervised", "pseudo_label", "mixmatch", "fixmatch", "simclr_ft", "suncet_ft",
               "simclr_fixmatch", "fixmatch_no_u")
FAMILY = {"supervised": "labels only", "pseudo_label": "semi-supervised",
          "mixmatch": "semi-supervised", "fixmatch": "semi-supervised",
          "simclr_ft": "pretrain + fine-tune", "suncet_ft": "pretrain + fine-tune",
          "simclr_fixmatch": "pretrain + semi-supervised",
          "fixmatch_no_u": "diagnostic"}
FLAGS = flags.FLAGS
flags.DEFINE_enum("run", None, list(CLASSIFIERS) + ["suncet"], "Train this run.")
flags.DEFINE_bool("report", False, "Write the table and figure from the runs found.")
flags.DEFINE_string("workdir", "/tmp/semi", "Parent of the run directories.")
flags.DEFINE_string("pretrained", "/tmp/momentum/simclr-{seed}",
                    "SimCLR pretraining run of each seed ({seed} is replaced).")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_integer("per_class", 25, "Labelled images per class (25: 250 labels, 400: 4,000).")
flags.DEFINE_integer("seed", 0, "Labelled subset, initialisation, data order, augmentation.")
flags.DEFINE_integer("steps", 200, "Steps of every classifier run.")
flags.DEFINE_integer("labelled_batch", 16, "Labelled images per step (B).")
flags.DEFINE_float("lr", 0.1, "Learning rate of every classifier run.")
flags.DEFINE_float("ema_decay", 0.99, "Weight average of the semi-supervised runs (the papers' "
                   "0.999 averages over ~1,000 steps, longer than this budget).")
flags.DEFINE_float("ramp", 0.4, "Pseudo-label and MixMatch ramp their unlabelled weight up over "
                   "this share of the steps.")
flags.DEFINE_bool("mixmatch_adam", False, "MixMatch keeps its paper's optimiser (configs/"
                  "mixmatch.py: Adam at 0.002, weight decay 0.0004 per step); the others share "
                  "SGD.")
flags.DEFINE_integer("pretrain_steps", 300, "Steps of the SuNCEt pretraining runs.")
flags.DEFINE_integer("image_size", 16, "Training and evaluation resolution.")
ARCH = dict(arch="resnet", depth=18, width=0.25, bn_momentum=0.9)
SEMI_CONFIGS = {"pseudo_label": "pseudo_label", "mixmatch": "mixmatch", "fixmatch": "fixmatch",
                "simclr_fixmatch": "fixmatch", "fixmatch_no_u": "fixmatch"}


def _name(run: str, per_class: int, seed: int) -> str:
  return f"{run}-n{10 * per_class}-{seed}"


def _common(c: ml_collections.ConfigDict) -> None:
  c.seed = FLAGS.seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(**ARCH)
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  for name in ("linear", "knn"):
    if name in c.evals:
      c.evals[name].update(at_end=False, every_steps=0)


def make_config(run: str) -> ml_collections.ConfigDict:
  """The CPU-sized CIFAR-10 config of `run` at --per_class and --seed; see the docstring."""
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  if run == "suncet":
    c = presets.load_config_file(os.path.join(ROOT, "configs", "suncet.py"), "cifar10_folder")
    _common(c)
    # experiments/momentum_methods.py's SimCLR recipe, plus SuNCEt on the n labels throughout.
    recipes.simclr_cpu(c, FLAGS.pretrain_steps)
    c.batch_size, c.num_steps = 128, FLAGS.pretrain_steps
    c.suncet.update(temperature=0.2, per_class=FLAGS.per_class, subset_seed=FLAGS.seed,
                    classes_per_batch=10, images_per_class=6,
                    supervised_steps=FLAGS.pretrain_steps)
    return c
  semi = run in SEMI_CONFIGS
  c = presets.load_config_file(
      os.path.join(ROOT, "configs", f"{SEMI_CONFIGS.get(run, 'supervised')}.py"),
      "cifar10_folder")
  _common(c)
  c.num_steps = FLAGS.steps
  if run != "mixmatch" or not FLAGS.mixmatch_adam:
    c.optim = presets.optim_config(name="sgd_nesterov", base_lr=FLAGS.lr, lr_scaling="none",
                                   schedule="fixmatch_cosine", weight_decay=5e-4, momentum=0.9,
                                   warmup_steps=0)
  c.evals.classifier.update(at_end=True, max_test_examples=0)
  if semi:
    c.semi.update(per_class=FLAGS.per_class, subset_seed=FLAGS.seed, ema_decay=FLAGS.ema_decay)
    if c.semi.ramp_steps:  # Pseudo-label and MixMatch ramp their weight up.
      c.semi.ramp_steps = int(FLAGS.ramp * FLAGS.steps)
    c.batch_size = FLAGS.labelled_batch * c.semi.mu
    if run == "fixmatch_no_u":  # FixMatch's pipeline (views, batch, EMA) without its term.
      c.semi.lambda_u = 0.0
  else:
    c.batch_size = FLAGS.labelled_batch
    c.data.train_subset.update(per_class=FLAGS.per_class, seed=FLAGS.seed)
  if run in ("simclr_ft", "simclr_fixmatch"):
    c.init_from.workdir = FLAGS.pretrained.format(seed=FLAGS.seed)
  elif run == "suncet_ft":
    c.init_from.workdir = os.path.join(FLAGS.workdir,
                                       _name("suncet", FLAGS.per_class, FLAGS.seed))
  return c


def run(name: str) -> None:
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(make_config(name),
                           os.path.join(FLAGS.workdir, _name(name, FLAGS.per_class, FLAGS.seed)))


def report() -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  from experiments import classifier_runs  # pylint: disable=g-import-not-at-top
  table = [{"run": r["run"], "family": FAMILY[r["run"]], **r}
           for r in classifier_runs.seed_table(FLAGS.workdir, CLASSIFIERS, lambda v: int(v[1:]),
                                               "labels")]
  os.makedirs(os.path.join(FLAGS.out, "figures"), exist_ok=True)
  settings = {k: FLAGS[k].value for k in ("steps", "labelled_batch", "lr", "ema_decay",
                                          "pretrain_steps", "image_size")}
  settings["model"] = ARCH
  with open(os.path.join(FLAGS.out, "semi_supervised.json"), "w") as f:
    json.dump({"settings": settings, "rows": table}, f, indent=1)
  with open(os.path.join(FLAGS.out, "semi_supervised.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "family", "labels", "seeds", "top1_mean", "top1_std"])
    for r in table:
      w.writerow([r["run"], r["family"], r["labels"], len(r["seeds"]), f"{r['mean']:.2f}",
                  f"{r['std']:.2f}"])
  label_counts = sorted({r["labels"] for r in table})
  fig, ax = plt.subplots(figsize=(8, 3.6))
  width = 0.8 / max(1, len(label_counts))
  for i, labels in enumerate(label_counts):
    rows = {r["run"]: r for r in table if r["labels"] == labels}
    xs = [j + i * width for j, name in enumerate(CLASSIFIERS) if name in rows]
    ax.bar(xs, [rows[n]["mean"] for n in CLASSIFIERS if n in rows], width,
           yerr=[rows[n]["std"] for n in CLASSIFIERS if n in rows], capsize=3,
           label=f"{labels:,} labels")
  ax.set_xticks([j + width * (len(label_counts) - 1) / 2 for j in range(len(CLASSIFIERS))])
  ax.set_xticklabels([n.replace("_", "\n") for n in CLASSIFIERS], fontsize=8)
  ax.set_ylabel("CIFAR-10 test top-1 (%)")
  ax.set_title(f"{settings['steps']} steps, B = {settings['labelled_batch']}, "
               f"{settings['image_size']} px, ResNet-18 x0.25; mean ± std over seeds",
               fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "figures", "semi_supervised.png"), dpi=120)
  print("| run | family | labels | seeds | top-1 (%) |\n|---|---|---|---|---|")
  for r in table:
    print(f"| {r['run']} | {r['family']} | {r['labels']:,} | {len(r['seeds'])} | "
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
