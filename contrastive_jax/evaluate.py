"""Command line: evaluate a run with the evaluators of configs/eval.py.

  python -m contrastive_jax.evaluate --workdir=runs/<run> [--output=DIR] \\
      [--eval_config=configs/eval.py[:preset]] [--eval_config.<key>=<value> ...]
  python -m contrastive_jax.evaluate --output=DIR \
      --workdir=teacher=runs/t,self-distilled=runs/s,small=runs/small,noisy-1=runs/ns/iteration_1
      # several runs, each evaluated in its own <workdir>/eval, then all rows (a "run" column)
      # in one table and one low-data curve under DIR; runs sharing a label are one series.

The default eval config is the shipped `eval` config (configs/eval.py, found in the installed
package too: `config_files.py`); `--eval_config=eval:digits` names a shipped one with a preset.

Reads <workdir>/config.json and checkpoints/, writes results.json, results.csv,
results_step_<N>.json, low_data_curve.png and learning_dynamics.png to --output (default
<workdir>/eval), and prints the table.

Exit status: 0 when done, 1 on errors, 2 on bad flags. An expected error (a work directory
without config.json or checkpoints, a bad --eval_config value: `cli.EXPECTED_ERRORS`) prints
one line, `Error: <message>`; set CONTRASTIVE_JAX_DEBUG=1 to see its traceback.
"""
from __future__ import annotations

from typing import Any

import ml_collections
from absl import app, flags

from contrastive_jax import config_files

FLAGS = flags.FLAGS
config_files.define_config_flag("eval_config", "eval", "Evaluation config: a file or the name "
                                "of a shipped config, then [:PRESET].")
if "compilation_cache" not in FLAGS:  # Defined by main.py and evaluate.py alike.
  flags.DEFINE_string("compilation_cache", "", "Persistent XLA compilation cache, so a rerun "
                      "does not compile again: a folder (local or gs://); '' is "
                      "~/.cache/contrastive_jax/xla; 'off' disables it.")
if "workdir" not in FLAGS:  # contrastive_jax.main defines it too; both may share a process.
  flags.DEFINE_string("workdir", None, "Work directory of the run to evaluate; or several, "
                      "[label=]dir,[label=]dir,... (runs sharing a label form one series), "
                      "evaluated one by one and shown in one table (needs --output).")
flags.DEFINE_string("output", None, "Where to write tables and figures (default "
                    "<workdir>/eval).")
flags.mark_flags_as_required(["workdir"])


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict,
             output: str | None = None) -> dict[str, Any]:
  """Runs the suite on `workdir`, writes to `output` (default <workdir>/eval), prints the table."""
  from contrastive_jax import storage  # pylint: disable=g-import-not-at-top
  from contrastive_jax.evaluators import plots, suite  # pylint: disable=g-import-not-at-top
  named = suite.parse_runs(workdir)
  if len(named) > 1:
    if not output:
      raise ValueError("Several work directories (--workdir=a,b,...) need --output, the folder "
                       "of their joint table and low-data curve.")
    result = suite.run_suites(named, eval_config, output)
    labels = ", ".join(dict.fromkeys(label for label, _ in named))
    print(f"\nEvaluation of {len(named)} runs ({labels}), written to {output}:\n\n"
          f"{plots.format_table(result['rows'])}")
    return result
  workdir = named[0][1]
  output = output or storage.join(workdir, "eval")
  result = suite.run_suite(workdir, eval_config, output)
  print(f"\nEvaluation of {workdir} (checkpoint steps {result['checkpoint_steps']}), written "
        f"to {output}:\n\n{plots.format_table(result['rows'])}")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from contrastive_jax import cli  # pylint: disable=g-import-not-at-top
  with cli.errors_reported():
    cli.start(FLAGS.compilation_cache)
    evaluate(FLAGS.workdir, FLAGS.eval_config, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
