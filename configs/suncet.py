"""SimCLR + SuNCEt (Assran et al., 2020): SimCLR pretraining that also uses a few labels.

  python -m contrastive_jax.main --config=configs/suncet.py            # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/suncet.py:cifar10    # TFDS CIFAR-10, 10% labels
  python -m contrastive_jax.main --config=configs/suncet.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10 --config.suncet.label_fraction=0.01

Presets: digits (default), tiny (tests), cifar10, cifar10_folder. Everything but `config.suncet`
and `config.method` is configs/simclr.py's preset of the same name, so a SimCLR run and a
SuNCEt run of one preset differ only in the supervised term.

config.suncet:
  weight              SuNCEt's weight in the loss (the paper adds the two losses: 1.0).
  temperature         SuNCEt's temperature (the reference code uses SimCLR's).
  label_fraction      share of the training split that is labelled, in (0, 1] ...
  per_class           ... or, if > 0, that many labelled images per class ...
  index_file          ... or, if set, a subset list (format: contrastive_jax/evaluation/subsets.py).
  subset_seed         seed of the labelled subset (the same subset as an evaluation's seed).
  classes_per_batch   classes in each step's labelled support batch (global, all devices) ...
  images_per_class    ... times images per class (>= 2); one augmented view each.
  supervised_epochs   epochs of the training split with the SuNCEt term; then it is switched
                      off (no more host or device work for it).
  supervised_steps    if >= 0, overrides supervised_epochs in steps.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/suncet.py; valid: {PRESETS}.")
  c = presets.sibling_config(__file__, "simclr.py", preset)
  c.method = "suncet"
  c.suncet = ml_collections.ConfigDict(dict(
      weight=1.0, temperature=c.simclr.temperature,
      label_fraction=0.1, per_class=0, index_file="", subset_seed=0,
      classes_per_batch=10, images_per_class=8,
      supervised_epochs=float(c.num_epochs), supervised_steps=-1))
  if preset == "digits":
    # 10% of the 1,437 training digits is ~14 per class: 8 per class leaves room to vary.
    c.suncet.supervised_epochs = 15.0
  elif preset == "tiny":
    # 4 x 2 = 8 support images (one per fake device); the switch fires inside the 3 steps.
    c.suncet.update(classes_per_batch=4, images_per_class=2, supervised_steps=2)
  elif preset in ("cifar10", "cifar10_folder"):
    # 10% of CIFAR-10 (500 labelled images per class). Switching off halfway is our choice:
    # the paper switches off early to save compute; tune supervised_epochs per budget.
    c.suncet.update(images_per_class=16, supervised_epochs=c.num_epochs / 2)
  return c
