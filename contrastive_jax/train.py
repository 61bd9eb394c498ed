"""`train_and_evaluate(config, workdir)`: the generic pre-training loop, then the evaluations.

The loop knows nothing about any method: it asks the registry for one, builds the mesh, state
and jitted step, feeds global batches, logs through clu, checkpoints through orbax and resumes
from the work directory.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from contrastive_jax import checkpointing, config_lib, data, optim, parallel
from contrastive_jax import step as step_lib
from contrastive_jax.evaluation import features as features_lib
from contrastive_jax.evaluation import knn, linear_probe
from contrastive_jax.methods import get_method


class NonFiniteLossError(FloatingPointError):
  pass


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def _check_finite(metrics: dict[str, Any], step: int) -> None:
  if float(jax.device_get(metrics["finite"])) < 1.0:
    loss, gnorm = (float(jax.device_get(metrics[k])) for k in ("loss", "grad_norm"))
    bad = "loss" if not np.isfinite(loss) else "gradient norm"
    raise NonFiniteLossError(
        f"Non-finite {bad} at step {step} (loss={loss}, grad_norm={gnorm}). The last good "
        "checkpoint is untouched; lower config.optim.base_lr, add config.optim.grad_clip_norm, "
        "or set config.skip_nonfinite_updates=True to skip such updates.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pre-trains `config.method` and returns the final metrics and evaluation results."""
  config_lib.validate(config)
  method = get_method(config)
  method.validate()
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  data.validate_data_config(config, process_count=jax.process_count(),
                            device_count=mesh.devices.size)
  info = data.dataset_info(config)
  total_steps = config_lib.num_train_steps(config, info.num_train_examples)

  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, total_steps)
  defs = step_lib.model_defs(method, config.seed)
  init_fn = step_lib.make_init_fn(method, tx, mesh)
  state = init_fn(config.seed)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=config.keep_checkpoints,
                                    async_save=config.async_checkpointing)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
  start_step = int(jax.device_get(state.step))

  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
    if is_chief:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
  logging.info("Method %s, %d devices, %d processes, global batch %d, steps %d -> %d",
               config.method, mesh.devices.size, jax.process_count(), config.batch_size,
               start_step, total_steps)

  train_step = step_lib.make_train_step(method, defs, tx, schedule, mesh,
                                        skip_nonfinite=config.skip_nonfinite_updates)
  batches = data.build_train_iterator(config, input_kind=method.input_kind,
                                      start_step=start_step)
  knn_every = config.eval.get("knn_every_steps", 0)
  monitor = None
  if knn_every:
    monitor = knn.KNNMonitor.from_config(config, step_lib.make_features_fn(method, defs), mesh)
  knn_metrics: dict[str, float] = {}
  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=config.log_every_steps)]
  history: list[dict[str, Any]] = []
  last_metrics = None
  train_metrics: dict[str, float] = {}
  t0 = time.time()
  for step in range(start_step, total_steps):
    batch = parallel.shard_batch(next(batches), mesh)
    state, metrics = train_step(state, batch)
    # Check the previous step's metrics: the device is already busy with this one.
    if last_metrics is not None and not config.skip_nonfinite_updates:
      _check_finite(last_metrics, step)
    last_metrics = metrics
    history.append(metrics)
    done = step + 1
    for hook in hooks:
      hook(done)
    if done % config.log_every_steps == 0 or done == total_steps:
      if not config.skip_nonfinite_updates:
        _check_finite(metrics, done)
      train_metrics = _mean_metrics(history)
      history = []
      writer.write_scalars(done, {f"train/{k}": v for k, v in train_metrics.items()})
    if monitor is not None and (done % knn_every == 0 or done == total_steps):
      knn_metrics = monitor(state)
      writer.write_scalars(done, {f"eval/{k}": v for k, v in knn_metrics.items()})
    if done % config.checkpoint_every_steps == 0 or done == total_steps:
      ckpt.save(done, state)
  ckpt.wait_until_finished()
  logging.info("Training finished in %.1fs", time.time() - t0)

  results: dict[str, Any] = {"step": int(jax.device_get(state.step)), "train": train_metrics}
  if knn_metrics:
    results["knn"] = knn_metrics
  if config.eval.linear_probe:
    results["linear_probe"] = _probe(config, method, defs, state, mesh, init_fn, info)
    final_step = results["step"]
    writer.write_scalars(final_step, {f"probe/{name}_{k}": v
                                      for name, r in results["linear_probe"].items()
                                      for k, v in r.items()})
  writer.flush()
  if is_chief:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  ckpt.close()
  return results


def _probe(config, method, defs, state, mesh, init_fn, info) -> dict[str, dict[str, float]]:
  """Linear probe of the trained encoder and, for reference, of a random one."""
  train_x, train_y = data.load_arrays(config,
                                      config.eval.probe_train_split or config.data.train_split)
  test_x, test_y = data.load_arrays(config, config.data.eval_split)
  limit = config.eval.probe_max_train_examples
  train_x, train_y = train_x[:limit], train_y[:limit]
  features_fn = step_lib.make_features_fn(method, defs)
  candidates = {"pretrained": state}
  if config.eval.probe_random_init:
    candidates["random_init"] = init_fn(config.seed)
  out = {}
  for name, s in candidates.items():
    ftr = features_lib.extract_features(features_fn, s, train_x, mesh,
                                        batch_size=config.eval.batch_size)
    fte = features_lib.extract_features(features_fn, s, test_x, mesh,
                                        batch_size=config.eval.batch_size)
    r = linear_probe.linear_probe(ftr, train_y, fte, test_y, info.num_classes,
                                  steps=config.eval.probe_steps, seed=config.seed)
    out[name] = {"top1": r.top1, "top5": r.top5, "l2": r.l2}
    logging.info("Linear probe (%s encoder): top-1 %.4f, top-5 %.4f", name, r.top1, r.top5)
  return out


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = {}

  def visit(prefix, node):
    for k, v in node.items():
      key = f"{prefix}{k}"
      if isinstance(v, ml_collections.ConfigDict):
        visit(key + ".", v)
      elif isinstance(v, (int, float, str, bool)):
        flat[key] = v
      else:
        flat[key] = str(v)

  visit("", config)
  return flat
