"""SimCLR vs SimCLR + SuNCEt with 10% of CIFAR-10's labels: kNN accuracy against steps.

The claim under test (Assran et al., 2020): adding SuNCEt on the few labelled images reaches
SimCLR's accuracy in fewer pretraining steps. Both runs share the seed, data order, model,
optimiser and budget; they differ only in config.method (and SuNCEt's config.suncet block).

  # CIFAR-10 as JPEGs: mkdir -p /tmp/cifar10 && tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
  python experiments/suncet_vs_simclr.py --run=simclr --workdir=/tmp/suncet/exp
  python experiments/suncet_vs_simclr.py --run=suncet --workdir=/tmp/suncet/exp
  python experiments/suncet_vs_simclr.py --report --workdir=/tmp/suncet/exp --out=docs

`--run` trains one method into <workdir>/<method> (resuming if it exists); `--report` reads
both runs' logged kNN accuracy (TensorBoard scalars, eval/knn/top1) and writes
<out>/suncet_vs_simclr.{json,csv} and <out>/figures/suncet_vs_simclr_knn.png. The scale flags
default to the CPU-sized run documented in docs/suncet_experiment.md.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys

import ml_collections
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import recipes  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_enum("run", None, ["simclr", "suncet"], "Train this method.")
flags.DEFINE_bool("probe", False, "Linear-probe both runs' final checkpoints on the labelled "
                  "subset (see `probe`).")
flags.DEFINE_bool("report", False, "Write the table and figure from both runs.")
flags.DEFINE_string("workdir", "/tmp/suncet/exp", "Parent of the two run directories.")
flags.DEFINE_string("out", os.path.join(ROOT, "docs"), "Where --report writes.")
flags.DEFINE_string("data_path", "/tmp/cifar10", "CIFAR-10 folder: <path>/{train,test}/<class>.")
flags.DEFINE_integer("steps", 800, "Pretraining steps (both runs).")
flags.DEFINE_integer("batch_size", 128, "Unlabelled images per step (two views each).")
flags.DEFINE_integer("image_size", 16, "Training and evaluation resolution.")
flags.DEFINE_integer("depth", 18, "ResNet depth.")
flags.DEFINE_float("width", 0.25, "ResNet width multiplier.")
flags.DEFINE_integer("knn_every", 50, "Steps between kNN evaluations.")
flags.DEFINE_float("label_fraction", 0.1, "Labelled share of the training split (SuNCEt).")
flags.DEFINE_integer("classes_per_batch", 10, "SuNCEt support: classes per step.")
flags.DEFINE_integer("images_per_class", 6, "SuNCEt support: images per class per step.")
flags.DEFINE_integer("supervised_steps", 400, "Steps with the SuNCEt term (-1: all).")
flags.DEFINE_integer("seed", 0, "Shared seed: initialisation, data order, augmentation.")


def _load_config(name: str, preset: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def make_config(method: str) -> ml_collections.ConfigDict:
  """The CPU-sized CIFAR-10 config shared by both runs; see the module docstring."""
  c = _load_config(method, "cifar10_folder")
  c.seed = FLAGS.seed
  c.data.path, c.data.image_size = FLAGS.data_path, FLAGS.image_size
  c.model.update(depth=FLAGS.depth, width=FLAGS.width)
  recipes.simclr_cpu(c, FLAGS.steps)
  c.batch_size, c.num_steps = FLAGS.batch_size, FLAGS.steps
  c.log_every_steps = 10
  c.checkpoint_every_steps = max(100, FLAGS.knn_every * 4)
  c.evals.knn.update(every_steps=FLAGS.knn_every, max_train_examples=10_000,
                     max_test_examples=5_000)
  c.evals.linear.max_train_examples = 10_000
  if method == "suncet":
    c.suncet.update(temperature=c.simclr.temperature, label_fraction=FLAGS.label_fraction,
                    classes_per_batch=FLAGS.classes_per_batch,
                    images_per_class=FLAGS.images_per_class,
                    supervised_steps=(FLAGS.supervised_steps if FLAGS.supervised_steps >= 0
                                      else FLAGS.steps))
  return c


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
  """First evaluated step whose accuracy is >= target (None if never)."""
  return next((s for s, v in curve if v >= target), None)


def probe() -> None:
  """Linear probe of each run's final encoder, trained on the labelled subset only.

  The semi-supervised protocol: the classifier sees the same label_fraction / subset_seed
  labels as SuNCEt did (never more), and is tested on the whole test split. Writes
  <run>/probe_labelled.json.
  """
  # pylint: disable=g-import-not-at-top
  from contrastive_jax import presets, runs
  from contrastive_jax.evaluators import common
  # pylint: enable=g-import-not-at-top
  config = make_config("suncet")
  block = presets.linear_eval(fractions=(config.suncet.label_fraction,),
                              seeds=(config.suncet.subset_seed,), random_init=True)
  for method in ("simclr", "suncet"):
    run = runs.Run.open(os.path.join(FLAGS.workdir, method))
    step = run.steps("latest")[0]
    subject = common.Subject.of_run(run)
    (linear,) = common.from_config(ml_collections.ConfigDict({"linear": block}), subject)
    rows = linear.run(run.restore(step), step)
    out = {"step": step, "train_examples": rows[0]["num_labelled"]}
    for r in rows:
      out[r["encoder"]] = {"top1": r["top1"], "top5": r["top5"], "l2": r["l2"]}
    logging.info("%s: %s", method, out)
    with open(os.path.join(FLAGS.workdir, method, "probe_labelled.json"), "w") as f:
      json.dump(out, f, indent=2)


def report() -> None:
  from contrastive_jax.evaluators import plots  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  runs = {}
  for method in ("simclr", "suncet"):
    workdir = os.path.join(FLAGS.workdir, method)
    scalars = plots.read_scalars(workdir)
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    probe_path = os.path.join(workdir, "probe_labelled.json")
    labelled_probe = None
    if os.path.isfile(probe_path):
      with open(probe_path) as f:
        labelled_probe = json.load(f)
    runs[method] = {"knn": scalars["eval/knn/top1"], "results": results, "config": config,
                    "probe": labelled_probe}
  final_simclr = runs["simclr"]["knn"][-1][1]
  match = steps_to_reach(runs["suncet"]["knn"], final_simclr)
  cfg = runs["suncet"]["config"]
  support = cfg["suncet"]["classes_per_batch"] * cfg["suncet"]["images_per_class"]
  unlabelled_views = 2 * cfg["batch_size"]
  sup_steps = cfg["suncet"]["supervised_steps"]

  def images_through_encoder(method: str, steps: int) -> int:
    extra = support * min(steps, sup_steps) if method == "suncet" else 0
    return unlabelled_views * steps + extra

  total = cfg["num_steps"]
  summary = {
      "scale": {k: cfg[k] for k in ("batch_size", "num_steps", "seed")} | {
          "image_size": cfg["data"]["image_size"], "depth": cfg["model"]["depth"],
          "width": cfg["model"]["width"], "suncet": cfg["suncet"],
          "knn_every_steps": cfg["eval"]["knn_every_steps"]},
      "simclr_final_knn_top1": final_simclr,
      "suncet_final_knn_top1": runs["suncet"]["knn"][-1][1],
      "suncet_steps_to_simclr_final": match,
      "simclr_steps": total,
      "images_through_encoder": {
          "simclr_total": images_through_encoder("simclr", total),
          "suncet_to_match": images_through_encoder("suncet", match) if match else None},
      "steps_to_reach": {f"{t:.4g}": {m: steps_to_reach(r["knn"], t) for m, r in runs.items()}
                         for t in (0.30, 0.35, 0.38, final_simclr)},
      "linear_probe_on_labelled_subset": {m: r["probe"] for m, r in runs.items()},
      "curves": {m: r["knn"] for m, r in runs.items()},
  }
  os.makedirs(os.path.join(FLAGS.out, "figures"), exist_ok=True)
  with open(os.path.join(FLAGS.out, "suncet_vs_simclr.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(FLAGS.out, "suncet_vs_simclr.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["step", "simclr_knn_top1", "suncet_knn_top1"])
    suncet = dict(runs["suncet"]["knn"])
    for step, v in runs["simclr"]["knn"]:
      w.writerow([step, f"{v:.4f}", f"{suncet.get(step, float('nan')):.4f}"])

  fig, ax = plt.subplots(figsize=(6, 4))
  for method, label, colour in (("simclr", "SimCLR", "tab:blue"),
                                ("suncet", "SimCLR + SuNCEt (10% labels)", "tab:red")):
    steps, values = zip(*runs[method]["knn"])
    ax.plot(steps, [100 * v for v in values], marker="o", ms=3, label=label, color=colour)
  ax.axhline(100 * final_simclr, color="tab:blue", ls=":", lw=1)
  if match:
    ax.axvline(match, color="tab:red", ls=":", lw=1)
    ax.annotate(f"SuNCEt reaches SimCLR's final\nkNN accuracy at step {match} of {total}",
                (match, 100 * final_simclr), xytext=(10, -40), textcoords="offset points",
                fontsize=8)
  if sup_steps < total:
    ax.axvspan(0, sup_steps, color="tab:red", alpha=0.05, label="SuNCEt term on")
  ax.set_xlabel("pretraining step")
  ax.set_ylabel("kNN top-1 on CIFAR-10 test (%)")
  ax.set_title(f"CIFAR-10, ResNet-{cfg['model']['depth']} x{cfg['model']['width']}, "
               f"{cfg['data']['image_size']} px, batch {cfg['batch_size']}", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  path = os.path.join(FLAGS.out, "figures", "suncet_vs_simclr_knn.png")
  fig.savefig(path, dpi=110)
  print(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=2))
  print("Figure:", path)


def main(argv):
  del argv
  if FLAGS.run:
    from contrastive_jax import train  # pylint: disable=g-import-not-at-top
    from contrastive_jax.data import tf_setup  # pylint: disable=g-import-not-at-top
    tf_setup.hide_accelerators_from_tf()
    config = make_config(FLAGS.run)
    results = train.train_and_evaluate(config, os.path.join(FLAGS.workdir, FLAGS.run))
    logging.info("Results: %s", results)
  if FLAGS.probe:
    probe()
  if FLAGS.report:
    report()


if __name__ == "__main__":
  app.run(main)
