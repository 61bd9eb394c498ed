"""The SimCLR paper's linear evaluation: a linear head trained by SGD on a frozen encoder.

A "linear" block with `solver="sgd"` trains, per labelled subset and seed, a zero-initialised
linear classifier on the eval-mode features of the frozen encoder (running BatchNorm
statistics, no gradient into the encoder). Its images come through the training pipeline,
restricted to the subset (`config.data.train_indices`) and sharded over processes and
devices: raw images, randomly cropped (`sgd.crop_scale`) and flipped (`sgd.flip`) on the
accelerator when `sgd.augment`. The optimiser is momentum SGD (Nesterov by default) or LARS
(`sgd.optimizer`), at `sgd.base_lr` x batch / 256 with a cosine decay and no warmup, for
`sgd.epochs` passes over the subset. The head is scored on the eval-mode features of the
centre-cropped evaluation split, the same features the L-BFGS solver uses. Defaults:
`presets.linear_eval`.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from contrastive_jax import data, optim, parallel
from contrastive_jax.evaluators import common, metrics
from contrastive_jax.evaluators import features as features_lib
from contrastive_jax.ops import augment as device_augment

OPTIMIZERS = ("sgd", "lars")


def validate(name: str, cfg: ml_collections.ConfigDict) -> None:
  """Checks the `sgd` keys of a linear block that uses this solver."""
  s = cfg.sgd
  need = common.needs(f"{name}.sgd", s)
  need(isinstance(s.epochs, (int, float)) and s.epochs > 0, "epochs", "must be > 0")
  need(common.is_int(s.batch_size) and s.batch_size > 0, "batch_size",
       "a positive integer (global)")
  need(isinstance(s.base_lr, (int, float)) and s.base_lr > 0, "base_lr", "must be > 0")
  need(s.lr_scaling in optim.LR_SCALINGS, "lr_scaling", f"one of {optim.LR_SCALINGS}")
  need(isinstance(s.momentum, (int, float)) and 0 <= s.momentum < 1, "momentum",
       "must be in [0, 1)")
  need(isinstance(s.nesterov, bool), "nesterov", "True or False")
  need(isinstance(s.weight_decay, (int, float)) and s.weight_decay >= 0, "weight_decay",
       "must be >= 0")
  need(s.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
  need(isinstance(s.augment, bool), "augment", "True or False")
  need(isinstance(s.flip, bool), "flip", "True or False")
  scale = tuple(s.crop_scale)
  need(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "crop_scale",
       "a pair (low, high) with 0 < low <= high <= 1")


def _optimizer(s: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
  schedule = optim.build_schedule(
      ml_collections.ConfigDict(dict(base_lr=float(s.base_lr), lr_scaling=s.lr_scaling,
                                     schedule="cosine", warmup_steps=0)),
      int(s.batch_size), steps)
  if s.optimizer == "lars":
    return optax.lars(schedule, weight_decay=float(s.weight_decay),
                      weight_decay_mask=optim.decay_mask, trust_ratio_mask=optim.decay_mask,
                      momentum=float(s.momentum), nesterov=bool(s.nesterov))
  return optax.chain(optax.add_decayed_weights(float(s.weight_decay), mask=optim.decay_mask),
                     optax.sgd(schedule, momentum=float(s.momentum),
                               nesterov=bool(s.nesterov)))


def _make_step(features_fn, tx: optax.GradientTransformation, s: ml_collections.ConfigDict,
               image_size: int, crop: str = "inception"):
  augment, scale, flip = bool(s.augment), tuple(s.crop_scale), bool(s.flip)

  def step(head, opt_state, encoder, batch, key):
    images = batch["image"]
    if augment:  # The pretraining's crop sampler (the SimCLR code probes with its own).
      images = device_augment.random_resized_crop_flip(key, images, scale=scale, flip=flip,
                                                       crop=crop, size=image_size,
                                                       hw=batch.get("hw"))
    elif "hw" in batch:  # Image files: a canvas; the centre square of the image inside it.
      images = device_augment.center_crops(images, size=image_size, hw=batch["hw"])
    else:
      images = device_augment.to_float01(images)
    if images.shape[1:3] != (image_size, image_size):  # npz arrays keep their stored size.
      images = jax.image.resize(images, (images.shape[0], image_size, image_size, 3),
                                "bicubic")
    feats = jax.lax.stop_gradient(features_fn(encoder, images)).astype(jnp.float32)
    labels = batch["label"]

    def loss_fn(h):
      logits = feats @ h["w"] + h["b"]
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    loss, grads = jax.value_and_grad(loss_fn)(head)
    updates, opt_state = tx.update(grads, opt_state, head)
    return optax.apply_updates(head, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


_head_logits = jax.jit(lambda head, x: x @ head["w"] + head["b"])


def train_config(evaluator: common.Evaluator, positions: np.ndarray,
                 seed: int) -> ml_collections.ConfigDict:
  """The evaluated run's data config, reading the labelled subset at `positions` as raw
  images in batches of `sgd.batch_size`."""
  c = ml_collections.ConfigDict(evaluator.subject.config.to_dict())
  c.data.train_split = evaluator.subject.labelled_split
  c.data.train_indices = np.asarray(positions, np.int64)
  c.batch_size = int(evaluator.cfg.sgd.batch_size)
  c.seed = int(seed)
  c.augment.on_device = True  # Raw images: the step crops and flips them on the accelerator.
  return c


def train_and_score(evaluator: common.Evaluator, encoder: Any,
                    test: features_lib.Features, positions: np.ndarray,
                    seed: int) -> dict[str, float]:
  """Trains a head on the subset at `positions` of the labelled split; its top-1/top-5 on
  `test` (eval-mode features of the evaluation split)."""
  s = evaluator.cfg.sgd
  mesh = evaluator.subject.mesh
  parallel.check_batch_size(int(s.batch_size), mesh)
  steps = max(1, math.ceil(s.epochs * len(positions) / s.batch_size))
  tx = _optimizer(s, steps)
  config = train_config(evaluator, positions, seed)
  step = _make_step(evaluator.subject.features_fn, tx, s, int(config.data.image_size),
                    config.augment.get("crop", "inception"))
  dim = int(test.x.shape[1])
  replicated = parallel.replicated(mesh)
  head = jax.device_put({"w": jnp.zeros((dim, evaluator.num_classes)),
                         "b": jnp.zeros((evaluator.num_classes,))}, replicated)
  opt_state = jax.jit(tx.init, out_shardings=replicated)(head)
  batches = data.build_train_iterator(config, "raw")
  key, wait = jax.random.key(seed), features_lib.Backpressure()
  for t in range(steps):
    batch = parallel.shard_batch(next(batches), mesh)
    head, opt_state, loss = step(head, opt_state, encoder, batch, jax.random.fold_in(key, t))
    wait(loss)
  return metrics.sharded_topk(_head_logits(head, test.x), test.labels, test.index >= 0)
