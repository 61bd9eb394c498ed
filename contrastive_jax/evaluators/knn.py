"""Weighted k-nearest-neighbour accuracy of frozen features (Wu et al., 2018, InstDisc).

Every query votes with its k most cosine-similar training features; neighbour i adds
exp(s_i / T) to the score of its class, and the top-scoring class is the prediction. No
training, so it is cheap enough to monitor representations during pretraining (a "knn" block
with `every_steps`). No TensorFlow here.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive_jax.evaluators import common
from contrastive_jax.evaluators.common import Evaluator
from contrastive_jax.evaluators.metrics import topk_accuracy


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "chunk"))
def _class_scores(bank, bank_labels, queries, temperature, *, num_classes: int, k: int,
                  chunk: int):
  bank = _l2_normalize(bank)
  queries = _l2_normalize(queries).reshape(-1, chunk, queries.shape[-1])

  def one_chunk(q):
    # Memory is O(chunk x bank size) whatever the number of queries.
    sim = jnp.matmul(q, bank.T, precision=jax.lax.Precision.HIGHEST)
    top_sim, top_idx = jax.lax.top_k(sim, k)
    # exp((s - 1) / T) is exp(s / T) times a constant: same ranking, no overflow for small T.
    weights = jnp.exp((top_sim - 1.0) / temperature)
    votes = jax.vmap(lambda lab, w: jnp.zeros(num_classes).at[lab].add(w))
    return votes(bank_labels[top_idx], weights)

  return jax.lax.map(one_chunk, queries).reshape(-1, num_classes)


def knn_class_scores(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                     num_classes: int, *, k: int = 200, temperature: float = 0.1,
                     chunk_size: int = 256) -> np.ndarray:
  """Per-class vote totals [Q, num_classes] of every query (see module docstring)."""
  train_labels = np.asarray(train_labels)
  keep = train_labels >= 0  # Unlabelled bank entries cannot vote.
  bank, bank_labels = np.asarray(train_feats)[keep], train_labels[keep].astype(np.int32)
  if not len(bank):
    raise ValueError("kNN needs labelled training features; every train label is < 0.")
  if k < 1 or temperature <= 0:
    raise ValueError(f"kNN needs k >= 1 and temperature > 0; got k={k}, T={temperature}.")
  if bank_labels.max() >= num_classes:
    raise ValueError(f"Train labels reach {bank_labels.max()} but num_classes={num_classes}.")
  queries = np.asarray(test_feats, np.float32)
  n = len(queries)
  chunk = max(1, min(chunk_size, n))
  padded = np.zeros((-(-n // chunk) * chunk, queries.shape[1]), np.float32)
  padded[:n] = queries
  scores = _class_scores(bank.astype(np.float32), bank_labels, padded, float(temperature),
                         num_classes=num_classes, k=min(k, len(bank)), chunk=chunk)
  return np.asarray(scores)[:n]


def knn_accuracy(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, num_classes: int, k: int = 200,
                 temperature: float = 0.1, *, chunk_size: int = 256) -> float:
  """Top-1 accuracy of the weighted kNN classifier; queries run `chunk_size` at a time."""
  scores = knn_class_scores(train_feats, train_labels, test_feats, num_classes, k=k,
                            temperature=temperature, chunk_size=chunk_size)
  return topk_accuracy(scores, test_labels, 1)


class KNN(Evaluator):
  """Weighted kNN of the eval split against the labelled train split (block keys: k,
  temperature, and the common ones; max_*_examples cap each split, class-balanced)."""

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    super().validate(name, cfg)
    need = common.needs(name, cfg)
    need(common.is_int(cfg.k) and cfg.k > 0, "k", "a positive integer")
    need(isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0, "temperature",
         "must be > 0")

  def run(self, state: Any, step: int) -> list[common.Row]:
    train_x, train_y = self.train_arrays()
    test_x, test_y = self.test_arrays()
    scores = knn_class_scores(self.features(state, train_x), train_y,
                              self.features(state, test_x), self.num_classes, k=self.cfg.k,
                              temperature=self.cfg.temperature)
    labelled = np.flatnonzero(train_y >= 0)
    cap = self.cfg.max_train_examples
    capped = cap and cap < len(self.arrays.get(self.subject.labelled_split)[1])
    bank = {"subset": f"max={cap}" if capped else "fraction=1", "label_fraction": 1.0,
            "indices": labelled}
    result = {"top1": topk_accuracy(scores, test_y, 1), "top5": topk_accuracy(scores, test_y, 5)}
    return [self.row("knn", bank, self.subject.config.seed, step, result)]
