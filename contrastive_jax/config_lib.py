"""Checks of the generic config keys that run before any compilation, and config comparison.

The defaults themselves live in `contrastive_jax.presets`."""
from __future__ import annotations

import json
import numbers
from typing import Any

import ml_collections

from contrastive_jax import optim


def num_train_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  if config.num_steps > 0:
    return int(config.num_steps)
  return max(1, int(config.num_epochs * num_train_examples // config.batch_size))


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects bad generic values with the key and what is allowed.

  Method-specific values are `Method.validate`'s, data values `data.validate_data_config`'s;
  `train.train_and_evaluate` runs all three before it builds or compiles anything.
  """
  def need(ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ValueError(f"config.{key}={_get(config, key)!r} is invalid: {allowed}.")

  def number(key: str) -> bool:
    return isinstance(_get(config, key), numbers.Real) and not isinstance(_get(config, key), bool)

  need(_is_int(config.seed), "seed", "an integer")
  need(_is_int(config.batch_size) and config.batch_size > 0, "batch_size",
       "a positive integer (global batch over all devices)")
  need(_is_int(config.num_steps), "num_steps", "an integer (> 0 overrides num_epochs)")
  need(number("num_epochs"), "num_epochs", "a number")
  need(config.num_steps > 0 or config.num_epochs > 0, "num_epochs",
       "> 0 (or set num_steps > 0)")
  need(number("optim.base_lr") and _get(config, "optim.base_lr") > 0, "optim.base_lr",
       "must be > 0")
  need(_get(config, "optim.weight_decay") >= 0, "optim.weight_decay", "must be >= 0")
  need(0 <= _get(config, "optim.momentum") < 1, "optim.momentum", "must be in [0, 1)")
  need(_get(config, "optim.warmup_steps") >= 0, "optim.warmup_steps", "must be >= 0")
  need(_get(config, "optim.name") in optim.OPTIMIZERS, "optim.name", f"one of {optim.OPTIMIZERS}")
  need(_get(config, "optim.lr_scaling") in optim.LR_SCALINGS, "optim.lr_scaling",
       f"one of {optim.LR_SCALINGS}")
  need(number("optim.grad_clip_norm") and config.optim.grad_clip_norm >= 0,
       "optim.grad_clip_norm", "> 0, or 0 for no clipping")
  need(_is_int(config.log_every_steps) and config.log_every_steps > 0, "log_every_steps",
       "a positive integer")
  need(_is_int(config.checkpoint_every_steps) and config.checkpoint_every_steps > 0,
       "checkpoint_every_steps", "a positive integer")
  need(_is_int(config.keep_checkpoints) and config.keep_checkpoints > 0, "keep_checkpoints",
       "a positive integer (orbax deletes older ones only after a newer one is committed)")
  for key in ("async_checkpointing", "skip_nonfinite_updates"):
    need(isinstance(config[key], bool), key, "True or False")
  need(isinstance(config.init_from.workdir, str), "init_from.workdir",
       "a work directory, or '' to start from scratch")
  need(_is_int(config.init_from.step) and config.init_from.step >= -1, "init_from.step",
       "a checkpoint step, or -1 for the latest")
  # Label fractions (SuNCEt's config.suncet.label_fraction, and any other block's): a share of
  # the labelled examples, so 0 (no labels) and > 1 cannot be meant.
  for key, value in flatten(config.to_dict()).items():
    if key.rsplit(".", 1)[-1] == "label_fraction":
      need(isinstance(value, numbers.Real) and 0 < value <= 1, key,
           "a fraction of the labelled examples in (0, 1]")


# Keys a run may change when it resumes from a checkpoint of the same work directory: they
# extend training or change how it is watched, not what the saved state means. A trailing
# ".*" covers a whole block. Everything else refuses unless the caller allows the change.
RESUMABLE_KEYS = ("num_steps", "num_epochs", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints", "async_checkpointing", "skip_nonfinite_updates", "evals.*")


def resume_differences(saved: dict[str, Any], config: ml_collections.ConfigDict
                       ) -> tuple[list[str], list[str]]:
  """(differences that refuse a resume, differences RESUMABLE_KEYS allow), as "key: a -> b".

  `saved` is the work directory's config.json; both sides are compared as JSON, so tuples
  and lists are alike. Keys only one side has count as differences ("<absent>").
  """
  old = flatten(saved)
  new = flatten(json.loads(config.to_json_best_effort()))
  refused, allowed = [], []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
    if a == b:
      continue
    line = f"{key}: {a!r} -> {b!r}"
    resumable = any(key == k or (k.endswith(".*") and key.startswith(k[:-1]))
                    for k in RESUMABLE_KEYS)
    (allowed if resumable else refused).append(line)
  return refused, allowed


class _Absent:

  def __repr__(self) -> str:
    return "<absent>"


_ABSENT = _Absent()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{dotted key: leaf} of a nested dict; tuples become lists, as in JSON."""
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(flatten(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return flat


def _is_int(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node
