"""Defaults shared by every experiment config, and checks that run before any compilation."""
from __future__ import annotations

import ml_collections

from contrastive_jax import optim


def base_config() -> ml_collections.ConfigDict:
  """Everything except the method, model and data, which each experiment sets."""
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  c.dtype = "float32"  # Compute dtype; "bfloat16" keeps float32 parameters and loss.
  c.batch_size = 256  # Global, over all devices and processes.
  c.num_epochs = 100
  c.num_steps = -1  # > 0 overrides num_epochs.
  c.optim = optim.default_config()
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  c.skip_nonfinite_updates = False  # True: skip a NaN/Inf update instead of stopping.
  c.eval = ml_collections.ConfigDict(dict(
      linear_probe=True,  # After pretraining: linear probe on frozen features.
      probe_random_init=True,  # Same probe on a randomly initialised encoder, for reference.
      probe_train_split="",  # Labelled split for the probe; "" means config.data.train_split.
      probe_max_train_examples=50_000,
      probe_steps=200,
      batch_size=256,
      # kNN monitor (evaluation/knn.py): weighted kNN accuracy every knn_every_steps (0: off),
      # on class-balanced caps of the probe train split (the bank) and the eval split (0: all).
      knn_every_steps=0,
      knn_k=200,
      knn_temperature=0.1,
      knn_max_train_examples=10_000,
      knn_max_test_examples=10_000,
  ))
  return c


def num_train_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  if config.num_steps > 0:
    return int(config.num_steps)
  return max(1, int(config.num_epochs * num_train_examples // config.batch_size))


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects bad generic values with the key and what is allowed."""
  def need(ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ValueError(f"config.{key}={config[key] if '.' not in key else _get(config, key)!r} "
                       f"is invalid: {allowed}.")

  need(isinstance(config.batch_size, int) and config.batch_size > 0, "batch_size",
       "a positive integer (global batch over all devices)")
  need(config.num_steps > 0 or config.num_epochs > 0, "num_epochs",
       "> 0 (or set num_steps > 0)")
  need(_get(config, "optim.base_lr") > 0, "optim.base_lr", "must be > 0")
  need(_get(config, "optim.weight_decay") >= 0, "optim.weight_decay", "must be >= 0")
  need(0 <= _get(config, "optim.momentum") < 1, "optim.momentum", "must be in [0, 1)")
  need(_get(config, "optim.warmup_steps") >= 0, "optim.warmup_steps", "must be >= 0")
  need(_get(config, "optim.name") in optim.OPTIMIZERS, "optim.name", f"one of {optim.OPTIMIZERS}")
  need(_get(config, "optim.lr_scaling") in optim.LR_SCALINGS, "optim.lr_scaling",
       f"one of {optim.LR_SCALINGS}")
  need(config.log_every_steps > 0, "log_every_steps", "must be > 0")
  need(config.checkpoint_every_steps > 0, "checkpoint_every_steps", "must be > 0")
  need(config.keep_checkpoints > 0, "keep_checkpoints", "must be > 0")


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node
