"""The train state and the jitted train step, generic over methods. No TensorFlow here.

The model lives as an NNX graph definition (static) plus pure-dict parameter and BatchNorm
statistic trees (data), so the whole train state is one pytree that jit, orbax and optax see
alike.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from contrastive_jax import parallel
from contrastive_jax.methods.base import LossContext, Method


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key data, so checkpoints need no typed-key support.
  extra: Any


@dataclasses.dataclass(frozen=True)
class ModelDefs:
  """Static halves of the model: the same module in train and in eval mode."""
  train: nnx.GraphDef
  eval: nnx.GraphDef

  def merge(self, state: TrainState, *, train: bool) -> nnx.Module:
    return nnx.merge(self.train if train else self.eval, state.params, state.batch_stats)


def _split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any]:
  graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  if jax.tree.leaves(rest):
    raise ValueError("Models may hold only nnx.Param and nnx.BatchStat variables; found "
                     f"{jax.tree.map(jnp.shape, nnx.to_pure_dict(rest))}. Pass RNG keys to the "
                     "loss instead of storing nnx.Rngs in the model.")
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


def model_defs(method: Method, seed: int = 0) -> ModelDefs:
  """Graph definitions only; builds the model abstractly (no parameter memory)."""
  model = nnx.eval_shape(lambda: method.build_model(nnx.Rngs(seed)))
  train_def = _split_model(model)[0]
  model.eval()
  return ModelDefs(train=train_def, eval=_split_model(model)[0])


def make_init_fn(method: Method, tx: optax.GradientTransformation,
                 mesh: jax.sharding.Mesh) -> Callable[[int], TrainState]:
  """Returns `init(seed) -> TrainState`, compiled once, with replicated output shardings."""

  def init(seed: jax.Array) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.key(seed))
    model = method.build_model(nnx.Rngs(params=init_key))
    _, params, stats = _split_model(model)
    extra = method.init_extra(params, stats, _extra_key(init_key))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                      opt_state=tx.init(params), rng=jax.random.key_data(train_key),
                      extra=extra)

  jitted = jax.jit(init, out_shardings=parallel.replicated(mesh))
  return lambda seed: jitted(jnp.asarray(seed, jnp.uint32))


def _extra_key(init_key: jax.Array) -> jax.Array:
  return jax.random.fold_in(init_key, 1)


def rebuild_extra(method: Method, state: TrainState, seed: int) -> TrainState:
  """`state` with the extra state built anew from its parameters, as at initialisation (a
  target network that starts as a copy of parameters copied from another run)."""
  def build(params, stats):
    init_key = jax.random.split(jax.random.key(seed))[0]
    return method.init_extra(params, stats, _extra_key(init_key))

  extra = jax.jit(build, out_shardings=jax.tree.map(lambda x: x.sharding, state.extra))(
      state.params, state.batch_stats)
  return state.replace(extra=extra)


def tree_differences(source: Any, target: Any, prefix: str = "", *,
                     target_name: str = "target") -> list[str]:
  """One line per leaf path that only one tree has or whose shapes differ, '/'-separated
  under `prefix`: what `transplant` and `load_frozen` report before copying."""
  s_flat = dict(jax.tree_util.tree_flatten_with_path(source)[0])
  t_flat = dict(jax.tree_util.tree_flatten_with_path(target)[0])
  out = []
  for p in sorted(set(s_flat) | set(t_flat), key=str):
    a, b = s_flat.get(p), t_flat.get(p)
    name = "/".join(filter(None, [prefix, jax.tree_util.keystr(p, simple=True, separator="/")]))
    if a is None or b is None:
      out.append(f"{name}: only in the {target_name if a is None else 'source'}")
    elif tuple(a.shape) != tuple(b.shape):
      out.append(f"{name}: source {tuple(a.shape)} vs {target_name} {tuple(b.shape)}")
  return out


def load_frozen(state: TrainState, name: str, source: TrainState) -> TrainState:
  """`state` with `extra[name]` = {"params", "batch_stats"} of `source` (another run), copied
  into new buffers with `extra[name]`'s shardings. Raises ValueError naming every parameter
  whose path or shape differs from the placeholders."""
  slot = state.extra[name]
  problems = []
  for kind in ("params", "batch_stats"):
    problems += tree_differences(getattr(source, kind), slot[kind], kind,
                                 target_name="configured")
  if problems:
    raise ValueError(f"The {name} run does not match the configured {name}: "
                     + "; ".join(problems[:8]) + (" ..." if len(problems) > 8 else "") + ".")
  loaded = {"params": source.params, "batch_stats": source.batch_stats}
  copy = jax.jit(lambda tree: tree, out_shardings=jax.tree.map(lambda x: x.sharding, slot))
  return state.replace(extra={**state.extra, name: copy(loaded)})


def create_train_state(method: Method, tx: optax.GradientTransformation, seed: int,
                       mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises parameters, optimiser state and RNG directly with replicated shardings."""
  return make_init_fn(method, tx, mesh)(seed)


def make_train_step(method: Method, defs: ModelDefs, tx: optax.GradientTransformation,
                    schedule: Callable[[Any], Any], mesh: jax.sharding.Mesh,
                    *, skip_nonfinite: bool = False,
                    total_steps: int = 0) -> Callable[..., tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, metrics)`, jitted, donating `state`.

  `total_steps` is the run's length, for methods whose extra state follows a schedule.
  """
  ctx = LossContext(mesh=mesh, data_axis=parallel.DATA_AXIS, train=True,
                    total_steps=int(total_steps))

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      model = nnx.merge(defs.train, params, state.batch_stats)
      loss, metrics, produced = method.loss_with_extra(
          model, state.extra, batch, rng, dataclasses.replace(ctx, step=state.step))
      return loss, (metrics, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), produced)

    (loss, (metrics, new_stats, produced)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # After the update, as BYOL updates its target (MoCo's update before the next forward
    # pass is the same sequence): the extra state follows the new parameters.
    extra = method.update_extra(state.extra, produced, params, new_stats, state.step, ctx)
    grad_norm = optax.tree.norm(grads)
    param_norm = optax.tree.norm(params)
    # The new state too: a checkpoint must never hold NaN/Inf, and the loss cannot see
    # running BatchNorm statistics (training normalises with the batch's own).
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
              & jnp.isfinite(optax.tree.norm(new_stats)))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state, extra=extra)
    if skip_nonfinite:
      # Keep the old parameters and statistics, but advance the step so the data moves on.
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                               state.replace(step=state.step + 1))
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
               "param_norm": param_norm,
               "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
               "finite": finite.astype(jnp.float32)}
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def eval_model(method: Method, defs: ModelDefs, state: TrainState) -> nnx.Module:
  """The model in inference mode with the variables the method evaluates
  (`Method.eval_variables`: its trained parameters, or an average it keeps)."""
  params, stats = method.eval_variables(state.params, state.batch_stats, state.extra)
  return nnx.merge(defs.eval, params, stats)


def make_features_fn(method: Method, defs: ModelDefs) -> Callable[[TrainState, jax.Array],
                                                                  jax.Array]:
  """Eval-mode features of the encoder, jitted: `features(state, images) -> [B, D]`."""

  @jax.jit
  def features(state: TrainState, images: jax.Array) -> jax.Array:
    return method.features(eval_model(method, defs, state), images)

  return features


def _subtree(tree: Any, path: str) -> Any:
  node = tree
  for part in filter(None, path.split("/")):
    if not isinstance(node, dict):
      raise KeyError(path)
    key = part if part in node else (int(part) if part.isdigit() and int(part) in node else None)
    if key is None:
      raise KeyError(path)
    node = node[key]
  return node


def _with_subtree(tree: Any, path: str, value: Any) -> Any:
  parts = [p for p in path.split("/") if p]
  if not parts:
    return value
  key = parts[0] if parts[0] in tree else int(parts[0])
  return {**tree, key: _with_subtree(tree[key], "/".join(parts[1:]), value)}


def transplant(target: TrainState, source: TrainState, mapping: tuple[tuple[str, str], ...],
               tx: optax.GradientTransformation) -> TrainState:
  """`target` with each (source path, target path) subtree of parameters and BatchNorm
  statistics copied from `source` ('/'-separated paths; statistics where the subtree has
  any), and a fresh optimiser state. The copies are new buffers, so a train step may donate
  the result while `source` stays usable. Raises ValueError naming every parameter whose
  path or shape differs."""
  params, stats = target.params, target.batch_stats
  problems = []
  for src, dst in mapping:
    for kind, s_tree, t_tree in (("params", source.params, params),
                                 ("batch_stats", source.batch_stats, stats)):
      try:
        s_sub = _subtree(s_tree, src)
      except KeyError:
        if kind == "params":
          problems.append(f"source has no parameters at {src!r}")
        continue
      try:
        t_sub = _subtree(t_tree, dst)
      except KeyError:
        if jax.tree.leaves(s_sub):
          problems.append(f"target has no {kind} at {dst!r}")
        continue
      problems += tree_differences(s_sub, t_sub, dst)
      if kind == "params":
        params = _with_subtree(params, dst, s_sub)
      else:
        stats = _with_subtree(stats, dst, s_sub)
  if problems:
    raise ValueError("The source encoder does not match the configured one: "
                     + "; ".join(problems[:8]) + (" ..." if len(problems) > 8 else "")
                     + ". Configure the same model (config.model) as the run it comes from.")
  params, stats, opt_state = _copy_and_init(tx)(params, stats)
  return target.replace(params=params, batch_stats=stats, opt_state=opt_state)


@functools.lru_cache(maxsize=32)
def _copy_and_init(tx: optax.GradientTransformation) -> Callable[..., Any]:
  """Jitted once per optimiser (fine-tuning transplants once per subset and seed)."""
  return jax.jit(lambda params, stats: (params, stats, tx.init(params)))
