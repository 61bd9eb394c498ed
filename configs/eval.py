"""Evaluation protocols for a pretrained checkpoint: linear, kNN, fine-tuning, supervised baseline.

  python -m contrastive_jax.evaluate --workdir=runs/<pretraining run>             # default
  python -m contrastive_jax.evaluate --workdir=/tmp/eval_digits \\
      --eval_config=configs/eval.py:digits                                       # digits run
  python -m contrastive_jax.evaluate --workdir=runs/<run> --output=/tmp/eval \\
      --eval_config.fractions="(0.01,0.1)" --eval_config.seeds="(0,1,2)" \\
      --eval_config.index_file=subsets/imagenet_1percent.txt --eval_config.checkpoints=all

The model, method and dataset come from <workdir>/config.json; `data.*` here may point the
evaluation at other splits of the same source ("" keeps the pretraining value; e.g. STL-10
pretrains on "unlabelled" and must evaluate with data.train_split=train).

Labelled subsets (contrastive_jax/evaluation/subsets.py): every entry of `fractions` (in
(0, 1]), every entry of `per_class` (images per class) and `index_file` (one 0-based index
into the train split, or an image-folder file name, per line) is one subset; each is
evaluated with every seed. Presets: default (ImageNet-style 1%/10%/100%), digits, tiny (tests).
"""
import ml_collections

from contrastive_jax import optim

PRESETS = ("default", "digits", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/eval.py; valid: {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.checkpoints = "latest"  # "latest", "all", or comma-separated steps, e.g. "1000,2000".
  c.protocols = ("linear", "knn", "finetune", "supervised")
  c.fractions = (0.01, 0.1, 1.0)
  c.per_class = ()  # e.g. (1, 5, 10): images per class.
  c.index_file = ""
  c.seeds = (0,)  # Subset draw, probe validation split, fine-tuning order and augmentation.
  c.batch_size = 256  # Feature extraction and evaluation batches (global).
  c.plots = True
  c.data = ml_collections.ConfigDict(dict(source="", name="", path="", train_split="",
                                          eval_split=""))
  c.linear = ml_collections.ConfigDict(dict(steps=200))  # L-BFGS steps per L2 value.
  c.knn = ml_collections.ConfigDict(dict(k=200, temperature=0.1))  # Wu et al. 2018.
  # SimCLR appendix B.5: Nesterov-free momentum SGD, lr 0.05 x B/256, no weight decay, no
  # warmup; random crop + flip only.
  ft_optim = optim.default_config()
  ft_optim.update(name="sgd", base_lr=0.05, lr_scaling="linear", schedule="cosine",
                  warmup_steps=0, weight_decay=0.0, momentum=0.9)
  c.finetune = ml_collections.ConfigDict(dict(
      steps=1000,  # Per subset; epochs > 0 overrides: ceil(epochs x subset size / batch).
      epochs=0.0,
      batch_size=256,
      from_head_layer=0,  # 0: encoder output; k: after the projection head's first k layers.
      crop_scale=(0.25, 1.0),  # Random resized crop, area fraction.
      flip="auto",  # "auto": the pretraining config's augment.flip; "true" / "false".
      optim=ft_optim,
  ))
  # The from-scratch baseline uses the fine-tuning code and budget; these override it
  # (0 / -1 keep the fine-tuning value): training from scratch usually wants more decay.
  c.supervised = ml_collections.ConfigDict(dict(steps=0, base_lr=0.0, weight_decay=-1.0))

  if preset == "digits":
    # 1,437 train / 360 test 16 px digits, 10 classes: 5% is 7 images per class.
    c.fractions = (0.05, 0.1, 0.25, 1.0)
    c.seeds = (0, 1)
    c.knn.k = 20
    c.finetune.update(steps=200, batch_size=64, crop_scale=(0.5, 1.0))
    c.finetune.optim.update(base_lr=0.4)  # 0.1 at batch 64.
    c.supervised.weight_decay = 5e-4
  elif preset == "tiny":
    c.fractions = (0.25, 1.0)
    c.batch_size = 64
    c.linear.steps = 10
    c.knn.k = 10
    c.finetune.update(steps=2, batch_size=16)
  return c
