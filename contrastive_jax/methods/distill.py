"""Distillation (SimCLRv2's third step, Chen et al., 2020b, section 2): a frozen teacher labels
the unlabelled images with its tempered class probabilities and a student learns them.

    loss = alpha * L_distill(student, teacher; t)  +  (1 - alpha) * CE(student, labels),

L_distill from `losses.distill` on the unlabelled images (the whole training split, crop and
flip as config.augment sets them, the teacher and the student seeing the same view), the
cross-entropy on a class-stratified labelled batch when alpha < 1 (SimCLRv2's "with labels"
variant). The student is the `supervised` method's classifier (config.model and
config.supervised); the teacher is another run's classifier (a fine-tuned run: `supervised`
with init_from a pretrained run, or an earlier `distill` run), whose architecture
`config.distill.teacher` states (arch, depth, width, stem, norm, hidden_dims; empty values are the
student's), so self-distillation (the same network) and big-to-small (a larger teacher) are
both configs of this method.

The teacher lives in `TrainState.extra["teacher"]`: loaded from
`config.distill.teacher.workdir` (`.step`) before step 0 (`Method.frozen_runs`), checked against
this config before anything compiles, evaluated in inference mode (running BatchNorm
statistics), never differentiated, outside the optimiser state, and checkpointed and resumed
with the rest, so a distilled run evaluates and resumes without its teacher's directory.
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from contrastive_jax import input_spec
from contrastive_jax.losses.distill import distillation_loss
from contrastive_jax.methods.base import Batch, LossContext, Metrics
from contrastive_jax.methods.supervised import Supervised, cross_entropy
from contrastive_jax.models.classifier import Classifier
from contrastive_jax.models.factory import build_encoder, compute_dtype
from contrastive_jax.ops import augment as device_augment
from contrastive_jax.ops import randaugment

# Keys of config.distill.teacher that override the student's config.model ("" / 0: the same).
TEACHER_MODEL_KEYS = ("arch", "depth", "width", "stem", "norm")


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


class Distill(Supervised):
  name = "distill"

  @property
  def block(self) -> ml_collections.ConfigDict:
    return self.config.distill

  def teacher_model_config(self) -> dict[str, Any]:
    """The teacher's config.model: the student's, with config.distill.teacher's set keys."""
    model = dict(self.config.model)
    for key in TEACHER_MODEL_KEYS:
      value = self.block.teacher.get(key, "")
      if value not in ("", 0, 0.0, None):
        model[key] = value
    return model

  def validate(self) -> None:
    super().validate()
    need = self.block_checker("distill")
    c = self.block
    need(isinstance(c.temperature, numbers.Real) and c.temperature > 0, "temperature",
         "a temperature > 0 (SimCLRv2 uses 1)")
    need(isinstance(c.alpha, numbers.Real) and 0 <= c.alpha <= 1, "alpha",
         "the distillation term's weight in [0, 1] (1 - alpha weighs the labelled term)")
    t = c.teacher
    if not t.workdir:
      raise ValueError("config.distill.teacher.workdir is empty: set it to the work directory "
                       "of a finished classifier run (a fine-tuned teacher).")
    if not (_is_int(t.step) and t.step >= -1):
      raise ValueError(f"config.distill.teacher.step={t.step!r} is invalid: a checkpoint step, "
                       "or -1 for the latest.")
    if not all(_is_int(d) and d > 0 for d in t.hidden_dims):
      raise ValueError(f"config.distill.teacher.hidden_dims={t.hidden_dims!r} is invalid: "
                       "positive layer widths (the teacher's hidden layers).")
    need(isinstance(c.min_confidence, numbers.Real) and 0 <= c.min_confidence < 1,
         "min_confidence", "a teacher probability in [0, 1) below which rows are left out")
    need(isinstance(c.noise.dropout, numbers.Real) and 0 <= c.noise.dropout < 1,
         "noise.dropout", "a dropout rate in [0, 1) before the student's classifier")
    if c.noise.get("randaugment", False) and not c.noise.augment:
      raise ValueError("config.distill.noise.randaugment=True adds RandAugment to the student's "
                       "noisy view: set config.distill.noise.augment=True too.")
    if c.noise.augment and not self.augments_on_device:
      raise ValueError("config.distill.noise.augment=True draws the student's noisy view and the "
                       "teacher's clean one on the device: set config.augment.on_device=True.")
    if c.alpha < 1:
      need(_is_int(c.images_per_class) and c.images_per_class >= 1, "images_per_class",
           "labelled images per class per step, >= 1")
      need(_is_int(c.classes_per_batch) and c.classes_per_batch >= 1, "classes_per_batch",
           "classes per labelled batch, >= 1")
      need(isinstance(c.label_fraction, numbers.Real) and 0 < c.label_fraction <= 1,
           "label_fraction", "the labelled share of the training split, in (0, 1]")
      if self.augments_on_device:
        raise ValueError("config.augment.on_device=True with config.distill.alpha < 1: the "
                         "labelled batch is augmented on the host; set on_device=False, or "
                         "alpha=1 to distil on unlabelled images alone.")
      if self.dataset is not None:
        need(c.classes_per_batch <= self.dataset.num_classes, "classes_per_batch",
             f"at most the number of classes ({self.dataset.num_classes})")
      labelled = c.classes_per_batch * c.images_per_class
      need(labelled % jax.device_count() == 0, "images_per_class",
           f"classes_per_batch x images_per_class = {labelled} must be divisible by the "
           f"device count ({jax.device_count()})")

  # The teacher: another run, frozen in extra["teacher"].

  def frozen_runs(self) -> dict[str, tuple[str, int]]:
    return {"teacher": (str(self.block.teacher.workdir), int(self.block.teacher.step))}

  def check_frozen_run(self, name: str, config: ml_collections.ConfigDict) -> None:
    """The teacher run's config against this one: a classifier, of the configured
    architecture, trained at this input size (its class count is checked on loading)."""
    where = f"config.distill.teacher.workdir={self.block.teacher.workdir!r}"
    if config.get("method") not in ("supervised", "distill"):
      raise ValueError(f"{where} is a {config.get('method')!r} run; the teacher must be a "
                       "classifier: a 'supervised' run (fine-tuned with init_from) or a "
                       "'distill' run.")
    size, teacher_size = self.config.data.image_size, config.data.image_size
    if size != teacher_size:
      raise ValueError(f"{where} was trained at config.data.image_size={teacher_size}, this "
                       f"run feeds {size}; use the teacher's input size.")
    want = self.teacher_model_config()
    # Runs from before `model.arch` existed are ResNets.
    theirs = {k: config.model.get(k, "resnet" if k == "arch" else None)
              for k in TEACHER_MODEL_KEYS}
    differ = [f"model.{k}: teacher run {theirs[k]!r} vs configured {want.get(k)!r}"
              for k in TEACHER_MODEL_KEYS if theirs[k] != want.get(k)]
    hidden = tuple(config.supervised.hidden_dims)
    if hidden != tuple(self.block.teacher.hidden_dims):
      differ.append(f"supervised.hidden_dims: teacher run {hidden} vs configured "
                    f"{tuple(self.block.teacher.hidden_dims)}")
    if differ:
      raise ValueError(f"{where} does not match config.distill.teacher: "
                       + "; ".join(differ) + ". Set config.distill.teacher.<key> to the "
                       "teacher's values.")

  def build_teacher(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.teacher_model_config()
    encoder = build_encoder(ml_collections.ConfigDict(
        {"model": m, "dtype": self.config.dtype}), rngs)
    return Classifier(encoder, self.num_classes,
                      hidden_dims=tuple(self.block.teacher.hidden_dims),
                      hidden_batch_norm=bool(self.config.supervised.hidden_batch_norm),
                      dtype=compute_dtype(self.config), bn_momentum=m["bn_momentum"],
                      rngs=rngs)

  def _teacher_def(self) -> nnx.GraphDef:
    if not hasattr(self, "_teacher_graphdef"):
      teacher = nnx.eval_shape(lambda: self.build_teacher(nnx.Rngs(0)))
      teacher.eval()  # Inference mode: running statistics, nothing updated.
      self._teacher_graphdef = nnx.split(teacher, nnx.Param, nnx.BatchStat)[0]
    return self._teacher_graphdef

  def init_extra(self, params: Any, batch_stats: Any, rng: jax.Array) -> Any:
    del params, batch_stats
    # Placeholders of the teacher's shapes; the loop loads the teacher run over them.
    teacher = self.build_teacher(nnx.Rngs(params=rng))
    _, t_params, t_stats = nnx.split(teacher, nnx.Param, nnx.BatchStat)
    return {"teacher": {"params": nnx.to_pure_dict(t_params),
                        "batch_stats": nnx.to_pure_dict(t_stats)}}

  def teacher_logits(self, extra: Any, images: jax.Array) -> jax.Array:
    t = extra["teacher"]
    teacher = nnx.merge(self._teacher_def(), t["params"], t["batch_stats"])
    return jax.lax.stop_gradient(teacher(images))

  # Inputs and loss.

  def inputs(self) -> input_spec.InputSpec:
    main = input_spec.Stream("raw" if self.augments_on_device else "single_view")
    c = self.block
    if c.alpha >= 1:
      return input_spec.InputSpec((main,))
    subset = input_spec.Subset(fraction=c.label_fraction, per_class=c.per_class,
                               index_file=c.index_file, seed=c.subset_seed)
    sampling = input_spec.ClassStratified(subset, c.classes_per_batch, c.images_per_class,
                                          seed=self.config.seed, key="config.distill")
    return input_spec.InputSpec(
        (main, input_spec.Stream("single_view", prefix="labelled_", sampling=sampling)))

  def _views(self, batch: Batch, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(student's images, teacher's images). With noise.augment, the student sees a view drawn
    with config.augment on the device and the teacher the clean image (Noisy Student: the
    teacher labels un-noised inputs); otherwise both see the same crop and flip."""
    images = batch["image"]
    if self.block.noise.augment:
      size = int(self.config.data.image_size)
      hw = batch.get("hw")
      spec = device_augment.AugmentSpec.from_config(self.config.augment)
      noisy = device_augment.simclr_views(rng, images, spec, size=size, hw=hw)
      if self.block.noise.get("randaugment", False):  # Noisy Student's RandAugment, N = 2.
        noisy = randaugment.rand_augment(jax.random.fold_in(rng, 2), noisy,
                                         randaugment.RandAugmentSpec(num_ops=2, cutout=0.0))
      return noisy, device_augment.resize_whole(images, size, hw)
    if self.augments_on_device:
      images = self.device_crop(images, rng, batch.get("hw"))
    return images, images

  def student_logits(self, model: nnx.Module, images: jax.Array, rng: jax.Array) -> jax.Array:
    """The classifier's logits, with dropout (noise.dropout) before its last layer."""
    rate = float(self.block.noise.dropout)
    depth_key = self.noise_key(rng)  # Stochastic depth (config.model.drop_path).
    if not rate:
      return model(images, depth_key)
    h = model.head(model.features(images, depth_key)).astype(jnp.float32)
    keep = jax.random.bernoulli(rng, 1.0 - rate, h.shape)
    return model.classifier(jnp.where(keep, h / (1.0 - rate), 0.0)).astype(jnp.float32)

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    del ctx
    view_rng, dropout_rng = jax.random.split(rng)
    student_images, teacher_images = self._views(batch, view_rng)
    c = self.block
    loss, metrics = distillation_loss(
        self.student_logits(model, student_images, dropout_rng),
        self.teacher_logits(extra, teacher_images), temperature=float(c.temperature),
        hard=bool(c.hard_labels), min_confidence=float(c.min_confidence),
        balance=bool(c.balance))
    metrics = {**metrics, "distill_loss": loss}
    if c.alpha < 1:
      logits = model(batch["labelled_image"])
      labels = batch["labelled_label"]
      ce = cross_entropy(logits, labels, self.num_classes,
                         float(self.config.supervised.label_smoothing))
      metrics["labelled_loss"] = ce
      metrics["labelled_accuracy"] = jnp.mean(
          (jnp.argmax(logits, -1) == labels).astype(jnp.float32))
      loss = c.alpha * loss + (1.0 - c.alpha) * ce
    return loss, metrics, None
