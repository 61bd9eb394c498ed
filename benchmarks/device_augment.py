"""On-device SimCLR augmentation throughput: two views per image, synthetic raw uint8 images.

  python benchmarks/device_augment.py                                  # whatever JAX picks
  python benchmarks/device_augment.py --recipes=cifar10 --batch_size=256 --batches=10   # CPU

For each recipe (`presets.augment_config`: cifar10 = 32 px, s = 0.5, no blur;
imagenet2012 = 224 px crops of 256 px images, s = 1.0, blur p = 0.5) it times
  device     `ops.augment.two_views` on a batch already on the device (the augmentation
             alone, as inside the train step);
  with_copy  a host numpy batch -> `jax.device_put` -> the same augmentation, which is what the
             in-memory input path (`data/in_memory.py`) adds per step.
and reports images/s (source images; two views each) and the milliseconds per step they add
at that batch. Imports no TensorFlow, so it runs on GPU hosts with JAX alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contrastive_jax  # noqa: E402,F401  (CPU compiler workaround before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from contrastive_jax import presets
from contrastive_jax.ops import augment as augment_device  # noqa: E402

# recipe -> (raw image size, output size)
RECIPES = {"cifar10": (32, 32), "imagenet2012": (256, 224)}


def measure(recipe: str, batch_size: int, batches: int, repeats: int) -> list[dict]:
  raw, size = RECIPES[recipe]
  spec = augment_device.AugmentSpec.from_config(presets.augment_config(recipe))
  augment = jax.jit(lambda k, x: augment_device.two_views(k, x, spec, size=size))
  rng = np.random.default_rng(0)
  host = [rng.integers(0, 256, size=(batch_size, raw, raw, 3), dtype=np.uint8)
          for _ in range(2)]
  on_device = jax.device_put(host[0])
  key = jax.random.key(0)
  jax.block_until_ready(augment(key, on_device))  # compile

  def run(copy: bool) -> float:
    t0 = time.perf_counter()
    out = None
    for i in range(batches):
      x = jax.device_put(host[i % 2]) if copy else on_device
      out = augment(jax.random.fold_in(key, i), x)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / batches

  times = {"device": [], "with_copy": []}
  for mode in times:  # Warm-up: the first runs after compiling are slow.
    run(mode == "with_copy")
  for _ in range(repeats):  # Interleaved, so a slow phase of the machine hits both.
    for mode in times:
      times[mode].append(run(mode == "with_copy"))
  rows = []
  for mode, ts in times.items():
    step = statistics.median(ts)
    rows.append({"benchmark": "device_augment", "recipe": recipe, "mode": mode,
                 "raw_size": raw, "size": size, "batch_size": batch_size,
                 "blur_prob": spec.blur_prob, "device": jax.devices()[0].device_kind,
                 "step_s": step, "step_s_all": ts, "images_per_s": batch_size / step,
                 "views_per_s": 2 * batch_size / step})
  return rows


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--recipes", default=",".join(RECIPES))
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--batches", type=int, default=20, help="batches per timed repeat")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default="", help="append one JSON line per row to this file")
  args = p.parse_args()
  recipes = args.recipes.split(",")
  unknown = set(recipes) - set(RECIPES)
  if unknown:
    raise SystemExit(f"Unknown recipes {sorted(unknown)}; valid: {sorted(RECIPES)}.")
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch_size}",
        flush=True)
  rows = [r for recipe in recipes
          for r in measure(recipe, args.batch_size, args.batches, args.repeats)]
  for r in rows:
    print(json.dumps(r), flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
  print("\n| recipe | raw -> crop | mode | images/s | views/s | ms per batch |")
  print("|---|---|---|---:|---:|---:|")
  for r in rows:
    print(f"| {r['recipe']} | {r['raw_size']} -> {r['size']} | {r['mode']} | "
          f"{r['images_per_s']:,.0f} | {r['views_per_s']:,.0f} | {1e3 * r['step_s']:.1f} |")
  assert "tensorflow" not in sys.modules, "tensorflow imported"


if __name__ == "__main__":
  main()
