"""MoCo v3 for ResNets (Chen, Xie & He, 2021, "An Empirical Study of Training Self-Supervised
Vision Transformers"): no queue, a predictor, keys of the whole global batch, both views.

  python -m contrastive_jax.main --config=configs/moco_v3.py            # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/moco_v3.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10                                   # image-folder CIFAR-10
  python -m contrastive_jax.main --config=configs/moco_v3.py:imagenet2012 --workdir=gs://...

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.

config.moco_v3:
  temperature        t; the loss is 2t x the InfoNCE of each direction (the paper's Alg. 1).
  momentum           m_0 of the momentum encoder ...
  momentum_schedule  ... "cosine" from m_0 to 1 over the run (the paper), or "constant".
  proj_dims          projector widths (Linear-BN-ReLU, then Linear-BN without affine).
  pred_dims          predictor widths (Linear-BN-ReLU, then Linear).

ImageNet (the paper's ResNet-50 recipe, appendix and the official repository's 100-epoch
command): batch 4096, LARS lr 0.6 x B/256 (0.3 for 300 and 1000 epochs), weight decay 1e-6,
momentum 0.9, 10 warmup epochs, cosine; t = 1.0; m from 0.99 (0.996 for 1000 epochs); projector
4096-256 and predictor 4096-256 (two layers each for ResNets); global BatchNorm. CIFAR
(solo-learn's cifar/mocov3.yaml, the published 1000-epoch table): ResNet-18, batch 256, LARS
lr 0.3, weight decay 1e-6, t = 0.2, m from 0.99. Differences: the paper draws BYOL's
asymmetric augmentation (blur 1.0 / 0.1, solarisation 0 / 0.2 on the two views, saturation
0.2); here both views share config.augment (saturation 0.8 s).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("moco_v3", preset, PRESETS, depth=50, stem="cifar")
  c.moco_v3 = ml_collections.ConfigDict(dict(
      temperature=1.0, momentum=0.99, momentum_schedule="cosine", proj_dims=(4096, 256),
      pred_dims=(4096, 256)))
  c.optim.update(name="lars", base_lr=0.6, lr_scaling="linear", weight_decay=1e-6,
                 momentum=0.9, warmup_steps=0)
  presets.run_length(c, preset)

  if preset in ("digits", "tiny"):
    c.data.image_size = 16
    c.model.update(depth=18, width=0.25)
    c.moco_v3.update(temperature=0.2, proj_dims=(256, 64), pred_dims=(256, 64))
    c.batch_size = 128
    c.num_epochs = 30
    c.optim.update(base_lr=0.3, warmup_steps=20)
    c.checkpoint_every_steps = 200
  if preset == "tiny":
    c.model.width = 0.125
    c.data.image_size = 8
    c.moco_v3.update(proj_dims=(32, 16), pred_dims=(32, 16))
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset in ("cifar10", "cifar10_folder", "cifar100"):
    c.model.depth = 18
    c.moco_v3.update(temperature=0.2)
    c.batch_size = 256
    c.num_epochs = 1000
    c.optim.update(base_lr=0.3, warmup_steps=10 * 50_000 // 256)
  elif preset == "stl10":
    c.batch_size = 1024
    c.num_epochs = 300
    c.optim.update(base_lr=0.3, weight_decay=1.5e-6, warmup_steps=10 * 100_000 // 1024)
  elif preset == "imagenet2012":
    c.model.stem = "imagenet"
    c.batch_size = 4096
    c.num_epochs = 100
    c.dtype = "bfloat16"
    c.optim.warmup_steps = 10 * 1_281_167 // 4096
  return c
