"""The one module that touches orbax: periodic saves, keep-N, resume from the work directory.

Safety comes from orbax's commit protocol, which this wrapper relies on and tests check:
a checkpoint is written to `<step>.orbax-checkpoint-tmp` and renamed to `<step>` only once
every file is written (on object stores, a `commit_success.txt` marks the commit instead), and
keep-N deletes old steps only after the new one is committed. So a run killed mid-write leaves
the previous checkpoint as the latest; the leftover tmp directory is ignored when steps are
listed, replaced if that step is saved again, and removed when the next training run opens the
directory (`cleanup_tmp=True`).

What a commit cannot catch (a disk or a copy that damaged committed files) `restore_latest`
does: it falls back to the newest checkpoint that reads back with finite values, and moves the
unreadable ones to `<directory>.unreadable/` (never deletes them) so the resumed run can save
those steps again.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from contrastive_jax import faults


class NoRestorableCheckpointError(RuntimeError):
  pass


class Checkpointer:
  """Wraps `ocp.CheckpointManager` for one train-state pytree."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
               cleanup_tmp: bool = False):
    """Opens (creates) `directory`.

    Args:
      directory: where the step directories live (local path or gs://...).
      max_to_keep: keep-N; older steps are deleted once a newer one is committed.
      async_save: write in a background thread after a blocking copy to host memory.
      cleanup_tmp: delete tmp directories of interrupted writes (never committed, so not
        user data). Only the run that writes `directory` may: a reader opened next to a
        running job (an evaluation) would delete the write in progress.
    """
    self.directory = (str(epath.Path(directory)) if "://" in directory
                      else os.path.abspath(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=cleanup_tmp, temporary_path_class=_temporary_path_class())
    # One unnamed item, said up front: left to infer it, orbax reads the layout from the
    # newest step directory, and a damaged one would then make every step unreadable.
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> bool:
    """Saves `state` as `step` (the caller decides when); False if `step` is already saved."""
    if step in self._manager.all_steps():
      return False  # E.g. a preemption save at a step that a periodic save already wrote.
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores `step` (default latest) into the structure, dtypes and shardings of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    logging.info("Restoring checkpoint step %d from %s", step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, target: Any) -> tuple[Any, int | None]:
    """The newest checkpoint that reads back with finite values, and its step.

    Returns `(target, None)` when there is no checkpoint. A checkpoint that fails to restore
    (missing or truncated files, unreadable metadata) or holds a NaN/Inf is reported with its
    step and directory, and the previous one is tried; unreadable ones are then moved aside.
    If none restores, raises NoRestorableCheckpointError rather than silently starting over:
    that is usually a config whose train state no longer matches the checkpoints.
    """
    bad: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(target, step)
        problem = None if _all_finite(state) else "it holds NaN or Inf values"
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many types for damaged files; any of them means unusable.
        state, problem = None, f"{type(e).__name__}: {e}"
      if problem is None:
        if bad:
          self._set_aside([s for s, _ in bad])
        return state, step
      logging.warning("Checkpoint step %d in %s cannot be used (%s); trying the previous one.",
                      step, self.directory, _short(problem))
      bad.append((step, problem))
    if bad:
      raise NoRestorableCheckpointError(
          f"No checkpoint in {self.directory} could be restored into the current train state "
          f"(tried steps {[s for s, _ in bad]}; newest: {_short(bad[0][1])}). If the config "
          "changed the model or optimiser, use a new work directory.")
    return target, None

  def read(self, step: int) -> Any:
    """The saved pytree of `step` as numpy arrays (dicts for dataclasses), for tools and tests."""
    return jax.device_get(self._manager.restore(step, args=ocp.args.StandardRestore()))

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unusable step directories to `<directory>.unreadable/`, so they can be saved anew."""
    aside = epath.Path(self.directory + ".unreadable")
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        dest, n = aside / str(step), 1
        while dest.exists():
          dest, n = aside / f"{step}-{n}", n + 1
        (epath.Path(self.directory) / str(step)).rename(dest)
        logging.warning("Moved unusable checkpoint step %d to %s.", step, dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("contrastive_jax_checkpoint_set_aside")
    self._manager.reload()

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _all_finite(tree: Any) -> bool:
  """Whether every float in this process's shards is finite (checkpoints never hold NaN)."""
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jnp.floating):
      shards = [s.data for s in x.addressable_shards] if isinstance(x, jax.Array) else [x]
      if not all(np.isfinite(np.asarray(s, np.float32)).all() for s in shards):
        return False
  return True


def _short(text: str, limit: int = 300) -> str:
  text = " ".join(text.split())
  return text if len(text) <= limit else text[:limit] + "..."


def _temporary_path_class() -> type | None:
  """Orbax's default, unless a test asks (faults.py) to die before committing one step."""
  step = faults.kill_in_save_step(jax.process_index())
  if step is None:
    return None

  class DieBeforeCommit(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """Every file of the step is written; the process dies just before the commit (rename)."""

    async def finalize(self, *args, **kwargs):
      if self.get_final().name == str(step):
        logging.warning("CJ_FAULT: killing the process before checkpoint %d is committed.", step)
        os.kill(os.getpid(), signal.SIGKILL)
      return await super().finalize(*args, **kwargs)

  return DieBeforeCommit
