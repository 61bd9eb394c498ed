"""What a method asks the input pipeline for: streams, their transforms and their sampling.

A method declares its inputs with these plain, frozen values (`Method.inputs`); the data layer
(`contrastive_jax.data`) builds exactly that from `config.data` and `config.augment`, and never
looks at a method or its config block. Pure Python: no JAX, no TensorFlow.

Transforms (what one example of a stream becomes; S = config.data.image_size):
  "two_views"   {"view1", "view2": float32 [S, S, 3] in [0, 1], "label"}: two SimCLR views.
  "single_view" {"image": float32 [S, S, 3], "label"}: one SimCLR view (config.augment).
  "raw"         {"image", "label"}: the unaugmented image for the accelerator to augment
                (the stored arrays for digits / npz; for image files the whole image in a
                uint8 [R, R, 3] canvas, R = config.augment.raw_size or S, and its valid
                height and width as "hw": int32 [2]).
  "patch_grid"  {"patches": float32 [Gh, Gw, P, P, 3], "label"}: a training crop cut into a
                patch grid and augmented per patch (`PatchGrid`).
  "eval"        {"image", "label"}: deterministic resize and centre crop.
Labels are int32, -1 where the source has none.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

TRANSFORMS = ("two_views", "single_view", "raw", "patch_grid", "eval")


@dataclasses.dataclass(frozen=True)
class Subset:
  """A labelled subset of the training split (`contrastive_jax.data.subsets`): the index file if
  set, else `per_class` images per class if > 0, else `fraction` of the labelled examples."""
  fraction: float = 1.0
  per_class: int = 0
  index_file: str = ""
  seed: int = 0

  def kwargs(self) -> dict[str, Any]:
    if self.index_file:
      return {"index_file": self.index_file}
    if self.per_class:
      return {"per_class": self.per_class}
    return {"fraction": self.fraction}


@dataclasses.dataclass(frozen=True)
class ClassStratified:
  """Each step draws `classes_per_batch` distinct classes x `images_per_class` distinct images
  of each from a labelled subset, the same global draw on every process for a (seed, step).

  `key` is where the values came from ("config.suncet"), for error messages only.
  """
  subset: Subset
  classes_per_batch: int
  images_per_class: int
  seed: int = 0
  key: str = "config"

  @property
  def batch_size(self) -> int:
    return self.classes_per_batch * self.images_per_class


@dataclasses.dataclass(frozen=True)
class RandomDraw:
  """Each step draws `batch_size` distinct images of a labelled subset uniformly at random
  (FixMatch's and MixMatch's labelled batch), the same global draw on every process for a
  (seed, step); a subset smaller than the batch is drawn with replacement.

  `key` is where the values came from ("config.fixmatch"), for error messages only.
  """
  subset: Subset
  batch_size: int
  seed: int = 0
  key: str = "config"


# Per-patch augmentation defaults; True in a config picks these, 0 / False switches one off.
PATCH_AUGMENT_DEFAULTS = {"spatial_jitter": None, "flip": 0.5, "color_jitter": 0.5,
                          "grayscale": 0.25, "color_drop": 1.0, "shear": 0.2, "elastic": 0.2,
                          "color_histogram": 0.2}
_PATCH_PROBABILITIES = ("flip", "grayscale", "color_drop", "shear", "elastic", "color_histogram")
# Largest shear of a patch (`PatchGrid.shear`): AutoAugment's ShearX/Y range (Cubuk et al.).
PATCH_MAX_SHEAR = 0.3
# Elastic deformation (`PatchGrid.elastic`), as fractions of the patch side P: the Gaussian
# that smooths the per-pixel noise has standard deviation 0.15 P (12 px on an 80 px patch) and
# the largest displacement is 0.1 P (8 px). Ours: neither paper gives values.
PATCH_ELASTIC_SIGMA = 0.15
PATCH_ELASTIC_ALPHA = 0.1
# Colour histogram (`PatchGrid.color_histogram`): a monotone piecewise-linear curve per channel
# through this many control points evenly spaced on [0, 1], from 0 to 1, each segment's rise
# drawn uniformly from [PATCH_HISTOGRAM_MIN_RISE, 1] before the rises are scaled to sum to 1
# (so one segment's slope is at most 4 times another's). Ours: neither paper gives values.
PATCH_HISTOGRAM_POINTS = 5
PATCH_HISTOGRAM_MIN_RISE = 0.25


@dataclasses.dataclass(frozen=True)
class PatchGrid:
  """CPC's host-side patch grid: P x P patches S pixels apart, augmented one by one.

  spatial_jitter  int px: every patch origin moves by up to +-this many pixels.
  flip            probability of a horizontal flip of each patch.
  color_jitter    strength s of SimCLR-style jitter, applied to a patch with probability 0.8.
  grayscale       probability of turning a patch grey.
  color_drop      probability of keeping one random colour channel and zeroing the others.
  shear           probability of shearing a patch along x or y by up to `PATCH_MAX_SHEAR`.
  elastic         probability of an elastic deformation of a patch (`PATCH_ELASTIC_SIGMA`,
                  `PATCH_ELASTIC_ALPHA`).
  color_histogram probability of remapping each channel of a patch through a random monotone
                  curve (`PATCH_HISTOGRAM_POINTS`, `PATCH_HISTOGRAM_MIN_RISE`).
  The paper's two AutoAugment operations per patch run on the accelerator, in the method
  (`config.cpc.augment.autoaugment_ops`), and are not part of the grid.
  """
  patch_size: int
  stride: int
  spatial_jitter: int = 0
  flip: float = 0.0
  color_jitter: float = 0.0
  grayscale: float = 0.0
  color_drop: float = 0.0
  shear: float = 0.0
  elastic: float = 0.0
  color_histogram: float = 0.0
  key: str = "config"

  @classmethod
  def from_settings(cls, patch_size: int, stride: int, augment: Mapping[str, Any] | None, *,
                    key: str = "config") -> PatchGrid:
    """Resolves an augment mapping (True: the default value, False/absent: off); ValueError
    names `key`.augment.<name> for a bad value."""
    out: dict[str, float] = {}
    for name, default in PATCH_AUGMENT_DEFAULTS.items():
      if default is None:  # spatial_jitter: its default depends on the patch size.
        default = max(1, int(patch_size) // 8)
      value = augment.get(name, 0) if augment is not None else 0
      out[name] = (default if value else 0.0) if isinstance(value, bool) else float(value)
    for name in _PATCH_PROBABILITIES:
      if not 0.0 <= out[name] <= 1.0:
        raise ValueError(f"{key}.augment.{name} is a probability in [0, 1], got {out[name]}.")
    if out["color_jitter"] < 0:
      raise ValueError(f"{key}.augment.color_jitter must be >= 0, got {out['color_jitter']}.")
    jitter = out["spatial_jitter"]
    if jitter < 0 or jitter != int(jitter):
      raise ValueError(f"{key}.augment.spatial_jitter is a whole number of pixels >= 0, got "
                       f"{jitter}.")
    out["spatial_jitter"] = int(jitter)
    return cls(patch_size=int(patch_size), stride=int(stride), key=key, **out)


@dataclasses.dataclass(frozen=True)
class Stream:
  """One input stream. Its batch keys are the transform's keys with `prefix` in front.

  sampling: None for the whole training split, shuffled epoch by epoch and split over
    processes (config.batch_size per step); a `ClassStratified` or `RandomDraw` draw from a
    labelled subset (its own batch size).
  patch_grid: the grid of a "patch_grid" transform.
  until_step: the stream is part of the batches of steps < until_step only (None: always);
    the change of batch structure is the method's switch, at no host cost afterwards.
  """
  transform: str
  prefix: str = ""
  sampling: ClassStratified | RandomDraw | None = None
  patch_grid: PatchGrid | None = None
  until_step: int | None = None

  def __post_init__(self):
    if self.transform not in TRANSFORMS:
      raise ValueError(f"Unknown stream transform {self.transform!r}; valid: {TRANSFORMS}.")
    if (self.transform == "patch_grid") != (self.patch_grid is not None):
      raise ValueError("A 'patch_grid' stream needs its PatchGrid, and only it takes one.")


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """The streams of one training step. The first is the main stream, over the whole split."""
  streams: tuple[Stream, ...]

  def __post_init__(self):
    if not self.streams or self.streams[0].sampling is not None:
      raise ValueError("An InputSpec starts with its main stream (sampling=None).")
    if self.streams[0].until_step is not None:
      raise ValueError("The main stream runs for the whole run (until_step=None).")
    prefixes = [s.prefix for s in self.streams]
    if len(set(prefixes)) != len(prefixes):
      raise ValueError(f"Streams need distinct prefixes, got {prefixes}.")

  @property
  def main(self) -> Stream:
    return self.streams[0]

  @property
  def needs_host_augmentation(self) -> bool:
    return any(s.transform in ("two_views", "single_view", "patch_grid") for s in self.streams)


def single(transform: str) -> InputSpec:
  """One stream of `transform` over the whole training split."""
  return InputSpec((Stream(transform),))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """The configured dataset as methods may know it. num_train_examples counts
  config.data.train_split, num_eval_examples eval_split."""
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  image_size: int
