"""`train_and_evaluate(config, workdir)`: the generic pre-training loop, then the evaluations.

The loop knows nothing about any method: it asks the registry for one, builds the mesh, state
and jitted step, feeds global batches, logs through clu (`writers.py`), checkpoints through
orbax and resumes from the work directory. What it guarantees (tests/test_reliability*.py
check each):

  * Every config value is checked before anything is compiled or written to `workdir`.
  * Checkpoints of a different config in `workdir` are refused, naming the keys, unless
    `allow_config_change`; the keys in `config_lib.RESUMABLE_KEYS` may always change.
  * Resuming is exact. The state holds the step and the RNG (each step folds the step into
    it), and the input pipeline is a function of (config.seed, process index, step), so a run
    resumed from step k sees the batches and keys an unbroken one sees after step k.
  * On SIGTERM (preemption.py) every process saves at the same step, waits for the write and
    returns `{"preempted": True, "step": k, ...}`; main.py then exits with EXIT_PREEMPTED.
  * A NaN/Inf in the loss, gradients or state stops the run with NonFiniteLossError naming
    the step and the quantity, or skips the update (config.skip_nonfinite_updates). A state is
    checked before it is saved, so no checkpoint ever holds one.
  * The evaluators of `config.evals` (evaluators/common.py) run every `every_steps` steps and
    after training (`at_end`); `config.init_from` starts a new run from another run's
    parameters.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from contrastive_jax import checkpointing, config_lib, data, faults, input_spec, optim, parallel
from contrastive_jax import preemption, runs, storage, writers
from contrastive_jax import step as step_lib
from contrastive_jax.evaluators import common as evaluators
from contrastive_jax.methods import get_method
from contrastive_jax.methods.base import Method


class NonFiniteLossError(FloatingPointError):
  pass


class ConfigMismatchError(ValueError):
  pass


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def _check_finite(metrics: dict[str, Any], step: int) -> None:
  """Raises if the update that produced state `step` (from `step - 1`) was not finite."""
  if float(jax.device_get(metrics["finite"])) >= 1.0:
    return
  values = {k: float(jax.device_get(metrics[k])) for k in ("loss", "grad_norm", "param_norm")}
  names = {"loss": "loss", "grad_norm": "gradient norm", "param_norm": "parameters"}
  bad = next((names[k] for k, v in values.items() if not np.isfinite(v)), "BatchNorm statistics")
  raise NonFiniteLossError(
      f"Non-finite {bad} at step {step} (the update from step {step - 1} to {step}; loss="
      f"{values['loss']}, grad_norm={values['grad_norm']}). No checkpoint holds this state; "
      "the last saved one is intact. Lower config.optim.base_lr, add "
      "config.optim.grad_clip_norm, or set config.skip_nonfinite_updates=True to skip such "
      "updates.")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything `train_and_evaluate` derives from the config before compiling anything."""
  method: Method
  spec: input_spec.InputSpec  # The method's declared inputs.
  mesh: jax.sharding.Mesh
  info: data.DatasetInfo
  total_steps: int
  tx: Any
  schedule: Callable[[Any], Any]


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Every check that needs no compilation, first: a bad value fails in seconds, not minutes."""
  config_lib.validate(config)
  evaluators.validate(config.evals)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  info = data.validate_data_config(config, process_count=jax.process_count(),
                                   device_count=mesh.devices.size)
  method = get_method(config, info)
  method.validate()
  spec = method.inputs()
  data.validate_inputs(spec, config, info, process_count=jax.process_count(),
                       device_count=mesh.devices.size)
  if config.init_from.workdir:
    runs.check_init_source(config.init_from.workdir, int(config.init_from.step))
  for name, (workdir, step) in method.frozen_runs().items():
    runs.check_init_source(workdir, step, key=f"config.{method.name}.{name}")
    method.check_frozen_run(name, runs.load_config(workdir))
  total_steps = config_lib.num_train_steps(config, info.num_train_examples)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, total_steps)
  return Plan(method, spec, mesh, info, total_steps, tx, schedule)


def _init_from(config: ml_collections.ConfigDict, p: Plan,
               state: step_lib.TrainState) -> step_lib.TrainState:
  """`state` with the subtrees `config.init_from` names copied from another run."""
  c = config.init_from
  source_config, source, step = runs.load_for_init(c.workdir, int(c.step))
  if c.mapping:
    pairs = [pair.split("=") for pair in str(c.mapping).split(",") if pair.strip()]
    if any(len(pair) != 2 for pair in pairs):
      raise ValueError(f"config.init_from.mapping={c.mapping!r}: expected comma-separated "
                       "source=target pairs of '/'-separated parameter paths.")
    mapping = tuple((a.strip(), b.strip()) for a, b in pairs)
  else:
    source_method = get_method(source_config)
    mapping = ((source_method.encoder_path, p.method.encoder_path),)
  logging.info("Initialising from %s step %d: %s", c.workdir, step,
               ", ".join(f"{a} -> {b}" for a, b in mapping))
  state = step_lib.transplant(state, source, mapping, p.tx)
  # A target network (MoCo, BYOL) starts as a copy of the parameters it now starts from.
  return step_lib.rebuild_extra(p.method, state, config.seed)


def _load_frozen(p: Plan, state: step_lib.TrainState) -> step_lib.TrainState:
  """`state` with the runs the method keeps frozen (a teacher) loaded into its extra state."""
  for name, (workdir, step) in p.method.frozen_runs().items():
    _, source, chosen = runs.load_for_init(workdir, step, key=f"config.{p.method.name}.{name}")
    logging.info("Loading the %s from %s step %d.", name, workdir, chosen)
    state = step_lib.load_frozen(state, name, source)
  return state


def _check_workdir_config(config: ml_collections.ConfigDict, workdir: str, steps: list[int],
                          allow_config_change: bool) -> None:
  """Refuses to resume checkpoints written under a different config (see module docstring)."""
  path = storage.path(workdir) / "config.json"
  if not steps:
    return
  if not path.exists():
    logging.warning("%s holds checkpoints %s but no config.json; cannot check that they come "
                    "from this config.", workdir, steps)
    return
  refused, allowed = config_lib.resume_differences(json.loads(path.read_text()), config)
  if allowed:
    logging.info("Resuming with changed run settings: %s", "; ".join(allowed))
    if any(d.startswith(("num_steps:", "num_epochs:")) for d in allowed):
      logging.warning("The training length changed: the learning-rate schedule now spans the "
                      "new length, so steps after %d follow a different schedule than either "
                      "run alone would.", steps[-1])
  if not refused:
    return
  if allow_config_change:
    logging.warning("Resuming %s despite config changes (allow_config_change): %s", workdir,
                    "; ".join(refused))
    return
  raise ConfigMismatchError(
      f"Work directory {workdir} holds checkpoints (steps {steps}) of a different config; "
      f"differing keys: {'; '.join(refused)}. Use a new --workdir, or pass "
      "--allow_config_change (train_and_evaluate(..., allow_config_change=True)) to resume "
      f"these checkpoints anyway. Keys that may change on resume: "
      f"{', '.join(config_lib.RESUMABLE_KEYS)}.")


def _record_config(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> None:
  """Writes config.json (process 0); a different one already there is kept, renamed."""
  if jax.process_index() != 0:
    return
  root = storage.path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  path, text = root / "config.json", config.to_json_best_effort(indent=2)
  if path.exists():
    if json.loads(path.read_text()) == json.loads(text):
      return
    old, n = root / f"config.until_step_{start_step}.json", 1
    while old.exists():
      old, n = root / f"config.until_step_{start_step}.{n}.json", n + 1
    path.rename(old)
    logging.info("The config changed; the previous config.json is now %s.", old)
  storage.write_text(path, text)  # Other processes may read it now: never let them see half.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains `config.method` and returns the final metrics and evaluation results.

  Resumes from the latest usable checkpoint in `workdir`. Returns early, with
  `results["preempted"] = True` and no evaluation, if a preemption notice arrives.
  """
  p = plan(config)
  ckpt = checkpointing.Checkpointer(storage.join(workdir, "checkpoints"),
                                    max_to_keep=config.keep_checkpoints,
                                    async_save=config.async_checkpointing, cleanup_tmp=True)
  _check_workdir_config(config, workdir, ckpt.all_steps(), allow_config_change)
  defs = step_lib.model_defs(p.method, config.seed)
  init_fn = step_lib.make_init_fn(p.method, p.tx, p.mesh)
  state, restored = ckpt.restore_latest(init_fn(config.seed))
  if restored is None and config.init_from.workdir:
    state = _init_from(config, p, state)
  if restored is None:
    state = _load_frozen(p, state)
  start_step = int(jax.device_get(state.step))
  _record_config(config, workdir, start_step)

  is_chief = jax.process_index() == 0
  writer = writers.create_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
  logging.info("Method %s, %d devices, %d processes, global batch %d, steps %d -> %d",
               config.method, p.mesh.devices.size, jax.process_count(), config.batch_size,
               start_step, p.total_steps)

  subject = evaluators.Subject(config=config, method=p.method, defs=defs, mesh=p.mesh,
                               init_fn=init_fn, num_classes=p.info.num_classes)
  names = tuple(n for n, e in config.evals.items() if e.every_steps or e.at_end)
  evals = evaluators.from_config(config.evals, subject, only=names) if names else []
  train_step = step_lib.make_train_step(p.method, defs, p.tx, p.schedule, p.mesh,
                                        skip_nonfinite=config.skip_nonfinite_updates,
                                        total_steps=p.total_steps)
  t0 = time.time()
  try:
    with preemption.PreemptionWatcher() as watcher:
      state, results = _train(config, p, state, train_step, ckpt, writer, watcher, evals,
                              start_step)
  finally:
    # Also on NonFiniteLossError: a save already under way was of a good state; commit it.
    ckpt.close()
  if results.get("preempted"):
    logging.warning("Preempted: checkpoint step %d is saved in %s. Rerun the same command to "
                    "resume.", results["step"], ckpt.directory)
    writer.flush()
    return results
  logging.info("Training finished in %.1fs", time.time() - t0)

  final = [e for e in evals if e.cfg.at_end]
  for e in final:
    rows = e.run(state, results["step"])
    results["evals"][e.name] = rows
    writer.write_scalars(results["step"], {f"eval/{k}": v
                                           for k, v in evaluators.scalars(rows).items()})
  writer.flush()
  if is_chief:
    storage.write_json(storage.join(workdir, "results.json"), results)
  return results


def _train(config: ml_collections.ConfigDict, p: Plan, state: step_lib.TrainState,
           train_step, ckpt, writer, watcher, evals, start_step: int
           ) -> tuple[Any, dict[str, Any]]:
  """The loop proper; returns the final state and the results so far."""
  check_finite = not config.skip_nonfinite_updates
  total_steps = p.total_steps
  batches = data.build_train_iterator(config, p.spec, start_step=start_step)
  fault = faults.Faults(jax.process_index())
  periodic = [e for e in evals if e.cfg.every_steps]
  eval_rows: dict[str, list[dict[str, Any]]] = {}
  progress = writers.progress_hook(total_steps, writer, config.log_every_steps,
                                  batch_size=config.batch_size)
  hooks = [progress]
  history: list[dict[str, Any]] = []
  last_metrics = None
  train_metrics: dict[str, float] = {}
  preempted = False
  for step in range(start_step, total_steps):
    batch = parallel.shard_batch(next(batches), p.mesh)
    state, metrics = train_step(state, batch)
    done = step + 1
    fault.after_step(done)
    # Check the previous step's metrics: the device is already busy with this one.
    if last_metrics is not None and check_finite:
      _check_finite(last_metrics, done - 1)
    last_metrics = metrics
    history.append(metrics)
    preempted = watcher.should_stop(done)
    last = done == total_steps
    save = preempted or last or done % config.checkpoint_every_steps == 0
    log = last or done % config.log_every_steps == 0
    due = [] if preempted else [e for e in periodic
                                if last or done % e.cfg.every_steps == 0]
    if check_finite and (save or log or due):
      # Waits for this step, so that nothing is logged, evaluated or saved from a bad state.
      _check_finite(metrics, done)
    for hook in hooks:
      hook(done)
    if log or preempted:
      train_metrics = _mean_metrics(history)
      skipped = round(len(history) * (1.0 - train_metrics["finite"]))
      if skipped:
        logging.warning("Skipped %d non-finite update(s) in steps %d-%d "
                        "(config.skip_nonfinite_updates).", skipped, done - len(history) + 1,
                        done)
      history = []
      writer.write_scalars(done, {f"train/{k}": v for k, v in train_metrics.items()})
    for e in due:
      with progress.paused():  # Steps/s and images/s measure training alone.
        eval_rows[e.name] = e.run(state, done)
      writer.write_scalars(done, {f"eval/{k}": v
                                  for k, v in evaluators.scalars(eval_rows[e.name]).items()})
    if save:
      ckpt.save(done, state)
    if preempted:
      break
  results: dict[str, Any] = {"step": int(jax.device_get(state.step)), "train": train_metrics,
                             "evals": eval_rows}
  if preempted:
    results["preempted"] = True
  return state, results


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in config_lib.flatten(config.to_dict()).items()}
