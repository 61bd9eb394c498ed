"""`python -m contrastive_jax.evaluate`'s library: the evaluators of an eval config on the
chosen checkpoints of a run, written as tables and figures.

The evaluators are the ones a pretraining config lists (`evaluators/common.py`): the same
classes and block keys, so a kNN row here and the kNN monitor of training are one code path.
Evaluators with per-checkpoint results run on every chosen checkpoint; the from-scratch
baseline runs once (step 0). Rows go to results.json / results.csv (and
results_step_<N>.json per checkpoint) under the output folder, with the figures of
`plots.py`. No TensorFlow here (the data package imports it lazily).
"""
from __future__ import annotations

import csv
import io
from typing import Any

import jax
import ml_collections

from contrastive_jax import runs, storage
from contrastive_jax.evaluators import common

CSV_COLUMNS = ("evaluator", "protocol", "subset", "label_fraction", "num_labelled", "encoder",
               "seed", "step", "method", "top1", "top5")
# Several runs in one table (`run_suites`): each row also names its run.
RUNS_CSV_COLUMNS = ("run",) + CSV_COLUMNS


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Rejects bad eval-config values, naming the key, before anything is loaded."""
  if not isinstance(cfg.get("evals"), ml_collections.ConfigDict) or not cfg.evals:
    raise ValueError("The eval config needs an `evals` block with at least one evaluator.")
  common.validate(cfg.evals)
  only = _only(cfg)
  unknown = [n for n in only if n not in cfg.evals]
  if unknown:
    raise ValueError(f"only={cfg.only!r} names {unknown[0]!r}, not an evaluator of this "
                     f"config ({', '.join(cfg.evals)}).")


def _only(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  return tuple(n.strip() for n in str(cfg.get("only", "")).split(",") if n.strip())


def run_suite(workdir: str, cfg: ml_collections.ConfigDict,
              output: str | None = None) -> dict[str, Any]:
  """Runs the evaluators of `cfg` on the chosen checkpoints of `workdir`; writes tables and
  figures under `output` (default <workdir>/eval) and returns {"rows": [...], ...}."""
  validate(cfg)
  config = runs.with_data_overrides(runs.load_config(workdir), cfg.data)
  run = runs.Run.open(workdir, config)
  steps = run.steps(cfg.checkpoints)  # Fails early on a bad `checkpoints`.
  subject = common.Subject.of_run(run)
  shared = common.EvalData(config)
  evaluators = common.from_config(cfg.evals, subject, shared, only=_only(cfg) or None)
  rows: list[dict[str, Any]] = []
  for step in steps:
    state = run.restore(step)
    for evaluator in evaluators:
      if evaluator.per_checkpoint:
        rows += evaluator.run(state, step)
    del state
  for evaluator in evaluators:
    if not evaluator.per_checkpoint:
      rows += evaluator.run(None, 0)
  result = {"workdir": storage.absolute(workdir), "method": config.method,
            "checkpoint_steps": steps, "eval_config": cfg.to_dict(), "rows": rows,
            "num_train_examples": shared.size(subject.labelled_split),
            "num_eval_examples": shared.size(config.data.eval_split)}
  output = output or storage.join(workdir, "eval")
  if jax.process_index() == 0:
    write_outputs(result, output, plots=cfg.plots)
  return result


def parse_runs(spec: str) -> list[tuple[str, str]]:
  """`[label=]workdir,...` -> [(label, workdir)]; the label defaults to the directory's name.
  Runs that share a label (the same role at other seeds or label fractions) are one series."""
  out = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    label, _, workdir = item.rpartition("=")
    if not workdir:
      raise ValueError(f"--workdir entry {item!r} names no work directory; use "
                       "[label=]workdir,[label=]workdir,...")
    out.append((label or workdir.rstrip("/").rsplit("/", 1)[-1], workdir))
  if not out:
    raise ValueError("--workdir names no work directory.")
  return out


def run_suites(workdirs: list[tuple[str, str]], cfg: ml_collections.ConfigDict,
               output: str) -> dict[str, Any]:
  """`run_suite` on each (label, workdir), each writing its own <workdir>/eval, then every
  row, tagged with its run's label, in one table and one low-data curve under `output`: a
  teacher, its students and the other protocols side by side."""
  validate(cfg)
  rows: list[dict[str, Any]] = []
  per_run = []
  for label, workdir in workdirs:
    result = run_suite(workdir, cfg)
    rows += [{"run": label, **r} for r in result["rows"]]
    per_run.append({"run": label, "workdir": result["workdir"], "method": result["method"],
                    "checkpoint_steps": result["checkpoint_steps"]})
  steps = sorted({s for r in per_run for s in r["checkpoint_steps"]})
  combined = {"runs": per_run, "workdir": "", "method": "", "checkpoint_steps": steps,
              "eval_config": cfg.to_dict(), "rows": rows}
  if jax.process_index() == 0:
    write_outputs(combined, output, plots=cfg.plots)
  return combined


def write_outputs(result: dict[str, Any], output: str, *, plots: bool = True) -> dict[str, str]:
  """results.json, results.csv, results_step_<N>.json and (if `plots`) the two figures."""
  paths = {"json": storage.join(output, "results.json"),
           "csv": storage.join(output, "results.csv")}
  storage.write_json(paths["json"], result, default=str)
  rows = result["rows"]
  table = io.StringIO(newline="")
  columns = RUNS_CSV_COLUMNS if "runs" in result else CSV_COLUMNS
  writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  storage.write_text(paths["csv"], table.getvalue())
  baseline = [r for r in rows if r["protocol"] == "supervised"]
  # Each checkpoint's table carries the supervised baseline rows too (one run's steps only).
  for step in result["checkpoint_steps"] if "runs" not in result else ():
    per_step = {**result, "checkpoint_steps": [step],
                "rows": [r for r in rows if r["step"] == step] + baseline}
    storage.write_json(storage.join(output, f"results_step_{step}.json"), per_step,
                       default=str)
  if plots:
    from contrastive_jax.evaluators import plots as plots_lib  # pylint: disable=g-import-not-at-top
    paths["low_data_curve"] = plots_lib.low_data_curve(
        rows, storage.join(output, "low_data_curve.png"), method=result["method"])
    if result["workdir"]:  # One run's training curves; several runs have their own.
      paths["learning_dynamics"] = plots_lib.learning_dynamics(
          result["workdir"], rows, storage.join(output, "learning_dynamics.png"))
  return paths
