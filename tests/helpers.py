"""Small shared builders for tests: tiny configs and synthetic batches."""
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from contrastive_jax import presets
from contrastive_jax.losses import info_nce

# XLA flags for every test process (subprocesses too): optimisation level 0 compiles the tiny
# test programs 2-5x faster on CPU; speed of the compiled code does not matter here.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def tiny_simclr_config(**overrides) -> ml_collections.ConfigDict:
  c = presets.base_config()
  c.method = "simclr"
  c.model = ml_collections.ConfigDict(dict(depth=10, width=0.125, stem="cifar", norm="batch",
                                           bn_momentum=0.9, bn_cross_replica=True))
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.5, proj_dims=(32, 16),
                                            proj_batch_norm=True))
  c.optim.update(name="lars", base_lr=0.5, lr_scaling="none", warmup_steps=0,
                 weight_decay=1e-4)
  c.batch_size = 16
  c.num_steps = 4
  return set_keys(c, overrides)


def two_view_batch(batch_size: int, image_size: int = 8, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  shape = (batch_size, image_size, image_size, 3)
  return {"view1": rng.uniform(size=shape).astype(np.float32),
          "view2": rng.uniform(size=shape).astype(np.float32),
          "label": rng.integers(0, 10, size=batch_size).astype(np.int32)}


# A small CPC patch encoder and the CPC model and loss in one call: test-only pieces.


def _norm_layer(norm: str, features: int, axis_name: str | None, rngs: nnx.Rngs) -> nnx.Module:
  if norm == "layer":
    # Over channels at each position, as the ResNet's "layer" norm: never across patches.
    return nnx.LayerNorm(features, rngs=rngs)
  if norm == "batch":
    return nnx.BatchNorm(features, momentum=0.9, axis_name=axis_name, rngs=rngs)
  raise ValueError(f"cpc.norm must be 'layer' or 'batch', got {norm!r}.")


class SmallConvEncoder(nnx.Module):
  """A few stride-2 3x3 convs: [N, P, P, C] -> [N, P / 2^L, P / 2^L, features[-1]].

  For tests and tiny runs; the real encoder is the ResNet trunk in `models/resnet.py`.
  """

  def __init__(self, in_channels: int = 3, features: Sequence[int] = (16, 32), *,
               norm: str = "layer", axis_name: str | None = None, rngs: nnx.Rngs):
    widths = (in_channels, *features)
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs)
                           for a, b in zip(widths[:-1], widths[1:])])
    self.norms = nnx.List([_norm_layer(norm, b, axis_name, rngs) for b in features])
    self.out_features = widths[-1]

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return x



def cpc_loss(model, patches: jax.Array, *,
             axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Model and loss in one call, for when the whole forward runs on one shard of the batch.

  Under `jax.shard_map` an encoder with BatchNorm then needs `axis_name` too; the CPC method
  instead runs the model under `jit` on the global batch and only the loss under shard_map.
  """
  z, predictions = model(patches)
  return info_nce.cpc_info_nce(z, predictions, axis_name=axis_name)


def probe_rows(results: dict) -> dict:
  """{encoder: row} of the end-of-training linear probe on the whole (capped) labelled split."""
  return {r["encoder"]: r for r in results["evals"]["linear"] if r["subset"] == "fraction=1"}


def knn_top1(results: dict) -> float:
  (row,) = results["evals"]["knn"]
  return row["top1"]


def set_keys(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys ("optim.base_lr") of `config` in place; returns it."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def parse_config(flag: str, path: str, preset: str, *args: str) -> ml_collections.ConfigDict:
  """Parses `--<flag>=<path>:<preset> <args>` the way the command lines do (absl, locked)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["prog", f"--{flag}={path}:{preset}", *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(flag, None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv[flag].value


def checkpoint_steps(workdir: str) -> list:
  import os  # pylint: disable=g-import-not-at-top

  from contrastive_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def save_run(workdir, config: ml_collections.ConfigDict, states: dict) -> str:
  """A work directory as training leaves it: config.json and committed checkpoints
  ({step: state})."""
  import os  # pylint: disable=g-import-not-at-top

  from contrastive_jax import checkpointing, storage  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  for step, state in states.items():
    ckpt.save(step, state)
  ckpt.close()
  storage.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  return str(workdir)


def read_checkpoint(workdir: str, step: int):
  """The saved pytree of checkpoint `step` of `workdir`, as numpy arrays."""
  import os  # pylint: disable=g-import-not-at-top

  from contrastive_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.read(step)
  finally:
    ckpt.close()


def run_steps(config: ml_collections.ConfigDict, num_devices: int, batches: list,
              total_steps: int) -> tuple:
  """Trains `config.method` on `batches` over `num_devices`: (host state, metrics per step)."""
  from contrastive_jax import optim, parallel  # pylint: disable=g-import-not-at-top
  from contrastive_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  from contrastive_jax.methods import get_method  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(num_devices)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, total_steps)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  train_step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                        total_steps=total_steps)
  history = []
  for b in batches:
    state, metrics = train_step(state, parallel.shard_batch(b, mesh))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def command_env(**extra: str) -> dict:
  """Environment of a command-line subprocess: CPU only, the tests' XLA flags and compilation
  cache, no injected faults; `extra` on top."""
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cache = os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS,
         "CUDA_VISIBLE_DEVICES": "", "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "PYTHONPATH": root}
  env.pop("CJ_FAULT", None)
  env.update(extra)
  return env


def assert_trees_equal(want, got) -> None:
  """Every leaf of `got` bit-identical to `want`'s, the failing leaf named by its path."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  want_leaves = jax.tree_util.tree_leaves_with_path(want)
  got_leaves = jax.tree.leaves(got)
  assert len(want_leaves) == len(got_leaves), (len(want_leaves), len(got_leaves))
  for (path, a), b in zip(want_leaves, got_leaves):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def assert_states_close(want, got, trees=("params", "batch_stats", "extra"), *,
                        rtol: float = 1e-4, scale_atol: float = 1e-2) -> None:
  """Every leaf of `got`'s `trees` close to `want`'s (1 device against 8: float sums in another
  order), the absolute tolerance scaled by the leaf's largest value; the leaf named on failure."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for tree in trees:
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(want, tree)),
                            jax.tree.leaves(getattr(got, tree))):
      scale = float(np.max(np.abs(a))) if np.size(a) else 0.0
      np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-5 + scale_atol * scale,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")
