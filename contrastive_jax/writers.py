"""Metric writers and the progress report of the train loop: clu's, or a stand-in without TF.

clu's `metric_writers` package imports TensorFlow (its TensorBoard writer is `tf.summary`), so
on a machine with JAX but no TensorFlow, common on GPU hosts, it cannot be imported at all, and
`clu.periodic_actions` with it. There the loop still logs every scalar in clu's format, writes
TensorBoard event files through the `tensorboard` package's own event writer (which needs no
TensorFlow; without that package it only logs). The progress report is ours in both cases: clu's
ReportProgress counts evaluation time as training time and knows no batch size.
"""
from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from typing import Any, Callable, Iterator, Mapping, Protocol

from absl import logging

from contrastive_jax import storage


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
  # clu's TensorBoard writer is tf.summary: it reaches a bucket only through TensorFlow's
  # filesystem. Where epath reaches it another way (storage.py), the events go through epath.
  clu = _clu() if prefer_clu and storage.uses_tensorflow_filesystem(workdir) else None
  if clu is not None:
    return clu[0].create_default_writer(workdir, just_logging=just_logging)
  return TfFreeWriter(None if just_logging else workdir)


def progress_hook(num_train_steps: int, writer: Writer | None, every_steps: int,
                  batch_size: int | None = None) -> Progress:
  """The loop's progress report: training steps/s, images/s (with `batch_size`) and ETA."""
  return Progress(num_train_steps, writer, every_steps, batch_size=batch_size)


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
    storage.path(logdir).mkdir(parents=True, exist_ok=True)
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    if storage.is_remote(logdir):
      self._events = BucketEventWriter(logdir, event_pb2)
    else:
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
      storage.write_json(storage.join(self._logdir, "hparams.json"), dict(hparams),
                         default=str)

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


class BucketEventWriter:
  """TensorBoard event files written through epath, for buckets that TensorFlow cannot reach.

  Bucket objects are written whole, so events are kept in memory and each flush (at least every
  `flush_secs` while scalars arrive) writes them as a new event file; TensorBoard reads every
  event file of a folder.
  """

  def __init__(self, logdir: str, event_pb2, flush_secs: float = 120.0):
    from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
    self._logdir, self._event_pb2, self._flush_secs = logdir, event_pb2, flush_secs
    self._record_writer = record_writer.RecordWriter
    self._buffer: list[Any] = []
    self._files = 0
    self._last_flush = time.monotonic()

  def add_event(self, event) -> None:
    self._buffer.append(event)
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  def flush(self) -> None:
    self._last_flush = time.monotonic()
    if not self._buffer:
      return
    out = io.BytesIO()
    records = self._record_writer(out)
    header = self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    for event in [header, *self._buffer]:
      records.write(event.SerializeToString())
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{self._files:05d}")
    storage.write_bytes(storage.join(self._logdir, name), out.getvalue())
    self._buffer, self._files = [], self._files + 1

  def close(self) -> None:
    self.flush()


class Progress:
  """Every `every_steps` steps and at the last: logs training steps/s, images/s, percentage and
  ETA; writes `steps_per_sec`, `images_per_sec` (with a batch size) and `uptime`.

  Time spent inside `paused()` (the evaluations the loop runs between steps) is left out of
  both rates, so they measure training alone; the ETA keeps it, at the pace of the last
  interval, since the evaluations recur until the end.
  """

  def __init__(self, num_train_steps: int, writer: Writer | None, every_steps: int, *,
               batch_size: int | None = None, clock: Callable[[], float] = time.monotonic):
    self._total, self._writer, self._every = num_train_steps, writer, max(1, every_steps)
    self._batch_size, self._clock = batch_size, clock
    self._t0 = clock()
    self._last: tuple[int, float] | None = None
    self._paused = 0.0  # Seconds inside paused() since the last report.

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Time inside the block is not training time."""
    start = self._clock()
    try:
      yield
    finally:
      self._paused += self._clock() - start

  def __call__(self, step: int) -> None:
    now = self._clock()
    if self._last is None:  # The first call times nothing (it includes compilation).
      self._last, self._paused = (step, now), 0.0
      return
    if step % self._every and step != self._total:
      return
    last_step, last_time = self._last
    train_secs = now - last_time - self._paused
    if step == last_step or train_secs <= 0:
      return
    rate = (step - last_step) / train_secs
    eta = (self._total - step) * (now - last_time) / (step - last_step)
    images = f", {rate * self._batch_size:.0f} images/s" if self._batch_size else ""
    logging.info("%.1f steps/s%s, %.1f%% (%d/%d), ETA: %dm%02ds", rate, images,
                 100 * step / self._total, step, self._total, eta // 60, eta % 60)
    if self._writer is not None:
      scalars = {"steps_per_sec": rate, "uptime": now - self._t0}
      if self._batch_size:
        scalars["images_per_sec"] = rate * self._batch_size
      self._writer.write_scalars(step, scalars)
    self._last, self._paused = (step, now), 0.0
