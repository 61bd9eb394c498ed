"""Fine-tuning and the supervised baseline: the `supervised` method on the one train step.

"finetune" blocks copy the evaluated run's encoder (and, with `from_head_layer` = k, the first
k layers of its projection head: SimCLRv2) into the `supervised` method's classifier
(`Method.finetune_spec` says what maps where, `step.transplant` copies it) and train it end
to end on each labelled subset. "supervised" blocks train the same classifier from a random
initialisation on the same subsets: the baseline, run once, not per checkpoint.

Each is trained by `step.make_train_step`, like every method, on batches of the training
pipeline (`data.build_train_iterator`) restricted to the subset's examples of the labelled
split (`config.data.train_indices`): raw images, each process its own shard, shuffled epoch
by epoch with the subset's seed, cropped (`crop_scale`) and flipped on the accelerator. No
split is held in memory as pixels: accuracy streams the evaluation split (or a held-out part
of the subset) through `data.build_eval_iterator`. With `sweep.base_lr` /
`sweep.weight_decay`, every combination is trained on a class-balanced `1 -
sweep.val_fraction` of the subset and scored on the rest (never on the evaluation split), the
best is retrained on the whole subset, and the rows report the values chosen (the CPC v2
paper tuned its baseline this way).
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from contrastive_jax import data, optim, parallel, presets
from contrastive_jax import step as step_lib
from contrastive_jax.data import subsets
from contrastive_jax.evaluators import common, features, metrics
from contrastive_jax.methods.supervised import Supervised


class FineTune(common.Evaluator):
  """Rows per (subset, seed) of a classifier initialised from the evaluated state."""

  protocol = "finetune"

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    super().validate(name, cfg)
    common.validate_subsets(name, cfg)
    need = common.needs(name, cfg)
    need(common.is_int(cfg.steps) and cfg.steps > 0, "steps",
         "a positive integer (epochs > 0 overrides it)")
    need(isinstance(cfg.epochs, (int, float)) and cfg.epochs >= 0, "epochs", "must be >= 0")
    need(common.is_int(cfg.train_batch_size) and cfg.train_batch_size > 0, "train_batch_size",
         "a positive integer (global)")
    need(common.is_int(cfg.from_head_layer) and cfg.from_head_layer >= 0, "from_head_layer",
         "an integer >= 0 (0: the encoder's output)")
    scale = tuple(cfg.crop_scale)
    need(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "crop_scale",
         "a pair (low, high) with 0 < low <= high <= 1")
    need(str(cfg.flip).lower() in ("auto", "true", "false"), "flip",
         "'auto' (the pretraining config's augment.flip), 'true' or 'false'")
    need(isinstance(cfg.label_smoothing, (int, float)) and 0 <= cfg.label_smoothing < 1,
         "label_smoothing", "must be in [0, 1)")
    sweep = cfg.sweep
    if any(not v > 0 for v in sweep.base_lr) or any(not v >= 0 for v in sweep.weight_decay):
      raise ValueError(f"evals.{name}.sweep: base_lr values must be > 0 and weight_decay "
                       f"values >= 0, got {tuple(sweep.base_lr)} and {tuple(sweep.weight_decay)}.")
    if not 0 < sweep.val_fraction < 1:
      raise ValueError(f"evals.{name}.sweep.val_fraction={sweep.val_fraction!r} must lie in "
                       "(0, 1).")

  def __init__(self, name, cfg, subject, shared):
    super().__init__(name, cfg, subject, shared)
    parallel.check_batch_size(cfg.train_batch_size, subject.mesh)
    self.spec = subject.method.finetune_spec(int(cfg.from_head_layer))
    self._programs: dict[tuple, tuple] = {}

  def source(self, state: step_lib.TrainState) -> step_lib.TrainState | None:
    return state

  def num_steps(self, num_labelled: int) -> int:
    if self.cfg.epochs > 0:
      return max(1, math.ceil(self.cfg.epochs * num_labelled / self.cfg.train_batch_size))
    return int(self.cfg.steps)

  def supervised_config(self, steps: int, base_lr: float,
                        weight_decay: float) -> ml_collections.ConfigDict:
    """The `supervised` run that fine-tunes: the evaluated run's data and model, this block's
    optimiser, batch, crop and flip."""
    c = ml_collections.ConfigDict(self.subject.config.to_dict())
    c.method = "supervised"
    c.model.update(self.spec.model)
    c.supervised = presets.supervised_block()
    c.supervised.update(num_classes=self.num_classes, **self.spec.config,
                        label_smoothing=float(self.cfg.label_smoothing))
    flip = str(self.cfg.flip).lower()
    c.augment.update(crop_scale=tuple(self.cfg.crop_scale), on_device=True,
                     flip=bool(c.augment.get("flip", True)) if flip == "auto" else flip == "true")
    c.batch_size, c.num_steps = int(self.cfg.train_batch_size), int(steps)
    c.optim = ml_collections.ConfigDict(self.cfg.optim.to_dict())
    c.optim.update(base_lr=float(base_lr), weight_decay=float(weight_decay))
    return c

  def method_of(self, config: ml_collections.ConfigDict) -> Supervised:
    """The classifier method trained on the subset (subclasses train another model)."""
    return Supervised(config)

  def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """The optimiser as trained (subclasses may freeze parts of the model)."""
    return tx

  def _program(self, steps: int, base_lr: float, weight_decay: float) -> tuple:
    """(method, init, train_step, logits), compiled once per (steps, base_lr, weight_decay)."""
    key = (steps, base_lr, weight_decay)
    if key not in self._programs:
      config = self.supervised_config(steps, base_lr, weight_decay)
      method = self.method_of(config)
      method.validate()
      tx, schedule = optim.build_optimizer(config.optim, config.batch_size, steps)
      tx = self.wrap_optimizer(tx)
      mesh = self.subject.mesh
      defs = step_lib.model_defs(method, config.seed)
      train_step = step_lib.make_train_step(method, defs, tx, schedule, mesh)

      @jax.jit
      def logits(state, images):
        return method.logits(defs.merge(state, train=False), images)

      self._programs[key] = (step_lib.make_init_fn(method, tx, mesh), tx, train_step, logits)
    return self._programs[key]

  def train_data(self, config: ml_collections.ConfigDict, positions: np.ndarray,
                 seed: int) -> ml_collections.ConfigDict:
    """`config` reading only the labelled split's examples at `positions`, in an order seeded
    by `seed`: the subset becomes a restriction of the training pipeline's source."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.train_split = self.subject.labelled_split
    c.data.train_indices = np.asarray(positions, np.int64)
    c.seed = int(seed)
    return c

  def fit(self, source: step_lib.TrainState | None, positions: np.ndarray, *, seed: int,
          steps: int, base_lr: float, weight_decay: float) -> step_lib.TrainState:
    """Trains on the labelled split's examples at `positions`, read through the training
    pipeline (each process its own shard); returns the state."""
    init, tx, train_step, _ = self._program(steps, base_lr, weight_decay)
    state = init(seed)
    if source is not None:
      state = step_lib.transplant(state, source, self.spec.mapping, tx)
    config = self.train_data(self.supervised_config(steps, base_lr, weight_decay), positions,
                             seed)
    batches = data.build_train_iterator(config, Supervised(config).inputs())
    wait = features.Backpressure()
    for _ in range(steps):
      state, step_metrics = train_step(state, parallel.shard_batch(next(batches),
                                                                   self.subject.mesh))
      wait(step_metrics)
    return state

  def accuracy(self, state: step_lib.TrainState, split: str, positions: np.ndarray | None,
               key: tuple) -> dict[str, float]:
    """Top-1/top-5 of the classifier on `split` (its examples at `positions`), streamed."""
    logits = self.stream(self._program(*key)[3], state, split, positions)
    return metrics.sharded_topk(logits.x, logits.labels, logits.index >= 0)

  def choose(self, source, positions: np.ndarray, labels: np.ndarray, seed: int,
             steps: int) -> tuple[float, float]:
    """(base_lr, weight_decay): the block's, or the sweep's best on a held-out part."""
    sweep, opt = self.cfg.sweep, self.cfg.optim
    lrs = tuple(sweep.base_lr) or (float(opt.base_lr),)
    wds = tuple(sweep.weight_decay) or (float(opt.weight_decay),)
    if len(lrs) * len(wds) == 1:
      return float(lrs[0]), float(wds[0])
    order = subsets.balanced_order(labels, seed)
    n_val = min(len(order) - 1, max(1, round(sweep.val_fraction * len(order))))
    val, fit = positions[np.sort(order[:n_val])], positions[np.sort(order[n_val:])]
    best, best_acc = None, -1.0
    for lr, wd in itertools.product(lrs, wds):
      s = self.fit(source, fit, seed=seed, steps=steps, base_lr=lr, weight_decay=wd)
      acc = self.accuracy(s, self.subject.labelled_split, val, (steps, lr, wd))["top1"]
      if acc > best_acc:
        best, best_acc = (float(lr), float(wd)), acc
    return best

  def run(self, state: step_lib.TrainState, step: int) -> list[common.Row]:
    source = self.source(state)
    test_split, test_positions = self.subject.config.data.eval_split, self.test_positions()
    rows = []
    for seed, subs in self.labelled_subsets().items():
      for sub in subs:
        positions = sub["positions"]
        steps = self.num_steps(len(positions))
        lr, wd = self.choose(source, positions, sub["labels"], seed, steps)
        s = self.fit(source, positions, seed=seed, steps=steps, base_lr=lr, weight_decay=wd)
        result = self.accuracy(s, test_split, test_positions, (steps, lr, wd))
        rows.append(self.row(self.protocol, sub, seed, self.report_step(step), result,
                             encoder=self.encoder, base_lr=lr, weight_decay=wd))
    return rows

  encoder = "pretrained"

  def report_step(self, step: int) -> int:
    return step


class SupervisedBaseline(FineTune):
  """The same classifier and training from a random initialisation: checkpoint-independent."""

  protocol = "supervised"
  encoder = "random_init"
  per_checkpoint = False

  def source(self, state: Any) -> None:
    del state
    return None

  def report_step(self, step: int) -> int:
    del step
    return 0
