"""Linear separability of frozen features: L2-regularised softmax regression.

`Linear` is the evaluator (a "linear" block of `config.evals`): frozen eval-mode features of
every labelled subset of the block, for every seed, and optionally of a randomly initialised
encoder for reference (`random_init`). `linear_probe` is its kernel.

Features are standardised with training statistics; the L2 strength is chosen on a held-out
part of the training features, then the classifier is refit on all of them (the protocol of the
SimCLR and CPC v2 papers, which sweep the regulariser). Full-batch L-BFGS: the problem is convex
and small next to pretraining.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from contrastive_jax.evaluators import common

DEFAULT_L2 = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
  top1: float
  top5: float
  l2: float
  val_top1: float


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, y, weights, l2, *, num_classes: int, steps: int):
  # Rows are selected by 0/1 weights rather than by slicing, so every fit of the sweep and the
  # final refit share one compiled program.
  d = x.shape[1]
  onehot = jax.nn.one_hot(y, num_classes)

  def objective(p):
    logits = x @ p["w"] + p["b"]
    ce = jnp.sum(weights * optax.softmax_cross_entropy(logits, onehot)) / jnp.sum(weights)
    return ce + l2 * jnp.sum(p["w"] ** 2)

  params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def body(_, carry):
    p, s = carry
    value, grad = value_and_grad(p, state=s)
    updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(p, updates), s

  params, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
  return params


def _topk(params, x, y, k):
  logits = np.asarray(x @ params["w"] + params["b"])
  k = min(k, logits.shape[1])
  top = np.argsort(-logits, axis=1)[:, :k]
  return float(np.mean(np.any(top == y[:, None], axis=1)))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, num_classes: int, *, l2_grid=DEFAULT_L2, steps: int = 200,
                 val_fraction: float = 0.2, seed: int = 0) -> ProbeResult:
  """Fits a linear classifier on `train_x` and reports top-1/top-5 accuracy on `test_x`."""
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise ValueError("Features and labels differ in length.")
  if train_y.min() < 0 or max(train_y.max(), test_y.max()) >= num_classes:
    raise ValueError(f"Labels must lie in [0, {num_classes}) for the linear probe.")
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x = ((train_x - mean) / std).astype(np.float32)
  test_x = ((test_x - mean) / std).astype(np.float32)
  perm = np.random.default_rng(seed).permutation(len(train_x))
  n_val = int(round(val_fraction * len(train_x)))
  val_idx = perm[:n_val]
  fit_weights = np.ones(len(train_x), np.float32)
  fit_weights[val_idx] = 0.0
  best_l2, best_val = l2_grid[0], -1.0
  if n_val and len(l2_grid) > 1:
    for l2 in l2_grid:
      p = _fit(train_x, train_y, fit_weights, l2, num_classes=num_classes, steps=steps)
      acc = _topk(p, train_x[val_idx], train_y[val_idx], 1)
      if acc > best_val:
        best_l2, best_val = l2, acc
  params = _fit(train_x, train_y, np.ones(len(train_x), np.float32), best_l2,
                num_classes=num_classes, steps=steps)
  return ProbeResult(top1=_topk(params, test_x, test_y, 1), top5=_topk(params, test_x, test_y, 5),
                     l2=float(best_l2), val_top1=float(best_val))


class Linear(common.Evaluator):
  """Linear probe rows: (subset, seed, encoder) for the block's subsets and seeds."""

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    super().validate(name, cfg)
    common.validate_subsets(name, cfg)
    need = common.needs(name, cfg)
    need(common.is_int(cfg.steps) and cfg.steps > 0, "steps", "a positive integer")
    need(isinstance(cfg.random_init, bool), "random_init", "True or False")

  def run(self, state: Any, step: int) -> list[common.Row]:
    train_x, train_y = self.train_arrays()
    test_x, test_y = self.test_arrays()
    encoders = {"pretrained": state}
    if self.cfg.random_init:
      encoders["random_init"] = self.subject.init_fn(self.subject.config.seed)
    names = self.subject.example_names(len(train_y)) if self.cfg.index_file else None
    subsets = {int(s): common.make_subsets(self.cfg, train_y, int(s), names)
               for s in self.cfg.seeds}
    rows = []
    for encoder, s in encoders.items():
      train_f, test_f = self.features(s, train_x), self.features(s, test_x)
      for seed, subs in subsets.items():
        for sub in subs:
          idx = sub["indices"]
          r = linear_probe(train_f[idx], train_y[idx], test_f, test_y, self.num_classes,
                           steps=self.cfg.steps, seed=seed)
          rows.append(self.row("linear", sub, seed, step, {"top1": r.top1, "top5": r.top5},
                               encoder=encoder, l2=r.l2))
    return rows
