"""MixMatch (Berthelot et al., 2019): a sharpened average prediction over K augmentations is
each unlabelled image's guessed label; MixUp mixes labelled and unlabelled images and targets.

  python -m contrastive_jax.main --config=configs/mixmatch.py                 # offline, digits
  python -m contrastive_jax.main --config=configs/mixmatch.py:cifar10 --workdir=runs/mm250

Paper values (section 4.1 and the released code): T = 0.5, K = 2, alpha = 0.75, lambda_u = 75
on CIFAR-10 (150 on CIFAR-100) ramped up linearly over the first 16,000 steps, B = 64 labelled
and 64 unlabelled images per step (mu = 1), Adam at lr 0.002, an EMA of the weights (0.999)
for evaluation, weight decay 0.0004 per step (here decoupled AdamW decay 0.2 x lr 0.002),
WRN-28-2, 2^20 steps. Augmentation: flip and translation only (the weak views). The paper
has no ImageNet run: that preset is FixMatch's ImageNet network with these loss values.
Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, imagenet2012.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.semi_experiment("mixmatch", preset, PRESETS)
  c.mixmatch = ml_collections.ConfigDict(dict(k=2, temperature=0.5, alpha=0.75))
  c.semi.update(mu=1, lambda_u=75.0, ramp_steps=16_000)
  c.batch_size = 64
  c.optim.update(name="adamw", base_lr=0.002, schedule="constant", weight_decay=0.2)
  if preset == "cifar100":
    c.semi.lambda_u = 150.0
  elif preset in ("digits", "tiny"):
    c.batch_size = 16
    c.semi.ramp_steps = 100
    c.optim.base_lr = 0.002
    if preset == "tiny":
      c.batch_size = 8
      c.semi.ramp_steps = 2
  elif preset == "imagenet2012":
    c.batch_size = 1024
    c.semi.update(mu=1, lambda_u=75.0)
  return c
