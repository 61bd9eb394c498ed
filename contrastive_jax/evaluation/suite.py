"""The evaluation suite: every protocol on every chosen checkpoint of a pretraining run.

Protocols (eval config `protocols`):
  linear      L2-regularised softmax regression on frozen eval-mode features of each labelled
              subset (`linear_probe.py`); the encoder's parameters and statistics are only read.
  knn         weighted kNN of test features against all labelled train features (`knn.py`).
  finetune    the pretrained encoder plus a fresh linear head trained end to end on each subset.
  supervised  the same architecture and fine-tuning code from a random initialisation (step 0).
Rows: protocol, label_fraction, top1, top5, seed, step, method, num_labelled, subset. Written as
results.json / results.csv (and results_step_<N>.json per checkpoint) under the output folder,
with the figures of `plots.py`. No TensorFlow here (the data package imports it lazily).
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from contrastive_jax import data
from contrastive_jax import step as step_lib
from contrastive_jax.evaluation import features as features_lib
from contrastive_jax.evaluation import finetune, knn, linear_probe, pretrained, subsets
from contrastive_jax.evaluation.metrics import topk_accuracy

PROTOCOLS = ("linear", "knn", "finetune", "supervised")
CSV_COLUMNS = ("protocol", "label_fraction", "top1", "top5", "seed", "step", "method",
               "num_labelled", "subset")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Rejects bad eval-config values, naming the key, before anything is loaded."""
  bad = [p for p in cfg.protocols if p not in PROTOCOLS]
  if bad or not cfg.protocols:
    raise ValueError(f"protocols={tuple(cfg.protocols)!r}: each must be one of {PROTOCOLS}.")
  for f in cfg.fractions:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
      raise ValueError(f"fractions contains {f!r}, outside the allowed range (0, 1] (a fraction "
                       "of the labelled training examples: 0.01 for 1%).")
  for k in cfg.per_class:
    if not isinstance(k, int) or k < 1:
      raise ValueError(f"per_class contains {k!r}; images per class must be integers >= 1.")
  if not (cfg.fractions or cfg.per_class or cfg.index_file):
    raise ValueError("No labelled subset: set fractions, per_class or index_file.")
  if not cfg.seeds:
    raise ValueError("seeds is empty; give at least one seed, e.g. (0,).")
  if str(cfg.finetune.flip).lower() not in ("auto", "true", "false"):
    raise ValueError(f"finetune.flip={cfg.finetune.flip!r} must be 'auto' (the pretraining "
                     "config's augment.flip), 'true' or 'false'.")


def make_subsets(cfg: ml_collections.ConfigDict, labels: np.ndarray, seed: int,
                 names: list[str] | None = None) -> list[dict[str, Any]]:
  """The labelled subsets of the eval config for one seed: name, label_fraction, indices."""
  n = int(np.sum(labels >= 0))
  out = []
  for f in cfg.fractions:
    idx = subsets.labelled_subset(labels, fraction=f, seed=seed)
    out.append({"subset": f"fraction={f:g}", "label_fraction": float(f), "indices": idx})
  for k in cfg.per_class:
    idx = subsets.labelled_subset(labels, per_class=k, seed=seed)
    out.append({"subset": f"per_class={k}", "label_fraction": len(idx) / n, "indices": idx})
  if cfg.index_file:
    idx = subsets.labelled_subset(labels, index_file=cfg.index_file, names=names)
    if np.any(labels[idx] < 0):
      raise ValueError(f"index_file {cfg.index_file!r} lists unlabelled examples (label -1).")
    out.append({"subset": f"file={os.path.basename(cfg.index_file)}",
                "label_fraction": len(idx) / n, "indices": idx})
  return out


def _row(protocol: str, subset: dict[str, Any], seed: int, step: int, method: str,
         result: dict[str, float]) -> dict[str, Any]:
  row = {"protocol": protocol, "label_fraction": subset["label_fraction"],
         "top1": float(result["top1"]), "top5": float(result["top5"]), "seed": int(seed),
         "step": int(step), "method": method, "num_labelled": len(subset["indices"]),
         "subset": subset["subset"]}
  logging.info("%-10s %-16s seed %d step %d: top-1 %.4f top-5 %.4f", protocol, row["subset"],
               seed, step, row["top1"], row["top5"])
  return row


def frozen_protocols(pre: pretrained.Pretrained, state: step_lib.TrainState,
                     cfg: ml_collections.ConfigDict, arrays: dict[str, np.ndarray],
                     subsets_by_seed: dict[int, list[dict[str, Any]]], num_classes: int,
                     step: int) -> list[dict[str, Any]]:
  """Linear and kNN rows of one checkpoint; `state` is only read (eval-mode features)."""
  train_f, test_f = (features_lib.extract_features(pre.features_fn, state, arrays[k], pre.mesh,
                                                   batch_size=cfg.batch_size)
                     for k in ("train_x", "test_x"))
  train_y, test_y, name = arrays["train_y"], arrays["test_y"], pre.config.method
  rows = []
  if "knn" in cfg.protocols:
    scores = knn.knn_class_scores(train_f, train_y, test_f, num_classes, k=cfg.knn.k,
                                  temperature=cfg.knn.temperature)
    everything = {"subset": "fraction=1", "label_fraction": 1.0,
                  "indices": np.flatnonzero(train_y >= 0)}
    result = {"top1": topk_accuracy(scores, test_y, 1),
              "top5": topk_accuracy(scores, test_y, 5)}
    rows.append(_row("knn", everything, cfg.seeds[0], step, name, result))
  if "linear" in cfg.protocols:
    for seed, subs in subsets_by_seed.items():
      for sub in subs:
        idx = sub["indices"]
        r = linear_probe.linear_probe(train_f[idx], train_y[idx], test_f, test_y, num_classes,
                                      steps=cfg.linear.steps, seed=seed)
        rows.append(_row("linear", sub, seed, step, name, {"top1": r.top1, "top5": r.top5}))
  return rows


class _Tuners:
  """FineTuners by (steps, optimiser): each compiles once and serves every subset and seed."""

  def __init__(self, pre: pretrained.Pretrained, cfg: ml_collections.ConfigDict,
               num_classes: int):
    self._pre, self._cfg, self._num_classes = pre, cfg, num_classes
    self._cache: dict[str, finetune.FineTuner] = {}
    ft = cfg.finetune.to_dict()
    flip = str(ft["flip"]).lower()
    ft["flip"] = bool(pre.config.augment.get("flip", True)) if flip == "auto" else flip == "true"
    ft = ml_collections.ConfigDict(ft)
    self.finetune_cfg = ft

  def steps(self, num_labelled: int, supervised: bool) -> int:
    ft = self._cfg.finetune
    steps = ft.steps
    if ft.epochs > 0:
      steps = max(1, math.ceil(ft.epochs * num_labelled / ft.batch_size))
    if supervised and self._cfg.supervised.steps > 0:
      steps = self._cfg.supervised.steps
    return int(steps)

  def get(self, steps: int, supervised: bool) -> finetune.FineTuner:
    opt = ml_collections.ConfigDict(self.finetune_cfg.optim.to_dict())
    s = self._cfg.supervised
    if supervised and s.base_lr > 0:
      opt.base_lr = s.base_lr
    if supervised and s.weight_decay >= 0:
      opt.weight_decay = s.weight_decay
    key = f"{steps}:{opt.to_json(sort_keys=True)}"
    if key not in self._cache:
      self._cache[key] = finetune.FineTuner(
          self._pre.method, self.finetune_cfg, num_classes=self._num_classes,
          image_size=int(self._pre.config.data.image_size), steps=steps, mesh=self._pre.mesh,
          optim_cfg=opt)
    return self._cache[key]


def trained_protocol(protocol: str, backbones: Any, tuners: _Tuners,
                     cfg: ml_collections.ConfigDict, arrays: dict[str, np.ndarray],
                     subsets_by_seed: dict[int, list[dict[str, Any]]], step: int,
                     method: str) -> list[dict[str, Any]]:
  """Fine-tuning rows; `backbones(seed)` gives the (params, batch_stats) to start from."""
  rows = []
  for seed, subs in subsets_by_seed.items():
    for sub in subs:
      idx = sub["indices"]
      supervised = protocol == "supervised"
      tuner = tuners.get(tuners.steps(len(idx), supervised), supervised)
      state = tuner.init(*backbones(seed), seed)
      state, metrics = tuner.fit(state, arrays["train_x"][idx], arrays["train_y"][idx],
                                 seed=seed)
      logging.info("%s on %s, seed %d: final train loss %.4f", protocol, sub["subset"], seed,
                   metrics["loss"])
      result = tuner.evaluate(state, arrays["test_x"], arrays["test_y"],
                              batch_size=cfg.batch_size)
      rows.append(_row(protocol, sub, seed, step, method, result))
  return rows


def run_suite(workdir: str, cfg: ml_collections.ConfigDict,
              output: str | None = None) -> dict[str, Any]:
  """Runs `cfg.protocols` on the chosen checkpoints of `workdir`; writes tables and figures
  under `output` (default <workdir>/eval) and returns {"rows": [...], ...}."""
  validate(cfg)
  config = pretrained.with_data_overrides(pretrained.load_config(workdir), cfg.data)
  pre = pretrained.Pretrained.open(workdir, config)
  steps = pre.steps(cfg.checkpoints)  # Fails early on a bad `checkpoints`.
  info = data.dataset_info(config)
  train_x, train_y = data.load_arrays(config, config.data.train_split)
  test_x, test_y = data.load_arrays(config, config.data.eval_split)
  if len(test_y) == 0 or np.any(test_y < 0):
    raise ValueError(f"The evaluation split {config.data.eval_split!r} must be labelled; set "
                     "--eval_config.data.eval_split to a labelled split.")
  arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
  names = None
  if cfg.index_file and config.data.source == "folder":
    names = folder_example_names(config, len(train_y))
  subsets_by_seed = {int(s): make_subsets(cfg, train_y, int(s), names) for s in cfg.seeds}
  tuners = _Tuners(pre, cfg, info.num_classes)
  method = config.method
  rows: list[dict[str, Any]] = []
  for step in steps:
    state = pre.restore(step)
    rows += frozen_protocols(pre, state, cfg, arrays, subsets_by_seed, info.num_classes, step)
    if "finetune" in cfg.protocols:
      rows += trained_protocol("finetune", lambda _, s=state: (s.params, s.batch_stats),
                               tuners, cfg, arrays, subsets_by_seed, step, method)
    del state
  if "supervised" in cfg.protocols:
    def random_backbone(seed):
      s = pre.init_fn(seed)
      return s.params, s.batch_stats
    rows += trained_protocol("supervised", random_backbone, tuners, cfg, arrays,
                             subsets_by_seed, 0, method)
  result = {"workdir": os.path.abspath(workdir), "method": method, "checkpoint_steps": steps,
            "num_train_examples": int(len(train_y)), "num_eval_examples": int(len(test_y)),
            "eval_config": cfg.to_dict(), "rows": rows}
  output = output or os.path.join(workdir, "eval")
  if jax.process_index() == 0:
    write_outputs(result, output, plots=cfg.plots)
  return result


def write_outputs(result: dict[str, Any], output: str, *, plots: bool = True) -> dict[str, str]:
  """results.json, results.csv, results_step_<N>.json and (if `plots`) the two figures."""
  os.makedirs(output, exist_ok=True)
  paths = {"json": os.path.join(output, "results.json"),
           "csv": os.path.join(output, "results.csv")}
  with open(paths["json"], "w") as f:
    json.dump(result, f, indent=2, default=str)
  rows = result["rows"]
  with open(paths["csv"], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows({k: r[k] for k in CSV_COLUMNS} for r in rows)
  baseline = [r for r in rows if r["protocol"] == "supervised"]
  for step in result["checkpoint_steps"]:
    # Each checkpoint's table carries the supervised baseline rows too.
    per_step = {**result, "checkpoint_steps": [step],
                "rows": [r for r in rows if r["step"] == step] + baseline}
    with open(os.path.join(output, f"results_step_{step}.json"), "w") as f:
      json.dump(per_step, f, indent=2, default=str)
  if plots:
    from contrastive_jax.evaluation import plots as plots_lib  # pylint: disable=g-import-not-at-top
    paths["low_data_curve"] = plots_lib.low_data_curve(
        rows, os.path.join(output, "low_data_curve.png"), method=result["method"])
    paths["learning_dynamics"] = plots_lib.learning_dynamics(
        result["workdir"], rows, os.path.join(output, "learning_dynamics.png"))
  return paths


def folder_example_names(config: ml_collections.ConfigDict, expected: int) -> list[str]:
  """<class>/<file> of every train example of an image-folder source, in load order.

  Mirrors `data.sources.FolderSource` (classes sorted over every split folder, files sorted
  within a class), so an index file may list file names; a count mismatch (e.g. skipped
  corrupt files) raises, and integer indices remain the general mechanism.
  """
  root = config.data.path
  splits = [d.name for d in os.scandir(root) if d.is_dir()]
  classes = sorted({c.name for s in splits for c in os.scandir(os.path.join(root, s))
                    if c.is_dir()})
  names = []
  split_dir = os.path.join(root, config.data.train_split)
  for cls in classes:
    cls_dir = os.path.join(split_dir, cls)
    if os.path.isdir(cls_dir):
      names += [f"{cls}/{e.name}" for e in sorted(os.scandir(cls_dir), key=lambda e: e.name)
                if e.is_file() and e.name.lower().endswith((".jpg", ".jpeg", ".png"))]
  if len(names) != expected:
    raise ValueError(f"Listed {len(names)} files under {split_dir!r} but the split has "
                     f"{expected} examples (skipped corrupt files?); list integer indices in "
                     "index_file instead of file names.")
  return names
