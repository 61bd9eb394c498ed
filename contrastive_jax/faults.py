"""Fault injection for the kill-and-resume tests, read from the environment variable CJ_FAULT.

Unset in normal runs, and then nothing here does anything. Set, it makes a run die where a
real one might, deterministically, so a test can check that resuming gives the same result:

  CJ_FAULT=kill_after_step=3     SIGKILL right after step 3 is dispatched (nothing saved at 3)
  CJ_FAULT=sigterm_after_step=5  send this process SIGTERM after step 5 (a preemption notice)
  CJ_FAULT=kill_in_save=4        SIGKILL while checkpoint 4 is written, before its commit

Several faults are separated by commas; "@<process index>" restricts one to that process
(`sigterm_after_step=3@1`).
"""
from __future__ import annotations

import os
import signal

ENV = "CJ_FAULT"
_KINDS = ("kill_after_step", "sigterm_after_step", "kill_in_save")


def _faults(process_index: int) -> dict[str, int]:
  spec = os.environ.get(ENV, "").strip()
  out = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    kind, _, rest = item.partition("=")
    value, _, only = rest.partition("@")
    if kind not in _KINDS or not value.isdigit() or (only and not only.isdigit()):
      raise ValueError(f"Bad {ENV} item {item!r}: expected <kind>=<step>[@<process>] with kind "
                       f"one of {_KINDS}.")
    if not only or int(only) == process_index:
      out[kind] = int(value)
  return out


class Faults:
  """The faults of one process, parsed once (the train loop calls `after_step` every step)."""

  def __init__(self, process_index: int = 0):
    self._faults = _faults(process_index)

  def after_step(self, step: int) -> None:
    """Called once step `step` is dispatched, before anything is saved."""
    if not self._faults:
      return
    if self._faults.get("kill_after_step") == step:
      os.kill(os.getpid(), signal.SIGKILL)
    if self._faults.get("sigterm_after_step") == step:
      os.kill(os.getpid(), signal.SIGTERM)


def kill_in_save_step(process_index: int = 0) -> int | None:
  """The checkpoint step whose write should die before its commit, if any."""
  return _faults(process_index).get("kill_in_save")
