"""FixMatch (Sohn et al., 2020): pseudo-labels from weakly augmented views, where confident,
are the targets of strongly augmented views of the same unlabelled images.

  python -m contrastive_jax.main --config=configs/fixmatch.py                 # offline, digits
  python -m contrastive_jax.main --config=configs/fixmatch.py:cifar10 --workdir=runs/fm250
  python -m contrastive_jax.main --config=configs/fixmatch.py:cifar10 \\
      --config.semi.per_class=400                                             # 4,000 labels
  python -m contrastive_jax.main --config=configs/fixmatch.py:cifar10_folder \\
      --config.init_from.workdir=runs/<simclr run>     # pretrain, then FixMatch (same encoder)

CIFAR values (the paper's table 4): WRN-28-2, B = 64 labelled and mu = 7 unlabelled per
labelled image, tau = 0.95, lambda_u = 1, SGD with Nesterov momentum 0.9 at lr 0.03 and weight
decay 5e-4 (1e-3 with WRN-28-8 on CIFAR-100), lr x cos(7 pi k / 16K) over K = 2^20 steps,
evaluation with an EMA of the weights (0.999). Weak augmentation: flip and translation by up
to 12.5%; strong: RandAugment with random magnitudes and Cutout (ops/randaugment.py). The
labelled subset: 25 images per class (250 labels) unless `config.semi.per_class` /
`label_fraction` / `index_file` say otherwise. ImageNet: tau = 0.7, lambda_u = 10, mu = 5.
Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, imagenet2012.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.semi_experiment("fixmatch", preset, PRESETS)
  c.fixmatch = ml_collections.ConfigDict(dict(tau=0.95))
  if preset == "imagenet2012":
    c.fixmatch.tau = 0.7
  elif preset in ("digits", "tiny"):
    c.fixmatch.tau = 0.8  # A 400-step run: the model rarely reaches 0.95 on digits early.
  return c
