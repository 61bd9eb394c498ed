"""BYOL (Grill et al., 2020): bootstrap your own latent, without negatives.

An online network (encoder, projector, predictor) predicts the target network's projection of
the other view; the target (encoder and projector) is an exponential moving average of the
online one with BYOL's cosine momentum schedule from `byol.momentum` (0.996) to 1
(`methods.momentum`). The loss (`losses.momentum.byol_loss`) is 2 - 2 cos(p, z') summed over
both orderings of the views (the paper's eq. 3, L + L~). BatchNorm is global (the paper's
cross-replica BN); projector and predictor are Linear-BN-ReLU-Linear MLPs (4096 -> 256).
Each view is its own forward pass through each network, as in the reference implementation.
"""
from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from contrastive_jax.losses.momentum import byol_loss
from contrastive_jax.methods.base import Batch, LossContext, Metrics
from contrastive_jax.methods.momentum import EncoderProjector, MomentumMethod
from contrastive_jax.models.factory import build_encoder


class BYOL(MomentumMethod):
  name = "byol"
  target_paths = ("encoder", "head")

  def validate(self) -> None:
    self.validate_momentum()
    self.validate_predictor_heads()

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    encoder = build_encoder(self.config, rngs)
    head = self.mlp(encoder.out_features, self.block.proj_dims, rngs=rngs)
    return EncoderProjector(encoder, head, self.mlp(head.out_features, self.block.pred_dims,
                                                    rngs=rngs))

  def build_target(self, rngs: nnx.Rngs) -> nnx.Module:
    encoder = build_encoder(self.config, rngs)
    return EncoderProjector(encoder, self.mlp(encoder.out_features, self.block.proj_dims,
                                              rngs=rngs))

  def loss_with_extra(self, model: nnx.Module, extra: Any, batch: Batch, rng: jax.Array,
                      ctx: LossContext) -> tuple[jax.Array, Metrics, Any]:
    x1, x2 = self.views(batch, rng)
    p1, p2 = model.predict(x1), model.predict(x2)
    target = self.target(extra)
    z1 = jax.lax.stop_gradient(target.project(x1))
    z2 = jax.lax.stop_gradient(target.project(x2))
    loss_a, metrics_a = byol_loss(p1, z2)
    loss_b, metrics_b = byol_loss(p2, z1)
    metrics = {"cosine": (metrics_a["cosine"] + metrics_b["cosine"]) / 2}
    return loss_a + loss_b, metrics, {"target_batch_stats": self.target_stats(target)}
