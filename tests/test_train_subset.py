"""config.data.train_subset: training reads exactly the evaluators' labelled subset, epochs
count it, evaluators still see the whole split, and bad values fail with the key named."""
import ml_collections
import numpy as np
import pytest

from contrastive_jax import data, presets
from contrastive_jax.data import arrays, subsets, train_subset


def _config(**subset):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("digits")
  c.data.image_size = 8
  c.data.train_subset.update(**subset)
  c.augment = presets.augment_config("digits")
  c.augment.on_device = True
  c.batch_size, c.seed = 8, 0
  return c


def _seen_positions(config, steps):
  """Positions in the split of every image the main "raw" stream yields over `steps` steps."""
  stored = np.asarray(arrays.get(config).arrays("train")[0])
  flat = stored.reshape(len(stored), -1)
  lookup = {row.tobytes(): i for i, row in enumerate(flat)}
  it = data.build_train_iterator(config, "raw", process_index=0, process_count=1)
  seen = []
  for _ in range(steps):
    batch = next(it)
    for image in np.asarray(batch["image"]).reshape(len(batch["image"]), -1):
      seen.append(lookup[image.astype(stored.dtype).tobytes()])
  return np.asarray(seen)


def test_the_main_stream_reads_exactly_the_subset_and_epochs_count_it():
  config = _config(per_class=3, seed=4)
  labels = np.asarray(arrays.get(config).arrays("train")[1])
  # The evaluators' subset for the same values, drawn independently.
  want = subsets.labelled_subset(labels, per_class=3, seed=4)
  assert len(want) == 30
  seen = _seen_positions(config, steps=len(want) // config.batch_size * 2)
  assert set(seen) <= set(want.tolist())
  assert len(set(seen)) >= 0.9 * len(want)  # Two epochs of a shuffled 30 reach nearly all.
  info = data.validate_data_config(config, process_count=1, device_count=1)
  assert info.num_train_examples == 30


def test_fractions_are_nested_and_the_whole_split_is_the_default():
  small = train_subset.positions(_config(fraction=0.05, seed=1))
  large = train_subset.positions(_config(fraction=0.2, seed=1))
  assert set(small.tolist()) < set(large.tolist())
  assert train_subset.positions(_config()) is None
  config = _config()
  full = data.validate_data_config(config, process_count=1, device_count=1)
  assert full.num_train_examples == len(data.split_labels(config, "train"))


def test_evaluators_still_see_the_whole_split():
  config = _config(per_class=2)
  assert len(data.split_labels(config, "train")) > 100
  positions = np.arange(5)
  batches = data.build_eval_iterator(config, "train", 8, positions=positions,
                                     process_index=0, process_count=1)
  index = np.concatenate([b["index"] for b in batches])
  assert set(index[index >= 0].tolist()) == set(positions.tolist())


@pytest.mark.parametrize("subset, match", [
    (dict(fraction=0.0), r"train_subset.fraction=0.0 is invalid"),
    (dict(per_class=-1), r"train_subset.per_class=-1 is invalid"),
    (dict(per_class=2, fraction=0.5), r"sets per_class and fraction"),
    (dict(per_class=10_000), r"config.data.train_subset: per_class"),
])
def test_bad_subsets_name_the_key(subset, match):
  with pytest.raises(ValueError, match=match):
    data.validate_data_config(_config(**subset), process_count=1, device_count=1)
