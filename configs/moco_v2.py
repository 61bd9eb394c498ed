"""MoCo v2 (Chen, Fan, Girshick & He, 2020, "Improved Baselines with Momentum Contrastive
Learning"): a momentum key encoder, a queue of negatives, an MLP head and blur.

  python -m contrastive_jax.main --config=configs/moco_v2.py            # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/moco_v2.py:cifar10    # TFDS CIFAR-10
  python -m contrastive_jax.main --config=configs/moco_v2.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10                                   # image-folder CIFAR-10
  python -m contrastive_jax.main --config=configs/moco_v2.py:imagenet2012 --workdir=gs://...

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.

config.moco_v2:
  temperature        t of the InfoNCE over the positive and the queue.
  queue_size         K negatives; a multiple of the keys enqueued per step.
  momentum           m of the key encoder, xi <- m xi + (1 - m) theta ...
  momentum_schedule  ... "constant" (MoCo) or "cosine" (from m to 1, as BYOL).
  proj_dims          the MLP head's widths: hidden (the encoder's width in MoCo v2) then output.
  proj_batch_norm    BatchNorm in the head's hidden layer (MoCo v2 has none).
  bn_group_size      BatchNorm statistics over groups of this many rows of the global batch
                     (one GPU's share in the paper); 0 is global BatchNorm.
  shuffle_bn         the key encoder sees the batch shuffled across the groups (MoCo's
                     shuffling BN); required when 0 < bn_group_size < batch_size.
  symmetric          both crops as queries and keys (the MoCo CIFAR-10 demo's option).

ImageNet (MoCo v2 section 3 and the MoCo paper section 4): ResNet-50, batch 256 over 8 GPUs
(32 per BatchNorm group), SGD momentum 0.9, lr 0.03 x B/256, weight decay 1e-4, cosine, 200
epochs, t = 0.2, K = 65,536, m = 0.999, MLP head 2048-128, augmentation: crop scale (0.2, 1),
colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale 0.2, blur p = 0.5 sigma (0.1, 2),
flip. CIFAR (the MoCo repository's CIFAR-10 demo, "moco_cifar10_demo"): ResNet-18 with the 3x3
stem, batch 512 in 8 BatchNorm groups, lr 0.06, weight decay 5e-4, 200 epochs, t = 0.1,
K = 4,096, m = 0.99, no blur. Differences: weight decay skips biases and normalisation
parameters here (PyTorch's SGD decays all of them).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("moco_v2", preset, PRESETS, depth=50, stem="cifar")
  c.moco_v2 = ml_collections.ConfigDict(dict(
      temperature=0.2, queue_size=65_536, momentum=0.999, momentum_schedule="constant",
      proj_dims=(2048, 128), proj_batch_norm=False, bn_group_size=32, shuffle_bn=True,
      symmetric=False))
  c.optim.update(name="sgd", base_lr=0.03, lr_scaling="linear", weight_decay=1e-4,
                 momentum=0.9, warmup_steps=0)
  c.augment.color_strength = 0.5  # MoCo v2's jitter: 0.8 x 0.5 = 0.4, hue 0.2 x 0.5 = 0.1.
  presets.run_length(c, preset)

  if preset in ("digits", "tiny"):
    # SimCLR's small setting (configs/simclr.py): a few minutes on 2 CPU cores.
    c.data.image_size = 16
    c.model.update(depth=18, width=0.25)
    c.moco_v2.update(temperature=0.2, queue_size=1024, momentum=0.99, proj_dims=(128, 64),
                     bn_group_size=16)
    c.batch_size = 128
    c.num_epochs = 30
    c.optim.update(base_lr=0.06, weight_decay=5e-4)
    c.checkpoint_every_steps = 200
  if preset == "tiny":
    c.model.width = 0.125
    c.data.image_size = 8
    c.moco_v2.update(queue_size=64, proj_dims=(32, 16), bn_group_size=4)
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset in ("cifar10", "cifar10_folder", "cifar100"):
    c.model.depth = 18
    c.moco_v2.update(temperature=0.1, queue_size=4096, momentum=0.99, proj_dims=(512, 128),
                     bn_group_size=64)
    c.batch_size = 512
    c.num_epochs = 200
    c.optim.update(base_lr=0.06 * 256 / 512, weight_decay=5e-4)  # 0.06 at batch 512.
  elif preset == "stl10":
    c.moco_v2.update(queue_size=16_384)
    c.batch_size = 256
    c.num_epochs = 200
    c.augment.crop_scale = (0.2, 1.0)
  elif preset == "imagenet2012":
    c.model.stem = "imagenet"
    c.batch_size = 256
    c.num_epochs = 200
    c.dtype = "bfloat16"
    c.augment.crop_scale = (0.2, 1.0)
  return c
