"""Evaluation that streams: features batch by batch, kNN and the linear probe on features
sharded over devices, the SGD linear protocol, and labelled subsets read through the
training pipeline."""
import ml_collections
import numpy as np
import pytest

from contrastive_jax import data, optim, parallel, presets
from contrastive_jax import step as step_lib
from contrastive_jax.evaluators import common, finetune, knn, linear
from contrastive_jax.evaluators import features as features_lib
from contrastive_jax.methods import get_method
from tests import helpers


def _config(**data_overrides) -> ml_collections.ConfigDict:
  c = helpers.tiny_simclr_config()
  c.data = presets.data_config("digits")
  c.data.update({"image_size": 16, **data_overrides})
  c.augment = presets.augment_config("digits")
  return c


def _subject(config, num_devices: int = 8) -> common.Subject:
  method = get_method(config)
  mesh = parallel.make_mesh(num_devices)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 10)
  return common.Subject(config=config, method=method, defs=step_lib.model_defs(method),
                        mesh=mesh, init_fn=step_lib.make_init_fn(method, tx, mesh),
                        num_classes=10)


def _folder(tmp_path, classes=3, per_class=7):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for c in range(classes):
      d = tmp_path / split / f"class{c}"
      d.mkdir(parents=True)
      for i in range(per_class):
        pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"{i}.png")
  return str(tmp_path)


def _stream(subject, state, split, positions=None, batch_size=64):
  batches = data.build_eval_iterator(subject.config, split, batch_size, positions=positions)
  return features_lib.stream_features(subject.features_fn, state, batches, subject.mesh)


@pytest.mark.parametrize("source", ["digits", "folder"])
def test_streamed_features_equal_the_in_memory_path(source, tmp_path):
  """Batch-by-batch features (numpy batches for digits, tf.data for a folder) equal those of
  the whole split loaded in memory, on 1 and on 8 devices, for the whole split and a cap."""
  if source == "folder":
    pytest.importorskip("tensorflow")
  overrides = {"source": "folder", "path": _folder(tmp_path), "image_size": 8,
               "eval_crop_fraction": 0.875} if source == "folder" else {}
  config = _config(**overrides)
  images, labels = data.load_arrays(config, "test")
  for n in (1, 8):
    subject = _subject(config, n)
    state = subject.init_fn(0)
    want = features_lib.extract_features(subject.features_fn, state, images, subject.mesh)
    streamed = _stream(subject, state, "test", batch_size=16)
    assert streamed.x.sharding.spec == parallel.batch_sharding(subject.mesh).spec
    x, y, positions = streamed.numpy()
    np.testing.assert_array_equal(positions, np.arange(len(labels)))
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    some = np.array([0, 3, 4, len(labels) - 1])
    x, y, positions = _stream(subject, state, "test", some, batch_size=16).numpy()
    np.testing.assert_array_equal(positions, some)
    np.testing.assert_allclose(x, want[some], rtol=1e-5, atol=1e-5)


def test_knn_on_sharded_features_equals_one_device():
  rng = np.random.default_rng(0)
  bank = rng.normal(size=(203, 12)).astype(np.float32)
  bank_y = rng.integers(-1, 6, 203)  # Some unlabelled, and 203 rows pad over 8 devices.
  queries = rng.normal(size=(37, 12)).astype(np.float32)
  for k in (1, 7, 300):
    one = knn.knn_class_scores(bank, bank_y, queries, 6, k=k, chunk_size=16)
    eight = knn.knn_class_scores(bank, bank_y, queries, 6, k=k, chunk_size=16,
                                 mesh=parallel.make_mesh(8))
    # Float32 sums over shards in another order: a wrong neighbour would differ by far more.
    np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-30)
  test_y = rng.integers(0, 6, 37)
  scores = knn.sharded_class_scores(
      features_lib.from_host(bank, bank_y, parallel.make_mesh(8)),
      features_lib.from_host(queries, test_y, parallel.make_mesh(8)), 6, k=7)
  got = features_lib.from_host(queries, test_y, parallel.make_mesh(8))
  from contrastive_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top
  result = metrics.sharded_topk(scores, got.labels, got.index >= 0)
  ref = knn.knn_class_scores(bank, bank_y, queries, 6, k=7)
  assert result["top1"] == pytest.approx(metrics.topk_accuracy(ref, test_y, 1))
  assert result["top5"] == pytest.approx(metrics.topk_accuracy(ref, test_y, 5))


def test_linear_probe_on_sharded_features_equals_one_device():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(5, 16))
  train_y, test_y = rng.integers(0, 5, 203), rng.integers(0, 5, 61)
  train = (centers[train_y] + 1.5 * rng.normal(size=(203, 16))).astype(np.float32)
  test = (centers[test_y] + 1.5 * rng.normal(size=(61, 16))).astype(np.float32)
  one = linear.linear_probe(train, train_y, test, test_y, 5, steps=30)
  eight = linear.linear_probe(train, train_y, test, test_y, 5, steps=30,
                              mesh=parallel.make_mesh(8))
  assert one.l2 == eight.l2
  assert eight.top1 == pytest.approx(one.top1) and eight.top5 == pytest.approx(one.top5)
  assert eight.val_top1 == pytest.approx(one.val_top1)
  assert one.top1 > 0.6  # Separable clusters: well above chance (0.2).


def test_sgd_linear_protocol_learns_on_digits():
  """A linear head on a frozen (random) encoder, trained through the training pipeline with
  random crops, is far above chance (10 classes) on the test split after 4 epochs. The
  features are small and unstandardised (SimCLR's protocol feeds them as they are), hence the
  large learning rate; it measured 0.41."""
  config = _config()
  subject = _subject(config)
  block = presets.linear_eval(solver="sgd", fractions=(1.0,), batch_size=64)
  block.sgd.update(epochs=4.0, batch_size=64, base_lr=32.0, crop_scale=(0.8, 1.0), flip=False)
  evals = ml_collections.ConfigDict({"linear": block})
  (probe,) = common.from_config(evals, subject)
  (row,) = probe.run(subject.init_fn(0), 0)
  assert row["solver"] == "sgd" and row["num_labelled"] == 1437
  assert row["top1"] > 0.3, row


@pytest.mark.parametrize("key, value, match", [
    ("solver", "adam", r"evals.linear.solver='adam'"),
    ("sgd.optimizer", "adamw", r"evals.linear.sgd.optimizer='adamw'"),
    ("sgd.epochs", 0.0, r"evals.linear.sgd.epochs=0.0"),
    ("sgd.momentum", 1.0, r"evals.linear.sgd.momentum=1.0"),
])
def test_bad_sgd_keys_are_named(key, value, match):
  block = presets.linear_eval(solver="sgd")
  common.validate(ml_collections.ConfigDict({"linear": block}))
  helpers.set_keys(block, {key: value})
  with pytest.raises(ValueError, match=match):
    common.validate(ml_collections.ConfigDict({"linear": block}))


def _unique_npz(tmp_path, n=64, size=8):
  """Image i is filled with the value i, label i % 4: a batch tells which examples it holds."""
  images = np.stack([np.full((size, size, 3), i, np.uint8) for i in range(n)])
  path = tmp_path / "unique.npz"
  np.savez(path, images=images, labels=np.arange(n) % 4)
  return str(path)


def test_finetuning_reads_its_subset_through_the_pipeline(tmp_path, monkeypatch):
  config = _config(source="npz", path=_unique_npz(tmp_path), image_size=8, eval_split="train")
  subject = _subject(config)
  block = presets.finetune_eval(fractions=(0.25,), steps=6, train_batch_size=8, batch_size=64)
  (tuner,) = common.from_config(ml_collections.ConfigDict({"finetune": block}), subject)
  seen = []
  real = finetune.data.build_train_iterator

  def recording(cfg, spec, **kwargs):
    for batch in real(cfg, spec, **kwargs):
      seen.extend(int(v) for v in batch["image"][:, 0, 0, 0])
      yield batch

  monkeypatch.setattr(finetune.data, "build_train_iterator", recording)
  (row,) = tuner.run(subject.init_fn(0), 3)
  (subset,) = tuner.labelled_subsets()[0]
  assert row["num_labelled"] == len(subset["positions"]) == 16
  assert len(seen) == 6 * 8  # Three passes over the subset, no other example.
  assert set(seen) == set(subset["positions"].tolist())
  assert np.bincount(np.asarray(seen) % 4).tolist() == [12] * 4  # Class-balanced subset.


@pytest.mark.parametrize("source", ["npz", "folder"])
def test_train_indices_restrict_every_stream_path(source, tmp_path):
  """The restriction holds for numpy (npz) and tf.data (folder) batches, shard by shard."""
  if source == "folder":
    pytest.importorskip("tensorflow")
    root = _folder(tmp_path / "f")
    config = _config(source="folder", path=root, image_size=8)
    labels = data.split_labels(config, "train")
    ids = None
  else:
    config = _config(source="npz", path=_unique_npz(tmp_path), image_size=8)
    labels = data.split_labels(config, "train")
    ids = np.arange(len(labels))
  positions = np.array([1, 2, 5, 8, 13, 20])
  config.data.train_indices = positions
  config.batch_size, config.augment.on_device = 2, True
  got = []
  for pi in range(2):
    it = data.build_train_iterator(config, "raw", process_index=pi, process_count=2)
    batches = [next(it) for _ in range(6)]  # Two passes over this process's 3 examples.
    values = np.concatenate([b["label"] for b in batches])
    assert len(values) == 6
    got.append(np.concatenate([b["image"] for b in batches]) if ids is not None else values)
  if ids is not None:
    firsts = [set(g[:, 0, 0, 0].tolist()) for g in got]
    assert firsts[0] | firsts[1] == set(positions.tolist()) and not firsts[0] & firsts[1]
  else:
    assert sorted(np.concatenate(got).tolist()) == sorted(labels[positions].tolist() * 2)


def test_every_evaluator_streams_an_image_folder(tmp_path, monkeypatch):
  """kNN, both linear solvers, fine-tuning and the baseline on an image folder (tf.data),
  with every whole-split pixel loader disabled."""
  pytest.importorskip("tensorflow")
  from contrastive_jax.data import arrays, in_memory, pipeline  # pylint: disable=g-import-not-at-top

  def refuse(*args, **kwargs):
    raise AssertionError("a whole split was loaded into memory as pixels")

  for module, name in ((data, "load_arrays"), (pipeline, "load_arrays"),
                       (pipeline, "load_raw_shard"), (arrays, "eval_arrays"),
                       (in_memory, "load_shard"), (features_lib, "extract_features")):
    monkeypatch.setattr(module, name, refuse)
  config = _config(source="folder", path=_folder(tmp_path, per_class=6), image_size=8)
  subject = _subject(config)
  small = dict(batch_size=16, fractions=(0.5,))
  tune = dict(steps=2, train_batch_size=8, **small)
  evals = ml_collections.ConfigDict({
      "knn": presets.knn_eval(k=5, batch_size=16, max_train_examples=9),
      "linear": presets.linear_eval(steps=5, max_test_examples=6, **small),
      "sgd": presets.linear_eval(solver="sgd", sgd=dict(epochs=1.0, batch_size=8), **small),
      "finetune": presets.finetune_eval(**tune),
      "supervised": presets.supervised_eval(**tune)})
  state = subject.init_fn(0)
  rows = [r for e in common.from_config(evals, subject) for r in e.run(state, 1)]
  assert [r["evaluator"] for r in rows] == list(evals)
  assert [r["num_labelled"] for r in rows] == [9, 9, 9, 9, 9]
  assert all(0 <= r["top1"] <= r["top5"] <= 1 for r in rows)
