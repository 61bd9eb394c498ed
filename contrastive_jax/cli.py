"""Start-up shared by the command lines (`main.py`, `evaluate.py`)."""
from __future__ import annotations

from absl import logging


class _QuietLibraries:
  """Drops INFO records of orbax: it logs every file it writes."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "orbax" not in record.pathname


def start() -> None:
  """Quiet logging, TensorFlow off the accelerators, and the multi-host runtime if any."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from contrastive_jax import distributed  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import tf_setup  # pylint: disable=g-import-not-at-top
  # TF is used for input only: it must not claim accelerator memory that JAX needs.
  tf_setup.hide_accelerators_from_tf()
  distributed.initialize()
