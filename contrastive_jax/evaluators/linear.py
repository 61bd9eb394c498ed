"""Linear separability of frozen features: L2-regularised softmax regression.

`Linear` is the evaluator (a "linear" block of `config.evals`): a linear classifier on frozen
eval-mode features for every labelled subset of the block and every seed, and optionally on a
randomly initialised encoder for reference (`random_init`). Two solvers (`solver`):

  "lbfgs"  Full-batch L-BFGS on streamed features (`probe`, the kernel). Features are
           standardised with the training statistics; the L2 strength is chosen on a held-out
           part of the training features, then the classifier is refit on all of them (the
           CPC v2 paper's protocol, and SimCLR's for transfer). The features stay sharded over
           the devices: the loss and gradient are means over the sharded matrix (jit with
           shardings), and the subset, the held-out part and the padding are 0/1 row weights,
           so every fit of a subset shares one compiled program and no row is gathered.
  "sgd"    SimCLR's ImageNet protocol: a linear head trained by momentum SGD (or LARS) on the
           frozen encoder over randomly cropped and flipped images read through the training
           pipeline, for a number of epochs (`linear_sgd.py`; keys under `sgd`).
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

from contrastive_jax.evaluators import common, linear_sgd, metrics
from contrastive_jax.evaluators import features as features_lib

DEFAULT_L2 = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
SOLVERS = ("lbfgs", "sgd")


@dataclasses.dataclass(frozen=True)
class ProbeResult:
  top1: float
  top5: float
  l2: float
  val_top1: float


def _logits(params, x, mean, inv_std):
  # The classifier of standardised features, applied to raw ones: (x - m) / s @ w + b equals
  # x @ (w / s) + (b - (m / s) @ w), so the features are never copied to standardise them.
  w = params["w"] * inv_std[:, None]
  return x @ w + (params["b"] - mean @ w)


@jax.jit
def _moments(x, weights):
  total = jnp.sum(weights)
  mean = jnp.sum(weights[:, None] * x, 0) / total
  var = jnp.sum(weights[:, None] * jnp.square(x - mean), 0) / total
  return mean, 1.0 / (jnp.sqrt(var) + 1e-6)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, y, weights, mean, inv_std, l2, *, num_classes: int, steps: int):
  d = x.shape[1]
  onehot = jax.nn.one_hot(y, num_classes)  # Padding rows (label -1) weigh 0 anyway.

  def objective(p):
    ce = optax.softmax_cross_entropy(_logits(p, x, mean, inv_std), onehot)
    return jnp.sum(weights * ce) / jnp.sum(weights) + l2 * jnp.sum(p["w"] ** 2)

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


_scores = jax.jit(_logits)


def probe(train: features_lib.Features, rows: np.ndarray, test: features_lib.Features,
          num_classes: int, *, l2_grid=DEFAULT_L2, steps: int = 200, val_fraction: float = 0.2,
          seed: int = 0) -> ProbeResult:
  """Fits a linear classifier on the rows of `train` where `rows` (bool [M], the same on
  every process) is true; top-1/top-5 accuracy on the real rows of `test`."""
  rows = np.asarray(rows, bool)
  labels, index = train.host_labels(), train.host_index()
  picked = np.flatnonzero(rows)
  if not len(picked):
    raise ValueError("The linear probe needs at least one training example.")
  if labels[picked].min() < 0 or labels[picked].max() >= num_classes:
    raise ValueError(f"Labels must lie in [0, {num_classes}) for the linear probe.")
  picked = picked[np.argsort(index[picked], kind="stable")]  # The subset in split order.
  perm = np.random.default_rng(seed).permutation(len(picked))
  n_val = int(round(val_fraction * len(picked)))
  val = np.zeros(len(rows), np.float32)
  val[picked[perm[:n_val]]] = 1.0
  everything = rows.astype(np.float32)
  weight = lambda w: features_lib.row_values(train, w)  # noqa: E731
  mean, inv_std = _moments(train.x, weight(everything))
  best_l2, best_val = l2_grid[0], -1.0
  if n_val and len(l2_grid) > 1:
    fit_weights, val_weights = weight(everything - val), weight(val)
    for l2 in l2_grid:
      p = _fit(train.x, train.labels, fit_weights, mean, inv_std, l2, num_classes=num_classes,
               steps=steps)
      acc = metrics.sharded_topk(_scores(p, train.x, mean, inv_std), train.labels,
                                 val_weights)["top1"]
      if acc > best_val:
        best_l2, best_val = l2, acc
  params = _fit(train.x, train.labels, weight(everything), mean, inv_std, best_l2,
                num_classes=num_classes, steps=steps)
  result = metrics.sharded_topk(_scores(params, test.x, mean, inv_std), test.labels,
                                test.index >= 0)
  return ProbeResult(top1=result["top1"], top5=result["top5"], l2=float(best_l2),
                     val_top1=float(best_val))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, num_classes: int, *, l2_grid=DEFAULT_L2, steps: int = 200,
                 val_fraction: float = 0.2, seed: int = 0,
                 mesh: jax.sharding.Mesh | None = None) -> ProbeResult:
  """`probe` of host features (every row of `train_x`), on one device unless `mesh`."""
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise ValueError("Features and labels differ in length.")
  if np.min(train_y) < 0 or max(np.max(train_y), np.max(test_y)) >= num_classes:
    raise ValueError(f"Labels must lie in [0, {num_classes}) for the linear probe.")
  from contrastive_jax import parallel  # pylint: disable=g-import-not-at-top
  mesh = mesh or parallel.make_mesh(1)
  train = features_lib.from_host(train_x, train_y, mesh)
  test = features_lib.from_host(test_x, test_y, mesh)
  return probe(train, train.host_index() >= 0, test, num_classes, l2_grid=l2_grid,
               steps=steps, val_fraction=val_fraction, seed=seed)


class Linear(common.Evaluator):
  """Linear probe rows: (subset, seed, encoder) for the block's subsets and seeds."""

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    super().validate(name, cfg)
    common.validate_subsets(name, cfg)
    need = common.needs(name, cfg)
    need(common.is_int(cfg.steps) and cfg.steps > 0, "steps", "a positive integer")
    need(isinstance(cfg.random_init, bool), "random_init", "True or False")
    need(cfg.get("solver", "lbfgs") in SOLVERS, "solver", f"one of {SOLVERS}")
    if cfg.get("solver") == "sgd":
      linear_sgd.validate(name, cfg)

  def run(self, state: Any, step: int) -> list[common.Row]:
    encoders = {"pretrained": state}
    if self.cfg.random_init:
      encoders["random_init"] = self.subject.init_fn(self.subject.config.seed)
    sgd = self.cfg.get("solver", "lbfgs") == "sgd"
    subsets = self.labelled_subsets() if sgd else None
    rows = []
    for encoder, s in encoders.items():
      test = self.test_features(s)
      if sgd:
        train, index = None, None
      else:
        train = self.train_features(s)
        subsets = subsets or self.labelled_subsets(train)
        index = train.host_index()
      for seed, subs in subsets.items():
        for sub in subs:
          if sgd:
            result = linear_sgd.train_and_score(self, s, test, sub["positions"], seed)
            extra = {"solver": "sgd"}
          else:
            r = probe(train, np.isin(index, sub["positions"]), test, self.num_classes,
                      steps=self.cfg.steps, seed=seed)
            result, extra = {"top1": r.top1, "top5": r.top5}, {"l2": r.l2}
          rows.append(self.row("linear", sub, seed, step, result, encoder=encoder, **extra))
    return rows
