"""SuNCEt's input: the unlabelled two-view batch plus a class-stratified labelled support batch.

The labelled subset is `evaluation.subsets.labelled_subset` of the training split (in the order
`load_arrays` returns it), chosen by config.suncet.label_fraction, per_class or index_file with
config.suncet.subset_seed, so an evaluation with the same fraction and seed sees the same
labels. Each step t draws from it, with `numpy.random.default_rng([config.seed, t])`, the
*global* support batch: classes_per_batch distinct classes and images_per_class distinct images
of each, row r holding class r % classes_per_batch (the reference code's layout, so every
device's rows span the classes). Every process computes the same global draw and keeps rows
[p * s, (p + 1) * s) with s = support size / process count: the union over processes is the
global batch whatever the process count, and a run resumed at step t draws what an unbroken
run draws there.

Each support image gets one SimCLR-augmented view, as in the reference code
(supervised_views=1 with the unlabelled images' transform), seeded by (config.seed, t, row).

Batches of steps t < `supervised_steps` are the two_views batch {"view1", "view2", "label"}
plus "support_image": float32 [s, S, S, 3] and "support_label": int32 [s]; later batches are
the two_views batch alone. That change of structure *is* the switch: the method traces a
program without the support for it, so nothing is decoded, augmented or computed for the
support after the supervised phase. Only this module's functions import TensorFlow, on first
call.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import ml_collections
import numpy as np

from contrastive_jax.evaluation import subsets

Batch = dict[str, np.ndarray]


def supervised_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """Steps with the SuNCEt term: config.suncet.supervised_steps if >= 0, else
  config.suncet.supervised_epochs epochs of the training split at config.batch_size."""
  c = config.suncet
  if c.supervised_steps >= 0:
    return int(c.supervised_steps)
  return int(math.ceil(c.supervised_epochs * num_train_examples / config.batch_size))


class ClassStratifiedSampler:
  """Draws, per step, classes_per_batch distinct classes x images_per_class distinct images.

  Positions index `labels` (the labelled subset); the draw is a pure function of (seed, step).
  """

  def __init__(self, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int,
               seed: int):
    labels = np.asarray(labels)
    self.classes = np.unique(labels)
    self.members = [np.flatnonzero(labels == c) for c in self.classes]
    self.classes_per_batch, self.images_per_class = classes_per_batch, images_per_class
    self.seed = int(seed) % 2**32
    if classes_per_batch > len(self.classes):
      raise ValueError(
          f"config.suncet.classes_per_batch={classes_per_batch} exceeds the {len(self.classes)} "
          "classes present in the labelled subset; lower it or label more examples.")
    smallest = min(len(m) for m in self.members)
    if images_per_class > smallest:
      cls = self.classes[int(np.argmin([len(m) for m in self.members]))]
      raise ValueError(
          f"config.suncet.images_per_class={images_per_class} exceeds the {smallest} labelled "
          f"images of class {cls}; lower it or raise config.suncet.label_fraction / per_class.")

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


def _subset_kwargs(c: ml_collections.ConfigDict) -> dict[str, Any]:
  """index_file if set, else per_class if > 0, else label_fraction."""
  if c.index_file:
    return {"index_file": c.index_file}
  if c.per_class:
    return {"per_class": c.per_class}
  return {"fraction": c.label_fraction}


def labelled_records(config: ml_collections.ConfigDict, source: Any
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(records of the labelled subset as stacked numpy arrays, their labels).

  In-memory sources (digits, npz) give labels directly; other sources are listed once, record
  by record, without decoding (TFDS records hold encoded images: fine for CIFAR or STL-10, but
  use an image folder for ImageNet-sized splits).
  """
  c, split = config.suncet, config.data.train_split
  rows, names = None, None
  if hasattr(source, "arrays"):  # Digits, npz: records are indices, labels are in memory.
    labels = np.asarray(source.arrays(split)[1])
  else:
    rows = list(source.records(split, 0, 1).as_numpy_iterator())
    labels = np.asarray([int(r["label"]) for r in rows], np.int32)
    if "path" in rows[0]:
      names = [r["path"].decode() for r in rows]
  indices = subsets.labelled_subset(labels, seed=c.subset_seed, names=names,
                                    **_subset_kwargs(c))
  indices = indices[labels[indices] >= 0]  # An index file may list unlabelled examples.
  if not len(indices):
    raise ValueError("The labelled subset (config.suncet.label_fraction / per_class / "
                     "index_file) holds no labelled example.")
  if rows is None:
    return {"index": indices}, labels[indices]
  return ({k: np.stack([rows[i][k] for i in indices]) for k in rows[0]}, labels[indices])


def _support_stream(config: ml_collections.ConfigDict, source: Any,
                    sampler: ClassStratifiedSampler, records: dict[str, np.ndarray],
                    pi: int, pc: int, start_step: int, stop_step: int) -> Iterator[Batch]:
  """This process's support batches for steps [start_step, stop_step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  s, size = sampler.support_size // pc, config.data.image_size
  state = np.random.SeedSequence([int(config.seed) % 2**32, 0x5C4E]).generate_state(2)
  base_seed = tf.constant(state.astype(np.int64))
  decode = source.decoder(config.data.train_split)
  tensors = {k: tf.constant(v) for k, v in records.items()}

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
    view = augment.simclr_view(augment.to_float01(image), seed, config.augment, size=size)
    return {"image": view, "label": label}

  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  ds = tf.data.Dataset.range(start_step, max(start_step, stop_step)).flat_map(per_step)
  ds = ds.map(one_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(s, drop_remainder=True).prefetch(2).with_options(options)
  for batch in ds.as_numpy_iterator():
    yield {"support_image": batch["image"], "support_label": batch["label"]}


def build_suncet_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                          process_count: int | None = None,
                          start_step: int = 0) -> Iterator[Batch]:
  """Infinite iterator of this process's SuNCEt batches (see the module docstring)."""
  from contrastive_jax import data  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import sources  # pylint: disable=g-import-not-at-top
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  c = config.suncet
  support = c.classes_per_batch * c.images_per_class
  if support % process_count:
    raise ValueError(f"The support batch (config.suncet.classes_per_batch x images_per_class = "
                     f"{support}) is not divisible by the process count ({process_count}).")
  unlabelled = data.build_train_iterator(config, input_kind="two_views",
                                         process_index=process_index,
                                         process_count=process_count, start_step=start_step)
  source = sources.get_source(config)
  records, labels = labelled_records(config, source)
  sampler = ClassStratifiedSampler(labels, classes_per_batch=c.classes_per_batch,
                                   images_per_class=c.images_per_class, seed=config.seed)
  stop = supervised_steps(config, source.num_examples(config.data.train_split))
  stream = _support_stream(config, source, sampler, records, process_index, process_count,
                           start_step, stop)
  return _merge(unlabelled, stream, max(0, stop - start_step))


def _merge(unlabelled: Iterator[Batch], support: Iterator[Batch],
           supervised: int) -> Iterator[Batch]:
  """The first `supervised` batches with their support, then unlabelled batches alone."""
  for _, u, sup in zip(range(supervised), unlabelled, support):
    yield {**u, **sup}
  yield from unlabelled
