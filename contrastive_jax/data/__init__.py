"""The input pipeline: numpy batches out, built from `config.data` and a method's `InputSpec`.

The data layer receives a description, never a method: `build_train_iterator(config, spec)`
builds every stream of `spec` (`contrastive_jax.input_spec`) from `config.data` and
`config.augment`, and merges them into one batch per step. Importing this package is cheap and
imports no TensorFlow: each function imports the tf.data code (`pipeline.py`) on first call.
Array sources ("digits", "npz") never need it for evaluation arrays, sizes and checks, nor for
"raw" streams (the accelerator augments): such runs work without TensorFlow installed
(`needs_tensorflow` says when a config does need it).

Sources (`config.data.source`): "digits" (scikit-learn, offline), "tfds", "folder"
(<path>/<split>/<class>/*.jpg), "npz". Keys and presets: `contrastive_jax.presets`.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

from contrastive_jax import input_spec
from contrastive_jax.data import arrays, checks, in_memory, train_subset
from contrastive_jax.input_spec import DatasetInfo

if TYPE_CHECKING:
  import ml_collections
  import numpy as np

__all__ = ["DatasetInfo", "TensorFlowMissingError", "build_eval_iterator",
           "build_train_iterator", "dataset_info", "load_arrays", "needs_tensorflow",
           "require_tensorflow", "split_labels", "split_size", "tensorflow_available",
           "validate_data_config", "validate_inputs"]


def build_train_iterator(config: ml_collections.ConfigDict,
                         spec: input_spec.InputSpec | str, *,
                         process_index: int | None = None, process_count: int | None = None,
                         start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches (numpy), one per step.

  The main stream holds config.batch_size // process_count examples of this process's own
  shard of config.data.train_split (the processes' shards are disjoint and cover the split),
  in an order seeded by (config.seed, process_index), repeated, batched with drop_remainder.
  Other streams (class-stratified labelled draws) add their own keys, with their prefix, to
  the batches of steps < their `until_step`. Keys per transform: see `input_spec`. "raw"
  streams of splits that fit in memory are batched by numpy (`in_memory.py`), the rest by
  tf.data (`pipeline.py`). `start_step` skips batches, so a resumed run sees what an
  uninterrupted one would; the same (config.seed, process_index) gives the same batches.
  A transform name as `spec` means one stream of that transform. `config.data.train_indices`
  (sorted positions into the train split; absent or None: all) restricts the split to those
  examples, for every stream path: a labelled subset read through the training pipeline.
  `config.data.train_subset` (`train_subset.py`) chooses such a subset from the config: the
  main stream reads it; class-stratified streams draw from their own subsets of the split.
  """
  main_config = train_subset.restricted(config)
  if isinstance(spec, str):
    spec = input_spec.single(spec)
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  pi, pc = checks.processes(process_index, process_count)
  main = spec.main
  if main.transform == "raw" and in_memory.fits_in_memory(config):
    # Raw images for the device to augment, batched by numpy: no tf.data (nor TF for digits/npz).
    batches = in_memory.build_train_iterator(main_config, process_index=pi, process_count=pc,
                                             start_step=start_step)
  else:
    require_tensorflow(needs_tensorflow(config, spec) or "tf.data builds these batches")
    from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    batches = pipeline.build_train_iterator(main_config, main, process_index=pi,
                                            process_count=pc, start_step=start_step)
  if main.prefix:
    batches = ({main.prefix + k: v for k, v in b.items()} for b in batches)
  extra = spec.streams[1:]
  if not extra:
    return batches
  from contrastive_jax.data import labelled  # pylint: disable=g-import-not-at-top
  ends = [s.until_step if s.until_step is not None else 2**62 for s in extra]
  streams = [labelled.build_stream(config, s, process_index=pi, process_count=pc,
                                   start_step=start_step, stop_step=end)
             for s, end in zip(extra, ends)]
  return _merge(batches, streams, ends, start_step)


def _merge(main: Iterator[dict], streams: list[Iterator[dict]], ends: list[int],
           step: int) -> Iterator[dict]:
  """Each main batch, plus the batch of every stream still running at that step."""
  for batch in main:
    for stream, end in zip(streams, ends):
      if step < end:
        batch = {**batch, **next(stream)}
    yield batch
    step += 1


def build_eval_iterator(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                        process_index: int | None = None, process_count: int | None = None,
                        positions: np.ndarray | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over `split`: {"image", "label", "index", "mask"} batches.

  `batch_size` is GLOBAL, like config.batch_size: each process yields batch_size //
  process_count rows from its own contiguous block of the split. `positions` (sorted unique
  indices into the split) restricts the pass to those examples. "index" is each row's
  position in the split. Rows past the end are padding (image 0, label -1, index -1, mask
  False), and every process yields the same number of batches, so shapes stay static and
  multi-host collectives line up. Array sources are cut with numpy, a batch at a time (no
  TensorFlow); the rest stream through tf.data (`eval_batches.py`).
  """
  if config.data.source not in arrays.ARRAY_SOURCES:
    require_tensorflow("build_eval_iterator runs tf.data")
  from contrastive_jax.data import eval_batches  # pylint: disable=g-import-not-at-top
  return eval_batches.build_eval_iterator(config, split, batch_size, positions=positions,
                                          process_index=process_index,
                                          process_count=process_count)


def split_labels(config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """int32 [N]: every label of `split` in its order (-1: unlabelled), no image decoded.
  Image folders and array sources look them up; TFDS reads the split's records once."""
  if config.data.source not in arrays.ARRAY_SOURCES:
    require_tensorflow(f"config.data.source={config.data.source!r}")
  from contrastive_jax.data import eval_batches  # pylint: disable=g-import-not-at-top
  return eval_batches.split_labels(config, split)


def split_size(config: ml_collections.ConfigDict, split: str) -> int:
  """Examples in `split` of the configured source."""
  from contrastive_jax.data import eval_batches  # pylint: disable=g-import-not-at-top
  return eval_batches.split_size(config, split)


def load_arrays(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The whole split (every process gets all of it), eval-preprocessed, in a fixed order:
  (float32 [N, S, S, 3] in [0, 1], int32 [N]). For small datasets and tests only: the
  evaluators stream `build_eval_iterator` instead. Array sources ("digits", "npz") are read
  and preprocessed with numpy alone."""
  checks.check_values(config)
  if config.data.source in arrays.ARRAY_SOURCES:
    return arrays.eval_arrays(config, split)
  require_tensorflow(f"config.data.source={config.data.source!r}")
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_arrays(config, split)


def dataset_info(config: ml_collections.ConfigDict) -> input_spec.DatasetInfo:
  """Class count and split sizes of the configured dataset (opens the source)."""
  return _info(config, checks.open_splits(config))


def _info(config: ml_collections.ConfigDict, splits) -> input_spec.DatasetInfo:
  d = config.data
  return DatasetInfo(
      num_classes=int(splits.num_classes),
      num_train_examples=splits.num_examples(d.train_split),
      num_eval_examples=splits.num_examples(d.eval_split) if d.eval_split else 0,
      image_size=int(d.image_size))


def needs_tensorflow(config: ml_collections.ConfigDict,
                     spec: input_spec.InputSpec | str) -> str | None:
  """Why training with `spec` on `config` needs TensorFlow, or None if numpy suffices.

  Only array sources with a single "raw" stream (the accelerator augments) train without it:
  every other stream augments or decodes with tf.data.
  """
  if isinstance(spec, str):
    spec = input_spec.single(spec)
  if config.data.source not in arrays.ARRAY_SOURCES:
    return f"config.data.source={config.data.source!r} decodes images with TensorFlow"
  for stream in spec.streams:
    if stream.sampling is not None:
      return "labelled streams drawn from a subset are built by tf.data"
    if stream.transform != "raw":
      if stream.transform == "two_views":
        return "augmentation runs in tf.data unless config.augment.on_device=True"
      return f"the {stream.transform!r} transform is built by tf.data"
  return None


def tensorflow_available() -> bool:
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class TensorFlowMissingError(ModuleNotFoundError):
  """A config needs TensorFlow where it is not installed (the base install leaves it out)."""


def require_tensorflow(why: str) -> None:
  """Raises a clear error, before any compilation, if TensorFlow is needed but missing."""
  if not tensorflow_available():
    raise TensorFlowMissingError(
        f"TensorFlow is not installed, but {why}. Install it (pip install "
        "'contrastive_jax[tf]'), or train without it: an array source (config.data.source="
        '"digits" or "npz") with config.augment.on_device=True and a method that augments '
        "on the device (simclr, supervised).")


def validate_data_config(config: ml_collections.ConfigDict, *, process_count: int,
                         device_count: int) -> DatasetInfo:
  """Raises ValueError, naming the config key and the fix, before any compilation, for: an
  unknown source or dataset name, bad augment values, a missing folder/file/split or one
  without images, unreadable images (unless skip_corrupt), npz labels out of range, an
  unprepared TFDS dataset with download=False, a batch size not divisible by process_count or
  device_count, and a train split smaller than one global batch; ModuleNotFoundError for a
  source that needs TensorFlow where it is not installed. Returns the `dataset_info`."""
  b = config.batch_size
  if isinstance(b, int) and b > 0 and b % device_count:
    raise ValueError(f"config.batch_size={b} is not divisible by the device count "
                     f"({device_count}); the global batch is split evenly over devices.")
  checks.check_values(config)
  if config.data.source not in arrays.ARRAY_SOURCES:  # Before opening it: that needs TF.
    require_tensorflow(f"config.data.source={config.data.source!r} decodes images with "
                       "TensorFlow")
  train_subset.validate(config)
  splits = checks.check_train_split(train_subset.restricted(config), process_count)
  if config.data.eval_split:
    splits.num_examples(config.data.eval_split)
  info = _info(config, splits)
  chosen = train_subset.positions(config)
  if chosen is not None:  # Epochs count the examples training reads.
    info = dataclasses.replace(info, num_train_examples=len(chosen))
  return info


def _check_subset(config: ml_collections.ConfigDict,
                  sampling: input_spec.ClassStratified | input_spec.RandomDraw,
                  info: DatasetInfo) -> None:
  """A stream's labelled subset exists in the training split and holds every class; the
  split's labels are listed, no image decoded."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import subsets  # pylint: disable=g-import-not-at-top
  split = config.data.train_split
  labels = split_labels(config, split)
  names = None
  if sampling.subset.index_file and config.data.source == "folder":
    names = subsets.folder_example_names(config.data.path, split, len(labels))
  key = f"{sampling.key}.label_fraction / per_class / index_file"
  try:
    chosen = subsets.labelled_subset(labels, seed=sampling.subset.seed, names=names,
                                     **sampling.subset.kwargs())
  except ValueError as e:
    raise ValueError(f"The labelled subset ({key}) cannot be drawn from split {split!r}: "
                     f"{e}") from None
  present = set(np.unique(labels[chosen][labels[chosen] >= 0]).tolist())
  missing = sorted(set(range(info.num_classes)) - present)
  if missing:
    raise ValueError(f"The labelled subset ({key}) has no example of class(es) "
                     f"{missing[:10]} of the {info.num_classes}; label more examples or use a "
                     "class-balanced subset (per_class or fraction).")


def validate_inputs(spec: input_spec.InputSpec, config: ml_collections.ConfigDict,
                    info: DatasetInfo, *, process_count: int, device_count: int) -> None:
  """The checks a method's declared inputs add, without opening the data again: TensorFlow
  where a stream needs it, and labelled batches that divide over devices and processes, ask
  for no more classes than the dataset has, and come from a subset that exists and holds
  every class."""
  why = needs_tensorflow(config, spec)
  if why:
    require_tensorflow(why)
  for stream in spec.streams:
    s = stream.sampling
    if s is None:
      continue
    for n, what in ((device_count, "device"), (process_count, "process")):
      if s.batch_size % n and isinstance(s, input_spec.RandomDraw):
        raise ValueError(f"The labelled batch of {s.key} ({s.batch_size} images) must be "
                         f"divisible by the {what} count ({n}).")
      if s.batch_size % n:
        raise ValueError(f"{s.key}.images_per_class={s.images_per_class} is invalid: the "
                         f"labelled batch classes_per_batch x images_per_class = "
                         f"{s.batch_size} must be divisible by the {what} count ({n}).")
    _check_subset(config, s, info)
    if isinstance(s, input_spec.RandomDraw):
      continue
    if s.classes_per_batch > info.num_classes:
      raise ValueError(f"{s.key}.classes_per_batch={s.classes_per_batch} is invalid: must be "
                       f"<= the number of classes ({info.num_classes}).")
