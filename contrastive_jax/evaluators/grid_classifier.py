"""CPC v2's low-data protocol: a ResNet classifier g_phi on the grid of patch features.

The CPC v2 paper (Hénaff et al., 2020, "efficient classification") trains, for each labelled
subset (1% ... 100% of ImageNet), a ResNet on the spatial grid [Gh, Gw, D] of the encoder's
patch features, with the encoder frozen or fine-tuned jointly, and compares it with a
supervised ResNet trained on pixels with the same labels. A "grid_classifier" block does the
first: `mode="frozen"` (rows with protocol "grid_classifier": the encoder runs in inference
mode and its parameters stay bit for bit as pretrained) or `mode="finetune"` (protocol
"grid_classifier_finetune": encoder and g_phi trained together). The second is the
"supervised" block (`evaluators/finetune.py`, a ResNet on pixels from a random
initialisation): give both blocks the same fractions / per_class / index_file and seeds (the
eval configs do) and the two protocols pair up, subset by subset, in the tables and the
low-data curve. g_phi's depth and widths are block keys (`presets.grid_classifier_eval` cites
the paper's).

Design: the classifier is the `supervised` method with another model (`GridMethod`:
`models/grid_classifier.GridClassifier`, the encoder at `encoder` so the run's
`Method.finetune_spec` mapping copies its pretrained encoder in), trained exactly as
fine-tuning trains (this class extends `finetune.FineTune`): `step.make_train_step` on
batches of the training pipeline restricted to the subset's examples of the labelled split
(`config.data.train_indices`), cropped and flipped on the accelerator; accuracy streams the
evaluation split. So the classifier sees only the labelled subset, in both modes, through one
code path, and the optional learning-rate / weight-decay sweep holds out part of the subset.
In frozen mode the encoder's updates are set to zero (`optax.multi_transform`), so neither
gradients nor weight decay move it, and no gradient is computed through it. Precomputing the
frozen grids once would be cheaper per step, but it would give up the per-step crops and flips
(one grid per image) and be a second training path; this one costs a frozen forward pass of
the encoder per step.

Runs whose method has no patch grid (its `finetune_spec` sets no `patch_size`: every method
but CPC v2) give no row and a log line, so the default eval config lists the block for every
run. No TensorFlow here.
"""
from __future__ import annotations

import ml_collections
import optax
from absl import logging
from flax import nnx

from contrastive_jax import parallel
from contrastive_jax import step as step_lib
from contrastive_jax.evaluators import common, finetune
from contrastive_jax.methods.supervised import Supervised
from contrastive_jax.models import grid_classifier as grid_model
from contrastive_jax.models.factory import build_encoder, compute_dtype

MODES = ("frozen", "finetune")
PROTOCOLS = {"frozen": "grid_classifier", "finetune": "grid_classifier_finetune"}
# Block keys of g_phi, copied into the classifier run's config.grid_classifier.
MODEL_KEYS = ("mode", "depth", "width", "bottleneck", "norm")


class GridMethod(Supervised):
  """The `supervised` method (loss, crops, logits) with g_phi on the patch-feature grid.

  config.supervised.patch_size / patch_stride: the grid (CPC's `finetune_spec` sets them);
  config.grid_classifier: `MODEL_KEYS`.
  """

  name = "grid_classifier"

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    c, g, m = self.config.supervised, self.config.grid_classifier, self.config.model
    return grid_model.GridClassifier(
        build_encoder(self.config, rngs), self.num_classes, patch_size=int(c.patch_size),
        patch_stride=int(c.patch_stride), frozen=g.mode == "frozen", depth=int(g.depth),
        width=int(g.width), bottleneck=int(g.bottleneck), norm=g.norm,
        dtype=compute_dtype(self.config), bn_momentum=m.bn_momentum, rngs=rngs)


def freeze_encoder(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` on every top-level subtree but `encoder`, whose updates are exactly zero."""
  labels = lambda params: {k: "frozen" if k == "encoder" else "train"  # noqa: E731
                           for k in params}
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


class GridClassifier(finetune.FineTune):
  """Rows per (subset, seed) of g_phi on the evaluated encoder's patch-feature grid."""

  @classmethod
  def validate(cls, name: str, cfg: ml_collections.ConfigDict) -> None:
    # Fine-tuning's keys less from_head_layer (CPC has no projection head): check a copy.
    base = ml_collections.ConfigDict(cfg.to_dict())
    base.from_head_layer = 0
    super().validate(name, base)
    need = common.needs(name, cfg)
    need(cfg.mode in MODES, "mode", f"one of {MODES}")
    need(common.is_int(cfg.depth) and cfg.depth >= 0, "depth",
         "an integer >= 0 (residual blocks of g_phi)")
    for key in ("width", "bottleneck"):
      need(common.is_int(cfg[key]) and cfg[key] > 0, key, "a positive integer (channels)")
    need(cfg.norm in grid_model.NORMS, "norm", f"one of {grid_model.NORMS}")

  def __init__(self, name, cfg, subject, shared):  # pylint: disable=super-init-not-called
    common.Evaluator.__init__(self, name, cfg, subject, shared)
    self.spec = subject.method.finetune_spec(0)
    self.has_grid = int(self.spec.config.get("patch_size", 0)) > 0
    self.frozen = cfg.mode == "frozen"
    self.protocol = PROTOCOLS[cfg.mode]
    self._programs: dict[tuple, tuple] = {}
    if self.has_grid:
      parallel.check_batch_size(cfg.train_batch_size, subject.mesh)

  def supervised_config(self, steps: int, base_lr: float,
                        weight_decay: float) -> ml_collections.ConfigDict:
    c = super().supervised_config(steps, base_lr, weight_decay)
    c.grid_classifier = ml_collections.ConfigDict({k: self.cfg[k] for k in MODEL_KEYS})
    return c

  def method_of(self, config: ml_collections.ConfigDict) -> GridMethod:
    return GridMethod(config)

  def wrap_optimizer(self, tx):
    return freeze_encoder(tx) if self.frozen else tx

  def run(self, state: step_lib.TrainState, step: int) -> list[common.Row]:
    if not self.has_grid:
      logging.info("evals.%s: a %r run has no patch-feature grid (only CPC v2 has one); no "
                   "row.", self.name, self.subject.config.method)
      return []
    return super().run(state, step)
