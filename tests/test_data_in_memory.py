"""Raw batches for on-device augmentation (config.augment.on_device): the numpy in-memory path
(determinism, resume, sharding, dtypes) and tf.data's raw path for streamed sources."""
import ml_collections
import numpy as np
import pytest

from contrastive_jax import data, presets
from contrastive_jax.data import in_memory
from contrastive_jax.methods import get_method


def _config(source="digits", batch_size=16, image_size=8, seed=0, **data_overrides):
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("digits")
  c.data.update(source=source, image_size=image_size, **data_overrides)
  c.augment = presets.augment_config("digits")
  c.augment.on_device = True
  c.batch_size, c.seed = batch_size, seed
  return c


def _take(config, n, pi=0, pc=1, start_step=0):
  it = data.build_train_iterator(config, "raw", process_index=pi,
                                 process_count=pc, start_step=start_step)
  return [next(it) for _ in range(n)]


def _npz(tmp_path, n=40, size=6, dtype=np.uint8):
  """n distinct images whose label is their index, so batches tell which examples they hold."""
  images = np.stack([np.full((size, size + 2, 3), i, dtype) for i in range(n)])
  if dtype == np.float32:
    images /= n
  path = tmp_path / "unique.npz"
  np.savez(path, images=images, labels=np.arange(n))
  return str(path)


def test_digits_raw_batches_contract_and_determinism():
  batches = _take(_config(), 3)
  b = batches[0]
  assert set(b) == {"image", "label"}
  assert b["image"].shape == (16, 8, 8, 3) and b["image"].dtype == np.float32
  assert b["label"].dtype == np.int32 and 0.0 <= b["image"].min() <= b["image"].max() <= 1.0
  again = _take(_config(), 3)
  for x, y in zip(batches, again):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not np.array_equal(_take(_config(seed=1), 1)[0]["label"], b["label"])


def test_npz_keeps_stored_size_and_dtype(tmp_path):
  b = _take(_config("npz", path=_npz(tmp_path)), 1)[0]
  assert b["image"].shape == (16, 6, 8, 3) and b["image"].dtype == np.uint8
  np.testing.assert_array_equal(b["image"][:, 0, 0, 0], b["label"])  # pixels follow labels
  f = _take(_config("npz", path=_npz(tmp_path, dtype=np.float32)), 1)[0]
  assert f["image"].dtype == np.float32


def test_epochs_cover_the_shard_and_resume_is_exact(tmp_path):
  config = _config("npz", batch_size=16, path=_npz(tmp_path, n=40))
  batches = _take(config, 10)  # 160 examples: four epochs of 40, batches crossing epochs
  labels = np.concatenate([b["label"] for b in batches])
  for epoch in range(4):
    assert sorted(labels[40 * epoch:40 * (epoch + 1)]) == list(range(40))
  assert not np.array_equal(labels[:40], labels[40:80])  # reshuffled every epoch
  for start in (1, 2, 7):
    resumed = _take(config, 10 - start, start_step=start)
    for x, y in zip(batches[start:], resumed):
      np.testing.assert_array_equal(x["label"], y["label"])


def test_process_shards_are_disjoint_and_cover_the_split(tmp_path):
  config = _config("npz", batch_size=8, path=_npz(tmp_path, n=40))
  seen = [np.concatenate([b["label"] for b in _take(config, 5, pi=p, pc=2)]) for p in range(2)]
  assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(40))


def test_the_method_decides_raw_images_once():
  """config.augment.on_device is read in one place, the method's inputs(): SimCLR and the
  supervised method ask for raw images, host augmentation otherwise; CPC v2 refuses it."""
  from tests.helpers import tiny_simclr_config
  config = tiny_simclr_config()
  config.data, config.augment = _config().data, _config().augment
  assert get_method(config).inputs().main.transform == "raw"
  config.augment.on_device = False
  assert get_method(config).inputs().main.transform == "two_views"
  supervised = ml_collections.ConfigDict(config.to_dict())
  supervised.method, supervised.supervised = "supervised", presets.supervised_block()
  assert get_method(supervised).inputs().main.transform == "single_view"
  supervised.augment.on_device = True
  assert get_method(supervised).inputs().main.transform == "raw"
  assert in_memory.fits_in_memory(config)


def test_folder_raw_images_streamed_and_in_memory_agree(tmp_path):
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(0)
  for cls in ("a", "b"):
    (tmp_path / "train" / cls).mkdir(parents=True)
    for i in range(8):
      pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
      tf.io.write_file(str(tmp_path / "train" / cls / f"{i}.png"), tf.io.encode_png(pixels))
  streamed = _config("folder", batch_size=16, path=str(tmp_path), cache=False)
  cached = _config("folder", batch_size=16, path=str(tmp_path), cache=True)
  s, c = _take(streamed, 1)[0], _take(cached, 1)[0]
  for b in (s, c):
    # The whole 10 x 12 image, downscaled to fit the 8 x 8 canvas (7 x 8), padded with zeros.
    assert b["image"].shape == (16, 8, 8, 3) and b["image"].dtype == np.uint8
    np.testing.assert_array_equal(b["hw"], np.tile([[7, 8]], (16, 1)))
    assert b["hw"].dtype == np.int32 and not b["image"][:, 7:].any()
  # Both hold every image once (one epoch of 16): same pixels per label-sorted image.
  key = lambda x: sorted(x.reshape(len(x), -1).tolist())  # noqa: E731
  assert key(s["image"]) == key(c["image"])
  one = tf.io.decode_png(tf.io.read_file(str(tmp_path / "train" / "a" / "0.png")))
  ref = tf.image.resize(tf.cast(one, tf.float32) / 255, (7, 8), method="bicubic")
  ref = np.round(np.clip(ref.numpy(), 0, 1) * 255).astype(np.uint8)
  assert any(np.array_equal(x[:7], ref) for x in s["image"])
