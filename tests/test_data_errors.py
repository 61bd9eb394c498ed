"""Every bad input fails early with a message that names the problem and the fix."""
import logging

import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contrastive_jax import data, presets  # noqa: E402


def _config(preset="digits", batch_size=4, **data_overrides):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config(preset)
  c.data.image_size = 8
  c.data.update(data_overrides)
  c.augment = presets.augment_config(preset)
  c.batch_size, c.seed = batch_size, 0
  return c


def _validate(config, process_count=1, device_count=1):
  data.validate_data_config(config, process_count=process_count, device_count=device_count)


def _png(path, value=0, size=6):
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = tf.fill([size, size, 3], tf.constant(value, tf.uint8))
  tf.io.write_file(str(path), tf.io.encode_png(pixels))


def _good_folder(root, n=4):
  for i in range(n):
    _png(root / f"train/c{i % 2}/{i}.png", value=10 * i)
  return root


def _truncated_jpeg(path):
  pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  encoded = tf.io.encode_jpeg(tf.constant(pixels)).numpy()
  path.write_bytes(encoded[: len(encoded) // 2])  # Valid header, no image data end.


def test_unknown_source_lists_sources():
  with pytest.raises(ValueError, match="digits, tfds, folder, npz"):
    _validate(_config(source="hdf5"))


def test_unknown_tfds_name_suggests_close_names():
  with pytest.raises(ValueError, match=r"Unknown TFDS dataset 'cifar11'.*cifar10"):
    _validate(_config(source="tfds", name="cifar11"))


def test_tfds_not_prepared_without_download(tmp_path):
  config = _config(source="tfds", name="cifar10", data_dir=str(tmp_path), download=False)
  with pytest.raises(ValueError, match="not found under data_dir") as e:
    _validate(config)
  assert "tfds build cifar10" in str(e.value) and "download=True" in str(e.value)
  assert str(tmp_path) in str(e.value)


def test_missing_folder(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    _validate(_config(source="folder", path=str(tmp_path / "nowhere")))


def test_missing_split_lists_present_splits(tmp_path):
  config = _config(source="folder", path=str(_good_folder(tmp_path)), eval_split="val")
  with pytest.raises(ValueError, match=r"Split 'val' not found.*train"):
    _validate(config)


def test_empty_split(tmp_path):
  _good_folder(tmp_path)
  (tmp_path / "test/c0").mkdir(parents=True)
  with pytest.raises(ValueError, match="Split 'test' is empty"):
    _validate(_config(source="folder", path=str(tmp_path)))


def test_split_smaller_than_global_batch():
  with pytest.raises(ValueError, match="fewer than one global batch"):
    _validate(_config(batch_size=2048))


def test_batch_not_divisible_by_devices_or_processes():
  with pytest.raises(ValueError, match=r"device count \(8\)"):
    _validate(_config(batch_size=12), device_count=8)
  with pytest.raises(ValueError, match=r"process count \(3\)"):
    _validate(_config(batch_size=16), process_count=3)
  with pytest.raises(ValueError, match=r"process count \(3\)"):
    data.build_train_iterator(_config(batch_size=16), "two_views", process_index=0,
                              process_count=3)
  with pytest.raises(ValueError, match="multiple of the process count"):
    data.build_eval_iterator(_config(), "test", 9, process_index=0, process_count=2)


def test_bad_augment_values_name_the_key():
  config = _config()
  config.augment.crop_scale = (0.0, 1.0)
  with pytest.raises(ValueError, match="config.augment.crop_scale"):
    _validate(config)
  config = _config()
  config.augment.color_strength = 2.0
  with pytest.raises(ValueError, match="config.augment.color_strength"):
    _validate(config)
  config = _config()
  config.augment.grayscale_prob = 1.5
  with pytest.raises(ValueError, match="config.augment.grayscale_prob"):
    _validate(config)


def test_corrupt_file_is_named(tmp_path):
  root = _good_folder(tmp_path)
  bad = root / "train/c0/broken.jpg"
  bad.write_bytes(b"this is not a jpeg")
  with pytest.raises(ValueError, match="broken.jpg") as e:
    _validate(_config(source="folder", path=str(root), eval_split="train"))
  assert "skip_corrupt=True" in str(e.value)


def test_file_failing_only_at_decode_is_named_by_the_pipeline(tmp_path):
  root = _good_folder(tmp_path)
  _truncated_jpeg(root / "train/c1/truncated.jpg")
  config = _config(source="folder", path=str(root), eval_split="train")
  _validate(config)  # The header is fine; only decoding finds out.
  with pytest.raises(ValueError, match="truncated.jpg"):
    data.load_arrays(config, "train")
  with pytest.raises(ValueError, match="truncated.jpg"):
    it = data.build_train_iterator(config, "two_views", process_index=0,
                                   process_count=1)
    for _ in range(3):
      next(it)


def test_skip_corrupt_skips_and_counts(tmp_path, caplog):
  root = _good_folder(tmp_path)
  (root / "train/c0/broken.png").write_bytes(b"")
  _truncated_jpeg(root / "train/c1/truncated.jpg")
  config = _config(source="folder", path=str(root), eval_split="train", skip_corrupt=True)
  with caplog.at_level(logging.WARNING):
    _validate(config)
  assert "Skipping 1 unreadable image file(s)" in caplog.text
  assert data.dataset_info(config).num_train_examples == 5  # 4 good + truncated (header ok)
  x, _ = data.load_arrays(config, "train")
  assert len(x) == 4
  batch = next(data.build_train_iterator(config, "two_views", process_index=0,
                                         process_count=1))
  assert batch["view1"].shape == (4, 8, 8, 3)


def test_npz_label_out_of_range(tmp_path):
  path = tmp_path / "d.npz"
  np.savez(path, images=np.zeros((6, 4, 4, 3), np.uint8), labels=np.array([0, 1, 2, 5, 1, 0]))
  with pytest.raises(ValueError, match=r"Label 5 out of range.*config.data.num_classes"):
    _validate(_config(source="npz", path=str(path), num_classes=3, eval_split="train"))
  np.savez(path, images=np.zeros((6, 4, 4, 3), np.uint8), labels=np.array([0, 1, -3, 1, 1, 0]))
  with pytest.raises(ValueError, match="Label -3 out of range"):
    _validate(_config(source="npz", path=str(path), eval_split="train"))


def test_npz_bad_contents(tmp_path):
  path = tmp_path / "d.npz"
  np.savez(path, x=np.zeros((6, 4, 4, 3), np.uint8), y=np.zeros(6, int))
  with pytest.raises(ValueError, match=r"has arrays \['x', 'y'\]; expected 'images' and 'labels'"):
    _validate(_config(source="npz", path=str(path), eval_split="train"))
  np.savez(path, images=np.full((6, 4, 4, 3), 255.0), labels=np.zeros(6, int))
  with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
    _validate(_config(source="npz", path=str(path), eval_split="train"))
  with pytest.raises(ValueError, match="does not exist"):
    _validate(_config(source="npz", path=str(tmp_path / "missing.npz")))


def test_unknown_digits_split():
  with pytest.raises(ValueError, match="valid splits: train, test"):
    _validate(_config(eval_split="validation"))
