"""SuNCEt's input: the class-stratified sampler, the labelled subset, processes and resume."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # SuNCEt's labelled support stream is built by tf.data.

from contrastive_jax import data, input_spec
from contrastive_jax.data import catalog, labelled, subsets
from contrastive_jax.methods import get_method
from tests.helpers import set_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def suncet_config(preset="tiny", **overrides):
  spec = importlib.util.spec_from_file_location("_suncet_cfg",
                                                os.path.join(ROOT, "configs", "suncet.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return set_keys(module.get_config(preset), overrides)


def _method(config):
  return get_method(config, data.dataset_info(config))


def _subset(config):
  c = config.suncet
  return input_spec.Subset(fraction=c.label_fraction, per_class=c.per_class,
                           index_file=c.index_file, seed=c.subset_seed)


def _labels():
  # Five classes of sizes 4..8 and an unused label gap (class 6 absent).
  return np.asarray(sum(([c] * n for c, n in zip([0, 1, 2, 3, 5], [4, 5, 6, 7, 8])), []))


def _check_balanced(sampler, labels, positions, batch_labels):
  c, k = sampler.classes_per_batch, sampler.images_per_class
  assert positions.shape == batch_labels.shape == (c * k,)
  np.testing.assert_array_equal(labels[positions], batch_labels)
  assert len(set(batch_labels.tolist())) == c
  for cls in set(batch_labels.tolist()):
    rows = np.flatnonzero(batch_labels == cls)
    assert len(rows) == k and len(set(positions[rows].tolist())) == k  # Distinct images.
  # Row r holds class r % C, so every contiguous device shard spans the classes.
  np.testing.assert_array_equal(batch_labels.reshape(k, c), np.tile(batch_labels[:c], (k, 1)))


def test_sampler_is_balanced_deterministic_and_seeded():
  labels = _labels()
  make = lambda seed: labelled.ClassStratifiedSampler(  # noqa: E731
      labels, classes_per_batch=3, images_per_class=4, seed=seed)
  a, b, other = make(0), make(0), make(1)
  draws = [a.global_batch(t) for t in range(30)]
  for positions, batch_labels in draws:
    _check_balanced(a, labels, positions, batch_labels)
  for t, (positions, batch_labels) in enumerate(draws):
    np.testing.assert_array_equal(b.global_batch(t)[0], positions)
    np.testing.assert_array_equal(b.global_batch(t)[1], batch_labels)
  assert any(not np.array_equal(other.global_batch(t)[0], draws[t][0]) for t in range(30))
  assert len({tuple(p) for p, _ in draws}) == 30  # Steps differ from each other.
  # Over many steps every class and every image of the subset gets drawn.
  seen = np.concatenate([p for p, _ in draws])
  assert set(labels[seen].tolist()) == {0, 1, 2, 3, 5}
  assert len(set(seen.tolist())) == len(labels)


@pytest.mark.parametrize("kw,match", [
    (dict(classes_per_batch=6, images_per_class=2), "classes_per_batch=6 exceeds the 5"),
    (dict(classes_per_batch=2, images_per_class=5), "images_per_class=5 exceeds the 4"),
])
def test_sampler_rejects_impossible_batches(kw, match):
  with pytest.raises(ValueError, match=f"config.suncet.{match}"):
    labelled.ClassStratifiedSampler(_labels(), seed=0, key="config.suncet", **kw)


def test_supervised_steps_from_epochs_or_steps():
  c = suncet_config("digits", **{"suncet.supervised_epochs": 2.5, "batch_size": 100})
  info = input_spec.DatasetInfo(num_classes=10, num_train_examples=1000, num_eval_examples=0,
                                image_size=16)
  assert get_method(c, info).supervised_steps() == 25
  c.suncet.supervised_steps = 7
  assert get_method(c, info).supervised_steps() == 7
  (_, support) = get_method(c, info).inputs().streams
  assert support.until_step == 7 and support.prefix == "support_"
  assert support.sampling.batch_size == c.suncet.classes_per_batch * c.suncet.images_per_class


def test_support_comes_from_the_labelled_subset():
  config = suncet_config("tiny", **{"suncet.label_fraction": 0.05, "suncet.subset_seed": 3})
  source = catalog.get_source(config)
  records, labels = labelled.labelled_records(config, source, _subset(config))
  train_labels = source.arrays("train")[1]
  expected = subsets.labelled_subset(train_labels, fraction=0.05, seed=3)
  np.testing.assert_array_equal(records["index"], expected)
  np.testing.assert_array_equal(labels, train_labels[expected])
  per_class = suncet_config("tiny", **{"suncet.per_class": 3})
  _, labels = labelled.labelled_records(per_class, source, _subset(per_class))
  assert np.all(np.bincount(labels) == 3)


def _take(config, n, **kw):
  it = data.build_train_iterator(config, _method(config).inputs(), **kw)
  return [next(it) for _ in range(n)]


def test_processes_share_one_global_support_batch_and_resume_matches():
  config = suncet_config("tiny", **{"suncet.supervised_steps": 3})
  whole = _take(config, 4, process_index=0, process_count=1)
  parts = [_take(config, 4, process_index=p, process_count=2) for p in range(2)]
  for t in range(3):
    assert whole[t]["support_image"].shape == (8, 8, 8, 3)
    assert parts[0][t]["support_image"].shape == (4, 8, 8, 3)
    for key in ("support_image", "support_label"):
      np.testing.assert_allclose(np.concatenate([p[t][key] for p in parts]), whole[t][key])
    assert len(set(whole[t]["support_label"].tolist())) == 4
    assert whole[t]["support_image"].std() > 0
  # After supervised_steps: the plain two-view batch, same keys as SimCLR's.
  assert set(whole[3]) == {"view1", "view2", "label"}
  assert set(parts[1][3]) == {"view1", "view2", "label"}
  plain = _take(config, 4, process_index=0, process_count=1)
  simclr = data.build_train_iterator(config, "two_views", process_index=0,
                                     process_count=1)
  for got, want in zip(plain, [next(simclr) for _ in range(4)]):
    np.testing.assert_array_equal(got["view1"], want["view1"])  # Same unlabelled stream.
  resumed = _take(config, 2, process_index=0, process_count=1, start_step=2)
  for got, want in zip(resumed, whole[2:]):
    assert set(got) == set(want)
    for key in got:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_no_supervised_steps_gives_plain_batches():
  config = suncet_config("tiny", **{"suncet.supervised_steps": 0})
  assert set(_take(config, 1, process_index=0, process_count=1)[0]) == {"view1", "view2",
                                                                        "label"}


def test_seed_changes_the_support_draw():
  a = _take(suncet_config("tiny"), 1, process_index=0, process_count=1)[0]
  b = _take(suncet_config("tiny", seed=1), 1, process_index=0, process_count=1)[0]
  assert not np.array_equal(a["support_image"], b["support_image"])


def test_iterator_rejects_a_support_larger_than_the_labelled_classes():
  config = suncet_config("tiny", **{"suncet.per_class": 2, "suncet.images_per_class": 4})
  with pytest.raises(ValueError, match="config.suncet.images_per_class=4 exceeds the 2"):
    data.build_train_iterator(config, _method(config).inputs(), process_index=0,
                              process_count=1)


def test_folder_source_subset_from_an_index_file_of_names(tmp_path):
  """Image folders: records are paths, and an index file may name files instead of indices."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for cls in ("cat", "dog", "emu"):
    os.makedirs(tmp_path / "train" / cls)
    for i in range(3):
      png = tf.io.encode_png(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
      (tmp_path / "train" / cls / f"{cls}{i}.png").write_bytes(png.numpy())
  index = tmp_path / "subset.txt"
  index.write_text("cat0.png\ncat2.png\ndog1.png\ndog2.png\nemu0.png  # any comment\nemu1.png\n")
  config = suncet_config("tiny", **{"data.source": "folder", "data.path": str(tmp_path),
                                    "suncet.index_file": str(index)})
  records, labels = labelled.labelled_records(config, catalog.get_source(config), _subset(config))
  names = sorted(os.path.basename(p.decode()) for p in records["path"])
  assert names == ["cat0.png", "cat2.png", "dog1.png", "dog2.png", "emu0.png", "emu1.png"]
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
