"""Evaluators cap a split with a class-balanced subset, not a prefix."""
import numpy as np

from contrastive_jax.evaluators import common


def test_cap_keeps_every_class(monkeypatch):
  labels = np.repeat(np.arange(5), 20)  # Sorted by class, as an image folder lists them.
  images = np.arange(100).reshape(100, 1, 1, 1).astype(np.float32)
  loads = []

  def fake_load_arrays(config, split):
    loads.append(split)
    return images, labels

  monkeypatch.setattr(common.data, "load_arrays", fake_load_arrays)
  arrays = common.EvalArrays(config=None)
  x, y = arrays.get("train", cap=10, seed=0)
  assert np.bincount(y, minlength=5).tolist() == [2, 2, 2, 2, 2]
  assert np.array_equal(labels[x[:, 0, 0, 0].astype(int)], y)  # Images follow their labels.
  assert np.all(np.diff(x[:, 0, 0, 0]) > 0)  # In the split's order.
  assert arrays.get("train")[1] is labels and loads == ["train"]  # Loaded once, shared.
