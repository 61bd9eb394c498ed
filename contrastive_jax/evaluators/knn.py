"""Weighted k-nearest-neighbour accuracy of frozen features (Wu et al., 2018, InstDisc).

Every query votes with its k most cosine-similar training features; neighbour i adds
exp(s_i / T) to the score of its class, and the top-scoring class is the prediction. No
training, so it is cheap enough to monitor representations during pretraining (a "knn" block
with `every_steps`). No TensorFlow here.

The bank and the queries stay sharded over the devices (`features.Features`). Queries go a
chunk at a time: every device gathers the chunk, scores it against its own part of the bank
and keeps its k best, the k best of those candidates over all devices are the neighbours, and
each device keeps the votes of its own queries. Memory per device is O(chunk x bank / devices)
whatever the number of queries, and no device ever holds the whole bank.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.evaluators import common, metrics
from contrastive_jax.evaluators import features as features_lib
from contrastive_jax.evaluators.common import Evaluator

_AXIS = parallel.DATA_AXIS


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("mesh", "num_classes", "k", "chunk"))
def _sharded_scores(bank, bank_labels, queries, temperature, *, mesh, num_classes: int, k: int,
                    chunk: int):
  """Votes [Q, C] of `queries` [Q, D] against `bank` [M, D], all sharded over `mesh`."""
  n = mesh.devices.size

  def body(bank, bank_labels, queries):
    bank, queries = _l2_normalize(bank), _l2_normalize(queries)
    rows = queries.shape[0]
    padded = -(-rows // chunk) * chunk
    queries = jnp.pad(queries, ((0, padded - rows), (0, 0)))
    local_k = min(k, bank.shape[0])
    me = jax.lax.axis_index(_AXIS)

    def one_chunk(q):
      everyone = jax.lax.all_gather(q, _AXIS, tiled=True)  # [n * chunk, D]
      sim = jnp.matmul(everyone, bank.T, precision=jax.lax.Precision.HIGHEST)
      sim = jnp.where(bank_labels[None, :] >= 0, sim, -jnp.inf)  # Padding cannot vote.
      top_sim, top_idx = jax.lax.top_k(sim, local_k)
      top_lab = bank_labels[top_idx]
      cand_sim = jax.lax.all_gather(top_sim, _AXIS, axis=1, tiled=True)  # [n * chunk, n * k]
      cand_lab = jax.lax.all_gather(top_lab, _AXIS, axis=1, tiled=True)
      best_sim, pick = jax.lax.top_k(cand_sim, min(k, n * local_k))
      best_lab = jnp.take_along_axis(cand_lab, pick, axis=1)
      # exp((s - 1) / T) is exp(s / T) times a constant: same ranking, no overflow for small T.
      weights = jnp.where(best_lab >= 0, jnp.exp((best_sim - 1.0) / temperature), 0.0)
      votes = jax.vmap(lambda lab, w: jnp.zeros(num_classes).at[lab].add(w))(
          jnp.maximum(best_lab, 0), weights)
      return jax.lax.dynamic_slice_in_dim(votes, me * chunk, chunk)

    scores = jax.lax.map(one_chunk, queries.reshape(-1, chunk, queries.shape[-1]))
    return scores.reshape(-1, num_classes)[:rows]

  return jax.shard_map(body, mesh=mesh, in_specs=(P(_AXIS), P(_AXIS), P(_AXIS)),
                       out_specs=P(_AXIS), check_vma=False)(bank, bank_labels, queries)


def sharded_class_scores(bank: features_lib.Features, queries: features_lib.Features,
                         num_classes: int, *, k: int = 200, temperature: float = 0.1,
                         chunk_size: int = 256) -> jax.Array:
  """Per-class vote totals [M_q, C] of every row of `queries`, sharded like them; bank rows
  with label < 0 (padding, unlabelled) never vote."""
  if k < 1 or temperature <= 0:
    raise ValueError(f"kNN needs k >= 1 and temperature > 0; got k={k}, T={temperature}.")
  mesh = bank.x.sharding.mesh
  n = mesh.devices.size
  chunk = max(1, min(-(-chunk_size // n), queries.num_rows // n))
  return _sharded_scores(bank.x, bank.labels, queries.x, jnp.float32(temperature), mesh=mesh,
                         num_classes=num_classes, k=k, chunk=chunk)


def _check_bank(labels: np.ndarray, num_classes: int) -> None:
  labelled = labels[labels >= 0]
  if not len(labelled):
    raise ValueError("kNN needs labelled training features; every train label is < 0.")
  if labelled.max() >= num_classes:
    raise ValueError(f"Train labels reach {labelled.max()} but num_classes={num_classes}.")


def knn_class_scores(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                     num_classes: int, *, k: int = 200, temperature: float = 0.1,
                     chunk_size: int = 256,
                     mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Per-class vote totals [Q, num_classes] of host features (one device unless `mesh`)."""
  train_labels = np.asarray(train_labels)
  _check_bank(train_labels, num_classes)
  mesh = mesh or parallel.make_mesh(1)
  bank = features_lib.from_host(train_feats, train_labels, mesh)
  queries = features_lib.from_host(test_feats, np.zeros(len(test_feats), np.int32), mesh)
  scores = sharded_class_scores(bank, queries, num_classes, k=k, temperature=temperature,
                                chunk_size=chunk_size)
  return features_lib.to_host(scores)[:len(test_feats)]


def knn_accuracy(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, num_classes: int, k: int = 200,
                 temperature: float = 0.1, *, chunk_size: int = 256,
                 mesh: jax.sharding.Mesh | None = None) -> float:
  """Top-1 accuracy of the weighted kNN classifier; queries run `chunk_size` at a time."""
  scores = knn_class_scores(train_feats, train_labels, test_feats, num_classes, k=k,
                            temperature=temperature, chunk_size=chunk_size, mesh=mesh)
  return metrics.topk_accuracy(scores, test_labels, 1)


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
    bank = self.train_features(state)
    queries = self.test_features(state)
    bank_labels = bank.host_labels()
    _check_bank(bank_labels, self.num_classes)
    scores = sharded_class_scores(bank, queries, self.num_classes, k=self.cfg.k,
                                  temperature=self.cfg.temperature)
    result = metrics.sharded_topk(scores, queries.labels, queries.index >= 0)
    labelled = np.flatnonzero(bank_labels >= 0)
    capped = self.capped(self.subject.labelled_split, self.cfg.max_train_examples)
    subset = {"subset": f"max={self.cfg.max_train_examples}" if capped else "fraction=1",
              "label_fraction": 1.0, "indices": labelled}
    return [self.row("knn", subset, self.subject.config.seed, step, result)]
