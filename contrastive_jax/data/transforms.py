"""The per-example transforms of the input streams, keyed by `Stream.transform`.

This module imports no TensorFlow: each entry imports its TF code on first call (which happens
once, when tf.data traces the map function), so `contrastive_jax.data` stays cheap to import.
"""
from __future__ import annotations

from typing import Any, Callable

import ml_collections

from contrastive_jax import input_spec

Transform = Callable[[Any, Any, Any, ml_collections.ConfigDict, Any], dict[str, Any]]


def two_views(image, label, seed, config: ml_collections.ConfigDict,
              stream: input_spec.Stream | None = None) -> dict[str, Any]:
  """Two independently augmented SimCLR views: {"view1", "view2", "label"}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  size = config.data.image_size
  return {
      "view1": augment.simclr_view(image, s1, config.augment, size=size),
      "view2": augment.simclr_view(image, s2, config.augment, size=size),
      "label": label,
  }


def single_view(image, label, seed, config: ml_collections.ConfigDict,
                stream: input_spec.Stream | None = None) -> dict[str, Any]:
  """One augmented view (the SimCLR recipe): {"image", "label"}.

  A supervised baseline that wants crop + flip only sets color_prob, grayscale_prob and
  blur_prob to 0 in its config.
  """
  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  return {
      "image": augment.simclr_view(image, seed, config.augment, size=config.data.image_size),
      "label": label,
  }


def eval_view(image, label, seed, config: ml_collections.ConfigDict,
              stream: input_spec.Stream | None = None) -> dict[str, Any]:
  """Deterministic resize + centre crop, no augmentation: {"image", "label"}."""
  del seed  # Deterministic.
  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  return {
      "image": augment.center_crop_resize(image, config.data.image_size,
                                          config.data.eval_crop_fraction),
      "label": label,
  }


def patch_grid(image, label, seed, config: ml_collections.ConfigDict,
               stream: input_spec.Stream | None = None) -> dict[str, Any]:
  """The stream's `PatchGrid` (`data/patches.py`) on a training crop.

  The crop is the pipeline's part: resize the shorter side to image_size / eval_crop_fraction,
  then a random image_size square (CPC v2's "resize to 300, random 260 crop" is
  image_size=260, eval_crop_fraction=260/300), so the grid sees a static shape.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment, patches  # pylint: disable=g-import-not-at-top
  crop_seed, patch_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  image = augment.resize_random_crop(image, crop_seed, config.data.image_size,
                                     config.data.eval_crop_fraction)
  return {"patches": patches.patch_grid(image, patch_seed, stream.patch_grid), "label": label}


def raw_view(image, label, seed, config: ml_collections.ConfigDict,
             stream: input_spec.Stream | None = None) -> dict[str, Any]:
  """The un-augmented image for on-device augmentation (`config.augment.on_device`).

  The whole image, aspect kept, in the top-left corner of an R x R canvas (R =
  config.augment.raw_size, 0: image_size), downscaled only if a side exceeds R, with its height
  and width, so the device crops from all of it at up to R pixels a side (`ops/augment.py`);
  as uint8, which quarters host-to-device traffic:
  {"image": uint8 [R, R, 3], "hw": int32 [2], "label"}.
  """
  del seed  # Deterministic: the device draws the augmentation.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  x, hw = augment.fit_in_canvas(image, raw_size(config))
  return {"image": tf.cast(tf.round(x * 255.0), tf.uint8), "hw": hw, "label": label}


def raw_size(config: ml_collections.ConfigDict) -> int:
  """The side of `raw_view`'s canvas: config.augment.raw_size, or the image size if 0."""
  return int(config.augment.get("raw_size", 0) or config.data.image_size)


TRANSFORMS: dict[str, Transform] = {
    "two_views": two_views,
    "single_view": single_view,
    "raw": raw_view,
    "patch_grid": patch_grid,
    "eval": eval_view,
}
"""Per-example transforms applied inside tf.data, keyed by input kind.

Signature: `fn(image, label, seed, config, stream) -> dict[str, tf.Tensor]` where
  image:  float32 tf.Tensor [H, W, 3] in [0, 1] at the source's own resolution (H, W may vary
          between examples; the transform must return fixed shapes, usually
          config.data.image_size square);
  label:  int32 scalar tensor, -1 where the source has no label;
  seed:   int64 tf.Tensor [2], unique per example and per (config.seed, process), for
          `tf.random.stateless_*` ops (split it with `tf.random.experimental.stateless_split`
          when you need several streams);
  config: the experiment ConfigDict (read config.data and config.augment only);
  stream: the `input_spec.Stream` (its patch grid), None for evaluation.
The returned dict is batched as is and must include "label".
"""
