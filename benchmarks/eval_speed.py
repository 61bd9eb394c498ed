"""Feature extraction of a small in-memory dataset: whole split in memory vs streamed.

  python benchmarks/eval_speed.py --split=train --image_size=32 --repeats=5

On scikit-learn's digits (an array source, already in memory), three ways to get the
eval-mode features of one split, side by side in one process, interleaved, median of
`repeats` after a warm-up that compiles everything:

  in_memory      `data.load_arrays` (the whole split as float32 pixels), then
                 `features.extract_features` over it: what the evaluators did before.
  stream_numpy   `data.build_eval_iterator` (numpy batches cut from the source's arrays, one at
                 a time) into `features.stream_features`: what they do now.
  stream_tfdata  the tf.data evaluation pipeline over the same arrays into `stream_features`:
                 what an array source would cost without its numpy path.

A tiny SimCLR encoder (ResNet-10, width 0.125), batch 256, one CPU device. Prints one JSON
line per method and the ratios to `in_memory`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--split", default="train")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from contrastive_jax import data, optim, parallel, presets  # pylint: disable=g-import-not-at-top
  from contrastive_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from contrastive_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  from contrastive_jax.methods import get_method  # pylint: disable=g-import-not-at-top

  config = presets.load_config_file(
      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                   "simclr.py"), "tiny")
  config.data.image_size = args.image_size
  config.model.update(depth=10, width=0.125)
  method = get_method(config)
  mesh = parallel.make_mesh(1)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  state = step_lib.make_init_fn(method, tx, mesh)(0)
  fn = step_lib.make_features_fn(method, step_lib.model_defs(method))
  b, split = args.batch_size, args.split

  def in_memory():
    images, _ = data.load_arrays(config, split)
    return features.extract_features(fn, state, images, mesh, batch_size=b)

  def stream_numpy():
    batches = data.build_eval_iterator(config, split, b)
    return features.stream_features(fn, state, batches, mesh).numpy()[0]

  def stream_tfdata():
    batches = pipeline.build_eval_iterator(config, split, b)
    return features.stream_features(fn, state, batches, mesh).numpy()[0]

  methods = {"in_memory": in_memory, "stream_numpy": stream_numpy,
             "stream_tfdata": stream_tfdata}
  reference = None
  for run in methods.values():  # Warm-up: compile, load the source, and check they agree.
    out = run()
    reference = out if reference is None else reference
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
  times = {name: [] for name in methods}
  for _ in range(args.repeats):
    for name, run in methods.items():
      start = time.perf_counter()
      jax.block_until_ready(run())
      times[name].append(time.perf_counter() - start)
  base = statistics.median(times["in_memory"])
  for name, ts in times.items():
    median = statistics.median(ts)
    print(json.dumps({"method": name, "split": split, "examples": int(len(reference)),
                      "image_size": args.image_size, "median_s": round(median, 4),
                      "images_per_s": round(len(reference) / median, 1),
                      "vs_in_memory": round(base / median, 3),
                      "runs_s": [round(t, 4) for t in ts]}))


if __name__ == "__main__":
  main()
