"""Patch-grid geometry shared by the CPC model, its loss and the host pipeline.

The grid: an image of H x W pixels is cut into patches of P x P pixels whose origins are S
pixels apart, G = (H - P) // S + 1 per side (`grid_size`); `extract_patches` cuts it on the
device, deterministically (evaluation, features). Directions: where CPC predictions go;
`orient(x, d)` turns grid axes 1 and 2 so that direction d points down the rows, and
`unorient` turns back. Pure JAX/NumPy, no TensorFlow, no model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DIRECTIONS = ("down", "up", "right", "left")


def orient(x: jax.Array | np.ndarray, direction: str) -> jax.Array | np.ndarray:
  """Turns grid axes 1 and 2 of `x` so that `direction` points down the rows.

  NumPy in, NumPy out: the loss orients constant index grids at trace time.
  """
  xp = np if isinstance(x, np.ndarray) else jnp
  if direction == "down":
    return x
  if direction == "up":
    return xp.flip(x, axis=1)
  if direction == "right":
    return xp.swapaxes(x, 1, 2)
  if direction == "left":
    return xp.flip(xp.swapaxes(x, 1, 2), axis=1)
  raise ValueError(f"Unknown CPC direction {direction!r}; valid ones are {DIRECTIONS}.")


def unorient(x: jax.Array | np.ndarray, direction: str) -> jax.Array | np.ndarray:
  """Inverse of `orient`: back from the oriented frame to image layout."""
  xp = np if isinstance(x, np.ndarray) else jnp
  if direction in ("down", "up", "right"):
    return orient(x, direction)  # These three are their own inverses.
  if direction == "left":
    return xp.swapaxes(xp.flip(x, axis=1), 1, 2)
  raise ValueError(f"Unknown CPC direction {direction!r}; valid ones are {DIRECTIONS}.")


def grid_size(image_hw: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
  """Patch grid (Gh, Gw) for an image; raises ValueError naming the config keys if it misfits.

  Trailing (H - P) % S rows (and columns) of pixels fall outside the grid.
  """
  height, width = image_hw
  if patch_size < 1 or stride < 1:
    raise ValueError(f"cpc.patch_size ({patch_size}) and cpc.patch_stride ({stride}) must be "
                     "positive.")
  if patch_size > min(height, width):
    raise ValueError(f"cpc.patch_size={patch_size} is larger than the {height}x{width} image "
                     f"(cpc.patch_stride={stride}); need patch_size <= image side.")
  grid = ((height - patch_size) // stride + 1, (width - patch_size) // stride + 1)
  if min(grid) < 2:
    raise ValueError(f"cpc.patch_size={patch_size} and cpc.patch_stride={stride} give a "
                     f"{grid[0]}x{grid[1]} grid on a {height}x{width} image; CPC needs at least "
                     "2 patches per side to predict anything.")
  return grid


def extract_patches(images: jax.Array, patch_size: int, stride: int) -> jax.Array:
  """Deterministic patch grid: [B, H, W, C] -> [B, Gh, Gw, P, P, C] (eval, features).

  Patch (i, j) is images[:, i*S : i*S + P, j*S : j*S + P]. Static slices rather than a gather,
  so XLA sees plain copies.
  """
  gh, gw = grid_size(images.shape[1:3], patch_size, stride)
  rows = []
  for i in range(gh):
    band = images[:, i * stride:i * stride + patch_size]
    rows.append(jnp.stack(
        [band[:, :, j * stride:j * stride + patch_size] for j in range(gw)], axis=1))
  return jnp.stack(rows, axis=1)
