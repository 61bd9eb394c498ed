"""Peak host memory of `python -m contrastive_jax.evaluate` against the number of images.

  python benchmarks/eval_memory.py --sizes=2000,8000,32000 --image_size=64 \
      --work=/tmp/eval_memory

For each size N it writes (once) a synthetic image folder, <work>/images_<N>/{train,test}/
<class>/<i>.jpg with N train and N/4 test JPEGs of 10 classes at image_size px, and then
measures, each in a fresh process that reports its own resident-set high-water mark (VmHWM of
/proc/self/status; Linux carries ru_maxrss over an exec from the forked parent, so it is not
used):

  evaluate     `python -m contrastive_jax.evaluate` with the kNN and L-BFGS linear blocks on the
               folder (`--eval_config.data.path`), evaluating one checkpoint of a 1-step tiny
               SimCLR run (ResNet-10, width 0.125: 64-d features) made once on the smallest
               folder. Features are streamed: the growth per image should be about its
               features' bytes (plus a few integers and its file name), not its pixels'.
  load_arrays  `data.load_arrays` of both splits: the whole-split float32 pixels the
               evaluators used to hold, for comparison.

The slope of a least-squares line through (images, peak) is the growth per image. Prints a
Markdown table and one JSON line per measurement. Needs TensorFlow (image files).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CLASSES = 10
# Runs a snippet (a module as __main__, say) and prints the process's peak memory at exit.
_PEAK = """
import atexit, json, runpy, sys
def _report():
  hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
  print("PEAK " + json.dumps({{"vmhwm_bytes": int(hwm) * 1024}}), flush=True)
atexit.register(_report)
{body}
"""


def make_folder(root: str, n_train: int, n_test: int, size: int) -> str:
  """Smooth random colour images (they compress like photos), written once."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  done = os.path.join(root, ".complete")
  if os.path.exists(done):
    return root
  rng = np.random.default_rng(0)
  for split, n in (("train", n_train), ("test", n_test)):
    for c in range(CLASSES):
      os.makedirs(os.path.join(root, split, f"class{c:02d}"), exist_ok=True)
    for i in range(n):
      coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
      image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
      image.save(os.path.join(root, split, f"class{i % CLASSES:02d}", f"{i:06d}.jpg"),
                 quality=90)
  open(done, "w").close()
  return root


def make_run(workdir: str, folder: str, image_size: int) -> str:
  """A 1-step tiny SimCLR run on `folder`, with a checkpoint to evaluate (made once, in a
  child process so that this one stays small)."""
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    return workdir
  body = f"""
from contrastive_jax import presets, train
config = presets.load_config_file({os.path.join(ROOT, "configs", "simclr.py")!r}, "tiny")
config.data.update(source="folder", path={folder!r}, image_size={image_size}, eval_split="test")
config.model.update(depth=10, width=0.125)
config.augment.on_device = True
config.update(num_steps=1, batch_size=64, checkpoint_every_steps=1)
for block in config.evals.values():
  block.update(every_steps=0, at_end=False)
train.train_and_evaluate(config, {workdir!r})
"""
  _peak(body)
  return workdir


def _peak(body: str, env: dict | None = None) -> tuple[dict, float, str]:
  start = time.time()
  proc = subprocess.run([sys.executable, "-c", _PEAK.format(body=body)], cwd=ROOT,
                        capture_output=True, text=True, check=False,
                        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
  wall = time.time() - start
  lines = [l for l in proc.stdout.splitlines() if l.startswith("PEAK ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"measurement failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][5:]), wall, proc.stdout


def evaluate_argv(workdir: str, folder: str, output: str, steps: int,
                  only: str = "knn,linear") -> list[str]:
  return ["contrastive_jax.evaluate", f"--workdir={workdir}", f"--output={output}",
          "--eval_config=configs/eval.py:default", f"--eval_config.only={only}",
          f"--eval_config.data.path={folder}", "--eval_config.plots=False",
          "--eval_config.evals.linear.fractions=(1.0,)",
          f"--eval_config.evals.linear.steps={steps}"]


def measure_evaluate(workdir: str, folder: str, output: str, steps: int,
                     only: str = "knn,linear") -> dict:
  argv = evaluate_argv(workdir, folder, output, steps, only)
  body = (f"sys.argv = {argv!r}\n"
          "runpy.run_module('contrastive_jax.evaluate', run_name='__main__', alter_sys=True)")
  peak, wall, _ = _peak(body)
  return {**peak, "wall_s": wall}


def measure_load_arrays(folder: str, image_size: int) -> dict:
  body = ("from contrastive_jax import data, presets\n"
          "import ml_collections\n"
          "c = ml_collections.ConfigDict(dict(data=presets.data_config('digits'), "
          "augment=presets.augment_config('digits'), batch_size=64, seed=0))\n"
          f"c.data.update(source='folder', path={folder!r}, image_size={image_size})\n"
          "held = [data.load_arrays(c, s) for s in ('train', 'test')]\n")
  peak, wall, _ = _peak(body, {"CUDA_VISIBLE_DEVICES": ""})
  return {**peak, "wall_s": wall}


def slope(points: list[tuple[int, int]]) -> float:
  """Least-squares bytes per image of (images, bytes) points."""
  n = len(points)
  mx = sum(x for x, _ in points) / n
  my = sum(y for _, y in points) / n
  sxx = sum((x - mx) ** 2 for x, _ in points)
  return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="2000,8000,32000", help="train images per folder")
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--work", default="/tmp/eval_memory")
  p.add_argument("--linear_steps", type=int, default=20)
  p.add_argument("--only", default="knn,linear", help="evaluators to run")
  p.add_argument("--skip_load_arrays", action="store_true")
  args = p.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(",")]
  folders = {n: make_folder(os.path.join(args.work, f"images_{n}"), n, n // 4, args.image_size)
             for n in sizes}
  workdir = make_run(os.path.join(args.work, "run"), folders[min(sizes)], args.image_size)
  rows = []
  for n in sizes:
    images = n + n // 4
    row = {"train_images": n, "images": images,
           **{f"evaluate_{k}": v for k, v in measure_evaluate(
               workdir, folders[n], os.path.join(args.work, f"eval_{n}"),
               args.linear_steps, args.only).items()}}
    if not args.skip_load_arrays:
      row.update({f"load_arrays_{k}": v
                  for k, v in measure_load_arrays(folders[n], args.image_size).items()})
    rows.append(row)
    print(json.dumps(row), flush=True)
  pixel_bytes = args.image_size ** 2 * 3 * 4
  print(f"\n| images (train + test) | evaluate peak (MiB) | wall (s) | load_arrays peak (MiB) |")
  print("|---:|---:|---:|---:|")
  for r in rows:
    old = r.get("load_arrays_vmhwm_bytes")
    print(f"| {r['images']:,} | {r['evaluate_vmhwm_bytes'] / 2**20:,.0f} | "
          f"{r['evaluate_wall_s']:.0f} | "
          f"{'-' if old is None else f'{old / 2**20:,.0f}'} |")
  per_image = slope([(r["images"], r["evaluate_vmhwm_bytes"]) for r in rows])
  print(f"\nevaluate: {per_image:,.0f} bytes per image (float32 pixels: {pixel_bytes:,})")
  if not args.skip_load_arrays:
    old = slope([(r["images"], r["load_arrays_vmhwm_bytes"]) for r in rows])
    print(f"load_arrays: {old:,.0f} bytes per image")


if __name__ == "__main__":
  main()
