"""`config.data.train_subset`: train on a labelled subset of the training split.

    config.data.train_subset = {fraction: 1.0, per_class: 0, index_file: "", seed: 0}

With `per_class` > 0, an `index_file`, or a `fraction` below 1, the training pipeline's main
stream (and the split size that epochs count) holds only that subset's examples, chosen by
`subsets.labelled_subset` with the subset's seed: the same examples as an evaluator's subset
with the same fraction and seed, and nested (1% inside 10%) like them. It is how a classifier
is trained on the labelled few from the command line: `supervised` on 1% of the labels is the
supervised-only baseline, and with `init_from` a pretrained run it is a fine-tuned teacher.

Evaluators still see the whole labelled split: the subset is applied to a copy of the config
that only the training pipeline reads (`restricted`), as `config.data.train_indices`; an array
already there (evaluators set one on their own copies) takes precedence. Everything here is
numpy; the split's labels come from the source's listing (image folders, arrays) or, for TFDS,
one pass over its records.
"""
from __future__ import annotations

import numbers
from typing import Any

import ml_collections
import numpy as np

from contrastive_jax import input_spec
from contrastive_jax.data import arrays, subsets

# (source identity, split, subset values) -> positions; a subset is drawn once per process.
_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def block(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
  """`config.data.train_subset` when it restricts the split, else None."""
  s = config.data.get("train_subset")
  if s is None:
    return None
  if s.index_file or s.per_class or s.fraction != 1.0:
    return s
  return None


def validate(config: ml_collections.ConfigDict) -> None:
  """ValueError naming `config.data.train_subset.<key>` for a bad value (no file access)."""
  s = config.data.get("train_subset")
  if s is None:
    return

  def need(ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ValueError(f"config.data.train_subset.{key}={s[key]!r} is invalid: {allowed}.")

  need(isinstance(s.fraction, numbers.Real) and not isinstance(s.fraction, bool)
       and 0 < s.fraction <= 1, "fraction",
       "the share of the labelled training examples to train on, in (0, 1] (0.01 for 1%)")
  need(isinstance(s.per_class, int) and not isinstance(s.per_class, bool) and s.per_class >= 0,
       "per_class", "images per class, an integer >= 0 (0: use fraction)")
  need(isinstance(s.index_file, str), "index_file", "a path, or '' for none")
  need(isinstance(s.seed, int) and not isinstance(s.seed, bool), "seed", "an integer")
  chosen = [k for k, on in (("per_class", s.per_class), ("index_file", s.index_file),
                            ("fraction", s.fraction != 1.0)) if on]
  if len(chosen) > 1:
    raise ValueError(f"config.data.train_subset sets {' and '.join(chosen)}: choose one way to "
                     "pick the labelled subset (reset the others to per_class=0, "
                     "index_file='', fraction=1.0).")


def kwargs(s: ml_collections.ConfigDict) -> dict[str, Any]:
  """`subsets.labelled_subset`'s choice of `s` (an index file, else images per class, else a
  fraction), as `input_spec.Subset` makes it for a method's labelled stream."""
  return subset_kwargs(s.index_file, s.per_class, s.fraction)


def subset_kwargs(index_file: str, per_class: int, fraction: float) -> dict[str, Any]:
  return input_spec.Subset(fraction=float(fraction), per_class=int(per_class),
                           index_file=index_file).kwargs()


def _labels_and_names(config: ml_collections.ConfigDict
                      ) -> tuple[np.ndarray, list[str] | None]:
  split = config.data.train_split
  if config.data.source in arrays.ARRAY_SOURCES:
    return np.asarray(arrays.get(config).arrays(split)[1]), None
  from contrastive_jax.data import catalog  # pylint: disable=g-import-not-at-top
  source = catalog.get_source(config)  # train_indices is unset here: the whole split.
  labels = np.asarray(source.labels(split), np.int32)
  names = None
  if config.data.source == "folder" and block(config).index_file:
    names = subsets.folder_example_names(config.data.path, split, len(labels))
  return labels, names


def restricted(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` itself when the training split is not restricted, else a copy whose
  `data.train_indices` holds the subset's positions."""
  if config.data.get("train_indices") is not None or block(config) is None:
    return config
  chosen = positions(config)
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.train_indices = chosen
  return c


def positions(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """Sorted int64 positions into the training split that training reads, or None for all:
  `config.data.train_indices` if set, else `config.data.train_subset`'s examples."""
  indices = config.data.get("train_indices")
  if indices is not None:
    return indices
  s = block(config)
  if s is None:
    return None
  validate(config)
  d = config.data
  key = (d.source, d.name, d.path, d.get("data_dir"), d.train_split, s.fraction, s.per_class,
         s.index_file, s.seed)
  if key not in _CACHE:
    labels, names = _labels_and_names(config)
    try:
      chosen = subsets.labelled_subset(labels, seed=int(s.seed), names=names, **kwargs(s))
    except ValueError as e:
      raise ValueError(f"config.data.train_subset: {e}") from None
    chosen = chosen[labels[chosen] >= 0]  # An index file may list unlabelled examples.
    if not len(chosen):
      raise ValueError("config.data.train_subset selects no labelled example of split "
                       f"{d.train_split!r}.")
    _CACHE[key] = np.sort(chosen).astype(np.int64)
  return _CACHE[key]
