"""Labelled subsets of the training split for low-data evaluation (pure numpy).

A subset is a sorted array of indices into the training split, in the fixed order in which
`contrastive_jax.data.load_arrays(config, split)` returns the labelled split. Subsets index
the training split only, so they are disjoint from the evaluation split by construction.

Three ways to choose one, exactly one per call:
  fraction   round(fraction * N) labelled examples, N the number of labelled examples.
  per_class  exactly that many examples of every class.
  index_file a text file, one example per line (the papers' fixed ImageNet 1% / 10% lists).

Sampling (fraction and per_class) is class-balanced and nested: the seed fixes, for every class,
a random order of its examples and a random order of the classes; examples are then dealt round
robin (the first example of every class in class order, then the second, ...) and a subset of
size n is the first n dealt. So per-class counts differ by at most 1 (a class that runs out is
skipped, and only then can others exceed it), and for one seed the 1% subset lies inside the
10% subset, which lies inside the 100% one, as with the papers' lists. A different seed gives a
different subset. Unlabelled examples (label < 0) are never chosen.

Index-file format: UTF-8 text, one example per line; blank lines and text after "#" are ignored,
and only the first whitespace-separated token of a line counts. A token is either a 0-based
integer index into the training split or, when `names` is given (e.g. the file names of an
image-folder source), an example name: it matches a name exactly, or its last one or two path
components when unique (`n01440764_10026.JPEG` and `n01440764/n01440764_10026.JPEG` both match
`/data/train/n01440764/n01440764_10026.JPEG`). Duplicates are dropped. A token that names no
example raises ValueError listing the first few such tokens.
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import numpy as np

from contrastive_jax import storage

_SHOW = 5  # Unknown entries quoted in an error message.


def labelled_subset(labels: np.ndarray, *, fraction: float | None = None,
                    per_class: int | None = None, seed: int = 0,
                    index_file: str | None = None,
                    names: Sequence[str] | None = None) -> np.ndarray:
  """Returns sorted int64 indices into `labels` (the training split) of a labelled subset.

  Args:
    labels: int [N] class labels of the training split; < 0 marks unlabelled examples.
    fraction: in (0, 1]: a class-balanced subset of round(fraction * N_labelled) examples
      (at least 1). 1.0 is every labelled example.
    per_class: >= 1: exactly this many examples of every class present in `labels`.
    seed: fixes the random choice (fraction, per_class); ignored for index_file.
    index_file: path of a subset list (format in the module docstring).
    names: optional per-example names, so index_file may list names instead of indices.

  Raises:
    ValueError: not exactly one of fraction/per_class/index_file; fraction outside (0, 1];
      per_class larger than the smallest class; an index file naming unknown examples.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
  given = [k for k, v in (("fraction", fraction), ("per_class", per_class),
                          ("index_file", index_file)) if v not in (None, "")]
  if len(given) != 1:
    raise ValueError("Give exactly one of fraction, per_class or index_file; got "
                     f"{given or 'none'}.")
  if index_file:
    return read_index_file(index_file, len(labels), names=names)
  order = balanced_order(labels, seed)
  if fraction is not None:
    if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real)
        or not 0.0 < fraction <= 1.0):
      raise ValueError(f"fraction={fraction!r} is outside the allowed range (0, 1]: it is the "
                       "share of the labelled training examples to keep (0.01 for 1%).")
    n = max(1, int(round(fraction * len(order))))
    return np.sort(order[:n])
  if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
    raise ValueError(f"per_class={per_class!r} must be an integer >= 1 (images per class).")
  classes, counts = np.unique(labels[labels >= 0], return_counts=True)
  if per_class > counts.min():
    smallest = classes[np.argmin(counts)]
    raise ValueError(f"per_class={per_class} exceeds the size of class {smallest} "
                     f"({counts.min()} labelled examples); use per_class <= {counts.min()} or "
                     "a fraction.")
  return np.sort(order[:per_class * len(classes)])


def balanced_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """All labelled indices, dealt round robin over classes in a seeded order (see module doc).

  Any prefix of length n is a class-balanced subset of size n; prefixes of one order nest.
  """
  labels = np.asarray(labels)
  labelled = np.flatnonzero(labels >= 0)
  if not len(labelled):
    raise ValueError("The training split has no labelled examples (every label is < 0); "
                     "evaluate on a labelled split (e.g. --eval_config.data.train_split=train).")
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(labelled)
  classes = np.unique(labels[labelled])
  class_rank = np.empty(classes.max() + 1, np.int64)
  class_rank[classes] = rng.permutation(len(classes))
  y = labels[shuffled]
  # Position of each example within its class, in the shuffled order: its dealing round.
  by_class = np.argsort(y, kind="stable")
  starts = np.searchsorted(y[by_class], y[by_class])
  round_ = np.empty(len(y), np.int64)
  round_[by_class] = np.arange(len(y)) - starts
  return shuffled[np.lexsort((class_rank[y], round_))]


def read_index_file(path: str, num_examples: int, *,
                    names: Sequence[str] | None = None) -> np.ndarray:
  """Sorted unique indices listed in `path` (format in the module docstring)."""
  file = storage.path(path)
  if not file.is_file():
    raise ValueError(f"Subset index file {path!r} does not exist.")
  tokens = []
  for line in file.read_text(encoding="utf-8").splitlines():
    line = line.split("#", 1)[0].split()
    if line:
      tokens.append(line[0])
  if not tokens:
    raise ValueError(f"Subset index file {path!r} lists no examples.")
  lookup = _name_lookup(names) if names is not None else {}
  indices, unknown = [], []
  for tok in tokens:
    if tok in lookup:
      indices.append(lookup[tok])
    elif tok.lstrip("-").isdigit() and 0 <= int(tok) < num_examples:
      indices.append(int(tok))
    else:
      unknown.append(tok)
  if unknown:
    what = ("an index in [0, " + str(num_examples) + ")" +
            (" or a name of an example" if names is not None else ""))
    raise ValueError(
        f"Subset index file {path!r} names {len(unknown)} unknown example(s) of the "
        f"{num_examples}-example training split, e.g. {unknown[:_SHOW]}; every entry must be "
        f"{what}. Was the file written for another dataset or split?")
  return np.unique(np.asarray(indices, np.int64))


def _suffixes(name: str) -> tuple[str, ...]:
  parts = name.replace(os.sep, "/").split("/")
  return tuple("/".join(parts[-k:]) for k in (1, 2) if len(parts) > k)


def _name_lookup(names: Sequence[str]) -> dict[str, int]:
  # A name matches in full, or by its last one or two path components when those are unique
  # (an ambiguous suffix must be given in full).
  counts: dict[str, int] = {}
  for name in names:
    for suffix in _suffixes(name):
      counts[suffix] = counts.get(suffix, 0) + 1
  lookup: dict[str, int] = {}
  for i, name in enumerate(names):
    for suffix in _suffixes(name):
      if counts[suffix] == 1:
        lookup[suffix] = i
  for i, name in enumerate(names):
    lookup[name] = i
  return lookup


def write_index_file(path: str, indices: np.ndarray, *, comment: str = "") -> None:
  """Writes `indices` in the index-file format, so a sampled subset can be frozen and shared."""
  lines = [f"# {comment}\n"] if comment else []
  lines += [f"{int(i)}\n" for i in np.sort(np.asarray(indices))]
  storage.write_text(path, "".join(lines))


def folder_example_names(root: str, split: str, expected: int) -> list[str]:
  """<class>/<file> of every train example of an image-folder source, in load order.

  Mirrors `data.sources.FolderSource` (classes sorted over every split folder, files sorted
  within a class), so an index file may list file names; a count mismatch (e.g. skipped
  corrupt files) raises, and integer indices remain the general mechanism.
  """
  top = storage.path(root)
  splits = [d for d in top.iterdir() if d.is_dir()]
  classes = sorted({c.name for s in splits for c in s.iterdir() if c.is_dir()})
  names = []
  split_dir = top / split
  for cls in classes:
    cls_dir = split_dir / cls
    if cls_dir.is_dir():
      names += [f"{cls}/{e.name}" for e in sorted(cls_dir.iterdir(), key=lambda e: e.name)
                if e.name.lower().endswith((".jpg", ".jpeg", ".png")) and e.is_file()]
  if len(names) != expected:
    raise ValueError(f"Listed {len(names)} files under {split_dir!r} but the split has "
                     f"{expected} examples (skipped corrupt files?); list integer indices in "
                     "index_file instead of file names.")
  return names
