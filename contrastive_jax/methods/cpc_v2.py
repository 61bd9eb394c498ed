"""CPC v2 (Hénaff et al., 2020): a ResNet on every patch, a causal context network, InfoNCE.

The model runs under `jax.jit` on the batch sharded over devices (so a BatchNorm ablation gets
global statistics for free); only the InfoNCE kernel runs under `jax.shard_map`, where each
device gathers every device's patch embeddings as negatives. Config keys: see
`contrastive_jax/models/cpc.py`; the encoder is `config.model` with `config.cpc.norm`.
"""
from __future__ import annotations

import functools

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

from contrastive_jax import input_spec
from contrastive_jax.losses.info_nce import OFFSET_REDUCTIONS, cpc_info_nce
from contrastive_jax.methods.base import Batch, FineTuneSpec, LossContext, Method, Metrics
from contrastive_jax.models import cpc
from contrastive_jax.models.factory import build_encoder, compute_dtype
from contrastive_jax.ops.patches import DIRECTIONS, grid_size


class CPCv2(Method):
  name = "cpc_v2"
  encoder_path = "patch_encoder/encoder"

  def validate(self) -> None:
    c = self.config.cpc
    size = self.config.data.image_size
    rows = min(grid_size((size, size), c.patch_size, c.patch_stride))
    if not 1 <= c.num_offsets < rows:
      raise ValueError(f"config.cpc.num_offsets={c.num_offsets} must be in [1, {rows - 1}]: the "
                       f"grid of config.data.image_size={size} has {rows} rows.")
    if not c.directions or any(d not in DIRECTIONS for d in c.directions):
      raise ValueError(f"config.cpc.directions={c.directions!r} must be a non-empty tuple of "
                       f"{DIRECTIONS}.")
    if c.norm not in ("layer", "batch"):
      raise ValueError(f"config.cpc.norm={c.norm!r} must be 'layer' or 'batch'.")
    if c.context_dim < 1 or c.context_layers < 0:
      raise ValueError(f"config.cpc.context_dim ({c.context_dim}) must be >= 1 and "
                       f"config.cpc.context_layers ({c.context_layers}) >= 0.")
    s = self._settings()
    if not 0 <= s["skip_offsets"] < c.num_offsets:
      raise ValueError(f"config.cpc.skip_offsets={s['skip_offsets']} must be in [0, "
                       f"config.cpc.num_offsets - 1 = {c.num_offsets - 1}]: offsets "
                       f"skip_offsets + 1 .. num_offsets are predicted.")
    if s["context"] not in cpc.CONTEXTS:
      raise ValueError(f"config.cpc.context={s['context']!r}; valid: {cpc.CONTEXTS}.")
    if s["target_dim"] < 0:
      raise ValueError(f"config.cpc.target_dim={s['target_dim']} must be >= 0 (0: score "
                       "predictions against z itself).")
    if not s["prediction_scale"] > 0:
      raise ValueError(f"config.cpc.prediction_scale={s['prediction_scale']} must be > 0 "
                       "(1: unscaled; the paper's 0.1).")
    if s["offset_reduction"] not in OFFSET_REDUCTIONS:
      raise ValueError(f"config.cpc.offset_reduction={s['offset_reduction']!r}; valid: "
                       f"{OFFSET_REDUCTIONS}.")
    if self.augments_on_device:
      raise ValueError("config.augment.on_device=True is not supported by method cpc_v2: its "
                       "patches are cut and augmented on the host; set it to False.")
    self.inputs()  # Checks config.cpc.augment.
    compute_dtype(self.config)

  def _settings(self) -> dict:
    """The prediction settings, with the values configs written before they existed had."""
    c = self.config.cpc
    return dict(skip_offsets=int(c.get("skip_offsets", 0)),
                target_dim=int(c.get("target_dim", 0)), context=c.get("context", "residual"),
                prediction_scale=float(c.get("prediction_scale", 1.0)),
                offset_reduction=c.get("offset_reduction", "mean"))

  def inputs(self) -> input_spec.InputSpec:
    c = self.config.cpc
    grid = input_spec.PatchGrid.from_settings(c.patch_size, c.patch_stride, c.get("augment"),
                                              key="config.cpc")
    return input_spec.InputSpec((input_spec.Stream("patch_grid", patch_grid=grid),))

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    c = self.config.cpc
    s = self._settings()
    encoder = build_encoder(self.config, rngs, norm=c.norm)
    return cpc.CPCModel(encoder, embed_dim=encoder.out_features, context_dim=c.context_dim,
                        context_layers=c.context_layers, num_offsets=c.num_offsets,
                        directions=tuple(c.directions), rngs=rngs,
                        skip_offsets=s["skip_offsets"], target_dim=s["target_dim"],
                        context=s["context"])

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           ctx: LossContext) -> tuple[jax.Array, Metrics]:
    del rng  # Augmentation happens on the host, per patch.
    targets, predictions = model(batch["patches"])
    s = self._settings()
    kernel = functools.partial(cpc_info_nce, axis_name=ctx.data_axis,
                               skip_offsets=s["skip_offsets"],
                               prediction_scale=s["prediction_scale"],
                               offset_reduction=s["offset_reduction"])
    spec = P(ctx.data_axis)
    return jax.shard_map(kernel, mesh=ctx.mesh, in_specs=(spec, spec), out_specs=(P(), P()))(
        targets, predictions)

  def features(self, model: nnx.Module, images: jax.Array) -> jax.Array:
    c = self.config.cpc
    return model.features(images, c.patch_size, c.patch_stride)

  def finetune_spec(self, from_head_layer: int = 0) -> FineTuneSpec:
    """The patch encoder, applied to the deterministic grid and mean-pooled, as `features`."""
    super().finetune_spec(from_head_layer)  # CPC has no projection head.
    c = self.config.cpc
    return FineTuneSpec(config={"patch_size": int(c.patch_size),
                                "patch_stride": int(c.patch_stride)},
                        model={"norm": c.norm},
                        mapping=((self.encoder_path, "encoder"),))
