"""Builds the configured encoder (`config.model`) and resolves the compute dtype."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from contrastive_jax.models.resnet import ResNet
from contrastive_jax.models.resnet_v2 import PreActResNet
from contrastive_jax.models.wide_resnet import WideResNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# config.model.arch: "resnet" (models/resnet.py), "wide_resnet" (models/wide_resnet.py, with
# depth 6n + 4 and width the widen factor k) or "resnet_v2" (models/resnet_v2.py: CPC's
# pre-activation trunks, depth 161 or 101).
ARCHS = ("resnet", "wide_resnet", "resnet_v2")


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  if config.dtype not in DTYPES:
    raise ValueError(f"Unknown config.dtype {config.dtype!r}; valid: {sorted(DTYPES)}.")
  return DTYPES[config.dtype]


def build_encoder(config: ml_collections.ConfigDict, rngs: nnx.Rngs, *,
                  norm: str | None = None) -> ResNet | WideResNet | PreActResNet:
  """The encoder of `config.model`; `norm` overrides `config.model.norm` (CPC picks its own).

  Configs written before `arch`, `drop_path` and `dropout` existed (a finished run's
  config.json) build the ResNet without either, as they did."""
  m = config.model
  arch, drop, rate = m.get("arch", "resnet"), m.get("drop_path", 0.0), m.get("dropout", 0.0)
  if arch not in ARCHS:
    raise ValueError(f"Unknown config.model.arch {arch!r}; valid: {', '.join(ARCHS)}.")
  common = dict(norm=norm or m.norm, dtype=compute_dtype(config), bn_momentum=m.bn_momentum,
                drop_path=drop, rngs=rngs)
  if arch == "wide_resnet":
    if m.stem != "cifar":
      raise ValueError(f"config.model.stem={m.stem!r}: the wide ResNet has only the 3x3 "
                       "stride-1 stem; set config.model.stem='cifar'.")
    return WideResNet(m.depth, width=m.width, dropout=rate, **common)
  if rate:
    raise ValueError(f"config.model.dropout={rate!r}: dropout between a block's convolutions "
                     "is the wide ResNet's (arch='wide_resnet'); set it to 0 for the ResNet.")
  if arch == "resnet_v2":
    return PreActResNet(m.depth, width=m.width, stem=m.stem, **common)
  return ResNet(m.depth, width=m.width, stem=m.stem, **common)
