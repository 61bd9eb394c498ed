"""tf.data pipelines: infinite training batches, one-pass evaluation batches, whole splits.

Determinism is by construction, not by luck: records are shuffled with a seed derived from
(config.seed, process index), every example's augmentation seed is `fold_in(base, n)` where n
is its position in that stream, and parallel maps keep their order. So the same seed gives the
same batches whatever the thread timing. Each epoch's order is seeded by (seed, process,
epoch), so a run resumed at any step builds that epoch directly and skips only the records
(file names or indices, before any decoding) of the epoch already seen: a restart costs the
same at step 100 as at step 10^6.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from contrastive_jax import input_spec
from contrastive_jax.data import augment, catalog, checks, sources, tf_setup
from contrastive_jax.data.transforms import TRANSFORMS

_AUTOTUNE = tf.data.AUTOTUNE
_LOAD_BATCH = 256
_NO_END = 2**62  # "Forever", as a range end: training streams stop when the loop does.
# Epoch e of a stream shuffles with seed shuffle_seed * stride + e (shuffle seeds are < 2**32).
_EPOCH_SEED_STRIDE = 2**20
Batch = dict[str, np.ndarray]


# Entry points other than main.py (tests, notebooks) get here first: keep TF off the GPU/TPU.
tf_setup.hide_accelerators_from_tf()


def _seeds(config: ml_collections.ConfigDict, process_index: int) -> tuple[int, tf.Tensor]:
  """(shuffle seed, base seed of the per-example augmentation seeds), distinct per process."""
  state = np.random.SeedSequence([int(config.seed) % 2**32, process_index]).generate_state(3)
  return int(state[0]), tf.constant(state[1:].astype(np.int64))


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # One thread per op and parallelism across examples: the usual best for input pipelines.
  options.threading.max_intra_op_parallelism = 1
  return options


def _iterate(ds: tf.data.Dataset,
             explain: Callable[[int], list[tuple[str, str]]]) -> Iterator[Batch]:
  """numpy batches; a decode failure is re-raised naming the file (`explain(batch_index)`)."""
  it = ds.as_numpy_iterator()
  index = 0
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      bad = explain(index)
      if not bad:
        raise
      name, reason = bad[0]
      raise ValueError(f"Could not decode image file {name!r}: {reason}. Fix or delete it, or "
                       "set config.data.skip_corrupt=True to skip unreadable files.") from e
    yield batch
    index += 1


def _explainer(source: sources.Source, split: str, pi: int, pc: int,
               window: Callable[[int], tf.data.Dataset] | None):
  """Finds the undecodable file behind a pipeline error: first among the records of the failing
  batch (`window(batch_index)`), then, if that finds nothing, in the whole shard."""
  def explain(index: int) -> list[tuple[str, str]]:
    if not isinstance(source, sources.FolderSource):
      return []
    bad = []
    if window is not None:
      bad = source.find_corrupt(list(window(index).as_numpy_iterator()))
    if not bad:
      logging.info("Decode error in split %r; scanning its files to name the culprit.", split)
      bad = source.find_corrupt(list(source.records(split, pi, pc).as_numpy_iterator()))
    return bad
  return explain


def _train_records(source: sources.Source, config: ml_collections.ConfigDict, pi: int, pc: int,
                   shuffle_seed: int, start: int) -> tf.data.Dataset:
  """(position, record) pairs from stream position `start` on: epoch after epoch, each in an
  order seeded by (shuffle seed, epoch), so that a resumed run builds its epoch directly and
  skips at most one epoch's records, however late it resumes. Decoded first when cached."""
  d = config.data
  ds = source.records(d.train_split, pi, pc, shuffle_seed=shuffle_seed)
  n = len(sources.shard_indices(source.num_examples(d.train_split), pi, pc))
  if d.cache:
    decode = source.decoder(d.train_split)

    def decoded(record):
      image, label = decode(record)
      return {"image": image, "label": label}
    ds = ds.map(decoded, num_parallel_calls=_AUTOTUNE)
    if d.skip_corrupt:
      ds = ds.ignore_errors(log_warning=True)
    ds = ds.cache()
  # Records that are indices or paths are tiny, so shuffle the whole shard; images use a buffer.
  buffer = n if source.full_shuffle and not d.cache else min(d.shuffle_buffer, n)
  first_epoch, offset = divmod(start, n)

  def epoch(e):
    seed = tf.cast(shuffle_seed, tf.int64) * _EPOCH_SEED_STRIDE + e
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
  epochs = tf.data.Dataset.range(first_epoch, _NO_END).flat_map(epoch)
  return epochs.skip(offset).enumerate(start=start)


def build_train_iterator(config: ml_collections.ConfigDict, stream: input_spec.Stream, *,
                         process_index: int | None = None, process_count: int | None = None,
                         start_step: int = 0) -> Iterator[Batch]:
  """Infinite iterator over this process's batches of a whole-split `stream` (see
  `contrastive_jax.data`); keys without the stream's prefix."""
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  pi, pc = checks.processes(process_index, process_count)
  checks.check_train_split(config, pc)
  source = catalog.get_source(config)
  local_batch = config.batch_size // pc
  shuffle_seed, base_seed = _seeds(config, pi)
  d = config.data
  decode = source.decoder(d.train_split)
  transform = TRANSFORMS[stream.transform]

  def one_example(position, record):
    image, label = ((record["image"], record["label"]) if d.cache else decode(record))
    seed = tf.random.experimental.stateless_fold_in(base_seed, position)
    return transform(augment.to_float01(image), label, seed, config, stream)

  def records(start: int = start_step * local_batch) -> tf.data.Dataset:
    return _train_records(source, config, pi, pc, shuffle_seed, start)

  ds = records().map(one_example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  if d.skip_corrupt and not d.cache:
    ds = ds.ignore_errors(log_warning=True)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(_AUTOTUNE).with_options(_options())

  def window(index: int) -> tf.data.Dataset:
    return records((start_step + index) * local_batch).take(local_batch).map(lambda _, r: r)
  explain = _explainer(source, d.train_split, pi, pc, None if d.cache else window)
  return _iterate(ds, explain)


def load_raw_shard(config: ml_collections.ConfigDict, process_index: int,
                   process_count: int, with_hw: bool = False) -> tuple[np.ndarray, ...]:
  """This process's shard of the train split, decoded and resized once (`raw_view`), in record
  order: (uint8 [n, R, R, 3], int32 [n]), and each image's valid int32 [n, 2] height and width
  in its canvas if `with_hw`. For `data.in_memory`, on sources that need TF."""
  d = config.data
  checks.check_train_split(config, process_count)
  source = catalog.get_source(config)
  decode = source.decoder(d.train_split)

  def one_example(record):
    image, label = decode(record)
    return TRANSFORMS["raw"](augment.to_float01(image), label, None, config, None)

  records = source.records(d.train_split, process_index, process_count)
  ds = records.map(one_example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  if d.skip_corrupt:
    ds = ds.ignore_errors(log_warning=True)
  ds = ds.batch(_LOAD_BATCH).prefetch(_AUTOTUNE).with_options(_options())

  def window(index: int) -> tf.data.Dataset:
    return records.skip(index * _LOAD_BATCH).take(_LOAD_BATCH)
  loaded = list(_iterate(ds, _explainer(source, d.train_split, process_index, process_count,
                                        window)))
  out = (np.concatenate([b["image"] for b in loaded]),
         np.concatenate([b["label"] for b in loaded]).astype(np.int32))
  return out + (np.concatenate([b["hw"] for b in loaded]),) if with_hw else out


def _eval_dataset(config: ml_collections.ConfigDict, source: sources.Source, split: str,
                  local_batch: int, pi: int, pc: int,
                  positions: np.ndarray | None = None) -> tuple[tf.data.Dataset, Callable]:
  d = config.data
  decode = source.decoder(split)
  transform = TRANSFORMS["eval"]
  if positions is None:
    positions = np.arange(source.num_examples(split), dtype=np.int64)
  # This process's contiguous block (`sources.eval_block`): a TFDS split then reads its range.
  mine = sources.eval_block(positions, pi, pc)

  def one_example(index, record):
    image, label = decode(record)
    out = transform(augment.to_float01(image), label, None, config, None)
    return {**out, "index": index, "mask": tf.constant(True)}

  def records() -> tf.data.Dataset:
    return tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(mine),
                               source.select(split, mine))

  ds = records().map(one_example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  if d.skip_corrupt:
    ds = ds.ignore_errors(log_warning=True)
  # Every process yields the same number of batches (that of the largest shard), padding with
  # masked rows, so collectives in a multi-host evaluation line up.
  largest_shard = math.ceil(len(positions) / pc)
  num_batches = math.ceil(largest_shard / local_batch)
  pad = {"image": tf.zeros([d.image_size, d.image_size, 3], tf.float32),
         "label": tf.constant(-1, tf.int32), "index": tf.constant(-1, tf.int64),
         "mask": tf.constant(False)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
  ds = ds.take(num_batches * local_batch).batch(local_batch, drop_remainder=True)
  ds = ds.prefetch(_AUTOTUNE).with_options(_options())

  def window(index: int) -> tf.data.Dataset:
    return source.select(split, mine).skip(index * local_batch).take(local_batch)
  return ds, _explainer(source, split, pi, pc, window)


def build_eval_iterator(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                        process_index: int | None = None, process_count: int | None = None,
                        positions: np.ndarray | None = None) -> Iterator[Batch]:
  """One deterministic pass over this process's shard of `split` (or of its examples at
  `positions`): see `contrastive_jax.data.build_eval_iterator`."""
  pi, pc = checks.processes(process_index, process_count)
  checks.check_values(config)
  if batch_size <= 0 or batch_size % pc:
    raise ValueError(f"Evaluation batch_size={batch_size} must be a positive multiple of the "
                     f"process count ({pc}).")
  source = catalog.get_source(config)
  ds, explain = _eval_dataset(config, source, split, batch_size // pc, pi, pc, positions)
  return _iterate(ds, explain)


def load_arrays(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The whole split, eval-preprocessed: (float32 [N, S, S, 3] in [0, 1], int32 [N])."""
  checks.check_values(config)
  source = catalog.get_source(config)
  ds, explain = _eval_dataset(config, source, split, _LOAD_BATCH, 0, 1)
  images, labels = [], []
  for batch in _iterate(ds, explain):
    mask = batch["mask"]
    images.append(batch["image"][mask])
    labels.append(batch["label"][mask])
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)
