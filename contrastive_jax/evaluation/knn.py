"""Weighted k-nearest-neighbour accuracy of frozen features (Wu et al., 2018, InstDisc).

Every query votes with its k most cosine-similar training features; neighbour i adds
exp(s_i / T) to the score of its class, and the top-scoring class is the prediction. No
training, so it is cheap enough to monitor representations during pretraining
(`KNNMonitor`). No TensorFlow here: `contrastive_jax.data` imports tf.data only when
`KNNMonitor.from_config` loads the arrays.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive_jax import data
from contrastive_jax.evaluation import features as features_lib
from contrastive_jax.evaluation import subsets
from contrastive_jax.evaluation.metrics import topk_accuracy


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


class KNNMonitor:
  """kNN accuracy of the current encoder on fixed (capped) train and test arrays.

  Call it from the train loop: `monitor(state) -> {"knn_top1": float}`. The arrays are loaded
  once; every call extracts eval-mode features with `features_fn(state, images)` over the mesh
  (the state is read, never changed).
  """

  def __init__(self, features_fn: Callable[[Any, jax.Array], jax.Array],
               train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
               test_labels: np.ndarray, *, num_classes: int, mesh: jax.sharding.Mesh,
               k: int = 200, temperature: float = 0.1, batch_size: int = 256):
    self._features_fn = features_fn
    self._train = (train_images, np.asarray(train_labels))
    self._test = (test_images, np.asarray(test_labels))
    self._num_classes, self._mesh = num_classes, mesh
    self._k, self._temperature, self._batch_size = k, temperature, batch_size

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  features_fn: Callable[[Any, jax.Array], jax.Array],
                  mesh: jax.sharding.Mesh) -> KNNMonitor:
    """Loads the labelled train split (config.eval.probe_train_split, else
    config.data.train_split) and config.data.eval_split, each capped to a class-balanced
    subset of config.eval.knn_max_train_examples / knn_max_test_examples (0 = no cap)."""
    e = config.eval
    train_split = e.get("probe_train_split") or config.data.train_split
    arrays = []
    for split, cap in ((train_split, e.get("knn_max_train_examples", 10_000)),
                       (config.data.eval_split, e.get("knn_max_test_examples", 10_000))):
      x, y = data.load_arrays(config, split)
      if cap and cap < len(y):
        # The source's order may be sorted by class: take a balanced subset, not a prefix.
        keep = np.sort(subsets.balanced_order(y, config.seed)[:cap])
        x, y = x[keep], y[keep]
      arrays += [x, y]
    return cls(features_fn, *arrays, num_classes=data.dataset_info(config).num_classes,
               mesh=mesh, k=e.get("knn_k", 200), temperature=e.get("knn_temperature", 0.1),
               batch_size=e.batch_size)

  def __call__(self, state: Any) -> dict[str, float]:
    feats = [features_lib.extract_features(self._features_fn, state, x, self._mesh,
                                           batch_size=self._batch_size)
             for x in (self._train[0], self._test[0])]
    top1 = knn_accuracy(feats[0], self._train[1], feats[1], self._test[1], self._num_classes,
                        self._k, self._temperature)
    return {"knn_top1": top1}
