"""Evaluation of a run's checkpoints: linear probe, kNN, fine-tuning, supervised baseline,
CPC v2's ResNet on the patch-feature grid (grid_classifier).

  python -m contrastive_jax.evaluate --workdir=runs/<pretraining run>             # default
  python -m contrastive_jax.evaluate --workdir=/tmp/eval_digits \\
      --eval_config=configs/eval.py:digits                                       # digits run
  python -m contrastive_jax.evaluate --workdir=runs/<run> --output=/tmp/eval \\
      --eval_config.evals.linear.fractions="(0.01,0.1)" --eval_config.only=linear,knn \\
      --eval_config.evals.finetune.index_file=subsets/imagenet_1percent.txt \\
      --eval_config.checkpoints=all

`evals` holds the same evaluator blocks as a pretraining config's `config.evals`
(contrastive_jax/presets.py lists their keys): the same code runs them in both places.
`only` picks some of them by name. The model, method and dataset come from
<workdir>/config.json; `data.*` here may point the evaluation at other splits of the same
source ("" keeps the run's value).

Labelled subsets (contrastive_jax/data/subsets.py): in each block, every entry of `fractions`
(in (0, 1]), every entry of `per_class` (images per class) and `index_file` (one 0-based index
into the labelled split, or an image-folder file name, per line) is one subset; each is
evaluated with every seed. Presets: default (ImageNet-style 1%/10%/100%), imagenet2012 (the
same, with SimCLR's ImageNet linear protocol: SGD over cropped and flipped images, not
full-batch L-BFGS on 1.28M feature vectors), digits, tiny (tests).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("default", "imagenet2012", "digits", "tiny")
_SUBSET_BLOCKS = ("linear", "finetune", "supervised", "grid_classifier")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/eval.py; valid: {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.checkpoints = "latest"  # "latest", "all", or comma-separated steps, e.g. "1000,2000".
  c.only = ""  # Comma-separated evaluator names; "" runs every block of `evals`.
  c.plots = True
  c.data = ml_collections.ConfigDict(dict(source="", name="", path="", train_split="",
                                          eval_split="", labelled_split=""))
  c.evals = ml_collections.ConfigDict(dict(
      linear=presets.linear_eval(),
      knn=presets.knn_eval(),
      finetune=presets.finetune_eval(),
      # Training from scratch usually wants some weight decay.
      supervised=presets.supervised_eval(),
      # A classifier run's own accuracy (teachers, students); no row for other runs.
      classifier=presets.classifier_eval(),
      # CPC v2's ResNet on the patch-feature grid, paired with `supervised` on the same
      # subsets; no row for runs without a patch grid. mode=finetune trains the encoder too.
      grid_classifier=presets.grid_classifier_eval(),
  ))
  subsets = dict(fractions=(0.01, 0.1, 1.0))

  if preset == "imagenet2012":
    c.evals.linear.solver = "sgd"  # presets.linear_eval cites the protocol's values.
  elif preset == "digits":
    # 1,437 train / 360 test 16 px digits, 10 classes: 5% is 7 images per class.
    subsets = dict(fractions=(0.05, 0.1, 0.25, 1.0), seeds=(0, 1))
    c.evals.knn.k = 20
    for name in ("finetune", "supervised"):
      c.evals[name].update(steps=200, train_batch_size=64, crop_scale=(0.5, 1.0))
      c.evals[name].optim.base_lr = 0.4  # 0.1 at batch 64.
    c.evals.supervised.optim.weight_decay = 5e-4
    # A 5x5 grid of 16-64 features: g_phi far smaller than the paper's 11 x 4096.
    c.evals.grid_classifier.update(steps=200, train_batch_size=64, crop_scale=(0.5, 1.0),
                                   depth=2, width=64, bottleneck=16)
  elif preset == "tiny":
    subsets = dict(fractions=(0.25, 1.0))
    c.evals.linear.steps = 10
    c.evals.knn.k = 10
    for name in ("finetune", "supervised"):
      c.evals[name].update(steps=2, train_batch_size=16)
    c.evals.grid_classifier.update(steps=2, train_batch_size=16, depth=1, width=16,
                                   bottleneck=8)
    for block in c.evals.values():
      block.batch_size = 64
  for name in _SUBSET_BLOCKS:
    c.evals[name].update(subsets)
  return c
