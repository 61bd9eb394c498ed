"""The supervised method: its loss against numpy, 1 vs 8 devices, a tiny run, and init_from."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive_jax import parallel, train
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from contrastive_jax.methods.supervised import cross_entropy
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERVISED = os.path.join(ROOT, "configs", "supervised.py")
SIMCLR = os.path.join(ROOT, "configs", "simclr.py")


def _config(*args):
  config = helpers.parse_config("config", SUPERVISED, "tiny", *args)
  config.unlock()
  config.async_checkpointing = False
  return config


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = rng.integers(0, 4, 6)
  target = np.full((6, 4), smoothing / 4)
  target[np.arange(6), labels] += 1 - smoothing
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  want = -(target * log_p).sum(1).mean()
  got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 4, smoothing)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def _batches(n):
  rng = np.random.default_rng(1)
  return [{"image": rng.uniform(size=(16, 8, 8, 3)).astype(np.float32),
           "label": rng.integers(0, 10, 16).astype(np.int32)} for _ in range(n)]


def test_one_device_equals_eight_and_learns():
  config = _config("--config.supervised.num_classes=10", "--config.augment.on_device=True",
                   "--config.supervised.zero_init=False")
  batches = _batches(2)
  ref_state, ref = helpers.run_steps(config, 1, batches, 8)
  state, got = helpers.run_steps(config, 8, batches, 8)
  np.testing.assert_allclose([m["loss"] for m in got], [m["loss"] for m in ref], rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref_state.params),
                          jax.tree.leaves(state.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  _, fit = helpers.run_steps(config, 1, batches[:1] * 10, 10)
  assert fit[-1]["loss"] < fit[0]["loss"] - 0.3


@pytest.mark.parametrize("arg, match", [
    ("--config.supervised.label_smoothing=1.0", r"config.supervised.label_smoothing=1.0"),
    ("--config.supervised.num_classes=1", r"at least 2 classes"),
    ("--config.supervised.patch_size=4", r"config.supervised.patch_size=4"),
])
def test_bad_values_are_named(arg, match):
  config = _config(arg)
  with pytest.raises(ValueError, match=match):
    train.plan(config)


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
  config = helpers.parse_config("config", SIMCLR, "tiny")
  config.unlock()
  config.update(num_steps=2, async_checkpointing=False)
  config.evals.linear.at_end = False
  config.evals.knn.every_steps = 0
  workdir = str(tmp_path_factory.mktemp("simclr"))
  train.train_and_evaluate(config, workdir)
  return workdir


def test_tiny_run_initialised_from_a_pretrained_encoder(simclr_run, tmp_path):
  """init_from copies the SimCLR encoder into the classifier before step 0 (step 0 is a
  checkpoint of it, compared leaf by leaf), then trains the whole classifier."""
  source = helpers.checkpoint_steps(simclr_run)[-1]
  config = _config(f"--config.init_from.workdir={simclr_run}", "--config.num_steps=2",
                   "--config.checkpoint_every_steps=1")
  workdir = str(tmp_path / "supervised")
  seen = {}
  real = step_lib.transplant

  def spy(target, state, mapping, tx):
    seen["mapping"] = mapping
    out = real(target, state, mapping, tx)
    seen["encoder"] = jax.device_get(out.params["encoder"])
    seen["source"] = jax.device_get(state.params["encoder"])
    return out

  with pytest.MonkeyPatch.context() as m:
    m.setattr(step_lib, "transplant", spy)
    results = train.train_and_evaluate(config, workdir)
  assert seen["mapping"] == (("encoder", "encoder"),) and source == 2
  for a, b in zip(jax.tree.leaves(seen["encoder"]), jax.tree.leaves(seen["source"])):
    np.testing.assert_array_equal(a, b)
  assert results["step"] == 2 and np.isfinite(results["train"]["loss"])
  assert 0 <= results["train"]["accuracy"] <= 1


def test_init_from_an_encoder_of_another_shape_names_the_parameters(simclr_run, tmp_path):
  config = _config(f"--config.init_from.workdir={simclr_run}", "--config.model.width=0.25")
  with pytest.raises(ValueError, match=r"does not match the configured one: encoder/.*source "):
    train.train_and_evaluate(config, str(tmp_path / "bad"))


def test_method_features_are_the_encoders():
  config = _config("--config.supervised.num_classes=10")
  method = get_method(config)
  defs = step_lib.model_defs(method)
  state = step_lib.create_train_state(method, optax.sgd(0.1), 0, parallel.make_mesh(1))
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(4, 8, 8, 3)), jnp.float32)
  model = defs.merge(state, train=False)
  np.testing.assert_allclose(method.features(model, images), model.encoder(images), rtol=1e-6)
  assert method.logits(model, images).shape == (4, 10)
