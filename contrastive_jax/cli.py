"""Start-up and error reporting shared by the command lines (`main.py`, `evaluate.py`).

An expected error ends a command with one line, `Error: <message>`, on stderr and exit status 1;
with CONTRASTIVE_JAX_DEBUG=1 in the environment it raises with its traceback instead. Any other
exception is a bug and always keeps its traceback.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from absl import logging

from contrastive_jax import checkpointing, data, train

DEBUG_ENV = "CONTRASTIVE_JAX_DEBUG"

# Errors whose message is the whole answer: it names the key, file or step, and the fix.
# ValueError: config and data validation, raised before anything compiles (and
# train.ConfigMismatchError, a subclass: a work directory of another config). A ValueError
# from a bug deep in a library lands here too; DEBUG_ENV shows where it came from.
# FileNotFoundError: a work directory without config.json or checkpoints (runs.py);
# NoRestorableCheckpointError: one whose checkpoints do not fit the configured model;
# TensorFlowMissingError: a config that needs the `tf` extra where it is not installed.
EXPECTED_ERRORS = (ValueError, train.NonFiniteLossError, FileNotFoundError,
                   checkpointing.NoRestorableCheckpointError, data.TensorFlowMissingError)


class _QuietLibraries:
  """Drops INFO records of orbax: it logs every file it writes."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "orbax" not in record.pathname


def default_compilation_cache() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "contrastive_jax", "xla")


def enable_compilation_cache(directory: str) -> str | None:
  """Turns on JAX's persistent compilation cache in `directory` ('' for the user cache folder,
  $XDG_CACHE_HOME or ~/.cache, then contrastive_jax/xla; 'off' for none) and returns the folder
  used. $JAX_COMPILATION_CACHE_DIR, if set, wins."""
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]  # JAX reads it itself.
  if directory == "off":
    return None
  directory = directory or default_compilation_cache()
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every program that took a second to compile: the train step, init, evaluators.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def start(compilation_cache: str = "off") -> None:
  """Quiet logging, the compilation cache, TensorFlow off the accelerators, and the
  multi-host runtime if any."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  cache = enable_compilation_cache(compilation_cache)
  if cache:
    logging.info("XLA compilation cache: %s", cache)
  from contrastive_jax import distributed  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import tf_setup  # pylint: disable=g-import-not-at-top
  # TF is used for input only: it must not claim accelerator memory that JAX needs.
  tf_setup.hide_accelerators_from_tf()
  distributed.initialize()


def debug() -> bool:
  """Whether DEBUG_ENV asks for tracebacks of expected errors."""
  return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false")


@contextlib.contextmanager
def errors_reported() -> Iterator[None]:
  """Turns EXPECTED_ERRORS raised in the block into `Error: <message>` and exit status 1."""
  try:
    yield
  except EXPECTED_ERRORS as e:
    if debug():
      raise
    sys.stderr.write(f"Error: {str(e) or type(e).__name__}\n")
    sys.exit(1)
