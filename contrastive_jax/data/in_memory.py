"""Raw training batches from a split held in memory: numpy only, no tf.data.

When the accelerator augments (a method asks for a "raw" stream), the host has nothing left to
do per example but pick it. For a split that fits in memory, this module loads the process's
shard once and shuffles, batches and skips with numpy:

  * "digits" and "npz": read with numpy (and scikit-learn) by `arrays.py`; TensorFlow is never
    imported, so a GPU machine without TensorFlow can train on them.
  * "folder" and "tfds" with `config.data.cache=True` (the "small dataset" switch): decoded
    and resized once through TensorFlow (`pipeline.load_raw_shard`), then numpy.
Other sources stream raw images through tf.data instead (`pipeline.build_train_iterator`).

Batches: {"image": [b, H, W, 3], "label": int32 [b]} with images in the source's storage type,
uint8 for image files and uint8 arrays (4x less host-to-device traffic than float32), float32
in [0, 1] for float arrays (digits). Arrays keep their stored size (digits: image_size); image
files are `raw_view`'s canvases (H = W = its side) and add "hw": int32 [b, 2], the height and
width of each image in its canvas. The device crop resizes any size to image_size.

Order: epoch e of process p is a permutation of p's shard seeded by (config.seed, p, e); the
stream runs through the epochs back to back and is cut into batches, so batch k is a pure
function of (seed, process, k) and resuming at `start_step` costs nothing.
"""
from __future__ import annotations

from typing import Iterator

import ml_collections
import numpy as np

from contrastive_jax.data import arrays, checks


def fits_in_memory(config: ml_collections.ConfigDict) -> bool:
  return config.data.source in arrays.ARRAY_SOURCES or bool(config.data.cache)


def load_shard(config: ml_collections.ConfigDict, process_index: int, process_count: int,
               with_hw: bool = False) -> tuple[np.ndarray, ...]:
  """This process's shard of the train split: (images [n, H, W, 3], labels int32 [n]), and if
  `with_hw` the valid height and width of each image (int32 [n, 2], None for arrays, which are
  whole)."""
  if config.data.source not in arrays.ARRAY_SOURCES:  # Decoding image files needs TF, once.
    from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return pipeline.load_raw_shard(config, process_index, process_count, with_hw=with_hw)
  return _array_shard(config, process_index, process_count) + ((None,) if with_hw else ())


def _array_shard(config: ml_collections.ConfigDict, process_index: int,
                 process_count: int) -> tuple[np.ndarray, np.ndarray]:
  images, labels = arrays.get(config).arrays(config.data.train_split)
  positions = config.data.get("train_indices")
  if positions is None:
    return tuple(a[arrays.shard_indices(len(labels), process_index, process_count)]
                 for a in (images, labels))
  positions = arrays.checked_positions(positions, len(labels), config.data.train_split)
  mine = positions[arrays.shard_indices(len(positions), process_index, process_count)]
  return images[mine], labels[mine]


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
            process_index: int, start_step: int = 0,
            hw: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite shuffled batches of (images, labels, and `hw` if given) from batch `start_step`
  on (see module doc)."""
  n = len(labels)
  if not n:  # A shard smaller than a batch (a small labelled subset) runs several epochs a batch.
    raise ValueError("This process's shard of the train split is empty; lower the process "
                     "count or use a larger split.")

  def order(epoch: int) -> np.ndarray:
    ss = np.random.SeedSequence([int(seed) % 2**32, process_index, epoch])
    return np.random.default_rng(ss).permutation(n)

  position = start_step * batch_size
  epoch, offset = divmod(position, n)
  perm = order(epoch)
  while True:
    take = []
    need = batch_size
    while need:
      part = perm[offset:offset + need]
      take.append(part)
      need -= len(part)
      offset += len(part)
      if offset == n:
        epoch, offset = epoch + 1, 0
        perm = order(epoch)
    idx = np.concatenate(take) if len(take) > 1 else take[0]
    batch = {"image": images[idx], "label": labels[idx]}
    if hw is not None:
      batch["hw"] = hw[idx]
    yield batch


def build_train_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                         process_count: int | None = None,
                         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Raw-image batches of this process's shard, for on-device augmentation (see module doc)."""
  process_index, process_count = checks.processes(process_index, process_count)
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  b = config.batch_size
  if not isinstance(b, int) or b < 1 or b % process_count:
    raise ValueError(f"config.batch_size={b!r} must be a positive multiple of the process "
                     f"count ({process_count}).")
  images, labels, hw = load_shard(config, process_index, process_count, with_hw=True)
  return batches(images, labels, b // process_count, config.seed, process_index, start_step,
                 hw=hw)
