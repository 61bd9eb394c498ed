"""The source a config names (`get_source`): one place that knows every source class, so
sources.py and tfds_source.py need not know each other. Imports TensorFlow."""
from __future__ import annotations

import ml_collections

from contrastive_jax.data import arrays
from contrastive_jax.data.arrays import SOURCES
from contrastive_jax.data.sources import ArraySource, FolderSource, Restricted, Source

_CACHE: dict[tuple, Source] = {}
_ARRAY_SOURCES: dict[arrays.ArraySplits, ArraySource] = {}


def get_source(config: ml_collections.ConfigDict) -> Source:
  """The source `config.data` names; cached, so folders are listed and files loaded once.
  With `config.data.train_indices` set, the train split holds those examples alone."""
  source = _get_source(config)
  indices = config.data.get("train_indices")
  if indices is None:
    return source
  return Restricted(source, config.data.train_split, indices)


def _get_source(config: ml_collections.ConfigDict) -> Source:
  d = config.data
  if d.source not in SOURCES:
    raise ValueError(f"Unknown data source {d.source!r} (config.data.source); valid sources: "
                     f"{', '.join(SOURCES)}.")
  if d.source == "tfds":  # Not cached: cheap, and TFDS mocking in tests must take effect.
    from contrastive_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.TfdsSource(d.name, d.data_dir, d.download, d.num_classes)
  if d.source in arrays.ARRAY_SOURCES:  # arrays.get caches the splits, and notices new files.
    splits = arrays.get(config)
    if splits not in _ARRAY_SOURCES:
      _ARRAY_SOURCES[splits] = ArraySource(splits)
    return _ARRAY_SOURCES[splits]
  key = (d.path, d.num_classes, d.skip_corrupt)
  if key not in _CACHE:
    _CACHE[key] = FolderSource(d.path, d.num_classes, d.skip_corrupt)
  return _CACHE[key]
