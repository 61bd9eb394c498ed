"""Optimisers (optax): LARS, SGD with momentum, AdamW; warmup + cosine; batch-scaled learning rate.

Weight decay and LARS's trust ratio apply to weight matrices and kernels only: biases and
normalisation scales/offsets (every 1-D parameter) are excluded, as in the SimCLR paper.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("lars", "sgd", "sgd_nesterov", "adamw")
SCHEDULES = ("cosine", "constant", "fixmatch_cosine")
LR_SCALINGS = ("linear", "sqrt", "none")


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str) -> float:
  """SimCLR's rule: `linear` is base_lr * B / 256, `sqrt` is base_lr * sqrt(B)."""
  if scaling == "linear":
    return base_lr * batch_size / 256.0
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if scaling == "none":
    return base_lr
  raise ValueError(f"Unknown config.optim.lr_scaling {scaling!r}; valid: {LR_SCALINGS}.")


def decay_mask(params: Any) -> Any:
  """True for parameters that take weight decay and trust-ratio scaling (ndim > 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def build_schedule(cfg: ml_collections.ConfigDict, batch_size: int,
                   total_steps: int) -> Callable[[Any], Any]:
  peak = scaled_learning_rate(cfg.base_lr, batch_size, cfg.lr_scaling)
  warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  if cfg.schedule == "cosine":
    if warmup == 0:
      return optax.cosine_decay_schedule(peak, max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                              end_value=0.0)
  if cfg.schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  if cfg.schedule == "fixmatch_cosine":
    # FixMatch (Sohn et al., 2020, section 4): lr * cos(7 pi k / (16 K)), which ends at
    # cos(7 pi / 16) ~ 0.2 of the peak instead of 0; linear warmup first if set.
    decay = lambda k: peak * jnp.cos(7 * jnp.pi * k / (16 * max(total_steps, 1)))  # noqa: E731
    if warmup == 0:
      return decay
    return lambda k: jnp.where(k < warmup, peak * k / warmup, decay(k))
  raise ValueError(f"Unknown config.optim.schedule {cfg.schedule!r}; valid: {SCHEDULES}.")


def build_optimizer(cfg: ml_collections.ConfigDict, batch_size: int, total_steps: int
                    ) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
  """Returns (optimizer, learning-rate schedule) from `config.optim`."""
  schedule = build_schedule(cfg, batch_size, total_steps)
  if cfg.name == "lars":
    tx = optax.lars(schedule, weight_decay=cfg.weight_decay, weight_decay_mask=decay_mask,
                    trust_coefficient=cfg.trust_coefficient, eps=0.0,
                    trust_ratio_mask=decay_mask, momentum=cfg.momentum)
  elif cfg.name in ("sgd", "sgd_nesterov"):
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                     optax.sgd(schedule, momentum=cfg.momentum,
                               nesterov=cfg.name == "sgd_nesterov"))
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask)
  else:
    raise ValueError(f"Unknown config.optim.name {cfg.name!r}; valid: {OPTIMIZERS}.")
  if cfg.get("grad_clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
