"""CPC v2 model pieces (Hénaff et al., 2020): patch grid, patch encoder, context network, heads.

An image is cut into a grid of overlapping patches; an encoder f maps every patch on its own to
one vector z (its feature map mean-pooled); a causal context network g reads the grid of z and
yields c(i, j) that has seen only rows <= i; linear heads W_k predict z(i + k, j) = W_k c(i, j).
The loss (`contrastive_jax/losses/info_nce.py`) scores each prediction against every patch of
the global batch. Other directions than top-to-bottom turn the grid (`info_nce.orient`) and use
their own context network and heads.

Config keys read by the CPC method (`config.cpc.*`):
  patch_size      P, patch side in pixels (ImageNet recipe: 80; 32x32 images: 8).
  patch_stride    S, pixels between patch origins (ImageNet: 36; 32x32 images: 4). The grid is
                  G = (H - P) // S + 1 per side; 260 px -> 6x6, 32 px -> 7x7.
  num_offsets     K, predict rows i + 1 .. i + K (must be < grid rows).
  skip_offsets    S, offsets 1 .. S are not predicted: rows i + S + 1 .. i + K are (the paper's
                  pseudo-code: steps_to_ignore=2, steps_to_predict=3, i.e. only k = 3).
  directions      tuple of "down", "up", "right", "left" (where predictions go; "down" first).
  context         "residual" (ours: a 1x1 projection to Dc, pre-activation LayerNorm blocks with
                  a causal 3x3 convolution) or "pixelcnn" (the paper's pseudo-code: residual
                  blocks on the D-channel z itself, each 1x1, ReLU, 1x3, causal 2x1, ReLU, 1x1
                  back to D; a ReLU at the end; no normalisation).
  context_dim     channels Dc of the context network (pixelcnn: of each block's inner layers;
                  the paper's 256).
  context_layers  residual blocks in the context network (the paper's pixelcnn: 5).
  target_dim      0: score predictions against z; > 0: against a learnt 1x1 projection of z to
                  this many channels (the paper's target_dim=64), the heads predicting those.
  prediction_scale, offset_reduction: the loss's (`contrastive_jax/losses/info_nce.py`).
  norm            "layer" (default: the paper found BatchNorm hurt) or "batch", for the encoder.
  augment.*       per-patch host augmentation, see `contrastive_jax/data/patches.py`.

ImageNet recipe (paper, appendix): resize to 300x300, random 260x260 crop, 6x6 grid of 80x80
patches. 260 = 80 + 5 * 36, so the stride is 36 (44 px overlap) and the grid covers the crop
exactly. (CPC v1 used a 7x7 grid of 64x64 patches at stride 32 on a 256x256 crop.)

Normalisation and causality: statistics shared across patches leak the content of "future"
patches into present ones, which is why the context network uses only per-position LayerNorm
whatever `norm` says, and why BatchNorm in the encoder (`norm="batch"`) is an ablation.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

# Re-exported: callers read the patch geometry from here.
from contrastive_jax.ops.patches import DIRECTIONS, extract_patches, grid_size, orient  # noqa


class PatchEncoder(nnx.Module):
  """Applies an encoder to every patch on its own and mean-pools each to one vector z.

  The encoder maps [N, P, P, C] to a feature map [N, h, w, D] (or already pooled [N, D]).
  """

  def __init__(self, encoder: nnx.Module):
    self.encoder = encoder

  def __call__(self, patches: jax.Array) -> jax.Array:
    """[B, Gh, Gw, P, P, C] -> z [B, Gh, Gw, D]."""
    b, gh, gw = patches.shape[:3]
    features = self.encoder(patches.reshape(b * gh * gw, *patches.shape[3:]))
    if features.ndim == 4:
      features = features.mean(axis=(1, 2))
    elif features.ndim != 2:
      raise ValueError(f"CPC encoder must return [N, h, w, D] or [N, D], got {features.shape}.")
    return features.reshape(b, gh, gw, features.shape[-1])


class CausalConv(nnx.Module):
  """Conv whose output row i sees input rows i - kh + 1 .. i only (all columns in reach).

  Padding kh - 1 rows on top and none below is the row-shifted form of a PixelCNN mask: it
  costs no wasted multiply-adds on masked-out weights.
  """

  def __init__(self, in_dim: int, out_dim: int, kernel_size: tuple[int, int] = (3, 3), *,
               rngs: nnx.Rngs):
    kh, kw = kernel_size
    if kw % 2 != 1:
      raise ValueError(f"CausalConv needs an odd kernel width, got {kw}.")
    self.conv = nnx.Conv(in_dim, out_dim, kernel_size,
                         padding=((kh - 1, 0), (kw // 2, kw // 2)), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class ContextBlock(nnx.Module):
  """Pre-activation residual block: LN, ReLU, causal conv, LN, ReLU, 1x1 conv."""

  def __init__(self, dim: int, kernel_size: tuple[int, int], *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.conv1 = CausalConv(dim, dim, kernel_size, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.conv2 = nnx.Conv(dim, dim, (1, 1), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.relu(self.norm1(x)))
    h = self.conv2(jax.nn.relu(self.norm2(h)))
    return x + h


class ContextNetwork(nnx.Module):
  """Autoregressive context g over rows: z [B, R, C, D] -> c [B, R, C, Dc].

  c[:, i, j] depends on z[:, :i + 1] only (rows above and the current row, every column).
  Works in the oriented frame; `CPCModel` turns the grid for other directions.
  """

  def __init__(self, in_dim: int, context_dim: int, num_layers: int,
               kernel_size: tuple[int, int] = (3, 3), *, rngs: nnx.Rngs):
    self.proj = nnx.Conv(in_dim, context_dim, (1, 1), rngs=rngs)
    self.blocks = nnx.List([ContextBlock(context_dim, kernel_size, rngs=rngs)
                            for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(context_dim, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    c = self.proj(z)
    for block in self.blocks:
      c = block(c)
    return jax.nn.relu(self.norm(c))


class PixelCNNBlock(nnx.Module):
  """The paper's context block (appendix pseudo-code): 1x1, ReLU, 1x3 within the row, one row
  of zeros on top and a 2x1 'VALID' conv (so row i reads rows i - 1 and i), ReLU, 1x1 back to
  the residual width, added to the input."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(dim, hidden, (1, 1), rngs=rngs)
    self.conv2 = nnx.Conv(hidden, hidden, (1, 3), padding=((0, 0), (1, 1)), rngs=rngs)
    self.conv3 = nnx.Conv(hidden, hidden, (2, 1), padding=((1, 0), (0, 0)), rngs=rngs)
    self.conv4 = nnx.Conv(hidden, dim, (1, 1), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv2(jax.nn.relu(self.conv1(x)))
    h = self.conv4(jax.nn.relu(self.conv3(h)))
    return x + h


class PixelCNNContext(nnx.Module):
  """The paper's context network: `num_layers` `PixelCNNBlock`s on z itself, then a ReLU;
  z [B, R, C, D] -> c [B, R, C, D], c[:, i] depending on z[:, :i + 1] only."""

  def __init__(self, dim: int, hidden: int, num_layers: int, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([PixelCNNBlock(dim, hidden, rngs=rngs) for _ in range(num_layers)])

  def __call__(self, z: jax.Array) -> jax.Array:
    c = z
    for block in self.blocks:
      c = block(c)
    return jax.nn.relu(c)


CONTEXTS = ("residual", "pixelcnn")


class PredictionHeads(nnx.Module):
  """W_k for k = S + 1 .. K: z_hat_k = W_k c, from context rows 0 .. R - k - 1 (those with a
  target); S = `skip_offsets`."""

  def __init__(self, context_dim: int, embed_dim: int, num_offsets: int, *, rngs: nnx.Rngs,
               skip_offsets: int = 0):
    if not 0 <= skip_offsets < num_offsets:
      raise ValueError(f"cpc.skip_offsets={skip_offsets} must be in [0, cpc.num_offsets - 1 = "
                       f"{num_offsets - 1}]: at least one offset must be predicted.")
    self.skip_offsets = skip_offsets
    self.heads = nnx.List([nnx.Linear(context_dim, embed_dim, rngs=rngs)
                           for _ in range(num_offsets - skip_offsets)])

  def __call__(self, c: jax.Array) -> list[jax.Array]:
    rows = c.shape[1]
    largest = self.skip_offsets + len(self.heads)
    if largest >= rows:
      raise ValueError(f"cpc.num_offsets={largest} must be smaller than the number of "
                       f"grid rows ({rows}) in every direction.")
    return [head(c[:, :rows - k])
            for k, head in enumerate(self.heads, start=self.skip_offsets + 1)]


class CPCModel(nnx.Module):
  """Patch encoder plus, per direction, a context network and prediction heads.

  `model(patches)` returns the targets (z [B, Gh, Gw, D], or its projection) in image layout and
  {direction: [z_hat_{S+1} .. z_hat_K]} in each direction's oriented frame, the inputs of
  `cpc_info_nce`.
  """

  def __init__(self, encoder: nnx.Module, *, embed_dim: int, context_dim: int,
               context_layers: int, num_offsets: int,
               directions: Sequence[str] = ("down",),
               kernel_size: tuple[int, int] = (3, 3), rngs: nnx.Rngs,
               skip_offsets: int = 0, target_dim: int = 0, context: str = "residual"):
    if not directions or len(set(directions)) != len(directions):
      raise ValueError(f"cpc.directions must be distinct and non-empty, got {directions}.")
    for direction in directions:
      if direction not in DIRECTIONS:
        raise ValueError(f"cpc.directions has {direction!r}; valid ones are {DIRECTIONS}.")
    if num_offsets < 1:
      raise ValueError(f"cpc.num_offsets must be >= 1, got {num_offsets}.")
    if context not in CONTEXTS:
      raise ValueError(f"cpc.context={context!r}; valid: {CONTEXTS}.")
    if target_dim < 0:
      raise ValueError(f"cpc.target_dim={target_dim} must be >= 0 (0: score against z).")
    self.directions = tuple(directions)
    self.patch_encoder = PatchEncoder(encoder)
    # The paper's 1x1 convolution of the targets is a linear map of each z on its own.
    self.target_proj = nnx.data(nnx.Linear(embed_dim, target_dim, rngs=rngs)
                                if target_dim else None)
    if context == "pixelcnn":
      make_context = lambda: PixelCNNContext(  # noqa: E731
          embed_dim, context_dim, context_layers, rngs=rngs)
      context_out = embed_dim
    else:
      make_context = lambda: ContextNetwork(  # noqa: E731
          embed_dim, context_dim, context_layers, kernel_size, rngs=rngs)
      context_out = context_dim
    self.context = nnx.Dict({d: make_context() for d in self.directions})
    self.heads = nnx.Dict({
        d: PredictionHeads(context_out, target_dim or embed_dim, num_offsets, rngs=rngs,
                           skip_offsets=skip_offsets)
        for d in self.directions})

  def embed(self, patches: jax.Array) -> jax.Array:
    """[B, Gh, Gw, P, P, C] -> z [B, Gh, Gw, D]."""
    return self.patch_encoder(patches)

  def predict(self, z: jax.Array) -> dict[str, list[jax.Array]]:
    """z [B, Gh, Gw, D] -> {direction: [z_hat_k of shape [B, R - k, C, D]]}, oriented."""
    return {d: self.heads[d](self.context[d](orient(z, d))) for d in self.directions}

  def targets(self, z: jax.Array) -> jax.Array:
    """What predictions are scored against: z, or its projection when `target_dim` > 0."""
    return z if self.target_proj is None else self.target_proj(z)

  def __call__(self, patches: jax.Array) -> tuple[jax.Array, dict[str, list[jax.Array]]]:
    """Patches -> (targets [B, Gh, Gw, D or target_dim], predictions), the loss's inputs."""
    z = self.embed(patches)
    return self.targets(z), self.predict(z)

  def features(self, images: jax.Array, patch_size: int, stride: int) -> jax.Array:
    """Frozen features [B, D]: z mean-pooled over the deterministic patch grid (CPC v1 probe)."""
    return self.embed(extract_patches(images, patch_size, stride)).mean(axis=(1, 2))
