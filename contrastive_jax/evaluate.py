"""Command line: evaluate a run with the evaluators of configs/eval.py.

  python -m contrastive_jax.evaluate --workdir=runs/<run> [--output=DIR] \\
      [--eval_config=configs/eval.py[:preset]] [--eval_config.<key>=<value> ...]

Reads <workdir>/config.json and checkpoints/, writes results.json, results.csv,
results_step_<N>.json, low_data_curve.png and learning_dynamics.png to --output (default
<workdir>/eval), and prints the table.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "eval.py")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("eval_config", _DEFAULT_CONFIG,
                                "Evaluation config file (FILE[:PRESET]).", lock_config=True)
if "workdir" not in FLAGS:  # contrastive_jax.main defines it too; both may share a process.
  flags.DEFINE_string("workdir", None, "Work directory of the pretraining run to evaluate.")
flags.DEFINE_string("output", None, "Where to write tables and figures (default "
                    "<workdir>/eval).")
flags.mark_flags_as_required(["workdir"])


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict,
             output: str | None = None) -> dict[str, Any]:
  """Runs the suite on `workdir`, writes to `output` (default <workdir>/eval), prints the table."""
  from contrastive_jax.evaluators import plots, suite  # pylint: disable=g-import-not-at-top
  output = output or os.path.join(workdir, "eval")
  result = suite.run_suite(workdir, eval_config, output)
  print(f"\nEvaluation of {workdir} (checkpoint steps {result['checkpoint_steps']}), written "
        f"to {output}:\n\n{plots.format_table(result['rows'])}")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from contrastive_jax import cli  # pylint: disable=g-import-not-at-top
  cli.start()
  evaluate(FLAGS.workdir, FLAGS.eval_config, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
