"""Preemption notices (SIGTERM) turned into one step at which every process saves and stops.

Cloud TPU maintenance events, SLURM (at the time limit, on preemption, on `scancel`) and
Kubernetes send SIGTERM a while before they kill a job. A checkpoint is one collective write,
so every process must decide to save at the same step. `PreemptionWatcher.should_stop(step)`
is that decision, made after every step:

  * one process: a SIGTERM handler sets a flag, read after each step;
  * several processes with JAX's preemption service (on by default once
    `jax.distributed.initialize` has run): `multihost_utils.reached_preemption_sync_point`.
    Its own (C++) SIGTERM handler tells the coordination service, which picks the next step
    every process can still reach. A Python handler would replace that one, so none is set;
  * several processes without that service: the flag, and an all-gather of the flags of every
    process after each step (a host round trip per step; only as a fallback).

A second SIGTERM after the first gets the default action (the process dies), so an impatient
user or scheduler can still stop a run; a checkpoint being written then is never committed
and the previous one stays the latest.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Tells the train loop, identically on every process, when to save and stop."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self._signals = signals
    self._received: int | None = None
    self._previous: dict[int, Any] = {}
    multi = jax.process_count() > 1
    if multi and jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service:
      self.mode = "jax_sync_point"
      return
    if threading.current_thread() is not threading.main_thread():
      # signal.signal works only in the main thread; a notebook or a test may train elsewhere.
      logging.warning("Not in the main thread: SIGTERM will not trigger a checkpoint.")
      self.mode = "off"
      return
    for sig in signals:
      previous = signal.signal(sig, self._on_signal)
      # None: a handler installed outside Python, which cannot be put back; default instead.
      self._previous[sig] = signal.SIG_DFL if previous is None else previous
    self.mode = "all_gather" if multi else "signal"

  def _on_signal(self, signum: int, frame: Any) -> None:
    del frame
    # Only set a flag: the main thread may be anywhere, e.g. inside a logging call.
    self._received = signum
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def should_stop(self, step: int) -> bool:
    """Whether to save at `step` and stop; the same answer on every process.

    Call it after every step, on every process, with consecutive steps.
    """
    if self.mode == "jax_sync_point":
      stop = multihost_utils.reached_preemption_sync_point(step)
    elif self.mode == "all_gather":
      flags = multihost_utils.process_allgather(np.int32(self._received is not None))
      stop = bool(np.any(flags))
    else:
      stop = self._received is not None
    if stop:
      if self._received is not None:
        what = f"signal {signal.Signals(self._received).name} received by this process"
      elif self.mode == "jax_sync_point":
        what = "notice to one of the processes, agreed through JAX's preemption sync point"
      else:
        what = "notice received by another process"
      logging.warning("Preemption (%s): saving a checkpoint at step %d and stopping.", what, step)
    return stop

  def close(self) -> None:
    """Restores the previous signal handlers: past the train loop, SIGTERM stops at once."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def __enter__(self) -> PreemptionWatcher:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()
