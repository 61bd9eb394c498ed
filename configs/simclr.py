"""SimCLR (Chen et al., 2020): NT-Xent on two augmented views, global BatchNorm, LARS.

  python -m contrastive_jax.main --config=configs/simclr.py            # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/simclr.py:cifar10    # TFDS CIFAR-10
  python -m contrastive_jax.main --config=configs/simclr.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10                                  # image-folder CIFAR-10
  python -m contrastive_jax.main --config=configs/simclr.py:imagenet2012 --workdir=gs://...

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.
The CIFAR presets follow the paper's appendix B.9 (ResNet-50 with a 3x3 stem, no max-pool,
batch 512-1024, s=0.5, no blur); ImageNet follows section 3 (batch 4096, LARS, lr 0.3 x B/256,
temperature 0.1, 10 warmup epochs, weight decay 1e-6, blur). Augmentation follows the reference
code (google-research/simclr): its crop sampler and multiplicative brightness;
--config.augment.crop=torchvision and --config.augment.brightness=additive select the other
conventions (docs/augmentation.md).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("simclr", preset, PRESETS, depth=50, stem="cifar")
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.5, proj_dims=(2048, 128),
                                            proj_batch_norm=True))
  c.optim.update(name="lars", base_lr=1.0, lr_scaling="linear", weight_decay=1e-6,
                 warmup_steps=0)
  presets.run_length(c, preset)

  if preset in ("digits", "tiny"):
    # Small enough for 2 CPU cores in a few minutes, large enough to beat a random encoder.
    c.data.image_size = 16
    c.model.update(depth=18, width=0.25)
    c.simclr.update(temperature=0.2, proj_dims=(128, 64))
    c.batch_size = 128
    c.num_epochs = 30
    c.optim.update(warmup_steps=20)
    c.checkpoint_every_steps = 200
  if preset == "tiny":
    c.model.width = 0.125
    c.data.image_size = 8
    c.simclr.proj_dims = (32, 16)
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset in ("cifar10", "cifar10_folder", "cifar100"):
    c.batch_size = 1024
    c.num_epochs = 1000
    c.optim.warmup_steps = 10 * 50_000 // 1024
  elif preset == "stl10":
    c.batch_size = 1024
    c.num_epochs = 500
    c.optim.update(base_lr=0.3, warmup_steps=10 * 100_000 // 1024)
  elif preset == "imagenet2012":
    c.model.stem = "imagenet"
    c.simclr.temperature = 0.1
    c.batch_size = 4096
    c.num_epochs = 100
    c.dtype = "bfloat16"
    c.optim.update(base_lr=0.3, warmup_steps=10 * 1_281_167 // 4096)
  return c
