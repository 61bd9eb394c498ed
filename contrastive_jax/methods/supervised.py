"""Supervised classification: an encoder plus a linear classifier, trained with cross-entropy.

The one supervised model of the codebase: a run of its own (`configs/supervised.py`), the
fine-tuning and supervised-baseline evaluators (`evaluators/finetune.py`, which initialise it
from a pretrained run with `init_from`), and the supervised ceiling of the benchmarks.

config.supervised:
  num_classes        classes of the classifier; 0 takes the dataset's.
  label_smoothing    epsilon of label smoothing (Szegedy et al., 2016), in [0, 1).
  hidden_dims        Linear (+BN) + ReLU layers between encoder and classifier: the first
                     layers of a SimCLR projection head when fine-tuning from it (SimCLRv2).
  hidden_batch_norm  BatchNorm in those layers.
  patch_size, patch_stride  > 0: features are the mean over the deterministic patch grid of
                     the encoder's patch features (CPC v2's encoder).
  zero_init          zero-initialised classifier (the first steps fit it without pushing noise
                     into a pretrained encoder).

Inputs: labelled single views, augmented on the host with `config.augment` (set its colour
probabilities to 0 for crop + flip), or, with `config.augment.on_device=True`, raw images
that the step crops (`crop_scale`, `crop_ratio`) and flips on the accelerator.
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from contrastive_jax import input_spec
from contrastive_jax.methods.base import Batch, LossContext, Method, Metrics
from contrastive_jax.models.classifier import Classifier
from contrastive_jax.models.factory import build_encoder, compute_dtype
from contrastive_jax.ops import augment as device_augment


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy against one-hot labels smoothed by `label_smoothing`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


class Supervised(Method):
  name = "supervised"

  @property
  def num_classes(self) -> int:
    n = int(self.config.supervised.num_classes)
    if n > 0:
      return n
    if self.dataset is None:
      raise ValueError("config.supervised.num_classes=0 takes the dataset's class count, but no "
                       "dataset was given; set config.supervised.num_classes.")
    return int(self.dataset.num_classes)

  def validate(self) -> None:
    need = self.block_checker("supervised")
    c = self.config.supervised

    smoothing = c.label_smoothing
    need(isinstance(smoothing, numbers.Real) and 0 <= smoothing < 1, "label_smoothing",
         "must be in [0, 1)")
    need(isinstance(c.num_classes, int) and c.num_classes >= 0, "num_classes",
         "an integer >= 0 (0: the dataset's class count)")
    need(all(isinstance(d, int) and d > 0 for d in c.hidden_dims), "hidden_dims",
         "positive layer widths")
    need(isinstance(c.patch_size, int) and c.patch_size >= 0 and isinstance(c.patch_stride, int)
         and (c.patch_size == 0 or c.patch_stride > 0), "patch_size",
         "0 (whole images), or > 0 with patch_stride > 0")
    if self.num_classes < 2:
      raise ValueError(f"The classifier needs at least 2 classes, got {self.num_classes} "
                       "(config.supervised.num_classes, or the dataset's).")
    compute_dtype(self.config)

  def inputs(self) -> input_spec.InputSpec:
    return input_spec.single("raw" if self.augments_on_device else "single_view")

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    c, m = self.config.supervised, self.config.model
    return Classifier(build_encoder(self.config, rngs), self.num_classes,
                      hidden_dims=tuple(c.hidden_dims), hidden_batch_norm=c.hidden_batch_norm,
                      patch_size=c.patch_size, patch_stride=c.patch_stride,
                      zero_init=c.zero_init, dtype=compute_dtype(self.config),
                      bn_momentum=m.bn_momentum, rngs=rngs)

  def device_crop(self, images: jax.Array, rng: jax.Array,
                  hw: jax.Array | None = None) -> jax.Array:
    """Crop (`config.augment.crop`'s sampler, inside each image's valid region `hw`) and flip
    raw images to [B, S, S, 3], S = config.data.image_size."""
    a = self.config.augment
    size = self.config.data.image_size if "data" in self.config else None
    return device_augment.random_resized_crop_flip(
        rng, images, scale=tuple(a.crop_scale), ratio=tuple(a.crop_ratio), flip=bool(a.flip),
        crop=a.get("crop", "inception"), size=size, hw=hw)

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    del ctx  # Under jit on the sharded batch, BatchNorm statistics are global already.
    images = batch["image"]
    if self.augments_on_device:
      images = self.device_crop(images, rng, batch.get("hw"))
    logits = model(images, self.noise_key(rng))
    labels = batch["label"]
    loss = cross_entropy(logits, labels, self.num_classes,
                         float(self.config.supervised.label_smoothing))
    accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return loss, {"accuracy": accuracy}

  def noise_key(self, rng: jax.Array) -> jax.Array | None:
    """A key for the encoder's stochastic depth and dropout (config.model.drop_path /
    dropout), or None when both are off, so runs without them draw nothing new."""
    m = self.config.model
    if not (m.get("drop_path", 0.0) or m.get("dropout", 0.0)):
      return None
    return jax.random.fold_in(rng, 0x5D)

  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    return model.features(images)

  def logits(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    """Class scores [B, C]; `model` in eval mode for evaluation."""
    return model(images)
