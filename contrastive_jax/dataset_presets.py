"""Presets for the `config.data` and `config.augment` blocks of an experiment config.

Pure ml_collections (no TensorFlow), so config files can import it freely. Every preset returns
the same set of keys, so a command-line override works whichever preset a config starts from.
Image sizes and augmentation strengths follow the SimCLR paper (Chen et al., 2020): CIFAR at
32 px with colour strength 0.5 and no blur, ImageNet at 224 px with strength 1.0 and blur.

Usage in a config file:

  config.data = dataset_presets.data_config("cifar10")
  config.augment = dataset_presets.augment_config("cifar10")
"""
from __future__ import annotations

import ml_collections

PRESETS = ("digits", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def _check_preset(preset: str) -> None:
  if preset not in PRESETS:
    raise ValueError(f"Unknown dataset preset {preset!r}; valid presets: {', '.join(PRESETS)}.")


def _base_data() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      # "digits" (scikit-learn, offline) | "tfds" | "folder" | "npz".
      "source": "digits",
      # TFDS name (source == "tfds").
      "name": "",
      # TFDS data_dir; None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
      "data_dir": None,
      # Whether TFDS may download and prepare a missing dataset (needs network).
      "download": False,
      # Folder root (<path>/<split>/<class>/*.jpg) or .npz file; "{split}" in an .npz path
      # is replaced by the split name.
      "path": "",
      "train_split": "train",
      "eval_split": "test",
      # Side of the square images the pipeline produces, for training crops and evaluation.
      "image_size": 32,
      # Evaluation resizes the shorter side to image_size / eval_crop_fraction, then centre-crops
      # image_size (0.875 is the usual ImageNet 224/256; 1.0 keeps the whole square image).
      "eval_crop_fraction": 1.0,
      # Number of classes; None infers it (TFDS metadata, folder count, max npz label + 1).
      "num_classes": None,
      # Cache decoded images in memory after the first epoch (small datasets only).
      "cache": False,
      # Shuffle buffer for sources whose records are whole images (TFDS); sources whose records
      # are file names or array indices shuffle the whole split instead.
      "shuffle_buffer": 10_000,
      # Skip (and count) unreadable image files instead of raising an error naming them.
      "skip_corrupt": False,
  })


def data_config(preset: str = "digits") -> ml_collections.ConfigDict:
  """Returns the `config.data` block of a preset (see module docstring for the keys)."""
  _check_preset(preset)
  c = _base_data()
  if preset == "digits":
    # 1,797 8x8 digits bundled with scikit-learn: the offline default, split 80/20.
    c.image_size = 32
  elif preset in ("cifar10", "cifar100"):
    c.source, c.name = "tfds", preset
    c.cache, c.shuffle_buffer = True, 50_000
  elif preset == "cifar10_folder":
    # CIFAR-10 as JPEGs, e.g. /work/shared/data/cifar10-jpeg.tar.gz unpacked:
    # <path>/{train,test}/<class>/NNNN.jpg.
    c.source, c.path = "folder", "/tmp/cifar10"
    c.cache, c.shuffle_buffer = True, 50_000
  elif preset == "stl10":
    # Pretrain on the 100k unlabelled images (labels -1), evaluate on train/test.
    c.source, c.name = "tfds", "stl10"
    c.train_split, c.eval_split = "unlabelled", "test"
    c.image_size = 96
  elif preset == "imagenet2012":
    c.source, c.name = "tfds", "imagenet2012"
    c.train_split, c.eval_split = "train", "validation"
    c.image_size, c.eval_crop_fraction = 224, 0.875
    c.shuffle_buffer = 50_000
  return c


def augment_config(preset: str = "digits") -> ml_collections.ConfigDict:
  """Returns the `config.augment` block of a preset: SimCLR augmentation strengths.

  Keys: random resized crop `crop_scale` (area fraction) and `crop_ratio` (aspect ratio);
  `flip` (horizontal, p=0.5); colour jitter of strength `color_strength` = s (brightness,
  contrast and saturation 0.8s, hue 0.2s, in random order) applied with `color_prob`;
  `grayscale_prob`; Gaussian blur with `blur_prob` (both views alike), sigma ~ U(`blur_sigma`),
  kernel `blur_kernel_frac` of the image size; `on_device` moves all of it to the accelerator.
  """
  _check_preset(preset)
  c = ml_collections.ConfigDict({
      "crop_scale": (0.08, 1.0),
      "crop_ratio": (3 / 4, 4 / 3),
      "flip": True,
      "color_strength": 0.5,
      "color_prob": 0.8,
      "grayscale_prob": 0.2,
      "blur_prob": 0.0,
      "blur_sigma": (0.1, 2.0),
      "blur_kernel_frac": 0.1,
      # Augment on the accelerator (contrastive_jax/augment_device.py) instead of in tf.data:
      # "two_views" pipelines then yield raw images, read with numpy alone where the split fits
      # in memory (digits, npz, and folder/TFDS with data.cache). Same recipe and values.
      "on_device": False,
  })
  if preset == "digits":
    # An 8x8 digit cropped to 8% of its area is noise, and a mirrored digit is another glyph.
    c.crop_scale, c.flip = (0.3, 1.0), False
  elif preset in ("stl10", "imagenet2012"):
    # SimCLR's ImageNet setting (the paper blurs with p=0.5); STL-10 is an ImageNet subset.
    c.color_strength, c.blur_prob = 1.0, 0.5
  return c
