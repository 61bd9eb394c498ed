"""One evaluation pass over a split, or over some of its examples, as padded batches.

Array sources ("digits", "npz") are held in memory by their source already: their batches are
cut and centre-cropped with numpy (`arrays.center_crop_resize`, the transcription of the
pipeline's op) one batch at a time, so an evaluation never makes the float32 copy of a whole
split and needs no TensorFlow. Other sources stream through tf.data
(`pipeline.build_eval_iterator`), decoding one batch ahead.

Both yield the same batches: {"image": float32 [b, S, S, 3] in [0, 1], "label": int32 [b],
"index": int64 [b] (the example's position in the split; -1 on padding), "mask": bool [b]},
b = batch_size // process_count. Each process reads its own contiguous block of the positions
(`arrays.eval_block`), and every process yields the same number of batches.
"""
from __future__ import annotations

import math
from typing import Iterator

import ml_collections
import numpy as np

from contrastive_jax.data import arrays, checks

Batch = dict[str, np.ndarray]


def array_batches(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                  process_index: int, process_count: int,
                  positions: np.ndarray | None = None) -> Iterator[Batch]:
  """The evaluation batches of an array source (see the module docstring)."""
  d = config.data
  images, labels = arrays.get(config).arrays(split)
  positions = arrays.checked_positions(positions, len(labels), split)
  mine = arrays.eval_block(positions, process_index, process_count)
  local = batch_size // process_count
  num_batches = math.ceil(math.ceil(len(positions) / process_count) / local)
  for b in range(num_batches):
    take = mine[b * local:(b + 1) * local]
    n = len(take)
    image = np.zeros((local, d.image_size, d.image_size, 3), np.float32)
    if n:
      image[:n] = arrays.center_crop_resize(images[take], d.image_size, d.eval_crop_fraction)
    label = np.full(local, -1, np.int32)
    label[:n] = labels[take]
    index = np.full(local, -1, np.int64)
    index[:n] = take
    yield {"image": image, "label": label, "index": index, "mask": index >= 0}


def build_eval_iterator(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                        process_index: int | None = None, process_count: int | None = None,
                        positions: np.ndarray | None = None) -> Iterator[Batch]:
  """One deterministic pass over `split` (or its examples at `positions`): see the module."""
  pi, pc = checks.processes(process_index, process_count)
  checks.check_values(config)
  if batch_size <= 0 or batch_size % pc:
    raise ValueError(f"Evaluation batch_size={batch_size} must be a positive multiple of the "
                     f"process count ({pc}).")
  if config.data.source in arrays.ARRAY_SOURCES:
    return array_batches(config, split, batch_size, process_index=pi, process_count=pc,
                         positions=positions)
  from contrastive_jax.data import catalog, pipeline  # pylint: disable=g-import-not-at-top
  if positions is not None:
    positions = arrays.checked_positions(positions, catalog.get_source(config).num_examples(split),
                                  split)
  return pipeline.build_eval_iterator(config, split, batch_size, process_index=pi,
                                      process_count=pc, positions=positions)


def split_labels(config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """int32 [N]: every label of `split` in the split's order, without decoding an image."""
  checks.check_values(config)
  if config.data.source in arrays.ARRAY_SOURCES:
    return arrays.get(config).arrays(split)[1]
  from contrastive_jax.data import catalog  # pylint: disable=g-import-not-at-top
  return np.asarray(catalog.get_source(config).labels(split), np.int32)


def split_size(config: ml_collections.ConfigDict, split: str) -> int:
  """Examples in `split` (lists it, decodes nothing)."""
  checks.check_values(config)
  return int(checks.open_splits(config).num_examples(split))
