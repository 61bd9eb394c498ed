"""Command line: `python -m contrastive_jax.main --config=configs/simclr.py [--workdir=DIR]`.

Config values are overridden with `--config.<key>=<value>`; presets with `--config=FILE:ARG`.
"""
from __future__ import annotations

import hashlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (FILE[:PRESET]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results "
                    "(default: runs/<method>-<hash of the config>).")
flags.mark_flags_as_required(["config"])


class _QuietLibraries:
  """Drops INFO records of orbax and absl-wrapped libraries: they log every file they write."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from contrastive_jax import distributed, train  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import tf_setup  # pylint: disable=g-import-not-at-top
  # TF is used for input only: it must not claim accelerator memory that JAX needs.
  tf_setup.hide_accelerators_from_tf()
  distributed.initialize()
  config = FLAGS.config
  # Derived from the config, not the clock, so every process of a multi-host job agrees and
  # rerunning the same command resumes the same run.
  digest = hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:8]
  workdir = FLAGS.workdir or os.path.join("runs", f"{config.method}-{digest}")
  logging.info("Work directory: %s", workdir)
  results = train.train_and_evaluate(config, workdir)
  probe = results.get("linear_probe", {})
  print(f"\nResults ({workdir}):")
  for name, r in probe.items():
    print(f"  linear probe, {name:<12} encoder: top-1 {100 * r['top1']:.1f}%  "
          f"top-5 {100 * r['top5']:.1f}%")


if __name__ == "__main__":
  app.run(main)
