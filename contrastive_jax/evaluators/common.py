"""Evaluators as objects, listed in the config: `config.evals = {name: {type, ...}}`.

`from_config(evals, subject)` builds one evaluator per block: it looks the block's `type` up
in `TYPES` (an unknown type fails with the list), and passes the block, read-only, to the
evaluator's class. The train loop runs the list (every `every_steps` steps, and at the end for
blocks with `at_end` or `every_steps`), and `python -m contrastive_jax.evaluate` runs the same
list on saved checkpoints: one schema, one code path. Block keys and defaults live in
`contrastive_jax.presets` (`knn_eval`, `linear_eval`, `finetune_eval`, `supervised_eval`).

Every evaluator returns rows: {"evaluator", "protocol", "subset", "label_fraction",
"num_labelled", "encoder", "seed", "step", "method", "top1", "top5"} plus any values it chose
(the linear probe's L2, fine-tuning's learning rate and weight decay). No TensorFlow here: the
data package imports it lazily, when a source needs it.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import importlib
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from contrastive_jax import data, runs
from contrastive_jax import step as step_lib
from contrastive_jax.data import subsets
from contrastive_jax.evaluators import features
from contrastive_jax.methods.base import Method

# type -> "module:Class" under contrastive_jax.evaluators, imported on first use.
TYPES = {"knn": "knn:KNN", "linear": "linear:Linear", "finetune": "finetune:FineTune",
         "supervised": "finetune:SupervisedBaseline",
         "classifier": "classifier:ClassifierAccuracy",
         "grid_classifier": "grid_classifier:GridClassifier"}
# Keys every block has; each type adds its own (presets.py holds the defaults).
COMMON_KEYS = ("type", "every_steps", "at_end", "batch_size", "max_train_examples",
               "max_test_examples")

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Subject:
  """What the evaluators look at: a run's config, method, model definitions and devices."""
  config: ml_collections.ConfigDict
  method: Method
  defs: step_lib.ModelDefs
  mesh: jax.sharding.Mesh
  init_fn: Callable[[int], step_lib.TrainState]  # seed -> a randomly initialised state.
  num_classes: int

  @classmethod
  def of_run(cls, run: runs.Run) -> Subject:
    """The subject of a run read back from its work directory."""
    return cls(config=run.config, method=run.method, defs=run.defs, mesh=run.mesh,
               init_fn=run.init_fn, num_classes=run.info.num_classes)

  @functools.cached_property
  def features_fn(self) -> Callable[[step_lib.TrainState, jax.Array], jax.Array]:
    """Eval-mode encoder features, `features(state, images) -> [B, D]`; compiled once."""
    return step_lib.make_features_fn(self.method, self.defs)

  @property
  def labelled_split(self) -> str:
    """The labelled split evaluators train on: data.labelled_split, else data.train_split."""
    d = self.config.data
    return d.get("labelled_split") or d.train_split

  def example_names(self, expected: int) -> list[str] | None:
    """<class>/<file> of every labelled example of an image folder (index files may list
    them); None for other sources, whose index files list integer indices."""
    d = self.config.data
    if d.source != "folder":
      return None
    return subsets.folder_example_names(d.path, self.labelled_split, expected)


class EvalData:
  """What the evaluators of one config share about its splits, each computed once: sizes,
  labels (never pixels) and capped selections. Features are streamed per evaluation
  (`Evaluator.stream`), from the examples these select.

  `positions(split, cap, seed)`: None for the whole split (cap 0, or cap >= its size), else
  the sorted positions of a class-balanced subset of `cap` examples (`subsets.balanced_order`),
  so a source that lists examples class by class is not cut to its first classes. These are
  the examples, in the split's order, that a cap selected when splits were loaded whole.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self._config = config
    self._labels: dict[str, np.ndarray] = {}
    self._sizes: dict[str, int] = {}
    self._positions: dict[tuple[str, int, int], np.ndarray] = {}

  def labels(self, split: str) -> np.ndarray:
    """int32 [N]: every label of `split` (image folders and arrays look them up; TFDS reads
    the split's records once)."""
    if split not in self._labels:
      self._labels[split] = data.split_labels(self._config, split)
    return self._labels[split]

  def size(self, split: str) -> int:
    if split in self._labels:
      return len(self._labels[split])
    if split not in self._sizes:
      self._sizes[split] = data.split_size(self._config, split)
    return self._sizes[split]

  def positions(self, split: str, cap: int = 0, seed: int = 0) -> np.ndarray | None:
    if not cap or cap >= len(self.labels(split)):
      return None
    if (split, cap, seed) not in self._positions:  # A periodic evaluator asks every time.
      order = subsets.balanced_order(self.labels(split), seed)
      self._positions[(split, cap, seed)] = np.sort(order[:cap])
    return self._positions[(split, cap, seed)]


class Evaluator(abc.ABC):
  """One config block's evaluation. `run(state, step)` reads `state`, never changes it."""

  # Whether rows depend on the evaluated checkpoint (a from-scratch baseline does not).
  per_checkpoint = True

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, subject: Subject,
               shared: EvalData):
    self.name, self.cfg, self.subject, self.data = name, cfg, subject, shared
    self.num_classes = subject.num_classes

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    """ValueError naming `evals.<name>.<key>` for a bad value; runs before anything loads."""
    need = needs(name, cfg)
    need(is_int(cfg.every_steps) and cfg.every_steps >= 0, "every_steps",
         "an integer >= 0 (0: not during training)")
    need(isinstance(cfg.at_end, bool), "at_end", "True or False")
    need(is_int(cfg.batch_size) and cfg.batch_size > 0, "batch_size", "a positive integer")
    for key in ("max_train_examples", "max_test_examples"):
      need(is_int(cfg[key]) and cfg[key] >= 0, key, "an integer >= 0 (0: all)")

  @abc.abstractmethod
  def run(self, state: step_lib.TrainState, step: int) -> list[Row]:
    """Rows of this evaluation of `state` (checkpoint `step`)."""

  def stream(self, fn: Callable[[Any, jax.Array], jax.Array], state: Any, split: str,
             positions: np.ndarray | None = None) -> features.Features:
    """`fn(state, images)` over one pass of `split` (its examples at `positions`, if given),
    streamed batch by batch; sharded float32 outputs with their labels and positions."""
    mesh = self.subject.mesh
    batches = data.build_eval_iterator(self.subject.config, split,
                                       features.eval_batch_size(self.cfg.batch_size, mesh),
                                       positions=positions)
    return features.stream_features(fn, state, batches, mesh)

  def test_positions(self) -> np.ndarray | None:
    return self.data.positions(self.subject.config.data.eval_split, self.cfg.max_test_examples,
                               self.subject.config.seed)

  def train_positions(self) -> np.ndarray | None:
    return self.data.positions(self.subject.labelled_split, self.cfg.max_train_examples,
                               self.subject.config.seed)

  def test_features(self, state: Any,
                    fn: Callable[[Any, jax.Array], jax.Array] | None = None
                    ) -> features.Features:
    """Eval-mode features (or `fn` outputs) of the (capped) evaluation split."""
    split = self.subject.config.data.eval_split
    out = self.stream(fn or self.subject.features_fn, state, split, self.test_positions())
    labels, index = out.host_labels(), out.host_index()
    if not np.any(index >= 0) or np.any(labels[index >= 0] < 0):
      raise ValueError(f"The evaluation split {split!r} must be labelled; point "
                       "config.data.eval_split at a labelled split.")
    return out

  def train_features(self, state: Any) -> features.Features:
    """Eval-mode features of the (capped) labelled split."""
    return self.stream(self.subject.features_fn, state, self.subject.labelled_split,
                       self.train_positions())

  def capped(self, split: str, cap: int) -> bool:
    return self.data.positions(split, cap, self.subject.config.seed) is not None

  def labelled_subsets(self, streamed: features.Features | None = None
                       ) -> dict[int, list[dict[str, Any]]]:
    """{seed: the block's subsets}, each with "indices" into the (capped) labelled split's
    examples, the "positions" of those examples in the split and their "labels". With
    `streamed` (features of those examples) its labels serve, and the split is not read."""
    if streamed is not None:
      _, labels, positions = streamed.host_order()
    else:
      positions = self.train_positions()
      labels = self.data.labels(self.subject.labelled_split)
      if positions is None:
        positions = np.arange(len(labels))
      labels = labels[positions]
    names = self.subject.example_names(len(labels)) if self.cfg.index_file else None
    out = {}
    for seed in self.cfg.seeds:
      subs = make_subsets(self.cfg, labels, int(seed), names)
      for sub in subs:
        idx = sub["indices"]
        sub["positions"] = positions[idx]
        sub["labels"] = labels[idx]
      out[int(seed)] = subs
    return out

  def row(self, protocol: str, subset: dict[str, Any], seed: int, step: int,
          result: dict[str, float], **extra: Any) -> Row:
    r = {"evaluator": self.name, "protocol": protocol, "subset": subset["subset"],
         "label_fraction": float(subset["label_fraction"]),
         "num_labelled": int(len(subset["indices"])), "encoder": extra.pop("encoder",
                                                                           "pretrained"),
         "seed": int(seed), "step": int(step), "method": self.subject.config.method,
         "top1": float(result["top1"]), "top5": float(result["top5"]), **extra}
    logging.info("%-10s %-16s %-11s seed %d step %d: top-1 %.4f top-5 %.4f", self.name,
                 r["subset"], r["encoder"], seed, step, r["top1"], r["top5"])
    return r


def is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def needs(name: str, cfg: ml_collections.ConfigDict):
  def need(ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ValueError(f"evals.{name}.{key}={cfg[key]!r} is invalid: {allowed}.")
  return need


def validate_subsets(name: str, cfg: ml_collections.ConfigDict) -> None:
  """Checks the labelled-subset keys (fractions, per_class, index_file, seeds) of a block."""
  for f in cfg.fractions:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
      raise ValueError(f"evals.{name}.fractions contains {f!r}, outside the allowed range "
                       "(0, 1] (a fraction of the labelled training examples: 0.01 for 1%).")
  for k in cfg.per_class:
    if not is_int(k) or k < 1:
      raise ValueError(f"evals.{name}.per_class contains {k!r}; images per class must be "
                       "integers >= 1.")
  if not (cfg.fractions or cfg.per_class or cfg.index_file):
    raise ValueError(f"evals.{name} has no labelled subset: set fractions, per_class or "
                     "index_file.")
  if not cfg.seeds or not all(is_int(s) for s in cfg.seeds):
    raise ValueError(f"evals.{name}.seeds={tuple(cfg.seeds)!r}: give at least one integer "
                     "seed, e.g. (0,).")


def make_subsets(cfg: ml_collections.ConfigDict, labels: np.ndarray, seed: int,
                 names: list[str] | None = None) -> list[dict[str, Any]]:
  """The labelled subsets of a block for one seed: subset name, label_fraction, indices."""
  n = int(np.sum(labels >= 0))
  out = []
  for f in cfg.fractions:
    idx = subsets.labelled_subset(labels, fraction=f, seed=seed)
    out.append({"subset": f"fraction={f:g}", "label_fraction": float(f), "indices": idx})
  for k in cfg.per_class:
    idx = subsets.labelled_subset(labels, per_class=k, seed=seed)
    out.append({"subset": f"per_class={k}", "label_fraction": len(idx) / n, "indices": idx})
  if cfg.index_file:
    idx = subsets.labelled_subset(labels, index_file=cfg.index_file, names=names)
    if np.any(labels[idx] < 0):
      raise ValueError(f"index_file {cfg.index_file!r} lists unlabelled examples (label -1).")
    out.append({"subset": f"file={os.path.basename(cfg.index_file)}",
                "label_fraction": len(idx) / n, "indices": idx})
  return out


def evaluator_class(name: str, cfg: ml_collections.ConfigDict) -> type[Evaluator]:
  kind = cfg.get("type", "")
  if kind not in TYPES:
    raise ValueError(f"evals.{name}.type={kind!r} is unknown; valid types: {sorted(TYPES)}.")
  module, cls = TYPES[kind].split(":")
  return getattr(importlib.import_module(f"contrastive_jax.evaluators.{module}"), cls)


def validate(evals: ml_collections.ConfigDict) -> None:
  """Checks every block of `config.evals` (type and values), before anything is compiled."""
  for name, cfg in evals.items():
    if not isinstance(cfg, ml_collections.ConfigDict):
      raise ValueError(f"evals.{name} must be a block ({{type: ..., ...}}), got {cfg!r}.")
    missing = [k for k in COMMON_KEYS if k not in cfg]
    if missing:
      raise ValueError(f"evals.{name} lacks {', '.join(missing)}; build blocks with "
                       "contrastive_jax.presets (knn_eval, linear_eval, finetune_eval, ...).")
    evaluator_class(name, cfg).validate(name, cfg)


def from_config(evals: ml_collections.ConfigDict, subject: Subject,
                shared: EvalData | None = None,
                only: tuple[str, ...] | None = None) -> list[Evaluator]:
  """The evaluators of `config.evals` (those named in `only`, if given), in config order."""
  validate(evals)
  if only:
    unknown = [n for n in only if n not in evals]
    if unknown:
      raise ValueError(f"No evaluator named {unknown[0]!r}; the config has {list(evals)}.")
  shared = shared or EvalData(subject.config)
  return [evaluator_class(name, cfg)(name, cfg, subject, shared)
          for name, cfg in evals.items() if not only or name in only]


def scalars(rows: list[Row]) -> dict[str, float]:
  """Rows as writer scalars: <evaluator>[/<subset>][/<encoder>]/top1, top5 (mean over seeds);
  the subset only where an evaluator has several, the encoder where it is not the run's."""
  groups: dict[str, list[Row]] = {}
  subsets_of: dict[str, set[str]] = {}
  for r in rows:
    subsets_of.setdefault(r["evaluator"], set()).add(r["subset"])
  for r in rows:
    key = r["evaluator"]
    if len(subsets_of[key]) > 1:
      key += f"/{r['subset']}"
    if r["encoder"] != "pretrained":
      key += f"/{r['encoder']}"
    groups.setdefault(key, []).append(r)
  out = {}
  for key, rs in groups.items():
    for metric in ("top1", "top5"):
      out[f"{key}/{metric}"] = float(np.mean([r[metric] for r in rs]))
  return out
