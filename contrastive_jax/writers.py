"""Metric writers and the progress report of the train loop: clu's, or a stand-in without TF.

clu's `metric_writers` package imports TensorFlow (its TensorBoard writer is `tf.summary`), so
on a machine with JAX but no TensorFlow, common on GPU hosts, it cannot be imported at all, and
`clu.periodic_actions` with it. There the loop still logs every scalar in clu's format, writes
TensorBoard event files through the `tensorboard` package's own event writer (which needs no
TensorFlow; without that package it only logs), and reports steps/s and the ETA itself.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping, Protocol

from absl import logging


class Writer(Protocol):

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


def _clu():
  try:
    from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError:  # clu missing, or TensorFlow missing under it.
    return None
  return metric_writers, periodic_actions


def create_writer(workdir: str, *, just_logging: bool, prefer_clu: bool = True) -> Writer:
  """clu's default writer (logs + TensorBoard) where clu imports, else `TfFreeWriter`.

  Args:
    workdir: where TensorBoard event files go.
    just_logging: only log (the processes other than 0 of a multi-host job).
    prefer_clu: False takes `TfFreeWriter` even where clu imports.
  """
  clu = _clu() if prefer_clu else None
  if clu is not None:
    return clu[0].create_default_writer(workdir, just_logging=just_logging)
  return TfFreeWriter(None if just_logging else workdir)


def progress_hook(num_train_steps: int, writer: Writer, every_steps: int,
                  prefer_clu: bool = True) -> Callable[[int], Any]:
  """clu's ReportProgress (steps/s, ETA, written as `steps_per_sec`), or the same without clu."""
  clu = _clu() if prefer_clu else None
  if clu is not None:
    return clu[1].ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                 every_steps=every_steps)
  return Progress(num_train_steps, writer, every_steps)


class TfFreeWriter:
  """Logs scalars like clu's LoggingWriter; with a logdir, also writes TensorBoard events."""

  def __init__(self, logdir: str | None):
    self._events = None
    self._logdir = logdir
    if logdir is None:
      return
    try:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E501
      from tensorboard.summary.writer import event_file_writer  # noqa: E501
    except ImportError:
      logging.warning("Neither TensorFlow nor tensorboard is installed: metrics go to the log "
                      "only (pip install tensorboard for event files in %s).", logdir)
      return
    os.makedirs(logdir, exist_ok=True)
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self._events = event_file_writer.EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = {k: float(v) for k, v in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items())))
    if self._events is None:
      return
    summary = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self._events.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                                 summary=summary))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    # TensorBoard's hparams plugin format needs TensorFlow; the run's config.json holds them
    # all, and a copy here keeps them beside the events.
    if self._logdir is not None:
      with open(os.path.join(self._logdir, "hparams.json"), "w") as f:
        json.dump(dict(hparams), f, indent=2, default=str)

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


class Progress:
  """Every `every_steps` steps: logs steps/s, percentage and ETA; writes `steps_per_sec`."""

  def __init__(self, num_train_steps: int, writer: Writer | None, every_steps: int):
    self._total, self._writer, self._every = num_train_steps, writer, max(1, every_steps)
    self._t0 = time.monotonic()
    self._last: tuple[int, float] | None = None

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._last is None:  # The first call times nothing (it includes compilation).
      self._last = (step, now)
      return
    if step % self._every and step != self._total:
      return
    last_step, last_time = self._last
    if step == last_step or now == last_time:
      return
    rate = (step - last_step) / (now - last_time)
    eta = (self._total - step) / rate
    logging.info("%.1f steps/s, %.1f%% (%d/%d), ETA: %dm%02ds", rate, 100 * step / self._total,
                 step, self._total, eta // 60, eta % 60)
    if self._writer is not None:
      self._writer.write_scalars(step, {"steps_per_sec": rate,
                                        "uptime": now - self._t0})
    self._last = (step, now)
