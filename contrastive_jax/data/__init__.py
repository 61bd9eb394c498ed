"""The input pipeline: tf.data on the host, numpy batches out.

Importing this package is cheap and imports no TensorFlow: each function imports the tf.data
code (`pipeline.py`) on first call, so JAX-only code (and TPU/GPU hosts that must keep TF off
the accelerator) can import it freely.

Sources (`config.data.source`): "digits" (scikit-learn, offline), "tfds", "folder"
(<path>/<split>/<class>/*.jpg), "npz". Keys and presets: `contrastive_jax.dataset_presets`.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

from contrastive_jax.data import in_memory
from contrastive_jax.data.transforms import TRAIN_TRANSFORMS

if TYPE_CHECKING:
  import ml_collections
  import numpy as np

__all__ = ["DatasetInfo", "TRAIN_TRANSFORMS", "build_eval_iterator", "build_train_iterator",
           "dataset_info", "load_arrays", "validate_data_config"]


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
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.build_eval_iterator(config, split, batch_size, process_index=process_index,
                                      process_count=process_count)


def load_arrays(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The whole split (every process gets all of it), eval-preprocessed, in a fixed order:
  (float32 [N, S, S, 3] in [0, 1], int32 [N]). For small datasets: probes, kNN, tests."""
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_arrays(config, split)


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Class count and split sizes of the configured dataset (opens the source)."""
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.dataset_info(config)


def validate_data_config(config: ml_collections.ConfigDict, *, process_count: int,
                         device_count: int) -> None:
  """Raises ValueError, naming the config key and the fix, before any compilation, for: an
  unknown source or dataset name, bad augment values, a missing folder/file/split or one
  without images, unreadable images (unless skip_corrupt), npz labels out of range, an
  unprepared TFDS dataset with download=False, a batch size not divisible by process_count or
  device_count, and a train split smaller than one global batch."""
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.validate_data_config(config, process_count=process_count, device_count=device_count)
