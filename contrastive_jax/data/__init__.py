"""The input pipeline: tf.data on the host, numpy batches out.

Importing this package is cheap and imports no TensorFlow: each function imports the tf.data
code (`pipeline.py`) on first call, so JAX-only code (and TPU/GPU hosts that must keep TF off
the accelerator) can import it freely. Array sources ("digits", "npz") never need it for
evaluation arrays, sizes and checks, nor for training batches when the accelerator augments
(`config.augment.on_device=True`, two-view methods): such runs work without TensorFlow
installed (`needs_tensorflow` says when a config does need it).

Sources (`config.data.source`): "digits" (scikit-learn, offline), "tfds", "folder"
(<path>/<split>/<class>/*.jpg), "npz". Keys and presets: `contrastive_jax.dataset_presets`.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

from contrastive_jax.data import arrays, checks, in_memory
from contrastive_jax.data.transforms import TRAIN_TRANSFORMS

if TYPE_CHECKING:
  import ml_collections
  import numpy as np

__all__ = ["DatasetInfo", "TRAIN_TRANSFORMS", "build_eval_iterator", "build_train_iterator",
           "dataset_info", "load_arrays", "needs_tensorflow", "require_tensorflow",
           "tensorflow_available", "validate_data_config"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """num_train_examples counts config.data.train_split, num_eval_examples eval_split."""
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  image_size: int


def build_train_iterator(config: ml_collections.ConfigDict, *, input_kind: str,
                         process_index: int | None = None, process_count: int | None = None,
                         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches (numpy).

  Each batch holds config.batch_size // process_count examples from this process's own shard of
  config.data.train_split (the processes' shards are disjoint and cover the split), shuffled
  with a seed from (config.seed, process_index), repeated, batched with drop_remainder.

  Args:
    config: experiment config (reads data, augment, batch_size, seed).
    input_kind: key of TRAIN_TRANSFORMS:
      "two_views":   {"view1", "view2": float32 [b, S, S, 3] in [0, 1], "label": int32 [b]};
      "single_view": {"image": float32 [b, S, S, 3], "label"} (one augmented view);
      "patch_grid":  what `data.patches.cpc_patch_transform` returns, plus "label";
      "eval":        {"image", "label"} with deterministic resize + centre crop;
      "suncet":      "two_views" plus a labelled support batch while SuNCEt is on
                     (data/labelled.py).
      S = config.data.image_size; labels are -1 where the source has none.
      With config.augment.on_device=True, "two_views" yields raw images instead, {"image":
      uint8 (float32 for float sources) [b, S, S, 3] (npz: its stored size), "label"}, for the
      accelerator to augment; splits that fit in memory are batched by numpy
      (`data/in_memory.py`), others by tf.data.
    process_index: defaults to jax.process_index().
    process_count: defaults to jax.process_count().
    start_step: batches to skip, so a resumed run sees what an uninterrupted one would.

  Returns:
    The iterator; the same (config.seed, process_index) gives the same batches.
  """
  if input_kind == "suncet":  # Two streams (unlabelled + labelled support): data/labelled.py.
    from contrastive_jax.data import labelled  # pylint: disable=g-import-not-at-top
    return labelled.build_suncet_iterator(config, process_index=process_index,
                                          process_count=process_count, start_step=start_step)
  if in_memory.device_augmentation(config, input_kind) and in_memory.fits_in_memory(config):
    # Raw images for the device to augment, batched by numpy: no tf.data (nor TF for digits/npz).
    return in_memory.build_train_iterator(config, process_index=process_index,
                                          process_count=process_count, start_step=start_step)
  require_tensorflow(needs_tensorflow(config, input_kind) or "tf.data builds these batches")
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.build_train_iterator(config, input_kind=input_kind,
                                       process_index=process_index,
                                       process_count=process_count, start_step=start_step)


def build_eval_iterator(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                        process_index: int | None = None,
                        process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over `split`: {"image", "label", "mask"} batches.

  `batch_size` is GLOBAL, like config.batch_size: each process yields batch_size //
  process_count rows from its own shard. Rows past the end are padding (image 0, label -1,
  mask False), and every process yields the same number of batches, so shapes stay static and
  multi-host collectives line up.
  """
  require_tensorflow("build_eval_iterator runs tf.data")
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.build_eval_iterator(config, split, batch_size, process_index=process_index,
                                      process_count=process_count)


def load_arrays(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The whole split (every process gets all of it), eval-preprocessed, in a fixed order:
  (float32 [N, S, S, 3] in [0, 1], int32 [N]). For small datasets: probes, kNN, tests.
  Array sources ("digits", "npz") are read and preprocessed with numpy alone."""
  checks.check_values(config)
  if config.data.source in arrays.ARRAY_SOURCES:
    return arrays.eval_arrays(config, split)
  require_tensorflow(f"config.data.source={config.data.source!r}")
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_arrays(config, split)


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class count and split sizes of the configured dataset (opens the source)."""
  d = config.data
  splits = checks.open_splits(config)
  return DatasetInfo(
      num_classes=int(splits.num_classes),
      num_train_examples=splits.num_examples(d.train_split),
      num_eval_examples=splits.num_examples(d.eval_split) if d.eval_split else 0,
      image_size=int(d.image_size))


def needs_tensorflow(config: ml_collections.ConfigDict, input_kind: str) -> str | None:
  """Why training `input_kind` on `config` needs TensorFlow, or None if numpy suffices.

  Only array sources with on-device augmentation of two views train without it: every other
  combination augments or decodes with tf.data (SuNCEt's support batches included).
  """
  if config.data.source not in arrays.ARRAY_SOURCES:
    return f"config.data.source={config.data.source!r} decodes images with TensorFlow"
  if not in_memory.device_augmentation(config, input_kind):
    if input_kind == "two_views":
      return "augmentation runs in tf.data unless config.augment.on_device=True"
    return f"input_kind {input_kind!r} is built by tf.data"
  return None


def tensorflow_available() -> bool:
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def require_tensorflow(why: str) -> None:
  """Raises a clear error, before any compilation, if TensorFlow is needed but missing."""
  if not tensorflow_available():
    raise ModuleNotFoundError(
        f"TensorFlow is not installed, but {why}. Install it (pip install tensorflow-cpu "
        "tensorflow-datasets), or train without it: an array source (config.data.source="
        '"digits" or "npz") with config.augment.on_device=True and a two-view method '
        "(simclr).")


def validate_data_config(config: ml_collections.ConfigDict, *, process_count: int,
                         device_count: int, input_kind: str | None = None) -> None:
  """Raises ValueError, naming the config key and the fix, before any compilation, for: an
  unknown source or dataset name, bad augment values, a missing folder/file/split or one
  without images, unreadable images (unless skip_corrupt), npz labels out of range, an
  unprepared TFDS dataset with download=False, a batch size not divisible by process_count or
  device_count, and a train split smaller than one global batch. With `input_kind`, also
  raises ModuleNotFoundError if that input needs TensorFlow and it is not installed."""
  b = config.batch_size
  if isinstance(b, int) and b > 0 and b % device_count:
    raise ValueError(f"config.batch_size={b} is not divisible by the device count "
                     f"({device_count}); the global batch is split evenly over devices.")
  checks.check_values(config)
  if input_kind is not None:
    why = needs_tensorflow(config, input_kind)
    if why:
      require_tensorflow(why)
  splits = checks.check_train_split(config, process_count)
  if config.data.eval_split:
    splits.num_examples(config.data.eval_split)
