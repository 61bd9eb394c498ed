"""End-to-end fine-tuning of an encoder plus a fresh linear head on a labelled subset.

The same code trains the supervised baseline: the same architecture from a random
initialisation (`method.build_model`), on the same subset, with the same budget.

The classifier is the method's whole pretraining model (`backbone`) plus a zero-initialised
linear `classifier`; its input is `method.features(backbone, images)` run in train mode
(BatchNorm on batch statistics), optionally followed by the first `from_head_layer` layers of a
SimCLR projection head (SimCLRv2 fine-tunes from the head's first layer). Parts of the backbone
the features do not use (projection head, CPC context network) get zero gradients and are
dropped with the result. Augmentation is random resized crop + flip on the device
(`device_augment.py`); batches are drawn from the in-memory subset, epoch by epoch, by a seeded
permutation, and sharded over the mesh. No TensorFlow here.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from contrastive_jax import optim, parallel
from contrastive_jax.evaluation import device_augment
from contrastive_jax.evaluation import features as features_lib
from contrastive_jax.evaluation.metrics import topk_accuracy
from contrastive_jax.methods.base import Method
from contrastive_jax.step import TrainState


class Classifier(nnx.Module):
  """Backbone (a method's full model) plus a linear classifier on its features."""

  def __init__(self, backbone: nnx.Module, in_features: int, num_classes: int, *,
               rngs: nnx.Rngs):
    self.backbone = backbone
    # Zero init: the first steps fit the head without pushing noise into the encoder.
    self.classifier = nnx.Linear(in_features, num_classes, kernel_init=nnx.initializers.zeros,
                                 rngs=rngs)


def head_layers(backbone: nnx.Module, from_head_layer: int) -> list[tuple[Any, Any]]:
  """The (linear, norm) pairs of the projection head that fine-tuning keeps."""
  if from_head_layer == 0:
    return []
  head = getattr(backbone, "head", None)
  layers = getattr(head, "layers", None)
  if layers is None:
    raise ValueError(f"finetune.from_head_layer={from_head_layer} needs a model with a SimCLR "
                     f"projection head (model.head.layers); {type(backbone).__name__} has none. "
                     "Use finetune.from_head_layer=0 (encoder output).")
  if not 0 < from_head_layer < len(layers):
    raise ValueError(f"finetune.from_head_layer={from_head_layer} must be in [0, "
                     f"{len(layers) - 1}]: the head's last layer is the contrastive output.")
  return list(zip(layers[:from_head_layer], head.norms[:from_head_layer]))


def classifier_input(method: Method, backbone: nnx.Module, images: jax.Array,
                     from_head_layer: int) -> jax.Array:
  h = method.features(backbone, images)
  for layer, norm in head_layers(backbone, from_head_layer):
    h = layer(h)
    if norm is not None:
      h = norm(h)
    h = nnx.relu(h)
  return h.astype(jnp.float32)


class FineTuner:
  """Compiled once per (method, optimiser settings, steps); reused for every subset and seed.

  `cfg` is the eval config's `finetune` block: batch_size, optim (the keys of
  `optim.default_config()`), crop_scale, flip, from_head_layer.
  """

  def __init__(self, method: Method, cfg: ml_collections.ConfigDict, *, num_classes: int,
               image_size: int, steps: int, mesh: jax.sharding.Mesh,
               optim_cfg: ml_collections.ConfigDict | None = None):
    if steps < 1:
      raise ValueError(f"Fine-tuning needs at least 1 step; got {steps} (finetune.steps).")
    parallel.check_batch_size(cfg.batch_size, mesh)
    self.method, self.mesh, self.steps = method, mesh, steps
    self.batch_size, self.num_classes = cfg.batch_size, num_classes
    k = int(cfg.from_head_layer)
    crop = dict(scale=tuple(cfg.crop_scale), flip=bool(cfg.flip))

    # The width of the classifier's input, from an abstract forward pass (no memory used).
    dim = jax.eval_shape(
        lambda x: classifier_input(method, method.build_model(nnx.Rngs(0)), x, k),
        jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)).shape[-1]

    def build(rngs):
      return Classifier(method.build_model(rngs), dim, num_classes, rngs=rngs)

    model = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    self._train_def = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    model.eval()
    self._eval_def = nnx.split(model, nnx.Param, nnx.BatchStat)[0]
    abstract_params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    self._tx, schedule = optim.build_optimizer(optim_cfg or cfg.optim, cfg.batch_size, steps)
    train_def, eval_def, tx = self._train_def, self._eval_def, self._tx

    def forward(graphdef, params, stats, images):
      model = nnx.merge(graphdef, params, stats)
      h = classifier_input(method, model.backbone, images, k)
      return model.classifier(h).astype(jnp.float32), model

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
      rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
      images = device_augment.random_resized_crop_flip(rng, batch["image"], **crop)
      onehot = jax.nn.one_hot(batch["label"], num_classes)

      def loss_fn(params):
        logits, model = forward(train_def, params, state.batch_stats, images)
        loss = jnp.mean(optax.softmax_cross_entropy(logits, onehot))
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, (acc, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

      (loss, (acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      new_state = state.replace(step=state.step + 1, params=optax.apply_updates(
          state.params, updates), batch_stats=stats, opt_state=opt_state)
      return new_state, {"loss": loss, "accuracy": acc,
                         "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}

    def logits(state: TrainState, images: jax.Array) -> jax.Array:
      return forward(eval_def, state.params, state.batch_stats, images)[0]

    self._train_step = jax.jit(train_step, donate_argnums=0)
    self.logits_fn = jax.jit(logits)
    head_shapes = jax.tree.map(lambda x: (x.shape, x.dtype), abstract_params["classifier"])

    def init(backbone_params, backbone_stats, seed):
      head = {name: jnp.zeros(shape, dtype) for name, (shape, dtype) in head_shapes.items()}
      params = {"backbone": backbone_params, "classifier": head}
      stats = {"backbone": backbone_stats} if jax.tree.leaves(backbone_stats) else {}
      rng = jax.random.key_data(jax.random.key(seed))
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                        opt_state=tx.init(params), rng=rng, extra={})

    self._init = jax.jit(init, out_shardings=parallel.replicated(mesh))

  def init(self, backbone_params: Any, backbone_stats: Any, seed: int) -> TrainState:
    """A fresh state: the given backbone (pretrained or random) and a zero classifier.

    The backbone trees are copied (the train step donates its state, the caller keeps them).
    """
    return self._init(backbone_params, backbone_stats, jnp.asarray(seed, jnp.uint32))

  def fit(self, state: TrainState, images: np.ndarray, labels: np.ndarray, *,
          seed: int) -> tuple[TrainState, dict[str, float]]:
    """Trains `self.steps` steps on (images, labels) (the whole labelled subset, every
    process the same arrays); returns the state and the last step's metrics."""
    if len(images) != len(labels) or not len(labels):
      raise ValueError(f"Fine-tuning needs matching, non-empty images ({len(images)}) and "
                       f"labels ({len(labels)}).")
    rng = np.random.default_rng(seed)
    pi, pc = jax.process_index(), jax.process_count()
    local = self.batch_size // pc
    stream = np.empty(0, np.int64)
    metrics = {}
    for _ in range(self.steps):
      while len(stream) < self.batch_size:  # Epoch by epoch; a subset may be < one batch.
        stream = np.concatenate([stream, rng.permutation(len(labels))])
      idx, stream = stream[:self.batch_size], stream[self.batch_size:]
      mine = idx[pi * local:(pi + 1) * local]
      batch = parallel.shard_batch({"image": images[mine], "label": labels[mine]}, self.mesh)
      state, metrics = self._train_step(state, batch)
    return state, {k: float(v) for k, v in jax.device_get(metrics).items()}

  def evaluate(self, state: TrainState, images: np.ndarray, labels: np.ndarray, *,
               batch_size: int = 256) -> dict[str, float]:
    """Eval-mode top-1 / top-5 accuracy on (images, labels)."""
    logits = features_lib.extract_features(self.logits_fn, state, images, self.mesh,
                                           batch_size=batch_size)
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}
