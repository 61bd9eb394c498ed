"""Optimiser construction: masks, learning-rate scaling and schedules."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive_jax import optim, presets


def test_learning_rate_scaling_rules():
  assert optim.scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.1, 4096, "none") == 0.1
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.scaled_learning_rate(0.1, 256, "cubic")


def test_warmup_then_cosine_to_zero():
  cfg = presets.optim_config()
  cfg.update(base_lr=1.0, lr_scaling="none", warmup_steps=10)
  sched = optim.build_schedule(cfg, 256, 100)
  assert float(sched(0)) == 0.0
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(5)) == pytest.approx(0.5)
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)
  assert float(sched(55)) == pytest.approx(0.5, abs=0.02)
  cfg.warmup_steps = 0
  sched = optim.build_schedule(cfg, 256, 100)
  assert float(sched(0)) == pytest.approx(1.0)
  assert float(sched(50)) == pytest.approx(0.5, abs=1e-6)
  cfg.schedule = "constant"
  assert float(optim.build_schedule(cfg, 256, 100)(7)) == pytest.approx(1.0)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_biases_and_norm_params_get_no_weight_decay(name):
  """With zero gradients, only the decay term moves parameters: 1-D ones must stay put."""
  cfg = presets.optim_config()
  cfg.update(name=name, base_lr=0.1, lr_scaling="none", weight_decay=0.5, warmup_steps=0,
             schedule="constant")
  tx, _ = optim.build_optimizer(cfg, 256, 10)
  params = {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,)), "scale": jnp.ones((4,))}
  grads = {k: jnp.zeros_like(v) for k, v in params.items()}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["bias"], params["bias"])
  np.testing.assert_array_equal(new["scale"], params["scale"])
  assert float(jnp.max(new["kernel"])) < 1.0


def test_lars_trust_ratio_skips_biases():
  """LARS scales a kernel's step by its trust ratio; a bias takes the plain lr * grad."""
  cfg = presets.optim_config()
  cfg.update(name="lars", base_lr=1.0, lr_scaling="none", weight_decay=0.0, momentum=0.0,
             schedule="constant", trust_coefficient=0.001)
  tx, _ = optim.build_optimizer(cfg, 256, 10)
  params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}
  grads = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["bias"], -2.0, rtol=1e-6)
  np.testing.assert_allclose(updates["kernel"], -0.001 * 6.0 / 4.0 * 2.0, rtol=1e-5)


def test_unknown_optimizer_lists_valid_ones():
  cfg = presets.optim_config()
  cfg.name = "adagrad"
  with pytest.raises(ValueError, match="lars"):
    optim.build_optimizer(cfg, 256, 10)
