"""The training/eval pipelines on the offline digits source: contract, determinism, sharding."""
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from contrastive_jax import data, input_spec, presets  # noqa: E402
from contrastive_jax.ops.patches import extract_patches


def _config(seed=0, batch_size=16, image_size=16, preset="digits", **data_overrides):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config(preset)
  c.data.image_size = image_size
  c.data.update(data_overrides)
  c.augment = presets.augment_config(preset)
  c.batch_size, c.seed = batch_size, seed
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _npz(tmp_path, n=32, size=8):
  """n distinct images whose label is their index, so batches tell which examples they hold."""
  images = np.stack([np.full((size, size, 3), 4 * i, np.uint8) for i in range(n)])
  path = tmp_path / "unique.npz"
  np.savez(path, images=images, labels=np.arange(n))
  return str(path)


def test_importing_data_does_not_import_tensorflow():
  code = ("import sys, contrastive_jax.data, contrastive_jax.presets; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_two_views_contract():
  batch = next(data.build_train_iterator(_config(), "two_views", process_index=0,
                                         process_count=1))
  assert set(batch) == {"view1", "view2", "label"}
  for k in ("view1", "view2"):
    assert batch[k].shape == (16, 16, 16, 3) and batch[k].dtype == np.float32
    assert batch[k].min() >= 0.0 and batch[k].max() <= 1.0
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert np.all((batch["label"] >= 0) & (batch["label"] < 10))
  # Independent seeds per view: no example's two views coincide.
  diff = np.abs(batch["view1"] - batch["view2"]).reshape(16, -1).max(axis=1)
  assert np.all(diff > 1e-3)


def test_same_seed_same_batches_other_seed_differs():
  def first(seed):
    it = data.build_train_iterator(_config(seed=seed), "two_views", process_index=0,
                                   process_count=1)
    return _take(it, 2)
  a, b, c = first(0), first(0), first(1)
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.allclose(a[0]["view1"], c[0]["view1"])


def test_start_step_skips_batches():
  config = _config()
  full = _take(data.build_train_iterator(config, "two_views", process_index=0,
                                         process_count=1), 3)
  resumed = next(data.build_train_iterator(config, "two_views", process_index=0,
                                           process_count=1, start_step=2))
  for k in resumed:
    np.testing.assert_array_equal(resumed[k], full[2][k])


def test_resume_across_epoch_boundaries(tmp_path):
  # 32 examples, local batch 8: an epoch is 4 batches; resume in the middle of the second.
  config = _config(batch_size=8, image_size=8, source="npz", path=_npz(tmp_path),
                   eval_split="train")
  full = _take(data.build_train_iterator(config, "eval", process_index=0,
                                         process_count=1), 10)
  resumed = _take(data.build_train_iterator(config, "eval", process_index=0,
                                            process_count=1, start_step=6), 4)
  for a, b in zip(full[6:], resumed, strict=True):
    np.testing.assert_array_equal(a["label"], b["label"])
  # Epochs are reshuffled: the second epoch's order differs from the first.
  first, second = (np.concatenate([b["label"] for b in full[i:i + 4]]) for i in (0, 4))
  assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_single_view_and_eval_kinds():
  config = _config()
  single = next(data.build_train_iterator(config, "single_view", process_index=0,
                                          process_count=1))
  assert set(single) == {"image", "label"} and single["image"].shape == (16, 16, 16, 3)
  ev = next(data.build_train_iterator(config, "eval", process_index=0,
                                      process_count=1))
  # "eval" rows are unaugmented: each equals some row of the eval-preprocessed split.
  train_x, train_y = data.load_arrays(config, "train")
  dist = np.abs(ev["image"].reshape(16, 1, -1) - train_x.reshape(1, len(train_x), -1)).max(-1)
  match = dist.argmin(axis=1)
  assert np.all(dist.min(axis=1) < 1e-5)
  np.testing.assert_array_equal(train_y[match], ev["label"])


def test_train_shards_are_disjoint_and_cover_the_split(tmp_path):
  # 32 examples, 2 processes, local batch 8: one epoch is 2 batches per process.
  config = _config(batch_size=16, image_size=8, preset="digits", source="npz",
                   path=_npz(tmp_path), eval_split="train")
  seen = []
  for pi in range(2):
    it = data.build_train_iterator(config, "eval", process_index=pi, process_count=2)
    labels = np.concatenate([b["label"] for b in _take(it, 2)])
    assert len(set(labels.tolist())) == 16  # No repeats within an epoch.
    seen.append(set(labels.tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(32))


def test_processes_get_different_augmentations():
  config = _config(batch_size=16)
  a = next(data.build_train_iterator(config, "two_views", process_index=0,
                                     process_count=2))
  b = next(data.build_train_iterator(config, "two_views", process_index=1,
                                     process_count=2))
  assert a["view1"].shape == (8, 16, 16, 3)
  assert not np.allclose(a["view1"], b["view1"])


def test_eval_iterator_pads_and_shards(tmp_path):
  config = _config(image_size=8, source="npz", path=_npz(tmp_path, n=30), eval_split="train")
  per_process = []
  for pi in range(2):
    batches = list(data.build_eval_iterator(config, "train", 8, process_index=pi,
                                            process_count=2))
    assert len(batches) == 4  # ceil(15 / 4): same count on both processes.
    for b in batches:
      assert b["image"].shape == (4, 8, 8, 3) and b["mask"].dtype == bool
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])
    assert mask.sum() == 15 and np.all(labels[~mask] == -1) and np.all(images[~mask] == 0)
    per_process.append(labels[mask])
  assert sorted(np.concatenate(per_process).tolist()) == list(range(30))
  # Deterministic order: a second pass gives the same batches.
  again = next(data.build_eval_iterator(config, "train", 8, process_index=1, process_count=2))
  first = next(data.build_eval_iterator(config, "train", 8, process_index=1, process_count=2))
  np.testing.assert_array_equal(again["image"], first["image"])


def test_load_arrays_and_dataset_info():
  config = _config()
  info = data.dataset_info(config)
  assert info == data.DatasetInfo(num_classes=10, num_train_examples=1437,
                                  num_eval_examples=360, image_size=16)
  x, y = data.load_arrays(config, "test")
  assert x.shape == (360, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0
  assert np.bincount(y).min() >= 35  # Stratified: every digit about 36 times.
  x2, y2 = data.load_arrays(config, "test")
  np.testing.assert_array_equal(x, x2)


def test_patch_grid_stream_cuts_the_declared_grid():
  """The stream's PatchGrid, not any method's config, decides the patches: with augmentation
  off, each patch is exactly the device extraction of the training crop (here the whole
  16 px image: crop fraction 1 and crop size = image size)."""
  config = _config(image_size=16)
  grid = input_spec.PatchGrid.from_settings(8, 4, {}, key="test")
  spec = input_spec.InputSpec((input_spec.Stream("patch_grid", patch_grid=grid),))
  batch = next(data.build_train_iterator(config, spec, process_index=0, process_count=1))
  assert batch["patches"].shape == (16, 3, 3, 8, 8, 3)
  assert batch["label"].shape == (16,)
  images = next(data.build_train_iterator(config, "eval", process_index=0, process_count=1))
  want = np.asarray(extract_patches(jnp.asarray(images["image"]), 8, 4))
  np.testing.assert_allclose(batch["patches"], want, atol=1e-6)
  wider = input_spec.PatchGrid.from_settings(4, 4, {}, key="test")
  spec = input_spec.InputSpec((input_spec.Stream("patch_grid", patch_grid=wider),))
  other = next(data.build_train_iterator(config, spec, process_index=0, process_count=1))
  assert other["patches"].shape == (16, 4, 4, 4, 4, 3)


def test_stream_transforms_are_checked():
  assert set(input_spec.TRANSFORMS) == {"two_views", "single_view", "raw", "patch_grid", "eval"}
  with pytest.raises(ValueError, match="two_views"):
    data.build_train_iterator(_config(), "three_views", process_index=0, process_count=1)
  with pytest.raises(ValueError, match="needs its PatchGrid"):
    input_spec.Stream("patch_grid")
