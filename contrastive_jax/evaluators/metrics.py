"""Accuracy from scores, shared by the kNN and fine-tuning protocols."""
from __future__ import annotations

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
  """Share of rows of `scores` [N, C] whose label is among the row's k highest scores."""
  scores = np.asarray(scores)
  k = min(k, scores.shape[1])
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))
