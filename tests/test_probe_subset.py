"""Evaluators cap a split with a class-balanced subset, not a prefix."""
import numpy as np

from contrastive_jax.evaluators import common


def test_cap_keeps_every_class(monkeypatch):
  labels = np.repeat(np.arange(5), 20)  # Sorted by class, as an image folder lists them.
  loads = []

  def fake_split_labels(config, split):
    loads.append(split)
    return labels

  monkeypatch.setattr(common.data, "split_labels", fake_split_labels)
  shared = common.EvalData(config=None)
  positions = shared.positions("train", cap=10, seed=0)
  assert np.bincount(labels[positions], minlength=5).tolist() == [2, 2, 2, 2, 2]
  assert np.all(np.diff(positions) > 0)  # In the split's order.
  assert shared.positions("train", cap=10, seed=0) is positions  # Selected once, shared.
  assert shared.positions("train", cap=100) is None  # A cap of the whole split is no cap.
  assert shared.positions("train") is None and loads == ["train"]  # Labels read once.
