"""BYOL (Grill et al., 2020, "Bootstrap Your Own Latent"): an online network predicts a slowly
moving target network's projection of the other view; no negatives.

  python -m contrastive_jax.main --config=configs/byol.py               # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/byol.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10                                   # image-folder CIFAR-10
  python -m contrastive_jax.main --config=configs/byol.py:imagenet2012 --workdir=gs://...

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.

config.byol:
  momentum           tau_base of the target ...
  momentum_schedule  ... "cosine" from tau_base to 1 (the paper, section 3.2) or "constant".
  proj_dims          projector widths (Linear-BN-ReLU, then Linear): 4096-256 in the paper.
  pred_dims          predictor widths, the same shape.

ImageNet (section 3.2 and appendix C): ResNet-50, batch 4096, LARS lr 0.2 x B/256, weight
decay 1.5e-6 (biases and BatchNorm excluded from decay and adaptation), 10 warmup epochs,
cosine, 1000 epochs, tau_base 0.996, global BatchNorm. CIFAR (solo-learn's cifar/byol.yaml,
the published 1000-epoch table): ResNet-18, batch 256, LARS lr 1.0, weight decay 1e-5, tau_base
0.99. Differences: BYOL draws asymmetric augmentations (blur 1.0 / 0.1, solarisation 0 / 0.2,
saturation 0.2); here both views share config.augment (blur as the preset sets it, saturation
0.8 s).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("byol", preset, PRESETS, depth=50, stem="cifar")
  c.byol = ml_collections.ConfigDict(dict(
      momentum=0.996, momentum_schedule="cosine", proj_dims=(4096, 256), pred_dims=(4096, 256)))
  c.optim.update(name="lars", base_lr=0.2, lr_scaling="linear", weight_decay=1.5e-6,
                 momentum=0.9, warmup_steps=0)
  presets.run_length(c, preset)

  if preset in ("digits", "tiny"):
    c.data.image_size = 16
    c.model.update(depth=18, width=0.25)
    c.byol.update(momentum=0.99, proj_dims=(256, 64), pred_dims=(256, 64))
    c.batch_size = 128
    c.num_epochs = 30
    c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=20)
    c.checkpoint_every_steps = 200
  if preset == "tiny":
    c.model.width = 0.125
    c.data.image_size = 8
    c.byol.update(proj_dims=(32, 16), pred_dims=(32, 16))
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset in ("cifar10", "cifar10_folder", "cifar100"):
    c.model.depth = 18
    c.byol.update(momentum=0.99)
    c.batch_size = 256
    c.num_epochs = 1000
    c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=10 * 50_000 // 256)
  elif preset == "stl10":
    c.batch_size = 1024
    c.num_epochs = 300
    c.optim.warmup_steps = 10 * 100_000 // 1024
  elif preset == "imagenet2012":
    c.model.stem = "imagenet"
    c.batch_size = 4096
    c.num_epochs = 1000
    c.dtype = "bfloat16"
    c.optim.warmup_steps = 10 * 1_281_167 // 4096
  return c
