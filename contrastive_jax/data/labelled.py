"""Labelled streams drawn from a subset: class-stratified (`input_spec.ClassStratified`, e.g.
SuNCEt's support) or uniform (`input_spec.RandomDraw`, FixMatch's labelled batch).

The labelled subset is `subsets.labelled_subset` of the training split (in the order
`load_arrays` returns it), chosen by the sampling's `Subset` (fraction, per_class or index
file, with its seed), so an evaluation with the same fraction and seed sees the same labels.
Each step t draws from it, with `numpy.random.default_rng([seed, t])`, the *global* batch:
classes_per_batch distinct classes and images_per_class distinct images of each, row r holding
class r % classes_per_batch (so every device's rows span the classes). Every process computes
the same global draw and keeps rows [p * s, (p + 1) * s) with s = batch / process count: the
union over processes is the global batch whatever the process count, and a run resumed at
step t draws what an unbroken run draws there.

Each image goes through the stream's transform (one SimCLR view for "single_view"), seeded by
(config.seed, t, row). The stream yields the batches of steps [start_step, until_step); the
caller merges them into the main stream's batches. Only this module's functions import
TensorFlow, on first call.
"""
from __future__ import annotations

from typing import Any, Iterator

import ml_collections
import numpy as np

from contrastive_jax import input_spec
from contrastive_jax.data import subsets

Batch = dict[str, np.ndarray]


class ClassStratifiedSampler:
  """Draws, per step, classes_per_batch distinct classes x images_per_class distinct images.

  Positions index `labels` (the labelled subset); the draw is a pure function of (seed, step).
  """

  def __init__(self, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int,
               seed: int, key: str = "config"):
    labels = np.asarray(labels)
    self.classes = np.unique(labels)
    self.members = [np.flatnonzero(labels == c) for c in self.classes]
    self.classes_per_batch, self.images_per_class = classes_per_batch, images_per_class
    self.seed = int(seed) % 2**32
    if classes_per_batch > len(self.classes):
      raise ValueError(
          f"{key}.classes_per_batch={classes_per_batch} exceeds the {len(self.classes)} "
          "classes present in the labelled subset; lower it or label more examples.")
    smallest = min(len(m) for m in self.members)
    if images_per_class > smallest:
      cls = self.classes[int(np.argmin([len(m) for m in self.members]))]
      raise ValueError(
          f"{key}.images_per_class={images_per_class} exceeds the {smallest} labelled "
          f"images of class {cls}; lower it or raise {key}.label_fraction / per_class.")

  @property
  def support_size(self) -> int:
    return self.classes_per_batch * self.images_per_class

  def global_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions int64 [S], labels int32 [S]) of step `step`; row r has class r % C."""
    rng = np.random.default_rng([self.seed, int(step)])
    chosen = rng.choice(len(self.classes), self.classes_per_batch, replace=False)
    picks = np.stack([rng.choice(self.members[c], self.images_per_class, replace=False)
                      for c in chosen], axis=1)  # [K, C]: row-major order gives r % C = class.
    labels = np.tile(self.classes[chosen], self.images_per_class)
    return picks.reshape(-1).astype(np.int64), labels.astype(np.int32)


class RandomSampler:
  """Draws, per step, `batch_size` distinct positions of the subset uniformly (with
  replacement only when the subset is smaller than the batch); a pure function of (seed,
  step), like `ClassStratifiedSampler`."""

  def __init__(self, labels: np.ndarray, *, batch_size: int, seed: int):
    self.labels = np.asarray(labels, np.int32)
    self.batch_size = int(batch_size)
    self.seed = int(seed) % 2**32

  @property
  def support_size(self) -> int:
    return self.batch_size

  def global_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([self.seed, int(step), 0x52D])
    n = len(self.labels)
    picks = rng.choice(n, self.batch_size, replace=self.batch_size > n)
    return picks.astype(np.int64), self.labels[picks]


def labelled_records(config: ml_collections.ConfigDict, source: Any,
                     subset: input_spec.Subset, key: str = "config"
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(records of the labelled subset as stacked numpy arrays, their labels).

  In-memory sources (digits, npz) give labels directly; other sources are listed once, record
  by record, without decoding (TFDS records hold encoded images: fine for CIFAR or STL-10, but
  use an image folder for ImageNet-sized splits).
  """
  split = config.data.train_split
  rows, names = None, None
  if hasattr(source, "arrays"):  # Digits, npz: records are indices, labels are in memory.
    labels = np.asarray(source.arrays(split)[1])
  else:
    rows = list(source.records(split, 0, 1).as_numpy_iterator())
    labels = np.asarray([int(r["label"]) for r in rows], np.int32)
    if "path" in rows[0]:
      names = [r["path"].decode() for r in rows]
  indices = subsets.labelled_subset(labels, seed=subset.seed, names=names, **subset.kwargs())
  indices = indices[labels[indices] >= 0]  # An index file may list unlabelled examples.
  if not len(indices):
    raise ValueError(f"The labelled subset ({key}.label_fraction / per_class / index_file) "
                     "holds no labelled example.")
  if rows is None:
    return {"index": indices}, labels[indices]
  return ({k: np.stack([rows[i][k] for i in indices]) for k in rows[0]}, labels[indices])


def _stream(config: ml_collections.ConfigDict, stream: input_spec.Stream, source: Any,
            sampler: ClassStratifiedSampler | RandomSampler, records: dict[str, np.ndarray],
            pi: int, pc: int, start_step: int, stop_step: int) -> Iterator[Batch]:
  """This process's batches of `stream` for steps [start_step, stop_step), prefixed keys."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data.transforms import TRANSFORMS  # pylint: disable=g-import-not-at-top
  s = sampler.support_size // pc
  state = np.random.SeedSequence([int(config.seed) % 2**32, 0x5C4E]).generate_state(2)
  base_seed = tf.constant(state.astype(np.int64))
  decode = source.decoder(config.data.train_split)
  tensors = {k: tf.constant(v) for k, v in records.items()}
  transform = TRANSFORMS[stream.transform]

  def local_rows(step):
    positions, labels = sampler.global_batch(int(step))
    rows = slice(pi * s, (pi + 1) * s)
    return positions[rows], labels[rows], np.arange(pi * s, (pi + 1) * s, dtype=np.int64)

  def per_step(step):
    positions, labels, rows = tf.numpy_function(local_rows, [step],
                                                (tf.int64, tf.int32, tf.int64), stateful=False)
    for t in (positions, labels, rows):
      t.set_shape([s])
    return tf.data.Dataset.from_tensor_slices((tf.fill([s], step), positions, labels, rows))

  def one_example(step, position, label, row):
    image, _ = decode({k: tf.gather(v, position) for k, v in tensors.items()})
    seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(base_seed, step), row)
    return transform(augment.to_float01(image), label, seed, config, stream)

  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  ds = tf.data.Dataset.range(start_step, max(start_step, stop_step)).flat_map(per_step)
  ds = ds.map(one_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(s, drop_remainder=True).prefetch(2).with_options(options)
  for batch in ds.as_numpy_iterator():
    yield {stream.prefix + k: v for k, v in batch.items()}


def build_stream(config: ml_collections.ConfigDict, stream: input_spec.Stream, *,
                 process_index: int, process_count: int, start_step: int,
                 stop_step: int) -> Iterator[Batch]:
  """This process's batches of the labelled `stream` for [start_step, stop_step)."""
  from contrastive_jax.data import catalog  # pylint: disable=g-import-not-at-top
  sampling = stream.sampling
  if sampling.batch_size % process_count:
    raise ValueError(f"The labelled batch of {sampling.key} ({sampling.batch_size}) is not "
                     f"divisible by the process count ({process_count}).")
  source = catalog.get_source(config)
  records, labels = labelled_records(config, source, sampling.subset, sampling.key)
  if isinstance(sampling, input_spec.RandomDraw):
    sampler = RandomSampler(labels, batch_size=sampling.batch_size, seed=sampling.seed)
  else:
    sampler = ClassStratifiedSampler(labels, classes_per_batch=sampling.classes_per_batch,
                                     images_per_class=sampling.images_per_class,
                                     seed=sampling.seed, key=sampling.key)
  return _stream(config, stream, source, sampler, records, process_index, process_count,
                 start_step, stop_step)
