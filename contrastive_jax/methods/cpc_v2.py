"""CPC v2 (Hénaff et al., 2020): a ResNet on every patch, a causal context network, InfoNCE.

The model runs under `jax.jit` on the batch sharded over devices (so a BatchNorm ablation gets
global statistics for free); only the InfoNCE kernel runs under `jax.shard_map`, where each
device gathers every device's patch embeddings as negatives. Config keys: see
`contrastive_jax/models/cpc.py`; the encoder is `config.model` with `config.cpc.norm`.

The patches come from the host already augmented (`contrastive_jax/data/patches.py`); the
paper's last per-patch augmentation, two random AutoAugment operations
(`config.cpc.augment.autoaugment_ops`), runs here on the accelerator, `autoaugment_patches`.
"""
from __future__ import annotations

import functools
import numbers

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

from contrastive_jax import input_spec
from contrastive_jax.losses.info_nce import OFFSET_REDUCTIONS, cpc_info_nce
from contrastive_jax.methods.base import Batch, FineTuneSpec, LossContext, Method, Metrics
from contrastive_jax.models import cpc
from contrastive_jax.models.factory import build_encoder, compute_dtype
from contrastive_jax.ops import randaugment
from contrastive_jax.ops.patches import DIRECTIONS, grid_size

# AutoAugment's operations (Cubuk et al., 2018) that ops/randaugment.py has (its list without
# Identity, which AutoAugment lacks; AutoAugment's Invert, Cutout and SamplePairing are not
# there), each with AutoAugment's range, in the units of ops/randaugment.py. The ranges are the
# RandAugment table's except the four enhance factors, [0.1, 1.9] in AutoAugment's code (they
# weaken or strengthen) against [0.05, 0.95]; translations are 0.3 of the side (AutoAugment's
# code: 10 px at 32 px).
AUTOAUGMENT_RANGES = {
    "AutoContrast": (0.0, 0.0), "Brightness": (0.1, 1.9), "Color": (0.1, 1.9),
    "Contrast": (0.1, 1.9), "Equalize": (0.0, 0.0), "Posterize": (4.0, 8.0),
    "Rotate": (-30.0, 30.0), "Sharpness": (0.1, 1.9), "ShearX": (-0.3, 0.3),
    "ShearY": (-0.3, 0.3), "Solarize": (0.0, 1.0), "TranslateX": (-0.3, 0.3),
    "TranslateY": (-0.3, 0.3)}
# The paper's count; True in a config picks it.
AUTOAUGMENT_OPS_DEFAULT = 2


def _autoaugment_spec(num_ops: int) -> randaugment.RandAugmentSpec:
  return randaugment.RandAugmentSpec(num_ops=num_ops, ops=tuple(AUTOAUGMENT_RANGES), cutout=0.0,
                                     ranges=tuple(AUTOAUGMENT_RANGES.values()))


def autoaugment_policy(rng: jax.Array, n: int, num_ops: int) -> tuple[jax.Array, jax.Array]:
  """For each of `n` patches, `num_ops` operations drawn uniformly from AUTOAUGMENT_RANGES
  (int32 [n, num_ops], indices into its keys) and a magnitude for each drawn uniformly from its
  range, whole bits for Posterize (float32 [n, num_ops]): `randaugment.sample_policy` with
  AutoAugment's ranges."""
  return randaugment.sample_policy(rng, n, _autoaugment_spec(num_ops))


def autoaugment_patches(rng: jax.Array, patches: jax.Array, num_ops: int) -> jax.Array:
  """`num_ops` AutoAugment operations on every patch of [B, Gh, Gw, P, P, 3] in [0, 1].

  Patch i of the flattened [B * Gh * Gw] grid takes row i of `autoaugment_policy(rng, ...)`,
  an independent draw per patch, and its operations run in order through
  `randaugment.apply_policy`; geometric ones fill uncovered pixels with grey 0.5. 0 operations:
  the patches as they are.
  """
  if not num_ops:
    return patches
  spec = _autoaugment_spec(num_ops)
  flat = patches.reshape(-1, *patches.shape[-3:])
  index, magnitude = randaugment.sample_policy(rng, flat.shape[0], spec)
  return randaugment.apply_policy(flat, index, magnitude, spec).reshape(patches.shape)


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
    self.autoaugment_ops()
    compute_dtype(self.config)

  def _settings(self) -> dict:
    """The prediction settings, with the values configs written before they existed had."""
    c = self.config.cpc
    return dict(skip_offsets=int(c.get("skip_offsets", 0)),
                target_dim=int(c.get("target_dim", 0)), context=c.get("context", "residual"),
                prediction_scale=float(c.get("prediction_scale", 1.0)),
                offset_reduction=c.get("offset_reduction", "mean"))

  def autoaugment_ops(self) -> int:
    """config.cpc.augment.autoaugment_ops: AutoAugment operations per patch (True: 2)."""
    value = (self.config.cpc.get("augment") or {}).get("autoaugment_ops", 0)
    if isinstance(value, bool):
      return AUTOAUGMENT_OPS_DEFAULT if value else 0
    if not (isinstance(value, numbers.Integral) and value >= 0):
      raise ValueError(f"config.cpc.augment.autoaugment_ops={value!r} must be a whole number "
                       f">= 0 of operations per patch (0: off; the paper's "
                       f"{AUTOAUGMENT_OPS_DEFAULT}).")
    return int(value)

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
    patches = batch["patches"]
    if ctx.train:  # The rest of the per-patch augmentation happened on the host.
      patches = autoaugment_patches(rng, patches, self.autoaugment_ops())
    targets, predictions = model(patches)
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
