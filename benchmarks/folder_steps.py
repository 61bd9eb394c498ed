"""Training steps/s from an image folder against the in-memory digits demo, and where the
time goes: the input pipeline alone, the train step alone, and the two together.

  python benchmarks/folder_steps.py --before=/tmp/folder_before --path=/tmp/cifar10

Two configs with the same model (SimCLR, ResNet-18 x0.25, 16 px, batch 128, host
augmentation in tf.data):
  digits   `configs/simclr.py` (the demo: scikit-learn's digits, arrays in memory)
  folder   `configs/simclr.py:cifar10_folder` with the demo's model, size and batch
           (`--path`: the CIFAR-10 folder, `data.cache` on as in the preset)
and three measurements of each, every one in a fresh process (`--cores` CPUs):
  train    `python -m contrastive_jax.main` with evaluators off and `log_every_steps=10`;
           steps/s between the `[<step>] train/` log lines of steps `--skip` and `--steps`
           (the loop logs a step after its metrics were computed), so start-up, compilation
           and the first epoch's decoding into the cache are left out.
  input    the training iterator alone (`data.build_train_iterator`): batches/s.
  step     the jitted train step alone on one batch held on the device: steps/s.
`--before=DIR` times another checkout the same way, interleaved run for run (the benchmark
itself runs from this one; each process imports the package of its side). Prints a Markdown
table of medians over `--repeats` and one JSON line per run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEMO = ["--config.evals.knn.every_steps=0", "--config.evals.linear.at_end=False",
         "--config.checkpoint_every_steps=100000"]
_LOG_TIME = re.compile(r"^I(\d{4} \d\d:\d\d:\d\d\.\d+) .*\[(\d+)\] .*train/")


def config_flags(variant: str, path: str) -> list[str]:
  if variant == "digits":
    return ["--config=configs/simclr.py", *_DEMO]
  # The demo's model, image size, batch and recipe scale; the folder's data.
  return ["--config=configs/simclr.py:cifar10_folder", f"--config.data.path={path}",
          "--config.data.image_size=16", "--config.model.depth=18", "--config.model.width=0.25",
          "--config.batch_size=128", "--config.simclr.temperature=0.2",
          "--config.simclr.proj_dims=(128, 64)", "--config.optim.warmup_steps=20", *_DEMO]


def _pin(cores: int) -> None:
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


def _load_config(flags: list[str]):
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags as cf  # pylint: disable=g-import-not-at-top
  sys.argv = ["x", *flags]  # config_flags defines the override flags from sys.argv.
  cf.DEFINE_config_file("config", None, "", lock_config=False)
  absl_flags.FLAGS(sys.argv)
  return absl_flags.FLAGS.config


def measure_input(flags: list[str], batches: int, skip: int) -> float:
  from contrastive_jax import data, train  # pylint: disable=g-import-not-at-top
  config = _load_config(flags)
  it = data.build_train_iterator(config, train.plan(config).spec)
  for _ in range(skip):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches / (time.perf_counter() - t0)


def measure_step(flags: list[str], steps: int, skip: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top

  from contrastive_jax import data, parallel, train  # pylint: disable=g-import-not-at-top
  from contrastive_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  config = _load_config(flags)
  p = train.plan(config)
  batch = parallel.shard_batch(next(data.build_train_iterator(config, p.spec)), p.mesh)
  defs = step_lib.model_defs(p.method, config.seed)
  state = step_lib.make_init_fn(p.method, p.tx, p.mesh)(config.seed)
  train_step = step_lib.make_train_step(p.method, defs, p.tx, p.schedule, p.mesh)
  for _ in range(skip):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  return steps / (time.perf_counter() - t0)


def measure_train(side: str, flags: list[str], steps: int, skip: int, cores: int) -> float:
  """steps/s of the command line between the log lines of steps `skip` and `steps`."""
  with tempfile.TemporaryDirectory() as workdir:
    argv = [sys.executable, "-c", f"import os; os.sched_setaffinity(0, "
            f"set(sorted(os.sched_getaffinity(0))[:{cores}])); import runpy, sys; "
            "sys.argv = sys.argv[1:]; runpy.run_module('contrastive_jax.main', "
            "run_name='__main__')", "main", f"--workdir={workdir}", *flags,
            f"--config.num_steps={steps}", "--config.log_every_steps=10",
            "--compilation_cache=off"]
    env = {**os.environ, "PYTHONPATH": side, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(argv, cwd=side, env=env, capture_output=True, text=True, check=False)
  when = {}
  for line in proc.stderr.splitlines():
    m = _LOG_TIME.match(line)
    if m:
      when[int(m.group(2))] = datetime.datetime.strptime(m.group(1), "%m%d %H:%M:%S.%f")
  if proc.returncode or skip not in when or steps not in when:
    raise RuntimeError(f"train run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  return (steps - skip) / (when[steps] - when[skip]).total_seconds()


def run_one(args) -> dict:
  _pin(args.cores)
  flags = config_flags(args.variant, args.path)
  if args.measure == "input":
    rate = measure_input(flags, args.steps - args.skip, args.skip)
  else:
    rate = measure_step(flags, args.steps - args.skip, args.skip)
  return {"rate": rate}


def _child(args, side: str, variant: str, measure: str) -> float:
  if measure == "train":
    return measure_train(side, config_flags(variant, args.path), args.steps, args.skip,
                         args.cores)
  cmd = [sys.executable, os.path.abspath(__file__), f"--measure={measure}",
         f"--variant={variant}", f"--path={args.path}", f"--cores={args.cores}",
         f"--steps={args.steps}", f"--skip={args.skip}"]
  env = {**os.environ, "PYTHONPATH": side, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run(cmd, cwd=side, env=env, capture_output=True, text=True, check=False)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{variant} {measure} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1])["rate"]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--measure", default="", help="input | step: one measurement (internal)")
  p.add_argument("--variant", default="folder")
  p.add_argument("--measures", default="train,input,step")
  p.add_argument("--variants", default="digits,folder")
  p.add_argument("--before", default="", help="another checkout, timed interleaved")
  p.add_argument("--after", default=ROOT)
  p.add_argument("--path", default="/tmp/cifar10")
  p.add_argument("--cores", type=int, default=2)
  p.add_argument("--steps", type=int, default=120)
  p.add_argument("--skip", type=int, default=40)
  p.add_argument("--repeats", type=int, default=2)
  args = p.parse_args()
  if args.measure:
    print(json.dumps(run_one(args)), flush=True)
    return
  sides = {"after": os.path.abspath(args.after)}
  if args.before:
    sides = {"before": os.path.abspath(args.before), **sides}
  rates: dict[tuple, list[float]] = {}
  for r in range(args.repeats):
    for measure in args.measures.split(","):
      for variant in args.variants.split(","):
        for name, side in (sides.items() if r % 2 == 0 else list(sides.items())[::-1]):
          rate = _child(args, side, variant, measure)
          rates.setdefault((measure, variant, name), []).append(rate)
          print(json.dumps(dict(side=name, variant=variant, measure=measure, repeat=r,
                                rate=round(rate, 3), load=os.getloadavg()[0])), flush=True)
  names = list(sides)
  print(f"\n{args.cores} core(s); steps {args.skip}-{args.steps}; median of {args.repeats}. "
        "train and step: steps/s; input: batches/s.\n")
  print("| measure | variant | " + " | ".join(names)
        + (" | after / before |" if len(names) > 1 else " |"))
  print("|---|---|" + "---:|" * (len(names) + (len(names) > 1)))
  for measure in args.measures.split(","):
    for variant in args.variants.split(","):
      med = {n: statistics.median(rates[(measure, variant, n)]) for n in names}
      row = f"| {measure} | {variant} | " + " | ".join(f"{med[n]:.2f}" for n in names)
      if len(names) > 1:
        row += f" | {med['after'] / med['before']:.2f}x"
      print(row + " |")


if __name__ == "__main__":
  main()
