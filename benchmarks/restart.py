"""Time from process start to the first completed training step of a resumed run, against the
step it resumes at, with a cold and a warm persistent compilation cache.

  python benchmarks/restart.py --before=/tmp/restart_before --work=/tmp/restart

`--before` is another checkout of the project (e.g. `git worktree add /tmp/restart_before
ee54d3b^`, the commit before per-epoch input order); it is timed side by side with this
checkout (`--after`, default: this one), run for run, interleaved. Leave it out to time one side.

What runs. A synthetic image folder (`--images` 32 px PNGs of 10 classes, a tenth as many test
images) is written once. Each side trains one step of the `tiny` SimCLR config on it
(`python -m contrastive_jax.main --config=configs/simclr.py:tiny`, folder source, host
augmentation, batch `--batch`), and that checkpoint is saved again under the resume steps: the
middle of epoch E for each E in `--epochs` (E - 1/2 epochs of records), through the side's own
`checkpointing.Checkpointer` (read the pytree, set `step`, save). Training a real run that far
would give the same input position and learning rate; only the weights differ, which the time
to the first step does not depend on. Every run then resumes a fresh copy of one of those work
directories with `num_steps` fixed (so the compiled step is the same program at every resume
step and the warm cache applies) and `log_every_steps=1`: the loop logs `[<step + 1>]
train/...` only after that step's metrics have been computed on the device, so the time at which
that line appears on stderr, from just before the process is started, is the time to the first
completed step. The process is then killed (the run's own behaviour is unchanged).

`--input_epochs` (default 1,10,100,1000) adds a closer look at the one part that depends on the
step: the input position. A fresh process of each side builds the training iterator of the same
config at the resume step and times its first batch (`data.build_train_iterator(...,
start_step=S)` then `next`), with `data.cache` off (records are file names) and on (records are
decoded images held in memory); the process start and imports are not counted.

Caches: "cold" runs get an empty compilation cache folder, "warm" runs one that a discarded run
of the same side filled first. This checkout takes `--compilation_cache=DIR`; a checkout without
that flag gets $JAX_COMPILATION_CACHE_DIR (the same JAX setting: JAX's default thresholds match
the flag's). Prints a Markdown table (median of `--repeats`) and one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10
# Rewrites the 1-step checkpoint of a work directory as `step` in another one (run with the
# side's own code, so each side reads and writes its own checkpoint format).
_RESAVE = """
import sys
import numpy as np
from contrastive_jax import checkpointing
src, dst, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
tree = checkpointing.Checkpointer(src, async_save=False).read(1)
tree["step"] = np.asarray(step, dtype=np.asarray(tree["step"]).dtype)
out = checkpointing.Checkpointer(dst, async_save=False)
out.save(step, tree)
out.close()
"""
# Times the first batch of the training iterator at a resume step (run with the side's code).
_FIRST_BATCH = """
import sys, time
from contrastive_jax import data, presets
folder, batch, step, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
config = presets.load_config_file("configs/simclr.py", "tiny")
config.data.update(source="folder", path=folder, image_size=16, cache=cache)
config.batch_size = batch
t0 = time.perf_counter()
next(data.build_train_iterator(config, "two_views", start_step=step))
print("SECONDS", time.perf_counter() - t0)
"""


def first_batch(side: str, folder: str, batch: int, step: int, cache: bool) -> float:
  proc = subprocess.run([sys.executable, "-c", _FIRST_BATCH, folder, str(batch), str(step),
                         "1" if cache else "0"], cwd=side, env=_env(side, None),
                        capture_output=True, text=True, check=False)
  found = [ln for ln in proc.stdout.splitlines() if ln.startswith("SECONDS")]
  if proc.returncode or not found:
    raise RuntimeError(f"first batch failed in {side}:\n{proc.stderr[-3000:]}")
  return float(found[-1].split()[1])


def make_folder(root: str, n_train: int, size: int = 32) -> str:
  """PNGs of smooth random colours (`n_train` train, a tenth as many test), written once."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  done = os.path.join(root, ".complete")
  if os.path.exists(done):
    return root
  rng = np.random.default_rng(0)
  for split, n in (("train", n_train), ("test", max(n_train // 10, CLASSES))):
    for c in range(CLASSES):
      os.makedirs(os.path.join(root, split, f"class{c}"), exist_ok=True)
    for i in range(n):
      coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
      image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
      image.save(os.path.join(root, split, f"class{i % CLASSES}", f"{i:05d}.png"))
  open(done, "w").close()
  return root


def _config_flags(args, folder: str, num_steps: int) -> list[str]:
  flags = [f"--config={os.path.join('configs', 'simclr.py')}:tiny",
           "--config.data.source=folder", f"--config.data.path={folder}",
           "--config.data.image_size=16", f"--config.batch_size={args.batch}",
           f"--config.num_steps={num_steps}", "--config.log_every_steps=1",
           "--config.checkpoint_every_steps=100000", "--config.evals.knn.every_steps=0",
           "--config.evals.linear.at_end=False"]
  return flags


def _env(side: str, cache: str | None) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(PYTHONPATH=side, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if cache and not _has_cache_flag(side):
    env["JAX_COMPILATION_CACHE_DIR"] = cache
  return env


def _has_cache_flag(side: str) -> bool:
  with open(os.path.join(side, "contrastive_jax", "main.py")) as f:
    return "compilation_cache" in f.read()


def _main_argv(side: str, workdir: str, flags: list[str], cache: str | None) -> list[str]:
  argv = [sys.executable, "-m", "contrastive_jax.main", f"--workdir={workdir}", *flags]
  if _has_cache_flag(side):
    argv.append(f"--compilation_cache={cache or 'off'}")
  return argv


def time_to_step(side: str, workdir: str, flags: list[str], cache: str | None,
                 step: int, timeout: float) -> float:
  """Seconds from just before the process starts until it logs that `step` completed."""
  pattern = re.compile(rf"\[{step}\] .*train/")
  t0 = time.perf_counter()
  proc = subprocess.Popen(_main_argv(side, workdir, flags, cache), cwd=side,
                          env=_env(side, cache), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  tail = []
  try:
    for line in proc.stderr:
      if pattern.search(line):
        return time.perf_counter() - t0
      tail = (tail + [line])[-20:]
      if time.perf_counter() - t0 > timeout:
        break
    raise RuntimeError(f"No '[{step}] train/' line from {side} (exit {proc.poll()}):\n"
                       + "".join(tail))
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def prepare(side: str, name: str, work: str, folder: str, args,
            resume_steps: list[int]) -> dict[int, str]:
  """Work directories of `side` with a checkpoint at each resume step."""
  base = os.path.join(work, name, "base")
  flags = _config_flags(args, folder, 1)
  if not os.path.isdir(os.path.join(base, "checkpoints", "1")):
    shutil.rmtree(base, ignore_errors=True)
    subprocess.run(_main_argv(side, base, flags, None), cwd=side, env=_env(side, None),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  out = {}
  for step in resume_steps:
    workdir = os.path.join(work, name, f"step{step}")
    if not os.path.isdir(os.path.join(workdir, "checkpoints", str(step))):
      shutil.rmtree(workdir, ignore_errors=True)
      shutil.copytree(base, workdir, ignore=shutil.ignore_patterns("checkpoints"))
      subprocess.run([sys.executable, "-c", _RESAVE, os.path.join(base, "checkpoints"),
                      os.path.join(workdir, "checkpoints"), str(step)], cwd=side,
                     env=_env(side, None), check=True, stderr=subprocess.DEVNULL)
    out[step] = workdir
  return out


def input_positions(args, sides: dict[str, str], folder: str, per_epoch: int) -> None:
  """The first batch of the training iterator at each resume step, both sides interleaved."""
  epochs = [int(e) for e in args.input_epochs.split(",")]
  times: dict[tuple, list[float]] = {}
  for r in range(args.repeats):
    for e in epochs:
      step = e * per_epoch - per_epoch // 2
      for cache in (False, True):
        for name, side in sides.items():
          s = first_batch(side, folder, args.batch, step, cache)
          times.setdefault((e, cache, name), []).append(s)
          print(json.dumps(dict(side=name, epochs=e, resume_step=step, data_cache=cache,
                                repeat=r, first_batch_seconds=round(s, 3))), flush=True)
  ratio = "before" in sides
  # The least of the repeats: the cost itself, less what other jobs on the machine added.
  print(f"\nFirst batch of the training iterator (s), least of {args.repeats}.\n")
  print("| resume at | step | data.cache | " + " | ".join(sides)
        + (" | before / after |" if ratio else " |"))
  print("|---|---:|---|" + "---:|" * (len(sides) + ratio))
  for e in epochs:
    for cache in (False, True):
      med = {n: min(times[(e, cache, n)]) for n in sides}
      row = (f"| {e - 0.5:g} epochs | {e * per_epoch - per_epoch // 2} | "
             f"{'on' if cache else 'off'} | " + " | ".join(f"{med[n]:.2f}" for n in sides))
      print(row + (f" | {med['before'] / med['after']:.1f} |" if ratio else " |"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--after", default=ROOT, help="checkout timed as 'after'")
  parser.add_argument("--before", default="", help="checkout timed as 'before' (optional)")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "restart_bench"))
  parser.add_argument("--images", type=int, default=5000, help="training images")
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--epochs", default="1,10,100", help="resume in the middle of these")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--caches", default="cold,warm")
  parser.add_argument("--input_epochs", default="1,10,100,1000",
                      help="resume points of the input-position measurement ('' for none)")
  parser.add_argument("--timeout", type=float, default=600)
  args = parser.parse_args()
  per_epoch = args.images // args.batch
  epochs = [int(e) for e in args.epochs.split(",") if e]
  resume = {e: e * per_epoch - per_epoch // 2 for e in epochs}
  folder = make_folder(os.path.join(args.work, f"images_{args.images}"), args.images)
  sides = {"after": os.path.abspath(args.after)}
  if args.before:
    sides["before"] = os.path.abspath(args.before)
  if args.input_epochs:
    input_positions(args, sides, folder, per_epoch)
  if not epochs:
    return
  num_steps = max(resume.values()) + per_epoch  # One schedule, one compiled step, for all.
  workdirs = {name: prepare(side, name, args.work, folder, args, sorted(resume.values()))
              for name, side in sides.items()}
  flags = _config_flags(args, folder, num_steps)
  caches = args.caches.split(",")
  warm = {}
  for name, side in sides.items():
    if "warm" in caches:  # Filled by one discarded run; later runs only read it.
      warm[name] = os.path.join(args.work, name, "xla_warm")
      shutil.rmtree(warm[name], ignore_errors=True)
      step = min(resume.values())
      run_dir = os.path.join(args.work, name, "run")
      shutil.rmtree(run_dir, ignore_errors=True)
      shutil.copytree(workdirs[name][step], run_dir)
      time_to_step(side, run_dir, flags, warm[name], step + 1, args.timeout)
  times: dict[tuple, list[float]] = {}
  for r in range(args.repeats):
    for e in epochs:
      for cache in caches:
        for name, side in sides.items():  # Interleaved: before and after back to back.
          step = resume[e]
          run_dir = os.path.join(args.work, name, "run")
          shutil.rmtree(run_dir, ignore_errors=True)
          shutil.copytree(workdirs[name][step], run_dir)
          cache_dir = warm.get(name) if cache == "warm" else os.path.join(
              args.work, name, "xla_cold")
          if cache == "cold":
            shutil.rmtree(cache_dir, ignore_errors=True)
          s = time_to_step(side, run_dir, flags, cache_dir, step + 1, args.timeout)
          times.setdefault((e, cache, name), []).append(s)
          print(json.dumps(dict(side=name, epochs=e, resume_step=step, cache=cache,
                                repeat=r, seconds=round(s, 2))), flush=True)
  print(f"\n{args.images} images, batch {args.batch} ({per_epoch} steps/epoch); median of "
        f"{args.repeats}; seconds from process start to the first completed step.\n")
  header = "| resume at | step | cache | " + " | ".join(sides)
  ratio = "before / after" if "before" in sides else ""
  print(header + (f" | {ratio} |" if ratio else " |"))
  print("|---|---:|---|" + "---:|" * (len(sides) + bool(ratio)))
  for e in epochs:
    for cache in caches:
      med = {n: statistics.median(times[(e, cache, n)]) for n in sides}
      row = f"| {e - 0.5:g} epochs | {resume[e]} | {cache} | " + " | ".join(
          f"{med[n]:.1f} s" for n in sides)
      if ratio:
        row += f" | {med['before'] / med['after']:.2f} |"
      print(row + ("" if ratio else " |"))


if __name__ == "__main__":
  main()
