"""Each source end to end: an image folder written here, .npz files, TFDS under mock_data."""
import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from contrastive_jax import data, presets  # noqa: E402


def _config(preset="digits", batch_size=4, image_size=8, **data_overrides):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config(preset)
  c.data.image_size = image_size
  c.data.update(data_overrides)
  c.augment = presets.augment_config(preset)
  c.batch_size, c.seed = batch_size, 0
  return c


def _write(path, pixels, fmt):
  path.parent.mkdir(parents=True, exist_ok=True)
  encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
  tf.io.write_file(str(path), encode(tf.constant(pixels, tf.uint8)))


def _folder(root):
  """train/{cat,dog} and test/{cat,dog}: PNG, JPEG, grayscale, RGBA, mixed sizes, odd case."""
  rng = np.random.default_rng(0)
  def img(h, w, c):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
  _write(root / "train/dog/a.png", img(10, 12, 3), "png")
  _write(root / "train/dog/b.JPG", img(16, 9, 3), "jpeg")
  _write(root / "train/dog/c.jpeg", img(7, 7, 1), "jpeg")  # grayscale
  _write(root / "train/cat/d.png", img(12, 12, 4), "png")  # RGBA
  _write(root / "train/cat/e.png", img(8, 8, 1), "png")  # grayscale
  _write(root / "train/cat/f.PNG", img(20, 11, 3), "png")
  (root / "train/cat/notes.txt").write_text("not an image")
  _write(root / "test/cat/g.png", img(9, 9, 3), "png")
  _write(root / "test/dog/h.jpg", img(9, 9, 3), "jpeg")
  _write(root / "test/dog/i.jpg", img(30, 9, 3), "jpeg")
  return str(root)


def test_folder_source(tmp_path):
  config = _config(source="folder", path=_folder(tmp_path))
  info = data.dataset_info(config)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (2, 6, 3)
  x, y = data.load_arrays(config, "train")
  assert x.shape == (6, 8, 8, 3) and x.dtype == np.float32
  # Class index = rank of the sorted folder name; files in sorted order within a class.
  np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
  gray = x[1]  # cat/e.png, grayscale replicated to RGB
  np.testing.assert_allclose(gray[..., 0], gray[..., 2])
  batch = next(data.build_train_iterator(config, "two_views", process_index=0,
                                         process_count=1))
  assert batch["view1"].shape == (4, 8, 8, 3) and batch["label"].dtype == np.int32


def test_folder_shards_by_process(tmp_path):
  # Ten images of distinct constant intensity: the mean pixel names the image.
  for i in range(10):
    _write(tmp_path / f"train/c{i % 2}/{i}.png", np.full((6, 6, 3), 20 * i, np.uint8), "png")
  config = _config(source="folder", path=str(tmp_path), batch_size=2, eval_split="train")
  seen = []
  for pi in range(2):
    it = data.build_train_iterator(config, "eval", process_index=pi, process_count=2)
    ids = [round(float(im.mean()) * 255 / 20) for _ in range(5) for im in next(it)["image"]]
    assert len(set(ids)) == 5
    seen.append(set(ids))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))


def test_npz_source_uint8_and_float_gray(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "train.npz", images=rng.integers(0, 256, (12, 10, 10, 3), np.uint8),
           labels=np.array([0, 1, 2] * 4))
  np.savez(tmp_path / "test.npz", images=rng.uniform(size=(5, 6, 6)).astype(np.float32),
           labels=np.array([0, 1, 2, 3, -1]))  # -1: unlabelled
  config = _config(source="npz", path=str(tmp_path / "{split}.npz"))
  info = data.dataset_info(config)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (4, 12, 5)
  x, y = data.load_arrays(config, "test")
  assert x.shape == (5, 8, 8, 3) and list(y) == [0, 1, 2, 3, -1]
  np.testing.assert_allclose(x[..., 0], x[..., 1])
  batch = next(data.build_train_iterator(config, "single_view", process_index=0,
                                         process_count=1))
  assert batch["image"].shape == (4, 8, 8, 3)


def test_npz_split_keys_in_one_file(tmp_path):
  path = tmp_path / "all.npz"
  np.savez(path, train_images=np.zeros((8, 4, 4, 1), np.uint8), train_labels=np.arange(8) % 2,
           test_images=np.ones((3, 4, 4, 1), np.uint8), test_labels=np.array([0, 1, 1]))
  config = _config(source="npz", path=str(path))
  assert data.dataset_info(config).num_eval_examples == 3
  assert data.load_arrays(config, "test")[0].shape == (3, 8, 8, 3)


def test_tfds_source_with_mock_data():
  config = _config(preset="cifar10", batch_size=8, image_size=16, download=True)
  with tfds.testing.mock_data(num_examples=24):
    data.validate_data_config(config, process_count=1, device_count=8)
    info = data.dataset_info(config)
    assert info.num_classes == 10 and info.num_train_examples == 24
    it = data.build_train_iterator(config, "two_views", process_index=0,
                                   process_count=1)
    batch = next(it)
    assert batch["view1"].shape == (8, 16, 16, 3) and batch["label"].dtype == np.int32
    assert 0.0 <= batch["view1"].min() and batch["view1"].max() <= 1.0
    again = next(data.build_train_iterator(config, "two_views", process_index=0,
                                           process_count=1))
    np.testing.assert_array_equal(batch["view2"], again["view2"])
    sharded = next(data.build_train_iterator(config, "two_views", process_index=1,
                                             process_count=2))
    assert sharded["view1"].shape == (4, 16, 16, 3)
    x, y = data.load_arrays(config, "test")
    assert x.shape == (24, 16, 16, 3) and y.shape == (24,)
