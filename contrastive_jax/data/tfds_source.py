"""TFDS as a data source: any prepared TFDS dataset, sharded per process with even_splits.

Kept apart from sources.py because tensorflow_datasets is slow to import and only this source
needs it. Images are read encoded (SkipDecoding) so that shuffling, skipping on resume and
caching handle bytes, and are decoded by the pipeline after it has picked them.
"""
from __future__ import annotations

import difflib

import numpy as np
import tensorflow as tf

from contrastive_jax.data.sources import Source


class TfdsSource(Source):
  """Any TFDS dataset; per-process shards via `tfds.even_splits`, images decoded by us."""

  full_shuffle = False

  def __init__(self, name: str, data_dir: str | None, download: bool,
               num_classes: int | None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._tfds = tfds
    if not name:
      raise ValueError('config.data.name must name a TFDS dataset when config.data.source="tfds" '
                       '(e.g. "cifar10").')
    try:
      self._builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      known = tfds.list_builders(with_community_datasets=False)
      close = difflib.get_close_matches(name.split(":")[0], known, n=5)
      hint = f" Did you mean: {', '.join(close)}?" if close else ""
      raise ValueError(f"Unknown TFDS dataset {name!r} (config.data.name).{hint} Known datasets "
                       f"({len(known)}): see tfds.list_builders(); e.g. cifar10, cifar100, "
                       "stl10, imagenet2012.") from None
    self.name = name
    where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    if download:
      try:
        self._builder.download_and_prepare()
      except Exception as e:
        raise RuntimeError(f"Could not download and prepare TFDS dataset {name!r} into {where}: "
                           f"{e}. Downloading needs network access; prepare it elsewhere with "
                           f"`tfds build {name}` and point config.data.data_dir at it.") from e
    elif not self._builder.is_prepared():
      raise ValueError(
          f"TFDS dataset {name!r} not found under data_dir={where} (looked in "
          f"{self._builder.data_dir}). Prepare it with `tfds build {name} --data_dir=<dir>` "
          "(on a machine with network), set config.data.data_dir to a directory that holds it, "
          "or set config.data.download=True (needs network).")
    features = self._builder.info.features
    if "image" not in features:
      raise ValueError(f"TFDS dataset {name!r} has no 'image' feature; features: "
                       f"{', '.join(features.keys())}.")
    label = features["label"] if "label" in features else None
    self._has_label = label is not None and hasattr(label, "num_classes")
    self.num_classes = num_classes or (label.num_classes if self._has_label else 0)

  def num_examples(self, split):
    splits = self._builder.info.splits
    try:
      n = splits[split].num_examples
    except (KeyError, ValueError) as e:
      if splits:  # Prepared metadata and the split is not in it.
        raise ValueError(f"Split {split!r} not in TFDS dataset {self.name!r}; splits: "
                         f"{', '.join(splits.keys())}.") from e
      # No split metadata (e.g. under tfds.testing.mock_data): ask the dataset itself.
      n = int(self._builder.as_dataset(split=split).cardinality())
    if n <= 0:
      raise ValueError(f"Split {split!r} of TFDS dataset {self.name!r} is empty.")
    return n

  def records(self, split, process_index, process_count, *, shuffle_seed=None):
    tfds = self._tfds
    sub = (tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
           if process_count > 1 else split)
    return self._read(sub, shuffle_seed)

  def select(self, split, positions):
    # Reads only the range the positions span (TFDS slices by absolute index), so a process
    # reading its own contiguous block of an evaluation reads nothing else.
    positions = np.asarray(positions, np.int64)
    if not len(positions):
      return self._read(f"{split}[0:1]", None).take(0)
    lo, hi = int(positions[0]), int(positions[-1]) + 1
    ds = self._read(f"{split}[{lo}:{hi}]", None)
    if hi - lo == len(positions):
      return ds
    keep = np.zeros(hi - lo, bool)
    keep[positions - lo] = True
    keep = tf.constant(keep)
    return ds.enumerate().filter(lambda i, _: tf.gather(keep, i)).map(lambda _, r: r)

  def _read(self, sub, shuffle_seed):
    tfds = self._tfds
    ds = self._builder.as_dataset(
        split=sub, shuffle_files=shuffle_seed is not None,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False))
    has_label = self._has_label
    return ds.map(lambda ex: {
        "image": ex["image"],
        "label": tf.cast(ex["label"], tf.int32) if has_label else tf.constant(-1, tf.int32)})

  def decoder(self, split):
    del split
    return self._decode

  def _decode(self, record):
    image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image, record["label"]
