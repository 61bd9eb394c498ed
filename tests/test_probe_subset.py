"""The post-training probe caps its training set with a class-balanced subset, not a prefix."""
import numpy as np

from contrastive_jax import train


def test_probe_cap_keeps_every_class(monkeypatch):
  labels = np.repeat(np.arange(5), 20)  # Sorted by class, as an image folder lists them.
  images = np.zeros((100, 4, 4, 3), np.float32)
  seen = {}

  def fake_load_arrays(config, split):
    return images, labels

  def fake_probe(train_x, train_y, *args, **kwargs):
    seen["labels"] = train_y
    raise StopIteration

  monkeypatch.setattr(train.data, "load_arrays", fake_load_arrays)
  monkeypatch.setattr(train.features_lib, "extract_features", lambda fn, s, x, m, **k: x)
  monkeypatch.setattr(train.linear_probe, "linear_probe", fake_probe)
  monkeypatch.setattr(train.step_lib, "make_features_fn", lambda method, defs: None)
  from tests.helpers import tiny_simclr_config
  config = tiny_simclr_config()
  config.data = {"train_split": "train", "eval_split": "test"}
  config.eval.probe_max_train_examples = 10
  config.eval.probe_random_init = False
  try:
    train._probe(config, None, None, None, None, None, type("I", (), {"num_classes": 5}))
  except StopIteration:
    pass
  assert len(seen["labels"]) == 10
  assert np.bincount(seen["labels"], minlength=5).tolist() == [2, 2, 2, 2, 2]
