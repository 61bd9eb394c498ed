"""CPC v2 (Hénaff et al., 2020): a patch grid, a causal context network, InfoNCE over the batch.

  python -m contrastive_jax.main --config=configs/cpc_v2.py              # offline, sklearn digits
  python -m contrastive_jax.main --config=configs/cpc_v2.py:cifar10      # TFDS CIFAR-10, 32 px
  python -m contrastive_jax.main --config=configs/cpc_v2.py:imagenet2012 --workdir=gs://...

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.

The ImageNet preset follows the paper (Hénaff et al., 2020): 300x300 resize, random 260x260
crop, a 6x6 grid of 80x80 patches at stride 36; the encoder is its ResNet-161 (section 4.1:
`model.arch="resnet_v2"`, `model.depth=161`, pre-activation, LayerNorm; 303.6M parameters);
predictions in all four directions; and the prediction settings of its appendix pseudo-code:
targets projected to 64 channels by a 1x1 convolution (`cpc.target_dim`), predictions scaled by
0.1 (`cpc.prediction_scale`), only offset 3 predicted (`cpc.skip_offsets=2`,
`cpc.num_offsets=3`), a PixelCNN-style context of 5 residual blocks 256 wide on the 4096-d
latents (`cpc.context="pixelcnn"`) and the per-offset losses summed (`cpc.offset_reduction`).
The per-patch augmentations (`cpc.augment`: spatial_jitter, flip, color_jitter, grayscale,
color_drop, shear, elastic, color_histogram on the host; autoaugment_ops on the accelerator) and
what they stand for are tabled in docs/cpc_v2.md; the ImageNet preset takes the paper's rates,
the others leave the shear, the elastic deformation, the colour histogram and AutoAugment off.
Still ours rather than the paper's: where the encoder strides (a stack's first block), the
strength of the elastic deformation and of the colour histogram, batch 512, Adam at 4e-4 with
warmup and weight decay, and the epoch count. Change them with `--config.cpc.*`,
`--config.model.*` and `--config.optim.*`.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("cpc_v2", preset, PRESETS, depth=50, stem="imagenet", norm="layer")
  del c.model["bn_cross_replica"]  # The loss gathers every patch; the encoder has LayerNorm.
  c.cpc = ml_collections.ConfigDict(dict(
      patch_size=80, patch_stride=36, num_offsets=5, directions=("down", "up", "right", "left"),
      context="residual", context_dim=512, context_layers=4, norm="layer",
      # The paper's prediction settings (models/cpc.py, losses/info_nce.py); these values are
      # the plain form (no projection, no scale, every offset, mean), the ImageNet preset the
      # paper's.
      skip_offsets=0, target_dim=0, prediction_scale=1.0, offset_reduction="mean",
      # Per patch: jitter in pixels, then probabilities (colour dropping keeps one channel),
      # then AutoAugment operations per patch on the accelerator.
      augment=dict(spatial_jitter=10, flip=0.5, color_jitter=0.0, grayscale=0.25,
                   color_drop=1.0, shear=0.0, elastic=0.0, color_histogram=0.0,
                   autoaugment_ops=0)))
  c.optim.update(name="adamw", base_lr=4e-4, lr_scaling="none", weight_decay=1e-5,
                 warmup_steps=1000)
  c.batch_size = 512
  c.num_epochs = 200
  presets.run_length(c, preset)

  if preset in ("digits", "tiny"):
    # 24 px digits, 8 px patches at stride 4: a 5x5 grid, each patch through a small ResNet.
    c.data.image_size = 24
    c.model.update(depth=10, width=0.25, stem="cifar")
    c.cpc.update(patch_size=8, patch_stride=4, num_offsets=2, directions=("down", "up"),
                 context_dim=64, context_layers=2)
    c.cpc.augment.update(spatial_jitter=1, flip=0.0, color_drop=0.0, grayscale=0.0)
    c.optim.update(base_lr=2e-3, warmup_steps=20, weight_decay=1e-4)
    c.batch_size = 64
    c.num_epochs = 10
    c.checkpoint_every_steps = 100
  if preset == "tiny":
    c.data.image_size = 16
    c.model.width = 0.125
    c.cpc.update(num_offsets=1, context_dim=16, context_layers=1)
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset in ("cifar10", "cifar10_folder", "cifar100", "stl10"):
    c.model.update(depth=18, stem="cifar")
    c.cpc.update(patch_size=8, patch_stride=4, num_offsets=3, context_dim=256)
    if preset == "stl10":
      c.cpc.update(patch_size=24, patch_stride=12)  # 96 px -> 7x7 grid.
    # The paper's jitter of 10 px on 80 px patches, scaled to these patches (1 px at 8 px).
    c.cpc.augment.spatial_jitter = max(1, round(10 * c.cpc.patch_size / 80))
    c.batch_size = 256
    c.num_epochs = 300
  elif preset == "imagenet2012":
    c.model.update(arch="resnet_v2", depth=161)
    c.cpc.update(context="pixelcnn", context_dim=256, context_layers=5, target_dim=64,
                 prediction_scale=0.1, skip_offsets=2, num_offsets=3, offset_reduction="sum")
    # The paper's colour augmentation with probability 0.8, shear and elastic deformation and
    # the colour histogram with probability 0.2 each, and two AutoAugment operations per patch.
    c.cpc.augment.update(color_jitter=0.5, shear=0.2, elastic=0.2, color_histogram=0.2,
                         autoaugment_ops=2)
    c.data.image_size = 260
    c.data.eval_crop_fraction = 260 / 300
    c.dtype = "bfloat16"
  return c
