"""A run read back from its work directory: its config, its method and its checkpoints.

Evaluation reads runs this way, and so does `config.init_from` (a run initialised from
another run's parameters: fine-tuning, and later distillation and semi-supervised methods).

The model is rebuilt from the run's own `config.json` (written by `train.train_and_evaluate`),
so evaluation needs no knowledge of the method beyond the registry. Restoring goes through
`checkpointing.Checkpointer` with a full train-state target built exactly as training builds it
(same optimiser, so the optimiser-state structure matches), and only the parameters and
BatchNorm statistics are used after.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from contrastive_jax import checkpointing, config_lib, data, optim, parallel, storage
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from contrastive_jax.methods.base import Method

# Data keys an evaluation may point elsewhere ("" keeps the pretraining value).
DATA_OVERRIDES = ("source", "name", "path", "train_split", "eval_split", "labelled_split")


def _tuples(node: Any) -> Any:
  # JSON has no tuples; every sequence in our configs is a tuple (proj_dims, crop_scale, ...),
  # and ConfigDict's type checks would reject a list where a tuple is overridden later.
  if isinstance(node, dict):
    return {k: _tuples(v) for k, v in node.items()}
  if isinstance(node, list):
    return tuple(_tuples(v) for v in node)
  return node


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in `workdir`, from its config.json."""
  path = storage.join(workdir, "config.json")
  if not storage.path(path).is_file():
    raise FileNotFoundError(
        f"{path} not found: --workdir must be a pretraining work directory (the --workdir "
        "given to `python -m contrastive_jax.main`), holding config.json and checkpoints/.")
  return ml_collections.ConfigDict(_tuples(storage.read_json(path)))


def with_data_overrides(config: ml_collections.ConfigDict,
                        overrides: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with the non-empty `overrides` (eval config's `data`) applied."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key in DATA_OVERRIDES:
    value = overrides.get(key, "")
    if value:
      config.data[key] = value
  return config


@dataclasses.dataclass
class Run:
  """A run: config, method, graph definitions and checkpoints."""
  workdir: str
  config: ml_collections.ConfigDict
  method: Method
  mesh: jax.sharding.Mesh
  defs: step_lib.ModelDefs
  init_fn: Any  # seed -> TrainState, randomly initialised (the supervised baseline's start).
  checkpointer: checkpointing.Checkpointer
  info: data.DatasetInfo

  @classmethod
  def open(cls, workdir: str, config: ml_collections.ConfigDict | None = None,
           mesh: jax.sharding.Mesh | None = None) -> Run:
    """Opens `workdir`; `config` defaults to its config.json (pass one to override data)."""
    config = config if config is not None else load_config(workdir)
    ckpt_dir = storage.join(workdir, "checkpoints")
    if not storage.path(ckpt_dir).is_dir():
      raise FileNotFoundError(f"No checkpoints/ in {workdir!r}; pretrain first with "
                              "`python -m contrastive_jax.main --workdir=...`.")
    info = data.dataset_info(config)
    method = get_method(config, info)
    method.validate()
    mesh = mesh or parallel.make_mesh()
    total = config_lib.num_train_steps(config, info.num_train_examples)
    tx, _ = optim.build_optimizer(config.optim, config.batch_size, total)
    # Never saves: the keep-N and interval settings only matter to a writer.
    ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=1_000_000, async_save=False)
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"No checkpoint in {ckpt_dir!r}; has the run saved one yet?")
    return cls(workdir=workdir, config=config, method=method, mesh=mesh,
               defs=step_lib.model_defs(method, config.seed),
               init_fn=step_lib.make_init_fn(method, tx, mesh), checkpointer=ckpt, info=info)

  def steps(self, which: str = "latest") -> list[int]:
    """Checkpoint steps named by `which`: "latest", "all" or comma-separated steps."""
    available = sorted(self.checkpointer.all_steps())
    if which == "latest":
      return available[-1:]
    if which == "all":
      return available
    try:
      wanted = [int(s) for s in str(which).split(",") if s.strip()]
    except ValueError:
      wanted = []
    missing = [s for s in wanted if s not in available]
    if not wanted or missing:
      raise ValueError(f"checkpoints={which!r}: expected 'latest', 'all' or comma-separated "
                       f"steps among the saved ones {available}.")
    return wanted

  def restore(self, step: int) -> step_lib.TrainState:
    """The train state saved at `step`; ValueError if its architecture differs from config."""
    # Shapes, dtypes and shardings only: nothing is initialised or compiled to restore.
    target = jax.eval_shape(self.init_fn, self.config.seed)
    try:
      return self.checkpointer.restore(target, step)
    except (ValueError, KeyError, TypeError) as e:
      m = self.config.model
      raise ValueError(
          f"The checkpoint's architecture doesn't match the model built from "
          f"{storage.join(self.workdir, 'config.json')} (method={self.config.method!r}, "
          f"model.depth={m.get('depth')}, model.width={m.get('width')}, "
          f"model.stem={m.get('stem')!r}, model.norm={m.get('norm')!r}) at step {step} in "
          f"{self.checkpointer.directory}. To fix: evaluate with the config that pretrained "
          "it, i.e. point --workdir at the run that wrote this checkpoint and leave the "
          "method/model keys of its config.json as they were. Restore error: "
          f"{_first_line(e)}") from e


def _first_line(e: Exception, limit: int = 400) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit] + " ..."


def load_for_init(workdir: str, step: int = -1, *, key: str = "config.init_from"
                  ) -> tuple[ml_collections.ConfigDict, step_lib.TrainState, int]:
  """(config, state, step) of `workdir`'s checkpoint `step` (-1: the latest), for init_from.

  Errors name the directory and what to do: a run without a finished checkpoint, or a step
  it does not hold.
  """
  try:
    run = Run.open(workdir)
  except FileNotFoundError as e:
    raise ValueError(f"{key}.workdir={workdir!r}: {e}") from None
  steps = run.steps("all")
  chosen = steps[-1] if step < 0 else step
  if chosen not in steps:
    raise ValueError(f"{key}.step={step} is not among the checkpoints of {workdir!r}: "
                     f"{steps}.")
  return run.config, run.restore(chosen), chosen


def check_init_source(workdir: str, step: int = -1, *, key: str = "config.init_from") -> None:
  """ValueError, before anything is compiled, if `workdir` holds no run with a finished
  checkpoint (`step`, or any for -1)."""
  try:
    load_config(workdir)
  except FileNotFoundError as e:
    raise ValueError(f"{key}.workdir={workdir!r}: {e}") from None
  ckpt = checkpointing.Checkpointer(storage.join(workdir, "checkpoints"), max_to_keep=1_000_000,
                                    async_save=False)
  steps = sorted(ckpt.all_steps())
  if not steps or (step >= 0 and step not in steps):
    raise ValueError(f"{key}.workdir={workdir!r} has no finished checkpoint"
                     f"{f' at step {step}' if step >= 0 else ''} (it has {steps}); train it "
                     f"first or point {key} at a finished run.")
