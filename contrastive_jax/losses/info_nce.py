"""The CPC v2 InfoNCE loss over a grid of patch embeddings (Hénaff et al., 2020).

This module owns the loss kernel and the convention that ties predictions to targets: the grid
orientation of each prediction direction. It is a pure function of arrays; the model
(`contrastive_jax/models/cpc.py`) produces its inputs.

Conventions
  z: [B, Gh, Gw, D] patch embeddings in image layout (row 0 is the top of the image).
  direction: where predictions go. "down" (top-to-bottom, the paper's default), "up", "right"
    (left-to-right) or "left". `orient(x, d)` turns the grid so that direction d points down
    the rows; in that frame the context at row i has seen rows <= i and predicts row i + k.
  predictions: {direction: [z_hat_1, ..., z_hat_K]} where z_hat_k has shape [B, R - k, C, D]
    in the oriented frame ([R, C] = the oriented grid) and z_hat_k[:, i, j] predicts the
    oriented z[:, i + k, j], i.e. it comes from the context at row i.

Loss: for every prediction the logits are its dot products with every patch embedding of every
image in the global batch (all positions, all images; the positive is one of them, all others are
negatives), and the loss is the cross-entropy of the true patch. It is averaged over positions
for each (direction, k), so every offset counts equally although larger offsets have fewer target
rows, then reduced over the (direction, k) segments: their mean by default, or their sum
(`offset_reduction="sum"`), which is the paper's pseudo-code (Hénaff et al., 2020, appendix:
`loss += cross_entropy(...)` once per offset, each a mean over its positions). The two differ by
the constant number of segments.

The paper's prediction settings (its appendix pseudo-code, `CPC(latents, target_dim=64,
emb_scale=0.1, steps_to_ignore=2, steps_to_predict=3)`), each a keyword here or in the model:
  skip_offsets       its steps_to_ignore: the nearest offsets are not predicted, so
                     predictions[d][j] is offset k = skip_offsets + 1 + j. With 80 px patches at
                     stride 36 rows i + 1 and i + 2 still overlap row i; i + 3 does not.
  prediction_scale   its emb_scale: predictions are multiplied by it before scoring (a fixed
                     inverse temperature of the logits).
  target dimension   its 1x1 convolution of the targets: the model's (`CPCModel(target_dim=)`),
                     whose output this function receives as `z`.

Memory: with `axis_name`, each replica gathers the keys, [B * Gh * Gw, D], and holds logits
  [sum over directions and k of b * (R - k) * C,  B * Gh * Gw]
(local predictions x global patches; b = local batch, B = global batch). For the ImageNet preset
(6x6 grid, only k = 3, b = 16 per device, B = 512, 64-d targets) that is 288 x 18,432 float32
logits (21 MB) per direction, plus 4.7 MB of gathered keys; predicting every k = 1 .. 5 against
raw 2048-d z would take 1,440 x 18,432 (106 MB) per direction and 151 MB of keys.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax.losses.common import gather_rows
from contrastive_jax.ops.patches import DIRECTIONS, orient, unorient  # noqa: F401

OFFSET_REDUCTIONS = ("mean", "sum")


def _target_positions(grid_shape: tuple[int, int], direction: str, k: int) -> np.ndarray:
  """Image-layout flat position (row * Gw + col) of the target of every oriented prediction."""
  gh, gw = grid_shape
  index = np.arange(gh * gw).reshape(1, gh, gw)
  return orient(index, direction)[0, k:]  # [R - k, C]


def cpc_info_nce(
    z: jax.Array,
    predictions: Mapping[str, Sequence[jax.Array]],
    *,
    axis_name: str | None = None,
    skip_offsets: int = 0,
    prediction_scale: float = 1.0,
    offset_reduction: str = "mean",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CPC InfoNCE loss with negatives from every patch of every image in the global batch.

  Args:
    z: [b, Gh, Gw, D] target embeddings in image layout (the local shard under `axis_name`).
    predictions: {direction: [z_hat_1, ..., z_hat_K]}, z_hat_k of shape [b, R - k, C, D] in the
      oriented frame of its direction (see the module docstring). Every direction must have the
      same K.
    axis_name: mesh axis to gather negatives over, when called inside `jax.shard_map`. None
      means the inputs are the whole global batch.
    skip_offsets: offsets 1 .. skip_offsets are not predicted: predictions[d][j] is offset
      skip_offsets + 1 + j.
    prediction_scale: every prediction is multiplied by it before the dot products.
    offset_reduction: "mean" or "sum" of the per-(direction, k) mean losses.

  Returns:
    The scalar float32 loss and metrics {"loss", "accuracy", "accuracy_k{k}"}: accuracy is the
    top-1 rate of picking the true patch among all global patches, the mean over segments
    whatever `offset_reduction` is.
  """
  if not predictions:
    raise ValueError("cpc_info_nce needs predictions for at least one direction.")
  if offset_reduction not in OFFSET_REDUCTIONS:
    raise ValueError(f"offset_reduction={offset_reduction!r} (config.cpc.offset_reduction); "
                     f"valid: {OFFSET_REDUCTIONS}.")
  if skip_offsets < 0:
    raise ValueError(f"skip_offsets={skip_offsets} (config.cpc.skip_offsets) must be >= 0.")
  b, gh, gw, d = z.shape
  z = z.astype(jnp.float32)
  z_all, first_image = gather_rows(z, axis_name)
  keys = z_all.reshape(-1, d)  # [B * Gh * Gw, D], image-major then row-major.

  queries, labels, weights, offsets = [], [], [], []
  num_offsets = {len(z_hats) for z_hats in predictions.values()}
  if len(num_offsets) != 1 or 0 in num_offsets:
    raise ValueError(f"Every direction needs the same K >= 1 predictions; got {num_offsets}.")
  num_k = num_offsets.pop()
  num_segments = len(predictions) * num_k
  for direction, z_hats in predictions.items():
    for k, z_hat in enumerate(z_hats, start=skip_offsets + 1):
      positions = _target_positions((gh, gw), direction, k)
      if z_hat.shape != (b, *positions.shape, d):
        raise ValueError(f"predictions[{direction!r}][{k - skip_offsets - 1}] has shape "
                         f"{z_hat.shape}; "
                         f"expected {(b, *positions.shape, d)} for k={k}.")
      image = first_image + jnp.arange(b)[:, None, None]
      labels.append((image * gh * gw + positions[None]).reshape(-1))
      queries.append(prediction_scale * z_hat.astype(jnp.float32).reshape(-1, d))
      n = queries[-1].shape[0]
      # Weights make the sum a mean over positions, then over (direction, k) segments.
      weights.append(np.full((n,), 1.0 / (n * num_segments), np.float32))
      offsets.append(np.full((n,), k))
  queries = jnp.concatenate(queries)
  labels = jnp.concatenate(labels)
  weights = np.concatenate(weights)
  offsets = np.concatenate(offsets)

  # [local predictions, global patches]; HIGHEST keeps TPU/GPU matmuls in true float32.
  logits = jnp.matmul(queries, keys.T, precision=jax.lax.Precision.HIGHEST)
  positive = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  cross_entropy = jax.nn.logsumexp(logits, axis=1) - positive
  correct = (jnp.argmax(logits, axis=1) == labels).astype(jnp.float32)

  loss = jnp.sum(weights * cross_entropy)
  metrics = {"loss": loss * num_segments if offset_reduction == "sum" else loss,
             "accuracy": jnp.sum(weights * correct)}
  for k in range(skip_offsets + 1, skip_offsets + num_k + 1):
    # Each k is num_segments / num_k of the segments; rescale to a mean over that k alone.
    metrics[f"accuracy_k{k}"] = jnp.sum(
        jnp.where(offsets == k, weights * correct, 0.0)) * num_k
  if axis_name is not None:
    # Every replica holds the same number of predictions, so the mean of means is the mean.
    metrics = jax.lax.pmean(metrics, axis_name)
  return metrics["loss"], metrics
