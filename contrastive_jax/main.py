"""Command line: `python -m contrastive_jax.main --config=configs/simclr.py [--workdir=DIR]`.

Config values are overridden with `--config.<key>=<value>`; presets with `--config=FILE:ARG`.
FILE may also name a config shipped with the package (`--config=simclr:tiny`), which is how an
installed package is run outside a clone (`config_files.py`).
Rerunning a command resumes its work directory from the latest usable checkpoint; a work
directory holding checkpoints of a different config is refused unless --allow_config_change.

Exit status: 0 when training and evaluation finished; EXIT_PREEMPTED (75, sysexits' EX_TEMPFAIL:
"try again later") when a SIGTERM (preemption notice) stopped training after a checkpoint of
the current step was written, so a wrapper can rerun the command; 1 on errors; 2 on bad flags.

An expected error (a config value that fails validation, a refused work directory, a non-finite
loss: `cli.EXPECTED_ERRORS`) prints one line, `Error: <message>`, without a traceback; set
CONTRASTIVE_JAX_DEBUG=1 to see its traceback. Other exceptions keep their traceback.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys

from absl import app, flags, logging

from contrastive_jax import config_files

FLAGS = flags.FLAGS
config_files.define_config_flag("config", None, "Experiment config: a file or the name of a "
                                "shipped config (simclr, cpc_v2, ...), then [:PRESET].")
if "compilation_cache" not in FLAGS:  # Defined by main.py and evaluate.py alike.
  flags.DEFINE_string("compilation_cache", "", "Persistent XLA compilation cache, so a rerun "
                      "does not compile again: a folder (local or gs://); '' is "
                      "~/.cache/contrastive_jax/xla; 'off' disables it.")
if "workdir" not in FLAGS:  # contrastive_jax.evaluate defines it too; both may share a process.
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results "
                      "(default: runs/<method>-<hash of the config>).")
flags.DEFINE_bool("allow_config_change", False, "Resume checkpoints in --workdir even if they "
                  "were written under a config that differs in more than run settings.")
flags.mark_flags_as_required(["config"])

EXIT_PREEMPTED = 75


def _config_keys(argv: list[str]) -> list[str] | None:
  """Dotted keys of the config named on the command line, for error messages."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  from contrastive_jax import config_lib, presets  # pylint: disable=g-import-not-at-top
  try:
    config = presets.load_config_file(config_files.resolve_path(path), arg or None)
  except Exception:  # pylint: disable=broad-except
    return None
  return list(config_lib.flatten(config.to_dict()))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a readable message for a bad `--config.<key>` override."""
  try:
    return FLAGS(argv)
  except (KeyError, AttributeError, flags.Error) as e:
    bad = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
    keys = _config_keys(argv)
    unknown = [b for b in bad if keys is not None and b not in keys]
    if unknown:
      near = [k for k in keys if k.rsplit(".", 1)[0] == unknown[0].rsplit(".", 1)[0]] or keys
      msg = (f"unknown config key {unknown[0]!r} in --config.{unknown[0]}. Valid keys there: "
             f"{', '.join(near)}.")
    else:
      msg = re.sub(r"\s+", " ", str(e)).strip()
    sys.stderr.write(f"Error: {msg}\nUsage: python -m contrastive_jax.main "
                     "--config=configs/<experiment>.py[:preset] (or <experiment>[:preset]) "
                     "[--workdir=DIR] [--config.<key>=<value> ...]\n")
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from contrastive_jax import cli  # pylint: disable=g-import-not-at-top
  with cli.errors_reported():
    _train()


def _train() -> None:
  from contrastive_jax import cli, train  # pylint: disable=g-import-not-at-top
  cli.start(FLAGS.compilation_cache)
  config = FLAGS.config
  # Derived from the config, not the clock, so every process of a multi-host job agrees and
  # rerunning the same command resumes the same run.
  digest = hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:8]
  workdir = FLAGS.workdir or os.path.join("runs", f"{config.method}-{digest}")
  logging.info("Work directory: %s", workdir)
  if "noisy_student" in config:  # Iterated self-training: one run per iteration.
    from contrastive_jax import self_training  # pylint: disable=g-import-not-at-top
    results = self_training.run_iterations(config, workdir,
                                           allow_config_change=FLAGS.allow_config_change)
  else:
    results = train.train_and_evaluate(config, workdir,
                                       allow_config_change=FLAGS.allow_config_change)
  if results.get("preempted"):
    print(f"\nPreempted at step {results['step']}; checkpoint saved in {workdir}. Rerun the same "
          f"command to resume (exit status {EXIT_PREEMPTED}).")
    sys.exit(EXIT_PREEMPTED)
  print(f"\nResults ({workdir}):")
  for rows in results.get("evals", {}).values():
    for r in rows:
      print(f"  {r['protocol']:<8} {r['subset']:<14} {r['encoder']:<12} encoder: top-1 "
            f"{100 * r['top1']:.1f}%  top-5 {100 * r['top5']:.1f}%")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
