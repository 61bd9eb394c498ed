"""SimCLR + SuNCEt: config errors, the switch, 1 device == 8 devices, and a short real run."""
import jax
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import data, parallel, train
from contrastive_jax.evaluators import plots
from contrastive_jax.methods import get_method
from contrastive_jax.methods.base import LossContext
from contrastive_jax.methods.simclr import SimCLR
from tests import helpers
from tests.helpers import two_view_batch
from tests.test_suncet_data import suncet_config


@pytest.mark.parametrize("key,value,match", [
    ("label_fraction", 0.0, r"config.suncet.label_fraction=0.0 is invalid.*\(0, 1\]"),
    ("label_fraction", 1.5, r"config.suncet.label_fraction=1.5 is invalid"),
    ("weight", -0.5, r"config.suncet.weight=-0.5 is invalid.*>= 0"),
    ("classes_per_batch", 12, r"config.suncet.classes_per_batch=12 is invalid.*classes \(10\)"),
    ("images_per_class", 1, r"config.suncet.images_per_class=1 is invalid.*>= 2"),
    ("images_per_class", 3, r"images_per_class.*= 12 must be divisible by the device"),
    ("temperature", 0.0, r"config.suncet.temperature=0.0 is invalid"),
    ("supervised_epochs", -1.0, r"config.suncet.supervised_epochs=-1.0 is invalid"),
])
def test_validate_names_the_key(key, value, match):
  config = suncet_config("tiny")
  if key == "classes_per_batch":
    config.suncet.images_per_class = 4  # 48 support rows: divisible by the 8 devices.
  config.suncet[key] = value
  with pytest.raises(ValueError, match=match):
    get_method(config, data.dataset_info(config)).validate()


def test_validate_accepts_the_presets():
  for preset in ("tiny", "digits"):
    config = suncet_config(preset)
    get_method(config, data.dataset_info(config)).validate()


def _batch(seed=0, support=8):
  """A two-view batch, with a support batch of `support` rows (4 classes) unless 0."""
  rng = np.random.default_rng(seed + 100)
  b = two_view_batch(16, seed=seed)
  if support:
    b["support_image"] = rng.uniform(size=(support, 8, 8, 3)).astype(np.float32)
    b["support_label"] = np.tile(np.arange(4, dtype=np.int32), support // 4)
  return b


def _run(config, num_devices, batches):
  return helpers.run_steps(config, num_devices, batches, 8)


@pytest.fixture(scope="module")
def one_device_run():
  config = suncet_config("tiny", **{"suncet.weight": 0.5})
  batches = [_batch(seed=t, support=8 if t < 2 else 0) for t in range(3)]  # 2 on, then off.
  return config, batches, _run(config, 1, batches)


def test_switch_and_loss_decomposition(one_device_run):
  config, _, (_, history) = one_device_run
  assert [float(m["suncet_on"]) for m in history] == [1.0, 1.0, 0.0]
  for m in history[:2]:
    assert m["suncet_anchors"] == 8 and m["suncet_loss"] > 0
    np.testing.assert_allclose(m["loss"], m["ntxent_loss"] + 0.5 * m["suncet_loss"], rtol=1e-6)
  off = history[2]
  assert off["suncet_loss"] == 0 and off["loss"] == off["ntxent_loss"]


def test_devices_agree_with_one_device(one_device_run):
  """Same global batch and support on 8 devices: same losses, parameters and statistics."""
  config, batches, (ref_state, ref_history) = one_device_run
  state, history = _run(config, 8, batches)
  for key in ("loss", "suncet_loss", "suncet_nn_acc", "ntxent_loss"):
    np.testing.assert_allclose([m[key] for m in history], [m[key] for m in ref_history],
                               rtol=1e-5, atol=1e-7, err_msg=key)
  for tree in ("params", "batch_stats"):
    ref_leaves = jax.tree_util.tree_leaves_with_path(getattr(ref_state, tree))
    for (path, ref), got in zip(ref_leaves, jax.tree.leaves(getattr(state, tree))):
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")


def test_switched_off_loss_is_simclrs():
  config = suncet_config("tiny")
  method, simclr = get_method(config), SimCLR(config)
  model = method.build_model(nnx.Rngs(0))
  ctx = LossContext(mesh=parallel.make_mesh(1))
  batch = jax.tree.map(jax.numpy.asarray, _batch())
  plain = {k: batch[k] for k in ("view1", "view2", "label")}
  got, metrics = method.loss(model, plain, jax.random.key(0), ctx)
  want, _ = simclr.loss(model, plain, jax.random.key(0), ctx)
  assert metrics["suncet_on"] == 0
  np.testing.assert_allclose(got, want, rtol=1e-6)
  on, metrics = method.loss(model, batch, jax.random.key(0), ctx)
  assert metrics["suncet_on"] == 1 and not np.isclose(on, got)


@pytest.mark.slow
def test_tiny_run_trains_switches_off_and_probes(tmp_path):
  config = suncet_config("tiny")  # 3 steps, SuNCEt on for the first 2.
  config.async_checkpointing = False
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  assert results["step"] == 3
  assert set(helpers.probe_rows(results)) == {"pretrained", "random_init"}
  assert 0.0 <= helpers.knn_top1(results) <= 1.0
  scalars = plots.read_scalars(workdir)
  assert [v for _, v in scalars["train/suncet_on"]] == [1.0, 1.0, 0.0]
  assert all(np.isfinite(v) and v > 0 for _, v in scalars["train/suncet_loss"][:2])
