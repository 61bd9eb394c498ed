"""Weighted kNN against a brute-force numpy transcription of Wu et al. (2018); the monitor."""
import numpy as np
import pytest

from contrastive_jax.evaluators import knn


def _reference(train, train_y, test, num_classes, k, temperature):
  """Scores as the paper writes them: sum over the k nearest of exp(cos / T), per class."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  scores = np.zeros((len(test), num_classes))
  for q in range(len(test)):
    sim = train @ test[q]
    for i in np.argsort(-sim)[:k]:
      scores[q, train_y[i]] += np.exp(sim[i] / temperature)
  return scores


@pytest.mark.parametrize("k,temperature,chunk", [(1, 0.1, 64), (7, 0.07, 5), (50, 0.5, 16),
                                                 (500, 0.1, 64)])
def test_matches_brute_force(k, temperature, chunk):
  rng = np.random.default_rng(k)
  num_classes = 6
  train = rng.normal(size=(200, 12)).astype(np.float32)
  train_y = rng.integers(0, num_classes, 200)
  test = rng.normal(size=(37, 12)).astype(np.float32)
  test_y = rng.integers(0, num_classes, 37)
  ref = _reference(train, train_y, test, num_classes, min(k, 200), temperature)
  got = knn.knn_class_scores(train, train_y, test, num_classes, k=k, temperature=temperature,
                             chunk_size=chunk)
  # Scores differ by the per-query constant exp(-1/T) (for range safety), not in ranking.
  np.testing.assert_allclose(got, ref * np.exp(-1.0 / temperature), rtol=2e-4, atol=1e-30)
  expected = float(np.mean(np.argmax(ref, 1) == test_y))
  assert knn.knn_accuracy(train, train_y, test, test_y, num_classes, k, temperature,
                          chunk_size=chunk) == pytest.approx(expected)


def test_unlabelled_bank_entries_do_not_vote():
  train = np.eye(4, dtype=np.float32)
  train_y = np.array([0, 1, -1, -1])
  test = np.array([[0.1, 0.2, 1, 0]], np.float32)  # Nearest: unlabelled row 2, then row 1.
  assert knn.knn_accuracy(train, train_y, test, np.array([1]), 2, k=1) == 1.0
