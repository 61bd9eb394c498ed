"""Semi-supervised classification on the labelled few and the unlabelled many at once:
pseudo-label (Lee, 2013), MixMatch (Berthelot et al., 2019) and FixMatch (Sohn et al., 2020).

Each step has two streams (`inputs`): the unlabelled images, the main stream over the whole
training split (config.batch_size = mu x B of them, each process its own shard, epoch by epoch),
and B = config.batch_size // config.semi.mu labelled images drawn uniformly from the labelled
subset (`config.semi.label_fraction` / `per_class` / `index_file`, with `subset_seed`: the
evaluators' subsets for the same values), the same global draw on every process for a step.
Both come raw; the accelerator resizes them to config.data.image_size and augments them
(`ops/randaugment.py`): weak = flip + translation by up to `semi.translate` of the side, strong
= RandAugment with random magnitudes + Cutout (`semi.strong`).

The model is the `supervised` classifier (config.model, config.supervised), so `init_from` a
SimCLR, CPC v2 or SuNCEt run starts it from a pretrained encoder ("pretrain, then FixMatch").
An exponential moving average of the weights (`semi.ema_decay`; 0 turns it off) lives in
`TrainState.extra["ema"]`, checkpointed and resumed with the rest, and is what the evaluators
read when `semi.eval_ema` (FixMatch evaluates with decay 0.999).

config.semi (shared):
  mu                 unlabelled images per labelled one (FixMatch: 7).
  lambda_u           weight of the unlabelled term.
  ramp_steps         the weight grows linearly from 0 over this many steps (0: at once).
  label_fraction, per_class, index_file, subset_seed   the labelled subset.
  translate          the weak augmentation's largest shift, a fraction of the side (0.125).
  ema_decay, eval_ema
  strong             {num_ops, ops, cutout}: RandAugment's ops per image, the ops to draw
                     from (empty: FixMatch's 14), and Cutout's side.
Method blocks: config.pseudo_label {threshold, entropy_weight}; config.mixmatch {k,
temperature, alpha}; config.fixmatch {tau}.
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from contrastive_jax import input_spec
from contrastive_jax.losses import semi as semi_losses
from contrastive_jax.methods.base import Batch, LossContext, Metrics
from contrastive_jax.methods.supervised import Supervised, cross_entropy
from contrastive_jax.ops import augment as device_augment
from contrastive_jax.ops import randaugment


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _real(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


class SemiSupervised(Supervised):
  """What the three methods share: streams, device augmentation, the EMA weights."""

  @property
  def semi(self) -> ml_collections.ConfigDict:
    return self.config.semi

  @property
  def labelled_batch(self) -> int:
    return int(self.config.batch_size) // int(self.semi.mu)

  def validate(self) -> None:
    super().validate()
    need = self.block_checker("semi")
    s = self.semi
    need(_is_int(s.mu) and s.mu >= 1, "mu", "unlabelled images per labelled one, >= 1")
    b = self.config.batch_size
    if _is_int(b) and b % s.mu:
      raise ValueError(f"config.batch_size={b} (the unlabelled batch, mu x B) is not a multiple "
                       f"of config.semi.mu={s.mu}; set it to mu x the labelled batch, e.g. "
                       f"{s.mu * max(1, b // s.mu)}.")
    need(_real(s.lambda_u) and s.lambda_u >= 0, "lambda_u", "a weight >= 0")
    need(_is_int(s.ramp_steps) and s.ramp_steps >= 0, "ramp_steps", "an integer >= 0")
    need(_real(s.label_fraction) and 0 < s.label_fraction <= 1, "label_fraction",
         "the labelled share of the training split, in (0, 1]")
    need(_is_int(s.per_class) and s.per_class >= 0, "per_class",
         "labelled images per class, >= 0 (0: use label_fraction)")
    need(_real(s.translate) and 0 <= s.translate < 0.5, "translate",
         "the weak augmentation's largest shift, a fraction of the side in [0, 0.5)")
    need(_real(s.ema_decay) and 0 <= s.ema_decay < 1, "ema_decay",
         "the weight average's decay in [0, 1) (0: no average)")
    need(isinstance(s.eval_ema, bool), "eval_ema", "True or False")
    if s.eval_ema and not s.ema_decay:
      raise ValueError("config.semi.eval_ema=True evaluates the weight average, but "
                       "config.semi.ema_decay=0 keeps none; set ema_decay (e.g. 0.999).")
    if not self.augments_on_device:
      raise ValueError(f"The {self.name} method augments on the accelerator (weak and strong "
                       "views of raw images): set config.augment.on_device=True.")
    self.strong_spec()  # Bad RandAugment values fail here.

  def strong_spec(self) -> randaugment.RandAugmentSpec:
    s = self.semi.strong
    try:
      ops = tuple(s.get("ops", ())) or tuple(randaugment.OPS)
      return randaugment.RandAugmentSpec(num_ops=s.num_ops, ops=ops, cutout=float(s.cutout))
    except ValueError as e:
      raise ValueError(f"config.semi.strong: {e}") from None

  def inputs(self) -> input_spec.InputSpec:
    s = self.semi
    subset = input_spec.Subset(fraction=s.label_fraction, per_class=s.per_class,
                               index_file=s.index_file, seed=s.subset_seed)
    draw = input_spec.RandomDraw(subset, self.labelled_batch, seed=self.config.seed,
                                 key="config.semi")
    return input_spec.InputSpec((input_spec.Stream("raw"),
                                 input_spec.Stream("raw", prefix="labelled_", sampling=draw)))

  # Views.

  def _resized(self, batch: Batch, prefix: str = "") -> jax.Array:
    """Raw images of a stream, whole, resized to config.data.image_size, in [0, 1]."""
    return device_augment.resize_whole(batch[prefix + "image"], int(self.config.data.image_size),
                                       batch.get(prefix + "hw"))

  def weak(self, rng: jax.Array, images: jax.Array) -> jax.Array:
    return randaugment.weak_augment(rng, images, translate=float(self.semi.translate),
                                    flip=bool(self.config.augment.flip))

  def strong(self, rng: jax.Array, images: jax.Array) -> jax.Array:
    return randaugment.rand_augment(rng, self.weak(jax.random.fold_in(rng, 1), images),
                                    self.strong_spec())

  def unlabelled_weight(self, step: jax.Array) -> jax.Array:
    return float(self.semi.lambda_u) * semi_losses.ramp(step, int(self.semi.ramp_steps))

  # The weight average.

  def init_extra(self, params: Any, batch_stats: Any, rng: jax.Array) -> Any:
    del rng
    if not self.semi.ema_decay:
      return {}
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
    return {"ema": {"params": copy(params), "batch_stats": copy(batch_stats)}}

  def update_extra(self, extra: Any, produced: Any, params: Any, batch_stats: Any,
                   step: jax.Array, ctx: LossContext) -> Any:
    del produced, step, ctx
    if not self.semi.ema_decay:
      return extra
    d = float(self.semi.ema_decay)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, extra["ema"]["params"], params)
    # BatchNorm statistics are averages already: the average keeps the current ones.
    return {"ema": {"params": ema, "batch_stats": batch_stats}}

  def eval_variables(self, params: Any, batch_stats: Any, extra: Any) -> tuple[Any, Any]:
    if self.semi.eval_ema and extra and "ema" in extra:
      return extra["ema"]["params"], extra["ema"]["batch_stats"]
    return params, batch_stats

  # The loss.

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    del extra
    step = ctx.step if ctx.step is not None else jnp.zeros((), jnp.int32)
    x = self._resized(batch, "labelled_")
    u = self._resized(batch)
    loss, metrics = self.semi_loss(model, x, batch["labelled_label"], u, batch["label"], rng,
                                   step, ctx)
    return loss, metrics, None

  def semi_loss(self, model: nnx.Module, x: jax.Array, labels: jax.Array, u: jax.Array,
                u_labels: jax.Array, rng: jax.Array, step: jax.Array, ctx: LossContext
                ) -> tuple[jax.Array, Metrics]:
    raise NotImplementedError

  def _supervised_metrics(self, logits_x: jax.Array, labels: jax.Array) -> tuple[jax.Array,
                                                                                   Metrics]:
    ce = cross_entropy(logits_x, labels, self.num_classes,
                       float(self.config.supervised.label_smoothing))
    acc = jnp.mean((jnp.argmax(logits_x, -1) == labels).astype(jnp.float32))
    return ce, {"labelled_loss": ce, "labelled_accuracy": acc}


def _split(logits: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
  out, start = [], 0
  for n in sizes:
    out.append(logits[start:start + n])
    start += n
  return out


class FixMatch(SemiSupervised):
  """Sohn et al. (2020): CE on weak labelled views + lambda_u x the thresholded consistency
  of strong unlabelled views with the weak views' argmax. The three parts go through the
  model in one call, so BatchNorm sees the whole batch, as in the reference code."""
  name = "fixmatch"

  def validate(self) -> None:
    super().validate()
    tau = self.config.fixmatch.tau
    if not (_real(tau) and 0 < tau <= 1):
      raise ValueError(f"config.fixmatch.tau={tau!r} is invalid: the confidence threshold in "
                       "(0, 1] (FixMatch: 0.95).")

  def semi_loss(self, model, x, labels, u, u_labels, rng, step, ctx):
    del ctx
    k_x, k_w, k_s = jax.random.split(rng, 3)
    views = jnp.concatenate([self.weak(k_x, x), self.weak(k_w, u), self.strong(k_s, u)])
    logits_x, weak, strong = _split(model(views, self.noise_key(rng)),
                                    (x.shape[0], u.shape[0], u.shape[0]))
    l_x, metrics = self._supervised_metrics(logits_x, labels)
    l_u, m = semi_losses.fixmatch_loss(weak, strong, tau=float(self.config.fixmatch.tau),
                                       labels=u_labels)
    w = self.unlabelled_weight(step)
    return l_x + w * l_u, {**metrics, **m, "unlabelled_loss": l_u, "unlabelled_weight": w}


class PseudoLabel(SemiSupervised):
  """Lee (2013): CE on labelled views + a ramped weight x the CE of unlabelled views against
  the model's own confident argmax on them (computed in the same forward pass)."""
  name = "pseudo_label"

  def validate(self) -> None:
    super().validate()
    c = self.config.pseudo_label
    need = self.block_checker("pseudo_label")
    need(_real(c.threshold) and 0 <= c.threshold <= 1, "threshold",
         "a probability in [0, 1] (0: every unlabelled image counts)")
    need(_real(c.entropy_weight) and c.entropy_weight >= 0, "entropy_weight", "a weight >= 0")

  def semi_loss(self, model, x, labels, u, u_labels, rng, step, ctx):
    del ctx
    k_x, k_u = jax.random.split(rng)
    views = jnp.concatenate([self.weak(k_x, x), self.weak(k_u, u)])
    logits_x, logits_u = _split(model(views, self.noise_key(rng)), (x.shape[0], u.shape[0]))
    l_x, metrics = self._supervised_metrics(logits_x, labels)
    c = self.config.pseudo_label
    l_u, m = semi_losses.pseudo_label_loss(logits_u, threshold=float(c.threshold),
                                           entropy_weight=float(c.entropy_weight),
                                           labels=u_labels)
    w = self.unlabelled_weight(step)
    return l_x + w * l_u, {**metrics, **m, "unlabelled_loss": l_u, "unlabelled_weight": w}


class MixMatch(SemiSupervised):
  """Berthelot et al. (2019), Algorithm 1: K weak views of each unlabelled image, their
  average prediction (no gradient) sharpened with T as its guess; MixUp of the labelled and
  unlabelled views over the whole batch with lambda'; CE on the mixed labelled rows and
  lambda_u x squared error on the mixed unlabelled rows."""
  name = "mixmatch"

  def validate(self) -> None:
    super().validate()
    c = self.config.mixmatch
    need = self.block_checker("mixmatch")
    need(_is_int(c.k) and c.k >= 1, "k", "augmentations per unlabelled image, >= 1 (2)")
    need(_real(c.temperature) and c.temperature > 0, "temperature",
         "the sharpening temperature > 0 (0.5)")
    need(_real(c.alpha) and c.alpha > 0, "alpha", "the Beta distribution's parameter > 0 (0.75)")

  def semi_loss(self, model, x, labels, u, u_labels, rng, step, ctx):
    del ctx
    c = self.config.mixmatch
    k = int(c.k)
    keys = jax.random.split(rng, k + 2)
    xb = self.weak(keys[0], x)
    ub = jnp.concatenate([self.weak(keys[1 + i], u) for i in range(k)])  # [K * mu B]
    # The guess: the model's average prediction over the K views, without gradient. The
    # reference code computes it in training mode, in its own forward pass.
    probs = jax.nn.softmax(model(ub).astype(jnp.float32), -1)
    guess = jnp.mean(probs.reshape(k, u.shape[0], -1), 0)
    guess = jax.lax.stop_gradient(semi_losses.sharpen(guess, float(c.temperature)))
    metrics_u = {"confidence": jnp.mean(jnp.max(guess, -1)),
                 "pseudo_label_accuracy": jnp.mean(
                     (jnp.argmax(guess, -1) == u_labels).astype(jnp.float32))}
    w_x = jnp.concatenate([xb, ub])
    w_y = jnp.concatenate([jax.nn.one_hot(labels, self.num_classes), jnp.tile(guess, (k, 1))])
    mixed_x, mixed_y, lam = semi_losses.mixup(keys[-1], w_x, w_y, float(c.alpha))
    n = x.shape[0]
    logits = model(mixed_x, self.noise_key(keys[0]))
    l_x, l_u = semi_losses.mixmatch_loss(logits[:n], mixed_y[:n], logits[n:], mixed_y[n:])
    acc = jnp.mean((jnp.argmax(logits[:n], -1) == labels).astype(jnp.float32))
    w = self.unlabelled_weight(step)
    return l_x + w * l_u, {"labelled_loss": l_x, "labelled_accuracy": acc,
                           "unlabelled_loss": l_u, "unlabelled_weight": w, "lambda": jnp.mean(lam),
                           **metrics_u}
