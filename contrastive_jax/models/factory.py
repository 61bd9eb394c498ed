"""Builds the configured encoder (`config.model`) and resolves the compute dtype."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from contrastive_jax.models.resnet import ResNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  if config.dtype not in DTYPES:
    raise ValueError(f"Unknown config.dtype {config.dtype!r}; valid: {sorted(DTYPES)}.")
  return DTYPES[config.dtype]


def build_encoder(config: ml_collections.ConfigDict, rngs: nnx.Rngs, *,
                  norm: str | None = None) -> ResNet:
  """ResNet from `config.model`; `norm` overrides `config.model.norm` (CPC picks its own)."""
  m = config.model
  return ResNet(m.depth, width=m.width, stem=m.stem, norm=norm or m.norm,
                dtype=compute_dtype(config), bn_momentum=m.bn_momentum, rngs=rngs)
