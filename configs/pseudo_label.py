"""Pseudo-label (Lee, 2013): the model's own most probable class on an unlabelled image is its
label where the probability reaches a threshold; the unlabelled term's weight ramps up.

  python -m contrastive_jax.main --config=configs/pseudo_label.py             # offline, digits
  python -m contrastive_jax.main --config=configs/pseudo_label.py:cifar10 --workdir=runs/pl250

Lee (2013) ramps the weight alpha(t) from 0 to alpha_f = 3 between epochs 100 and 600 and takes
every unlabelled image. Here the confidence-thresholded variant that later comparisons use
(threshold 0.95), lambda_u = 1 ramped over the first 40% of the steps, optional entropy
minimisation (`pseudo_label.entropy_weight`, Grandvalet & Bengio, 2005), on FixMatch's network,
optimiser, weak augmentation and weight average, so only the unlabelled term differs from
configs/fixmatch.py.
Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, imagenet2012.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.semi_experiment("pseudo_label", preset, PRESETS)
  c.pseudo_label = ml_collections.ConfigDict(dict(threshold=0.95, entropy_weight=0.0))
  c.semi.ramp_steps = int(0.4 * c.num_steps)
  if preset in ("digits", "tiny"):
    c.pseudo_label.threshold = 0.8
  return c
