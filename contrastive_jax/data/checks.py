"""Early, explicit checks of `config.data`, `config.augment` and the batch size.

Each failure is a ValueError that names the config key and the fix, raised before any
compilation or any tf.data pipeline is built.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from contrastive_jax.data import arrays


def _pair(value: Any, key: str, lo: float, hi: float, *, lo_open: bool = True) -> None:
  ok = isinstance(value, (tuple, list)) and len(value) == 2
  if ok:
    a, b = value
    ok = (a > lo if lo_open else a >= lo) and a <= b <= hi
  if not ok:
    bound = "(" if lo_open else "["
    raise ValueError(f"{key}={value!r} must be a pair (low, high) with {bound}{lo:g} < low <= "
                     f"high <= {hi:g}.")


def _prob(value: Any, key: str) -> None:
  if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
    raise ValueError(f"{key}={value!r} must be a probability in [0, 1].")


def check_values(config: ml_collections.ConfigDict) -> None:
  """Checks `config.data` and `config.augment` values that need no file access."""
  d, a = config.data, config.augment
  if d.source not in arrays.SOURCES:
    raise ValueError(f"Unknown data source {d.source!r} (config.data.source); valid sources: "
                     f"{', '.join(arrays.SOURCES)}.")
  if not isinstance(d.image_size, int) or d.image_size < 1:
    raise ValueError(f"config.data.image_size={d.image_size!r} must be a positive integer.")
  if not 0 < d.eval_crop_fraction <= 1:
    raise ValueError(f"config.data.eval_crop_fraction={d.eval_crop_fraction!r} must lie in "
                     "(0, 1].")
  if not isinstance(d.shuffle_buffer, int) or d.shuffle_buffer < 1:
    raise ValueError(f"config.data.shuffle_buffer={d.shuffle_buffer!r} must be a positive int.")
  if d.num_classes is not None and (not isinstance(d.num_classes, int) or d.num_classes < 1):
    raise ValueError(f"config.data.num_classes={d.num_classes!r} must be None or a positive int.")
  if not d.train_split:
    raise ValueError("config.data.train_split must name a split.")
  for key, valid in (("crop", ("inception", "torchvision")),
                     ("brightness", ("multiplicative", "additive"))):
    if a.get(key, valid[0]) not in valid:
      raise ValueError(f"config.augment.{key}={a[key]!r} must be one of {valid}.")
  raw_size = a.get("raw_size", 0)
  if not isinstance(raw_size, int) or raw_size < 0:
    raise ValueError(f"config.augment.raw_size={raw_size!r} must be an int >= 0 (0: the image "
                     "size).")
  _pair(a.crop_scale, "config.augment.crop_scale", 0.0, 1.0)
  _pair(a.crop_ratio, "config.augment.crop_ratio", 0.0, float("inf"))
  # Contrast and saturation factors are 1 +- 0.8s and must stay >= 0.
  if not 0.0 <= a.color_strength <= 1.25:
    raise ValueError(f"config.augment.color_strength={a.color_strength!r} must lie in [0, 1.25].")
  for key in ("color_prob", "grayscale_prob", "blur_prob"):
    _prob(a[key], f"config.augment.{key}")
  _pair(a.blur_sigma, "config.augment.blur_sigma", 0.0, float("inf"))
  if not 0.0 <= a.blur_kernel_frac <= 1.0:
    raise ValueError(f"config.augment.blur_kernel_frac={a.blur_kernel_frac!r} must lie in [0, 1].")


def check_batch(config: ml_collections.ConfigDict, process_count: int) -> None:
  b = config.batch_size
  if not isinstance(b, int) or b < 1:
    raise ValueError(f"config.batch_size={b!r} must be a positive integer (the global batch).")
  if b % process_count:
    raise ValueError(f"config.batch_size={b} is not divisible by the process count "
                     f"({process_count}); each process loads batch_size // process_count.")


def open_splits(config: ml_collections.ConfigDict):
  """What can count the configured splits: `arrays.get` for array sources (numpy alone), else
  the tf.data source (`catalog.get_source`, which imports TensorFlow)."""
  if config.data.source in arrays.ARRAY_SOURCES:
    return arrays.get(config)
  from contrastive_jax.data import catalog  # pylint: disable=g-import-not-at-top
  return catalog.get_source(config)


def check_train_split(config: ml_collections.ConfigDict, process_count: int):
  """All checks a training pipeline needs; returns `open_splits(config)` (split listed)."""
  check_values(config)
  check_batch(config, process_count)
  source = open_splits(config)
  split, b = config.data.train_split, config.batch_size
  n = source.num_examples(split)
  indices = config.data.get("train_indices")
  if indices is not None:  # Their range is checked where the split is cut (sources, in_memory).
    if not len(indices):
      raise ValueError(f"config.data.train_indices selects no example of split {split!r}.")
    return source  # A labelled subset may be smaller than a batch: its examples repeat.
  if n < b:
    raise ValueError(f"Train split {split!r} has {n} examples, fewer than one global batch "
                     f"(config.batch_size={b}); lower config.batch_size or use a larger split.")
  return source


def processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """(process index, process count), defaulting to JAX's; ValueError if out of range."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, {process_count}).")
  return process_index, process_count
